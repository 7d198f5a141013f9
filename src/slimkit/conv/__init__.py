"""Convolution acceleration: BN folding and fusion, Winograd convolution, separable conversion.

``sk.accelerate(model, "fuse")``, ``sk.accelerate(model, "winograd", tile="auto")``,
``sk.accelerate(model, "separable", data=train, finetune={"epochs": 2})``.
"""

from __future__ import annotations

from slimkit.conv.methods import Fuse, Separable, Winograd
from slimkit.conv.separable import SeparableConv2d
from slimkit.conv.winograd import WinogradConv2d, plain_convs
from slimkit.core.folding import fold_batchnorm
from slimkit.core.registry import make_verb

accelerate = make_verb(
    "accelerate", "fuse", "Make a model's convolutions cheaper with ``method`` (``fuse``, ``winograd``, ``separable``)."
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
