"""A dataclass's fields as a dict: the start of every result's JSON-ready ``to_dict``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields
from typing import Any


def fields_dict(obj: Any, *, exclude: Iterable[str] = (), **replaced: Any) -> dict[str, Any]:
    """``obj``'s dataclass fields by name (values as they are), without ``exclude``, with the
    ``replaced`` ones given their JSON-ready form."""
    skip = set(exclude)
    values = {f.name: getattr(obj, f.name) for f in fields(obj) if f.name not in skip}
    return {**values, **replaced}
