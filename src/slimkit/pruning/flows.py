"""What the dependency graph tracks through a model's ops: runs of channel spaces along a
tensor axis (`Seg`, `Flow`), a tensor's shape or a tuple of split pieces carrying them
(`ShapeOf`, `Items`), and which ops and layers pass channels through unchanged.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from slimkit.core.graph import node_shape


@dataclass(frozen=True)
class Seg:
    """A run of ``length`` channels of one space; each channel spans ``repeat`` entries."""

    space: int
    length: int
    repeat: int = 1


@dataclass(frozen=True)
class Flow:
    """Channel spaces laid along axis ``dim`` of a tensor."""

    segs: tuple[Seg, ...]
    dim: int


@dataclass(frozen=True)
class ShapeOf:
    """The shape of a tensor whose axis ``flow.dim`` carries channels (``x.shape``, ``x.size()``).

    Reading its other entries is harmless; reading the channel count, or using the whole
    shape, blocks the channels (the model's code would still see the old count).
    """

    flow: Flow
    ndim: int


@dataclass(frozen=True)
class Items:
    """A tuple of values (from split/chunk)."""

    items: tuple[Flow | None, ...]


UNARY = {
    "relu", "relu_", "relu6", "gelu", "silu", "sigmoid", "tanh", "hardswish", "hardtanh", "leaky_relu", "elu",
    "hardsigmoid", "mish", "softplus", "selu", "celu", "sigmoid_", "hardswish_", "hardsigmoid_", "silu_",
    "dropout", "dropout2d", "stochastic_depth", "drop_path", "contiguous", "clone", "float", "to", "type_as",
    "detach", "abs", "neg", "sqrt", "rsqrt", "exp", "log", "erf", "square", "reciprocal", "sin", "cos",
    "clamp", "clamp_min", "clamp_max", "gelu_", "relu6_",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_max_pool2d", "avg_pool1d", "avg_pool2d",
    "max_pool1d", "max_pool2d", "interpolate", "pad", "upsample_nearest2d", "upsample_bilinear2d",
    "upsample_bicubic2d", "_upsample_bilinear2d_aa", "constant_pad_nd",
}  # fmt: skip
BINARY = {
    "add", "sub", "mul", "truediv", "div", "iadd", "imul", "isub", "__add__", "__mul__", "__sub__", "add_", "mul_",
    "pow", "rsub",
}  # fmt: skip
FUNCTIONAL_NORMS = {"batch_norm", "layer_norm", "group_norm", "instance_norm"}
REDUCE = {"mean", "sum", "amax", "amin"}
NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)
PASS_MODULES = (
    nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.LeakyReLU, nn.ELU, nn.Identity,
    nn.Hardsigmoid, nn.Mish, nn.Softplus, nn.SELU, nn.CELU,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd, nn.Upsample,
)  # fmt: skip


MOVES = {"transpose", "permute", "view", "reshape", "expand", "unsqueeze", "squeeze", "_unsafe_view", "unflatten"}
CHECKS = {"_assert_tensor_metadata", "_assert_scalar", "_assert_async", "sym_constrain_range_for_size"}
"""Ops torch.export adds to check values; they compute nothing the channels flow through."""

ATEN_ALIASES = {"split_with_sizes": "split", "sym_size": "size", "_to_copy": "to", "alias": "clone"}
"""ATen ops (graphs captured by torch.export) that mean what a torch function of another name does."""


def op_name(node: fx.Node) -> str:
    if node.op == "call_method":
        return str(node.target)
    target = node.target
    if target in (operator.add, operator.iadd):
        return "add"
    if isinstance(target, torch._ops.OpOverload):
        name = target.overloadpacket.__name__
        return ATEN_ALIASES.get(name, name)
    return getattr(target, "__name__", str(target))


def ndim_of(arg: Any) -> int | None:
    shape = node_shape(arg) if isinstance(arg, fx.Node) else None
    return len(shape) if shape is not None else None


def parameter_behind(value: Any) -> fx.Node | None:
    """The parameter/buffer node a value is an expanded or cast view of (``cls_token.expand(b, -1, -1)``)."""
    while isinstance(value, fx.Node) and value.op != "get_attr":
        if op_name(value) not in ("expand", "repeat", "to", "contiguous", "clone", "type_as") or not value.args:
            return None
        value = value.args[0]
    return value if isinstance(value, fx.Node) else None


def arg_of(node: fx.Node, index: int, key: str, default: Any = None) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(key, default)
