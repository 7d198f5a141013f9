"""The bundled examples: models with trained weights, and the datasets they are scored on.

``get_model("digits-cnn")`` and ``get_data("digits")`` are what the recipe specs
``example:digits-cnn`` and ``example:digits`` resolve to. Importing this package stays
light: scikit-learn and transformers are imported only when a model or dataset is built.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from slimkit.core.data import DataSplits
from slimkit.core.errors import InvalidConfigError
from slimkit.core.examples import SPEC_PREFIX, install_catalog


def _deferred(module: str, function: str) -> Callable[..., Any]:
    """``slimkit.models.<module>.<function>``, imported on first call (keeps import light)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(f"{__name__}.{module}"), function)(*args, **kwargs)

    call.__name__ = call.__qualname__ = function
    call.__doc__ = f"Calls `slimkit.models.{module}.{function}`."
    return call


@dataclass(frozen=True)
class Example:
    """A bundled example model.

    Attributes:
        name: registry name, e.g. ``"digits-cnn"``.
        description: one line for listings.
        build: ``build(pretrained)`` -> the model in eval mode.
        example_inputs: ``example_inputs()`` -> batch-1 inputs for the model.
        data: name of the dataset it is scored on (see `get_data`).
    """

    name: str
    description: str
    build: Callable[[bool], nn.Module]
    example_inputs: Callable[[], tuple]
    data: str


_EXAMPLES = {
    example.name: example
    for example in (
        Example(
            name="digits-cnn",
            description="residual CNN (240k params) on 8x8 handwritten digits upsampled to 32x32",
            build=_deferred("digits", "load_digits_cnn"),
            example_inputs=_deferred("digits", "example_inputs"),
            data="digits",
        ),
        Example(
            name="minilm",
            description="all-MiniLM-L6-v2 sentence embedder (BERT, 6 layers, 384-d, 22.6M params)",
            build=_deferred("minilm", "load_minilm"),
            example_inputs=_deferred("minilm", "example_inputs"),
            data="sentences",
        ),
    )
}

_DATASETS: dict[str, Callable[..., DataSplits]] = {
    "digits": _deferred("digits", "digits_data"),
    "sentences": _deferred("minilm", "sentences_data"),
}


def _lookup(kind: str, name: str, table: dict[str, Any]) -> Any:
    key = name.removeprefix(SPEC_PREFIX) if isinstance(name, str) else name
    if key not in table:
        raise InvalidConfigError(f"unknown {kind} {name!r}; valid names: {', '.join(table)}")
    return table[key]


def list_examples() -> list[str]:
    """Names of the bundled example models."""
    return list(_EXAMPLES)


def list_datasets() -> list[str]:
    """Names of the bundled datasets."""
    return list(_DATASETS)


def get_example(name: str) -> Example:
    """The registered `Example` called ``name`` (an ``example:`` prefix is accepted).

    Raises:
        InvalidConfigError: for an unknown name; the message lists the valid ones.
    """
    return _lookup("example", name, _EXAMPLES)


def get_model(name: str, pretrained: bool = True) -> nn.Module:
    """Build the example model ``name`` in eval mode (trained weights when ``pretrained``)."""
    return get_example(name).build(pretrained)


def get_data(name: str, batch_size: int | None = None) -> DataSplits:
    """The splits of the bundled dataset ``name`` (``"digits"`` or ``"sentences"``).

    Args:
        name: dataset name (an ``example:`` prefix is accepted).
        batch_size: samples per batch; ``None`` keeps the dataset's default.

    Raises:
        InvalidConfigError: for an unknown name; the message lists the valid ones.
    """
    loader = _lookup("dataset", name, _DATASETS)
    return loader() if batch_size is None else loader(batch_size=batch_size)


def example_inputs(name: str) -> tuple:
    """Batch-1 sample inputs of the example model ``name``."""
    return get_example(name).example_inputs()


install_catalog(sys.modules[__name__])  # type: ignore[arg-type]  # example: specs resolve here
