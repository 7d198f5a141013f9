"""Convolution acceleration: BN folding and fusion, Winograd convolution, separable conversion.

``sk.accelerate(model, "fuse")``, ``sk.accelerate(model, "winograd", tile="auto")``,
``sk.accelerate(model, "separable", data=train, finetune_epochs=2)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from slimkit.conv.fusion import fold_batchnorm
from slimkit.conv.methods import Fuse, Separable, Winograd
from slimkit.conv.separable import SeparableConv2d
from slimkit.conv.winograd import WinogradConv2d, plain_convs
from slimkit.core.config import Config
from slimkit.core.registry import apply


def accelerate(
    model: nn.Module,
    method: str | Config = "fuse",
    *,
    data: Iterable[Any] | None = None,
    example_inputs: Any = None,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    inplace: bool = False,
    device: str | torch.device = "auto",
    **options: Any,
) -> nn.Module:
    """Make a model's convolutions cheaper with ``method`` (``fuse``, ``winograd``, ``separable``).

    Args:
        model: the model (copied unless ``inplace``).
        method: a registered name or a config (`Fuse`, `Winograd`, `Separable`).
        data: batches used for timing decisions and fine-tuning.
        example_inputs: inputs used for timing decisions.
        include: glob patterns of module names to convert.
        exclude: glob patterns of module names to leave alone.
        inplace: change ``model`` itself.
        device: where the work runs (``"auto"``: CUDA when present).
        **options: fields of the method's config.

    Returns:
        The accelerated model, with the transform in its record.
    """
    return apply(
        "accelerate",
        model,
        method,
        data=data,
        example_inputs=example_inputs,
        include=include,
        exclude=exclude,
        inplace=inplace,
        device=device,
        **options,
    )


__all__ = [
    "Fuse",
    "Separable",
    "SeparableConv2d",
    "Winograd",
    "WinogradConv2d",
    "accelerate",
    "fold_batchnorm",
    "plain_convs",
]
