"""Where ``example:NAME`` specs resolve: the catalog of bundled examples.

`slimkit.models` installs itself here when imported (``import slimkit`` does), so `core`
resolves example specs without importing the layer above it.
"""

from __future__ import annotations

from typing import Any, Protocol

from torch import nn

from slimkit.core.data import DataSplits
from slimkit.core.errors import InvalidConfigError

SPEC_PREFIX = "example:"


class Catalog(Protocol):
    """What an example catalog provides (`slimkit.models` is one)."""

    def get_model(self, name: str, pretrained: bool = True) -> nn.Module: ...

    def get_data(self, name: str, batch_size: int | None = None) -> DataSplits: ...

    def example_inputs(self, name: str) -> Any: ...


_installed: list[Catalog] = []


def install_catalog(catalog: Catalog) -> None:
    """Make ``catalog`` the one ``example:`` specs resolve through."""
    _installed[:] = [catalog]


def catalog() -> Catalog:
    """The installed catalog.

    Raises:
        InvalidConfigError: when none is (``slimkit.models`` was never imported).
    """
    if not _installed:
        raise InvalidConfigError("example: specs need the bundled examples: import slimkit first")
    return _installed[0]
