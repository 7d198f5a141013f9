"""A model's forward as the operations a latency table prices (`walk`).

One forward on the example inputs is watched two ways: forward hooks on the *units* (leaf
modules and slimkit's quantized layers, whatever they run inside) and a `TorchFunctionMode`
for the functions called outside any unit (a residual ``a + b``, ``F.relu`` in a
``forward``, attention matmuls). Each call becomes an `Op`:

- a **layer** (``conv2d``, ``depthwise``, ``linear``) in a precision (``fp32``; ``int8``:
  slimkit's ``int8-static`` `QDQLayer`; ``int8-dynamic``; ``weight-only``) with its MACs
  (`slimkit.measure.macs.count_macs` of that call). Other layers with MACs (Conv1d, LSTM,
  ...) are counted as the nearest kind and say so in `Op.note`;
- a **matmul**: a product of two activations (attention's ``q @ kᵀ`` and ``scores @ v``),
  priced by its MACs like a layer; a product with a parameter is a ``linear`` layer, and
  ``scaled_dot_product_attention`` counts as its two products (its softmax is in the note);
- **fused**: a BatchNorm or activation applied to a layer's output, which the runtime folds
  into the layer (onnxruntime's Conv+BatchNormalization and Conv/Gemm+activation fusions;
  `QDQLayer` carries its ReLU itself): no cost of its own;
- **elementwise**: everything else that computes (adds, pooling, unfused activations,
  softmax, norms), priced by its output elements;
- views and pass-throughs (``Identity``, ``Dropout`` in eval, ``Flatten``, ``view``) are free
  and left out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from slimkit.core.data import Batch, batch_from_inputs, run_model
from slimkit.measure.macs import count_macs
from slimkit.measure.metrics import eval_mode
from slimkit.quantization.dynamic import Int8DynamicLinear
from slimkit.quantization.modules import WeightOnlyLinear
from slimkit.quantization.qdq import QDQLayer

LAYER_KINDS = ("conv2d", "depthwise", "linear", "matmul")
"""Kinds a table prices per call and per MAC: dense conv2d, grouped/depthwise conv2d, linear,
and matmul (a product of two activations)."""
MATMUL_FUNCTIONS = frozenset({"matmul", "__matmul__", "__rmatmul__", "bmm", "baddbmm", "mm", "einsum"})
"""Functions that multiply two tensors: a matmul, or a linear layer when one is a parameter."""
ATTENTION_FUNCTIONS = frozenset({"scaled_dot_product_attention"})
PRECISIONS = ("fp32", "int8", "int8-dynamic", "weight-only")
"""``int8`` is slimkit's ``int8-static`` (QDQ) layer."""
CHANNEL_BLOCK = 8
"""The channel multiple convolution kernels vectorize over (onnxruntime's NCHWc and int8 kernels)."""
ELEMENTWISE = "elementwise"
FUSED = "fused"

UNIT_TYPES = (QDQLayer, Int8DynamicLinear, WeightOnlyLinear)
"""Modules with children of their own that still count as one layer."""
FREE_MODULES = (nn.Identity, nn.Flatten, nn.Unflatten, nn.modules.dropout._DropoutNd)
FUSABLE_MODULES = (
    nn.modules.batchnorm._BatchNorm, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.Hardsigmoid,
    nn.Hardtanh,
)  # fmt: skip
FUSABLE_FUNCTIONS = frozenset(
    {"relu", "relu_", "relu6", "leaky_relu", "sigmoid", "tanh", "hardsigmoid", "hardtanh", "batch_norm"}
)


@dataclass(frozen=True)
class Op:
    """One costed operation of a forward.

    Attributes:
        name: the module's qualified name, or ``fn:NAME`` for a function call.
        kind: one of `LAYER_KINDS`, ``elementwise`` or ``fused``.
        precision: one of `PRECISIONS`.
        macs: multiply-accumulates of the call.
        elements: elements of its output, or of its largest input when larger (a pooling reads
            more than it writes).
        note: why it is counted as another kind than it is (None: exactly this kind).
        aligned: for a convolution, whether its channel counts are multiples of `CHANNEL_BLOCK`
            (or at most 4, as an image's): runtimes block channels by 8 or 16, and a layer
            that does not fit the blocks runs a slower kernel.
        weights: for a linear layer, its weight elements (MACs per output row): what one call
            reads from memory however few rows it multiplies.
    """

    name: str
    kind: str
    precision: str
    macs: int
    elements: int
    note: str | None = None
    aligned: bool = True
    weights: int = 0

    @property
    def is_layer(self) -> bool:
        """Whether the op is priced as a layer (per layer and per MAC)."""
        return self.kind in LAYER_KINDS

    @property
    def key(self) -> str:
        """``kind/precision`` of a layer, else the kind."""
        return f"{self.kind}/{self.precision}" if self.is_layer else self.kind


def _precision(module: nn.Module | None) -> str:
    if isinstance(module, QDQLayer):
        return "int8"
    if isinstance(module, Int8DynamicLinear):
        return "int8-dynamic"
    return "weight-only" if isinstance(module, WeightOnlyLinear) else "fp32"


def _conv_kind(groups: int) -> str:
    return "depthwise" if groups > 1 else "conv2d"


def _layer_kind(
    module: nn.Module | None, fn_name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[str, str | None]:
    """(kind, note) of an op with MACs: exact for Conv2d/Linear (modules, QDQ layers or functions)."""
    if isinstance(module, nn.Conv2d):
        return _conv_kind(module.groups), None
    if isinstance(module, nn.Linear):
        return "linear", None
    if isinstance(module, QDQLayer):
        kind = "linear" if module.kind == "linear" else _conv_kind(module.conv_args["groups"])
        return kind, None if module.kind in ("linear", "conv2d") else f"int8 {module.kind} counted as {kind}"
    if module is None and fn_name == "conv2d":
        groups = args[6] if len(args) > 6 else kwargs.get("groups", 1)
        return _conv_kind(groups), None
    if module is None and fn_name == "linear":
        return "linear", None
    if module is None and fn_name in MATMUL_FUNCTIONS | ATTENTION_FUNCTIONS:
        if any(isinstance(t, nn.Parameter) for t in _tensors((args, kwargs))):
            return "linear", None if fn_name in MATMUL_FUNCTIONS else f"function {fn_name} counted as linear"
        return "matmul", None if fn_name in MATMUL_FUNCTIONS else f"{fn_name} counted as its products (no softmax)"
    what = type(module).__name__ if module is not None else f"function {fn_name}"
    if isinstance(module, nn.modules.conv._ConvNd):
        kind = _conv_kind(module.groups)
        return kind, f"{what} counted as {kind}"
    if module is not None and next(module.parameters(), None) is None:
        return "matmul", None  # a module without weights computes its MACs as products of activations
    return "linear", None if isinstance(module, UNIT_TYPES) else f"{what} counted as linear (matrix products)"


def _aligned(kind: str, module: nn.Module | None, args: tuple[Any, ...]) -> bool:
    """Whether a convolution's output channels (and a dense one's input channels per group) fit
    `CHANNEL_BLOCK`; linear layers and matmuls always do."""
    if kind in ("linear", "matmul"):
        return True
    weight = args[1] if module is None else getattr(module, "weight_int8", None)
    weight = getattr(module, "weight", None) if weight is None else weight
    if not isinstance(weight, Tensor) or weight.dim() < 3:
        return True
    channels = weight.shape[:1] if kind == "depthwise" else weight.shape[:2]
    return all(c % CHANNEL_BLOCK == 0 or c <= 4 for c in channels)


def _tensors(value: Any) -> list[Tensor]:
    return [t for t in tree_leaves(value) if isinstance(t, Tensor)]


def _is_inplace(fn_name: str) -> bool:
    return fn_name.endswith("_") and not fn_name.endswith("__") or fn_name.startswith("__i")


def _is_free(module: nn.Module | None, fn_name: str, out: Tensor, inputs: list[Tensor]) -> bool:
    """Pass-throughs and views: the output is an input (not in place) or shares its storage."""
    if isinstance(module, FREE_MODULES):
        return True
    if any(out is t for t in inputs):
        return module is None and not _is_inplace(fn_name)
    storage = out.untyped_storage().data_ptr()
    return any(t.untyped_storage().data_ptr() == storage for t in inputs)


class _Call(nn.Module):
    """A function call as a module, for `count_macs`."""

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        super().__init__()
        self.fn, self.call_args, self.call_kwargs = fn, args, kwargs

    def forward(self) -> Any:
        return self.fn(*self.call_args, **self.call_kwargs)


class _Walk(TorchFunctionMode):
    """Records the `Op` of every unit module call and every function called outside one."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.names = {m: name or type(m).__name__ for name, m in model.named_modules()}
        self.depth = 0
        self.busy = False
        self.ops: list[Op] = []
        self.layer_outputs: list[Tensor] = []  # kept alive: identities stay unique during the walk

    def record(
        self, module: nn.Module | None, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], out: Any
    ) -> None:
        fn_name = getattr(fn, "__name__", str(fn))
        inputs, outputs = _tensors((args, kwargs)), _tensors(out)
        if not outputs or _is_free(module, fn_name, outputs[0], inputs):
            return
        elements = max([sum(t.numel() for t in outputs), *(t.numel() for t in inputs)])
        name = self.names[module] if module is not None else f"fn:{fn_name}"
        precision = _precision(module)
        self.busy = True
        try:
            call = (module, Batch(args, kwargs)) if module is not None else (_Call(fn, args, kwargs), Batch())
            macs = count_macs(*call).total
        finally:
            self.busy = False
        if macs > 0:
            kind, note = _layer_kind(module, fn_name, args, kwargs)
        elif self._fuses(module, fn_name, inputs):
            kind, note = FUSED, None
        else:
            kind, note = ELEMENTWISE, None
        if kind in (*LAYER_KINDS, FUSED):
            self.layer_outputs.extend(outputs)
        aligned = kind not in LAYER_KINDS or _aligned(kind, module, args)
        rows = outputs[0].numel() // max(outputs[0].shape[-1], 1) if outputs[0].dim() else 1
        weights = macs // max(rows, 1) if kind == "linear" else 0
        self.ops.append(Op(name, kind, precision, macs, elements, note, aligned, weights))

    def _fuses(self, module: nn.Module | None, fn_name: str, inputs: list[Tensor]) -> bool:
        fusable = isinstance(module, FUSABLE_MODULES) if module is not None else fn_name in FUSABLE_FUNCTIONS
        return fusable and bool(inputs) and any(inputs[0] is t for t in self.layer_outputs)

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if not self.busy and self.depth == 0:
            self.record(None, func, args, kwargs, out)
        return out

    def enter(self, module: nn.Module, _args: Any) -> None:
        if not self.busy:
            self.depth += 1

    def leave(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        if self.busy:
            return
        self.depth -= 1
        if self.depth == 0:
            self.record(module, module.forward, args, kwargs, out)


def _units(model: nn.Module) -> Iterator[nn.Module]:
    """Leaf modules and `UNIT_TYPES`, not those inside a unit."""
    inside: set[nn.Module] = set()
    for module in model.modules():
        if module in inside:
            continue
        if isinstance(module, UNIT_TYPES) or not any(True for _ in module.children()):
            inside.update(module.modules())
            yield module


@contextmanager
def _hooked(model: nn.Module, walk: _Walk) -> Iterator[None]:
    handles = []
    for unit in _units(model):
        handles.append(unit.register_forward_pre_hook(walk.enter))
        handles.append(unit.register_forward_hook(walk.leave, with_kwargs=True))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def walk(model: nn.Module, example_inputs: Any) -> list[Op]:
    """The costed operations of one forward of ``model`` on ``example_inputs`` (no-grad, in eval
    mode as deployed; each module's mode is restored after), in the order they ran.

    Raises:
        DataError: when the forward fails on these inputs.
    """
    batch = example_inputs if isinstance(example_inputs, Batch) else batch_from_inputs(example_inputs)
    recorder = _Walk(model)
    with torch.no_grad(), eval_mode(model), _hooked(model, recorder), recorder:
        run_model(model, batch)
    return recorder.ops


OVERHEAD = "overhead"
"""The feature (and coefficient) of the per-model fixed cost: 1 per forward."""


def op_features(op: Op) -> dict[str, float]:
    """What ``op`` adds to a table's features: for a layer ``KEY:layers`` (1) and ``KEY:mmacs``
    (millions of MACs), plus ``KEY:unaligned_mmacs`` when its channels are not `Op.aligned`
    (the slower kernel's extra cost per MAC) and, for a linear, ``KEY:mweights`` (millions of
    weight elements: a product of one row reads every weight for one MAC each, so a linear's
    cost is part memory, part compute; grids with 1 row and with many tell the two apart);
    for elementwise work ``elementwise:ops`` and
    ``elementwise:kelements`` (thousands of elements); nothing when fused.

    (A per-element cost of layers too was tried and dropped: it fitted the grid better and
    predicted whole models worse, pricing depthwise layers on large images far above their
    cost; see docs/search.md.)"""
    if op.is_layer:
        extra = {} if op.aligned else {f"{op.key}:unaligned_mmacs": op.macs / 1e6}
        if op.weights:
            extra[f"{op.key}:mweights"] = op.weights / 1e6
        return {f"{op.key}:layers": 1.0, f"{op.key}:mmacs": op.macs / 1e6, **extra}
    if op.kind == ELEMENTWISE:
        return {f"{ELEMENTWISE}:ops": 1.0, f"{ELEMENTWISE}:kelements": op.elements / 1e3}
    return {}


def fixed_features(ops: Iterable[Op]) -> dict[str, float]:
    """The once-per-model features: `OVERHEAD`, and ``KEY:present`` for each layer class the
    model has (what entering and leaving the class costs: onnxruntime's layout reorders
    around fp32 convolutions, the quantize/dequantize at the edges of int8 layers)."""
    return {OVERHEAD: 1.0, **{f"{op.key}:present": 1.0 for op in ops if op.is_layer}}


def features(ops: Iterable[Op]) -> dict[str, float]:
    """The features of a forward: `fixed_features` plus every op's `op_features`, summed."""
    ops = list(ops)
    total = fixed_features(ops)
    for op in ops:
        for name, value in op_features(op).items():
            total[name] = total.get(name, 0.0) + value
    return total
