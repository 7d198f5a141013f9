"""``slimkit.json``, the index of a saved folder: its schema, limits, integrity hash and reading.

Everything in it is checked before anything is loaded (see `slimkit.core.io`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from slimkit.core.errors import UnsafeFileError, first_line

WEIGHTS = "model.safetensors"


INDEX = "slimkit.json"


FORMAT_VERSION = 2
"""Version 2 added the mandatory ``integrity`` field; version-1 folders load with a warning."""


MAX_INDEX_BYTES = 64 << 20
"""Largest ``slimkit.json`` read (a real index is a few KB to a few MB)."""


MAX_JSON_DEPTH = 32


_HEX64 = r"^[0-9a-f]{64}$"


_PLAIN_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,200}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Dim = Annotated[StrictInt, Field(ge=0, le=1 << 40)]


class TransformEntry(_Strict):
    """One recorded transform as stored in ``slimkit.json``."""

    verb: Annotated[StrictStr, Field(pattern=r"^[a-z][a-z0-9_\-]{0,63}$")]
    method: Annotated[StrictStr, Field(pattern=r"^[a-z0-9][a-z0-9_\-]{0,63}$")]
    config: dict[StrictStr, Any] = Field(default_factory=dict)
    state: dict[StrictStr, Any] = Field(default_factory=dict)
    changed: list[StrictStr] = Field(default_factory=list)
    skipped: dict[StrictStr, StrictStr] = Field(default_factory=dict)


class WeightsEntry(_Strict):
    """Where the weights are and their checksum (both mandatory)."""

    file: Annotated[StrictStr, Field(pattern=_PLAIN_NAME)]
    sha256: Annotated[StrictStr, Field(pattern=_HEX64)]


class IndexFile(_Strict):
    """The schema of ``slimkit.json``; every field is checked before anything is loaded."""

    format: Literal["slimkit"]
    format_version: Annotated[StrictInt, Field(ge=1, le=FORMAT_VERSION)]
    slimkit_version: Annotated[StrictStr, Field(max_length=64)] = ""
    source: Annotated[StrictStr, Field(min_length=1, max_length=4096)]
    transforms: Annotated[list[TransformEntry], Field(max_length=10_000)] = Field(default_factory=list)
    shapes: dict[StrictStr, Annotated[list[Dim], Field(max_length=16)]]
    weights: WeightsEntry
    hf_config: dict[StrictStr, Any] | None = None
    """The transformers config (``config.to_dict()``) of an ``hf-config:Class`` source."""
    versions: dict[StrictStr, Annotated[StrictInt, Field(ge=0, le=1 << 31)] | None] | None = None
    """Module versions (``state_dict()._metadata``) other than 1, by module name; they tell
    ``load_state_dict`` which layout the saved tensors have (e.g. BatchNorm version 2)."""
    integrity: Annotated[StrictStr, Field(pattern=_HEX64)] | None = None


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def integrity_hash(index: dict[str, Any]) -> str:
    """SHA-256 over the canonical JSON (sorted keys, compact) of the index without ``integrity``."""
    body = {k: v for k, v in index.items() if k != "integrity"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def is_slimkit_folder(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a folder written by `save`."""
    return (Path(path) / INDEX).is_file()


def _depth_ok(value: Any) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return False
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return True


def _field_path(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def read_index(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate ``slimkit.json`` (schema, bounds, integrity hash).

    Raises:
        UnsafeFileError: corrupt, malformed (the message names the field), edited, or newer.
    """
    path = Path(directory) / INDEX
    try:
        if path.stat().st_size > MAX_INDEX_BYTES:
            raise UnsafeFileError(f"{path} is larger than {MAX_INDEX_BYTES >> 20} MB: not a slimkit index")
        raw = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise UnsafeFileError(f"{path} is corrupt or unreadable ({first_line(exc)}); save the model again") from None
    if not isinstance(raw, dict) or raw.get("format") != "slimkit":
        raise UnsafeFileError(f"{path} is not a slimkit index file; save the model again with slimkit")
    version = raw.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise UnsafeFileError(f"{path} was written by a newer slimkit (format {version}): upgrade slimkit to load it")
    if not _depth_ok(raw):
        raise UnsafeFileError(f"{path} nests deeper than {MAX_JSON_DEPTH} levels: not a slimkit index")
    try:
        IndexFile.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
        raise UnsafeFileError(
            f"{path}: field {_field_path(tuple(err['loc']))}: {err['msg']}{more}; the file is malformed or was edited"
        ) from None
    if raw["format_version"] >= 2:
        if raw.get("integrity") is None:
            raise UnsafeFileError(f"{path}: field integrity is missing; the file was edited: save the model again")
        if integrity_hash(raw) != raw["integrity"]:
            raise UnsafeFileError(
                f"{path} was edited after it was saved (its integrity hash does not match); save the model again"
            )
    else:
        warnings.warn(
            f"{path} is format version 1 (no integrity hash): it was checked field by field but edits cannot be "
            "detected; save it again to upgrade it",
            stacklevel=3,
        )
    return raw


def inside_folder(directory: Path, name: str, what: str) -> Path:
    """``directory/name`` when ``name`` is a plain regular file there (no link, no path)."""
    if not re.fullmatch(_PLAIN_NAME, name) or name in (".", ".."):
        raise UnsafeFileError(f"{directory / INDEX}: {what} {name!r} must be a plain file name inside the folder")
    path = directory / name
    try:
        mode = path.lstat().st_mode
    except OSError:
        raise UnsafeFileError(f"{path} is missing: the folder is incomplete; save the model again") from None
    if not stat.S_ISREG(mode):
        raise UnsafeFileError(f"{path} is not a regular file (a link or folder); slimkit only reads plain files")
    return path
