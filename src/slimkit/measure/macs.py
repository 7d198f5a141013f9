"""Multiply-accumulate counts of one forward pass, split by kind of operation.

Counting runs the model once under ``torch.utils.flop_counter.FlopCounterMode`` and
no-grad, in whatever train/eval mode the model is in, on exactly the batch given: the
counts scale with its batch size and sequence length (pass a batch of 1 for per-sample
MACs). A MAC is one multiply-add: half of ``FlopCounterMode``'s FLOPs for matmuls,
convolutions and attention.

Extensions over ``FlopCounterMode``'s own formulas (torch 2.13, CPU):

- ``aten._scaled_dot_product_flash_attention_for_cpu`` (what SDPA runs on CPU, e.g. in
  transformers' BERT) and the fused ``aten._native_multi_head_attention`` (the eval,
  no-grad fast path of ``nn.MultiheadAttention``) and ``aten._transformer_encoder_layer_fwd``
  (``nn.TransformerEncoderLayer``'s fast path) are not counted by torch at all.
- ``nn.LSTM`` on CPU runs as ``aten.mkldnn_rnn_layer`` (not counted by torch; CUDA's
  ``aten._cudnn_rnn`` neither). ``nn.GRU``/``nn.RNN`` (and LSTMs with ``proj_size`` or
  packed input) decompose into per-step ``addmm``/``mm`` that torch does count; every op
  run inside an ``nn.RNNBase``/``nn.RNNCellBase`` module is reported as
  ``recurrent``. Per layer and direction, per time step and sample: LSTM ``4H(I+H)``,
  GRU ``3H(I+H)``, RNN ``H(I+H)``.
- Quantized ``quantized::linear*`` and ``quantized::conv{1,2,3}d*`` ops.

Kinds come from the op types, not from modules (``FlopCounterMode`` also adds each op to
every enclosing module, which is why its per-module table nests); the one exception is
the ``recurrent`` rule above. Attention is counted dense (causal or padding masks do not
reduce it), as torch does; when SDPA falls back to its math path (e.g. value and query
head dims differ) its ``bmm`` ops are reported as ``matmul``. Embedding lookups are
gathers and count 0 MACs; element-wise ops, norms and softmax are not counted either.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from slimkit.core.data import Batch, batch_from_inputs, run_model
from slimkit.core.errors import InvalidConfigError

KINDS = ("conv", "linear", "matmul", "attention", "recurrent", "other")
"""The kinds of operation MACs are split into."""

MacFormula = Callable[..., "int | Mapping[str, int]"]
"""``fn(*op_args, out=op_output, **op_kwargs)`` -> MACs, or a ``{kind: MACs}`` mapping."""


@dataclass(frozen=True)
class MacCount:
    """MACs of one forward on the batch given.

    Attributes:
        total: all multiply-accumulates.
        by_kind: the same split over `KINDS` (every kind present, zero when unused).
    """

    total: int
    by_kind: dict[str, int]


_REGISTRY: dict[Any, tuple[str, MacFormula]] = {}


def register_mac_formula(op: Any, fn: MacFormula, kind: str = "other") -> None:
    """Count ``op`` with ``fn``, replacing any earlier formula (torch's included).

    Args:
        op: an op as the dispatcher runs it, e.g. ``torch.ops.quantized.linear_dynamic``
            (a packet, or one overload of it). Composite ops such as ``aten.lstm`` are
            decomposed before counting and never reach a formula: target what they run.
        fn: called after the op with its raw arguments (tensors, packed params, ...) and
            ``out=`` the op's output; returns the MACs of that call, or a ``{kind: MACs}``
            mapping for fused ops that do several kinds of work.
        kind: one of `KINDS`, used when ``fn`` returns a number.

    Raises:
        InvalidConfigError: when ``kind`` is unknown or ``op`` is not a dispatcher op.
    """
    packet = getattr(op, "_overloadpacket", op)
    if not isinstance(packet, torch._ops.OpOverloadPacket):
        raise InvalidConfigError(f"op must be a dispatcher op such as torch.ops.aten.mm, got {op!r}")
    if kind not in KINDS:
        raise InvalidConfigError(f"unknown MAC kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    _REGISTRY[packet] = (kind, fn)


class _Tally:
    """MACs per kind for one count; ops inside a recurrent module count as ``recurrent``."""

    def __init__(self) -> None:
        self.by_kind = dict.fromkeys(KINDS, 0)
        self.recurrent_depth = 0
        self.unknown: dict[str, str] = {}  # kind -> op whose formula returned it

    def add(self, op: Any, kind: str, macs: int | Mapping[str, int]) -> int:
        parts = macs if isinstance(macs, Mapping) else {kind: macs}
        for part, value in parts.items():
            if part in self.by_kind:
                self.by_kind["recurrent" if self.recurrent_depth else part] += int(value)
            else:
                self.unknown[part] = str(op)
        return sum(int(v) for v in parts.values())

    def result(self) -> MacCount:
        if self.unknown:
            kind, op = next(iter(self.unknown.items()))
            raise InvalidConfigError(
                f"the MAC formula of {op} returned unknown kind {kind!r}; valid kinds: {', '.join(KINDS)}"
            )
        return MacCount(total=sum(self.by_kind.values()), by_kind=dict(self.by_kind))


def _torch_kind(op: Any) -> str:
    """The kind of an op that ``FlopCounterMode`` counts itself."""
    name = str(op).rsplit(".", 1)[-1]
    if name in ("mm", "addmm", "_scaled_mm"):
        return "linear"
    if name in ("bmm", "baddbmm"):
        return "matmul"
    if "conv" in name:
        return "conv"
    return "attention" if "attention" in name else "other"


def _halved(flop_formula: Callable[..., int]) -> MacFormula:
    """A torch FLOP formula (taking ``out_val=``) as a MAC formula (taking ``out=``)."""

    def formula(*args: Any, out: Any = None, **kwargs: Any) -> int:
        return flop_formula(*args, out_val=out, **kwargs) // 2

    return formula


def _custom_mapping(tally: _Tally) -> dict[Any, Callable[..., int]]:
    """``FlopCounterMode``'s formulas plus ours, each recording MACs by kind into ``tally``."""
    formulas = {op: (_torch_kind(op), _halved(fn)) for op, fn in FlopCounterMode(display=False).flop_registry.items()}
    formulas.update(_REGISTRY)

    def recording(op: Any, kind: str, fn: MacFormula) -> Callable[..., int]:
        def flops(*args: Any, out_val: Any = None, **kwargs: Any) -> int:
            return 2 * tally.add(op, kind, fn(*args, out=out_val, **kwargs))

        flops._get_raw = True  # type: ignore[attr-defined]  # FlopCounterMode: pass raw args
        return flops

    return {op: recording(op, kind, fn) for op, (kind, fn) in formulas.items()}


@contextmanager
def _recurrent_scope(model: nn.Module, tally: _Tally) -> Iterator[None]:
    """Mark ops run inside the model's RNN modules as recurrent, for the duration."""

    def enter(*_: Any) -> None:
        tally.recurrent_depth += 1

    def leave(*_: Any) -> None:
        tally.recurrent_depth -= 1

    rnns = [m for m in model.modules() if isinstance(m, (nn.RNNBase, nn.RNNCellBase))]
    handles = [h for m in rnns for h in (m.register_forward_pre_hook(enter), m.register_forward_hook(leave))]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def count_macs(model: nn.Module, inputs: Batch | Any) -> MacCount:
    """Count the multiply-accumulates of one forward of ``model`` on ``inputs``.

    Args:
        model: run as it is (train/eval mode untouched), under no-grad.
        inputs: a `Batch`, or example inputs (a tensor, a tuple of tensors or a dict).
            The count is for this batch as given, not per sample.

    Raises:
        DataError: when the forward fails on these inputs.
        InvalidConfigError: when a registered formula returns a kind not in `KINDS`.
    """
    batch = inputs if isinstance(inputs, Batch) else batch_from_inputs(inputs)
    tally = _Tally()
    counter = FlopCounterMode(display=False, custom_mapping=_custom_mapping(tally))
    with torch.no_grad(), _recurrent_scope(model, tally), counter:
        run_model(model, batch)
    return tally.result()


# --- formulas for ops FlopCounterMode does not count -------------------------------------


def _tokens(x: torch.Tensor, features: int) -> int:
    """Rows of ``x`` seen as (..., features): samples x positions."""
    return x.numel() // features


def _sdpa_macs(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *_: Any, **__: Any) -> int:
    """``q @ kᵀ`` then ``scores @ v`` for query (..., Lq, D), key (..., Lk, D), value (..., Lk, Dv)."""
    return _tokens(query, query.shape[-1]) * key.shape[-2] * (query.shape[-1] + value.shape[-1])


def _native_mha_macs(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, embed_dim: int, *_: Any, **__: Any
) -> dict[str, int]:
    """Fused ``nn.MultiheadAttention``: q/k/v and output projections plus the two matmuls."""
    q_tokens, kv_tokens = _tokens(query, embed_dim), _tokens(key, embed_dim)
    return {
        "linear": (2 * q_tokens + 2 * kv_tokens) * embed_dim * embed_dim,
        "attention": 2 * q_tokens * key.shape[-2] * embed_dim,
    }


def _encoder_layer_macs(
    src: torch.Tensor,
    embed_dim: int,
    num_heads: int,
    qkv_weight: torch.Tensor,
    qkv_bias: torch.Tensor,
    proj_weight: torch.Tensor,
    proj_bias: torch.Tensor,
    use_gelu: bool,
    norm_first: bool,
    eps: float,
    norm_weight_1: torch.Tensor,
    norm_bias_1: torch.Tensor,
    norm_weight_2: torch.Tensor,
    norm_bias_2: torch.Tensor,
    ffn_weight_1: torch.Tensor,
    ffn_bias_1: torch.Tensor,
    ffn_weight_2: torch.Tensor,
    *_: Any,
    **__: Any,
) -> dict[str, int]:
    """Fused ``nn.TransformerEncoderLayer``: self-attention block plus the feed-forward."""
    tokens = _tokens(src, embed_dim)
    weights = qkv_weight.numel() + proj_weight.numel() + ffn_weight_1.numel() + ffn_weight_2.numel()
    return {"linear": tokens * weights, "attention": 2 * tokens * src.shape[-2] * embed_dim}


def _mkldnn_rnn_layer_macs(
    input: torch.Tensor, weight_ih: torch.Tensor, weight_hh: torch.Tensor, *_: Any, **__: Any
) -> int:
    """One layer and direction of a CPU LSTM: input and hidden projections at every step."""
    return _tokens(input, input.shape[-1]) * (weight_ih.numel() + weight_hh.numel())


def _cudnn_rnn_macs(input: torch.Tensor, weights: list[torch.Tensor], *_: Any, **__: Any) -> int:
    """A whole cuDNN RNN: every weight matrix (all layers, directions, projections) per step."""
    return _tokens(input, input.shape[-1]) * sum(w.numel() for w in weights if w.dim() == 2)


def _quantized_linear_macs(x: torch.Tensor, *_: Any, out: torch.Tensor, **__: Any) -> int:
    """Quantized linear: in_features x out_features per row of ``x``."""
    return x.numel() * out.shape[-1]


def _quantized_conv_macs(x: torch.Tensor, packed_weight: Any, *_: Any, out: torch.Tensor, **__: Any) -> int:
    """Quantized convolution: (Cin/groups) x kernel elements per output element."""
    weight = packed_weight.unpack()[0]
    return out.numel() * math.prod(weight.shape[1:])


_BUILTIN_FORMULAS: tuple[tuple[str, tuple[str, ...], MacFormula, str], ...] = (
    (
        "aten",
        ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_fused_attention_overrideable"),
        _sdpa_macs,
        "attention",
    ),
    ("aten", ("_native_multi_head_attention",), _native_mha_macs, "other"),
    ("aten", ("_transformer_encoder_layer_fwd",), _encoder_layer_macs, "other"),
    ("aten", ("mkldnn_rnn_layer",), _mkldnn_rnn_layer_macs, "recurrent"),
    ("aten", ("_cudnn_rnn",), _cudnn_rnn_macs, "recurrent"),
    (
        "quantized",
        (
            "linear",
            "linear_relu",
            "linear_dynamic",
            "linear_relu_dynamic",
            "linear_dynamic_fp16",
            "linear_relu_dynamic_fp16",
        ),
        _quantized_linear_macs,
        "linear",
    ),
    (
        "quantized",
        ("conv1d", "conv2d", "conv3d", "conv1d_relu", "conv2d_relu", "conv3d_relu"),
        _quantized_conv_macs,
        "conv",
    ),
)
"""(namespace, op names, formula, kind used when the formula returns a number)."""


def _register_builtin_formulas() -> None:
    """Register `_BUILTIN_FORMULAS`, skipping ops this torch build lacks."""
    for namespace, names, formula, kind in _BUILTIN_FORMULAS:
        for name in names:
            op = getattr(getattr(torch.ops, namespace), name, None)
            if op is not None:
                register_mac_formula(op, formula, kind)


_register_builtin_formulas()
