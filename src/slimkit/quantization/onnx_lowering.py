"""slimkit's quantized layers as onnxruntime-native ONNX nodes: quantization's ONNX lowering.

Registered with `slimkit.core.lowering` when this package is imported: while a model is
exported to ONNX, each quantized layer is swapped for a stand-in (`standin`) calling a torch
custom op that `translation_table` turns into ONNX nodes:

- `WeightOnlyLinear` -> ``slimkit::matmul_nbits`` -> ``com.microsoft::MatMulNBits``;
- `WeightOnlyEmbedding` -> ``slimkit::gather_nbits`` -> ``com.microsoft::GatherBlockQuantized``;
- `Int8DynamicLinear` -> ``slimkit::matmul_int8_dynamic`` -> the standard dynamic-quantization
  pattern ``DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul(x_scale * w_scale) -> Add(bias)``
  (what onnxruntime's ``quantize_dynamic`` writes; onnxruntime fuses it into its
  ``DynamicQuantizeMatMul`` kernel), see `int8_dynamic_nodes`.

The initializers are the quantized codes themselves (no float copy of a weight is written).

Weight-only eligibility (what onnxruntime 1.32's CPU kernels accept): a block size must exist,
the largest power of two dividing the layer's group size, capped at ``MAX_BLOCK``; below
``MIN_BLOCK`` the layer is not eligible. 2-, 4- and 8-bit codes are written as they are; 3-, 5-,
6- and 7-bit codes are widened to 8-bit blocks (the same numbers, one byte per weight). A layer
without a block size is exported through its own dequantizing forward, from 8-bit codes
(``Cast``/``Sub``/``Mul`` on a ``uint8`` initializer) because the exporter cannot express the
sub-byte unpacking.

Weight-only layouts written (``N`` rows, ``K`` columns, ``n_blocks = ceil(K / block)``, ``bits``):

- ``B`` / ``data``: ``uint8 [N, n_blocks, block * bits / 8]`` (``[N, n_blocks * block * bits / 8]``
  for ``GatherBlockQuantized``): slimkit's ``qweight`` reshaped when the bits are kept.
- ``scales``: ``float32 [N * n_blocks]`` (``[N, n_blocks]`` for ``GatherBlockQuantized``), each
  group's scale repeated over the blocks it spans.
- ``zero_points``: ``uint8`` codes packed like ``B``, each row padded to whole bytes:
  ``[N * ceil(n_blocks * bits / 8)]`` (``[N, ceil(n_blocks * bits / 8)]``).

Int8-dynamic layout: ``MatMulInteger``'s ``B`` is ``weight_int8`` transposed (``int8 [K, N]``,
zero point 0, so no ``b_zero_point`` input), the per-column weight scale ``float32 [N]``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slimkit.core.lowering import ANY_FORMAT, Lowering, register_lowering
from slimkit.quantization.dynamic import Int8DynamicLinear, onnx_qparams
from slimkit.quantization.modules import PackedWeight, WeightOnlyEmbedding, WeightOnlyLinear
from slimkit.quantization.onnx_rewrites import rewrite_int8_dynamic
from slimkit.quantization.packing import pack, unpack

NBITS = (2, 4, 8)
"""Bit widths of ``MatMulNBits`` / ``GatherBlockQuantized`` on onnxruntime 1.32's CPU kernels."""
MIN_BLOCK, MAX_BLOCK = 16, 256
"""Block sizes onnxruntime accepts (powers of two from 16); 256 is MLAS' largest optimized block."""
MSFT_DOMAIN = "com.microsoft"
FLOAT, UINT8, DOUBLE = 1, 2, 11
"""``onnx.TensorProto`` element types (``Cast``'s ``to``)."""
TINY = torch.finfo(torch.float32).tiny
"""Floor of a per-token row max (as `Int8DynamicLinear`'s) and of a 7-bit activation scale."""
UINT8_MAX, REDUCED_MAX = 255, 127
"""Largest activation code: 8 bits, or 7 with fbgemm's ``reduce_range``."""
MIN_SCALE = float(np.float32(6.1e-5))
"""fbgemm's floor of an activation scale (``SMALL_SCALE_THRESHOLD``, a float32 constant)."""


def block_size(group_size: int, cols: int) -> int | None:
    """The onnxruntime block size for ``cols`` columns in groups of ``group_size``: the largest
    power of two dividing ``group_size`` (at most ``MAX_BLOCK`` and no wider than ``cols`` needs);
    None when it is below ``MIN_BLOCK``."""
    block = min(group_size & -group_size, MAX_BLOCK, max(MIN_BLOCK, 1 << (cols - 1).bit_length()))
    return block if block >= MIN_BLOCK else None


def export_bits(bits: int) -> int:
    """The bit width the contrib op stores ``bits``-bit codes with (8 for widths it lacks)."""
    return bits if bits in NBITS else 8


def nbits_tensors(packed: PackedWeight, bits: int, block: int) -> tuple[Tensor, Tensor, Tensor]:
    """``packed`` in the contrib ops' layout: codes ``[N, n_blocks, block*bits/8]``, scales
    ``[N, n_blocks]`` and packed zero points ``[N, ceil(n_blocks*bits/8)]``."""
    n_blocks = -(-packed.cols // block)
    repeat = packed.group_size // block
    if bits == packed.bits:  # the storage is already the bit stream of rows padded to whole groups
        stream = packed.qweight[:, : n_blocks * block * bits // 8]
    else:
        stream = pack(F.pad(packed.codes(), (0, n_blocks * block - packed.cols)), bits)
    scales = packed.scales.repeat_interleave(repeat, dim=1)[:, :n_blocks]
    zeros = packed.zero_points.repeat_interleave(repeat, dim=1)[:, :n_blocks]
    return stream.reshape(packed.rows, n_blocks, -1).contiguous(), scales.contiguous(), pack(zeros, bits)


def dequantize_blocks(codes: Tensor, scales: Tensor, zero_points: Tensor, bits: int, block: int) -> Tensor:
    """The float ``[N, n_blocks * block]`` weight of `nbits_tensors`' layout (any of its shapes)."""
    rows = codes.shape[0]
    n_blocks = scales.numel() // rows
    values = unpack(codes.reshape(rows, -1), bits, n_blocks * block).reshape(rows, n_blocks, block)
    zeros = unpack(zero_points.reshape(rows, -1), bits, n_blocks)
    weight = (values.float() - zeros.float().unsqueeze(-1)) * scales.reshape(rows, n_blocks, 1).float()
    return weight.reshape(rows, -1).to(scales.dtype)


# ----------------------------------------------------------------------------- torch custom ops


@torch.library.custom_op("slimkit::matmul_nbits", mutates_args=())
def matmul_nbits(
    x: Tensor, codes: Tensor, scales: Tensor, zero_points: Tensor, bias: Tensor | None, bits: int, block: int, k: int
) -> Tensor:
    """``x @ W.T + bias`` with ``W`` in ``MatMulNBits``' layout (exported as that node)."""
    weight = dequantize_blocks(codes, scales, zero_points, bits, block)[:, :k]
    return F.linear(x, weight.to(x.dtype), None if bias is None else bias.to(x.dtype))


@matmul_nbits.register_fake
def _(x: Tensor, codes: Tensor, scales: Tensor, zero_points: Tensor, bias: Tensor | None, *_: int) -> Tensor:
    return x.new_empty((*x.shape[:-1], codes.shape[0]))


@torch.library.custom_op("slimkit::gather_nbits", mutates_args=())
def gather_nbits(codes: Tensor, ids: Tensor, scales: Tensor, zero_points: Tensor, bits: int, block: int) -> Tensor:
    """Rows ``ids`` of the table in ``GatherBlockQuantized``' layout, block-padded columns included."""
    return dequantize_blocks(codes, scales, zero_points, bits, block)[ids]


@gather_nbits.register_fake
def _(codes: Tensor, ids: Tensor, scales: Tensor, zero_points: Tensor, bits: int, block: int) -> Tensor:
    return scales.new_empty((*ids.shape, codes.shape[1] * 8 // bits))


def quantize_uint8(x: Tensor, qmax: int) -> tuple[Tensor, Tensor, Tensor]:
    """``x`` quantized per tensor to ``[0, qmax]`` as fbgemm does: range widened to include 0,
    ``scale = (hi - lo) / qmax`` and ``zero_point = round(-lo / scale)`` computed in double
    (the scale then floored at ``MIN_SCALE`` and rounded to float), codes ``round(x / scale) +
    zero_point`` (half to even, as ``QuantizeLinear``; fbgemm rounds after adding the zero point,
    which differs in rare near-ties) saturated to uint8. Returns (codes as floats, scale, zero point).

    ``DynamicQuantizeLinear`` (8 bits) computes the same in float without the floor: its scale
    differs from fbgemm's in the last bit for some tensors, which moves a few codes by one."""
    lo, hi = x.min().clamp_max(0).double(), x.max().clamp_min(0).double()
    scale = (hi - lo) / qmax
    zero_point = torch.round(-lo / scale.clamp_min(TINY)).float()
    x_scale = scale.clamp_min(MIN_SCALE).float()
    return torch.clamp(torch.round(x / x_scale) + zero_point, 0, UINT8_MAX), x_scale, zero_point


def row_max(x: Tensor) -> Tensor:
    """Each row's max ``|x|`` (at least ``TINY``), kept as a ``[..., 1]`` column."""
    return x.abs().amax(-1, keepdim=True).clamp_min(TINY)


@torch.library.custom_op("slimkit::matmul_int8_dynamic", mutates_args=())
def matmul_int8_dynamic(
    x: Tensor, weight_t: Tensor, scale: Tensor, bias: Tensor | None, per_token: bool, reduce_range: bool
) -> Tensor:
    """``x @ W.T + bias`` with ``W = weight_t.T * scale[:, None]`` (``weight_t``: int8 ``[in, out]``)
    and ``x`` quantized on the fly (7 bits: `quantize_uint8`; 8 bits: `onnx_qparams`):
    `Int8DynamicLinear`'s numbers, which `int8_dynamic_nodes`' ONNX graph reproduces."""
    rows = row_max(x) if per_token else None
    x = x if rows is None else x / rows
    if reduce_range:
        codes, x_scale, x_zero = quantize_uint8(x, REDUCED_MAX)
    else:
        x_scale, x_zero = onnx_qparams(x)
        codes = torch.clamp(torch.round(x / x_scale) + x_zero, 0, UINT8_MAX)
    acc = ((codes - x_zero).double() @ weight_t.double()).float()  # exact, as int32 accumulation
    y = acc * (x_scale * scale)
    y = y if rows is None else y * rows
    return y if bias is None else y + bias


@matmul_int8_dynamic.register_fake
def _(x: Tensor, weight_t: Tensor, scale: Tensor, bias: Tensor | None, *_: bool) -> Tensor:
    return x.new_empty((*x.shape[:-1], weight_t.shape[1]))


# ----------------------------------------------------------------------------- stand-in modules


class NBitsLinear(nn.Module):
    """Export stand-in of a `WeightOnlyLinear`: one ``slimkit::matmul_nbits`` call."""

    def __init__(self, layer: WeightOnlyLinear, bits: int, block: int) -> None:
        super().__init__()
        codes, scales, zeros = nbits_tensors(layer.packed, bits, block)
        self.register_buffer("qweight", codes)
        self.register_buffer("scales", scales.reshape(-1))
        self.register_buffer("zero_points", zeros.reshape(-1))
        self.bias = layer.bias
        self.bits, self.block, self.in_features = bits, block, layer.in_features

    def forward(self, x: Tensor) -> Tensor:
        args = (self.bits, self.block, self.in_features)
        return matmul_nbits(x, self.qweight, self.scales, self.zero_points, self.bias, *args)


class NBitsEmbedding(nn.Module):
    """Export stand-in of a `WeightOnlyEmbedding`: one ``slimkit::gather_nbits`` call (then a
    slice when the table's columns were padded to whole blocks)."""

    def __init__(self, layer: WeightOnlyEmbedding, bits: int, block: int) -> None:
        super().__init__()
        codes, scales, zeros = nbits_tensors(layer.packed, bits, block)
        self.register_buffer("qweight", codes.reshape(codes.shape[0], -1))
        self.register_buffer("scales", scales)
        self.register_buffer("zero_points", zeros)
        self.bits, self.block, self.embedding_dim = bits, block, layer.embedding_dim

    def forward(self, ids: Tensor) -> Tensor:
        rows = gather_nbits(self.qweight, ids, self.scales, self.zero_points, self.bits, self.block)
        return rows if rows.shape[-1] == self.embedding_dim else rows[..., : self.embedding_dim]


class Int8DynamicMatMul(nn.Module):
    """Export stand-in of an `Int8DynamicLinear`: one ``slimkit::matmul_int8_dynamic`` call."""

    def __init__(self, layer: Int8DynamicLinear) -> None:
        super().__init__()
        self.register_buffer("weight_t", layer.weight_int8.t().contiguous())
        self.register_buffer("weight_scale", layer.weight_scale.float())
        self.bias = layer.bias
        self.per_token, self.reduce_range = layer.per_token, layer.act_reduce_range

    def forward(self, x: Tensor) -> Tensor:
        args = (self.per_token, self.reduce_range)
        return matmul_int8_dynamic(x.float(), self.weight_t, self.weight_scale, self.bias, *args).to(x.dtype)


def with_8bit_codes(layer: WeightOnlyLinear | WeightOnlyEmbedding) -> nn.Module:
    """A copy of ``layer`` storing its codes one per byte (same numbers; traceable by the exporter)."""
    packed = layer.packed
    wide = PackedWeight(packed.rows, packed.cols, 8, packed.group_size).to(packed.scales.device)
    wide.set_codes(packed.codes(), packed.scales, packed.zero_points)
    new = copy.deepcopy(layer)
    new.packed = wide
    return new


QUANTIZED_LAYERS = (WeightOnlyLinear, WeightOnlyEmbedding, Int8DynamicLinear)
"""The layers the ONNX exporter swaps for their stand-ins."""


def standin(layer: WeightOnlyLinear | WeightOnlyEmbedding | Int8DynamicLinear) -> nn.Module | None:
    """The module to export in place of a quantized ``layer`` (None: export it as it is)."""
    if isinstance(layer, Int8DynamicLinear):
        return Int8DynamicMatMul(layer)
    packed = layer.packed
    block = block_size(packed.group_size, packed.cols)
    if block is None:
        return None if packed.bits == 8 else with_8bit_codes(layer)
    if isinstance(layer, WeightOnlyLinear):
        return NBitsLinear(layer, export_bits(packed.bits), block)
    return NBitsEmbedding(layer, export_bits(packed.bits), block)


# ----------------------------------------------------------------------------- ONNX translation


def _schema(
    name: str, inputs: list[tuple[str, str, bool]], output: str, attributes: list[str], types: dict[str, list[str]]
) -> Any:
    """An ``onnx.defs.OpSchema`` for a ``com.microsoft`` op (inputs: name, type, optional; the
    output's type; int attributes; type constraints)."""
    from onnx.defs import OpSchema

    optional, single = OpSchema.FormalParameterOption.Optional, OpSchema.FormalParameterOption.Single
    return OpSchema(
        name,
        MSFT_DOMAIN,
        1,
        inputs=[OpSchema.FormalParameter(n, t, param_option=optional if opt else single) for n, t, opt in inputs],
        outputs=[OpSchema.FormalParameter("Y", output)],
        type_constraints=[(t, allowed, "") for t, allowed in types.items()],
        attributes=[OpSchema.Attribute(a, OpSchema.AttrType.INT, "", required=False) for a in attributes],
    )


_FLOATS = ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"]


def _ops() -> tuple[Any, Any]:
    """onnxscript ops for ``MatMulNBits`` and ``GatherBlockQuantized`` (onnx has no schema for them)."""
    from onnxscript.values import Op, Opset

    opset = Opset(MSFT_DOMAIN, 1)
    matmul = _schema(
        "MatMulNBits",
        [("A", "T1", False), ("B", "T2", False), ("scales", "T1", False)]
        + [("zero_points", "T3", True), ("g_idx", "T4", True), ("bias", "T1", True)],
        "T1",
        ["K", "N", "bits", "block_size", "accuracy_level"],
        {"T1": _FLOATS, "T2": ["tensor(uint8)"], "T3": ["tensor(uint8)", *_FLOATS], "T4": ["tensor(int32)"]},
    )
    gather = _schema(
        "GatherBlockQuantized",
        [("data", "T1", False), ("indices", "Tind", False), ("scales", "T2", False), ("zero_points", "T1", True)],
        "T2",
        ["bits", "block_size", "gather_axis", "quantize_axis"],
        {"T1": ["tensor(uint8)"], "Tind": ["tensor(int32)", "tensor(int64)"], "T2": _FLOATS},
    )
    return Op(opset, "MatMulNBits", matmul), Op(opset, "GatherBlockQuantized", gather)


def _quantize_7bit(op: Any, x: Any) -> tuple[Any, Any, Any]:
    """``x`` as uint8 codes in ``[0, 127]`` (fbgemm's ``reduce_range``, which ``DynamicQuantizeLinear``
    cannot express): `quantize_uint8`'s parameters spelled out, then ``QuantizeLinear``."""
    zero = op.Constant(value_float=0.0)
    lo = op.Cast(op.Min(op.ReduceMin(x, keepdims=0), zero), to=DOUBLE)
    hi = op.Cast(op.Max(op.ReduceMax(x, keepdims=0), zero), to=DOUBLE)
    scale = op.Div(op.Sub(hi, lo), op.Constant(value=_double(REDUCED_MAX)))
    x_zero = op.Cast(op.Round(op.Div(op.Neg(lo), op.Max(scale, op.Constant(value=_double(TINY))))), to=UINT8)
    x_scale = op.Cast(op.Max(scale, op.Constant(value=_double(MIN_SCALE))), to=FLOAT)
    return op.QuantizeLinear(x, x_scale, x_zero), x_scale, x_zero


def _double(value: float) -> Any:
    """A float64 scalar ``TensorProto``."""
    from onnx import helper

    return helper.make_tensor("value", DOUBLE, [], [value])


def int8_dynamic_nodes(x: Any, weight_t: Any, scale: Any, bias: Any, per_token: bool, reduce_range: bool) -> Any:
    """ONNX nodes of ``slimkit::matmul_int8_dynamic``: ``x' = x / row_max`` (``per_token``), then
    ``DynamicQuantizeLinear(x') -> MatMulInteger(., weight_t) -> Cast -> Mul(x_scale * scale)
    [-> Mul(row_max)] -> Add(bias)``, the products in the order onnxruntime fuses into its
    ``DynamicQuantizeMatMul`` kernel. ``reduce_range`` layers quantize ``x'`` with `_quantize_7bit`
    instead (fused into ``MatMulIntegerToFloat`` only)."""
    from onnxscript import opset18 as op

    if per_token:
        abs_max = op.ReduceMax(op.Abs(x), op.Constant(value_ints=[-1]), keepdims=1)
        rows = op.Max(abs_max, op.Constant(value_float=TINY))
        x = op.Div(x, rows)
    codes, x_scale, x_zero = _quantize_7bit(op, x) if reduce_range else op.DynamicQuantizeLinear(x)
    y = op.Mul(op.Cast(op.MatMulInteger(codes, weight_t, x_zero), to=FLOAT), op.Mul(x_scale, scale))
    y = op.Mul(y, rows) if per_token else y
    return y if bias is None else op.Add(y, bias)


def translation_table(accuracy_level: int = 0) -> dict[Any, Callable[..., Any]]:
    """``custom_translation_table`` for ``torch.onnx.export(dynamo=True)``: slimkit's custom ops
    as ``com.microsoft`` / standard ONNX nodes.

    Args:
        accuracy_level: ``MatMulNBits``' ``accuracy_level``: 0 computes in float (exact), 4
            quantizes the activations to int8 per block (faster, less exact).
    """
    matmul_op, gather_op = _ops()

    def matmul(x: Any, codes: Any, scales: Any, zeros: Any, bias: Any, bits: int, block: int, k: int) -> Any:
        attrs = {"K": k, "N": codes.shape[0], "bits": bits, "block_size": block, "accuracy_level": accuracy_level}
        return matmul_op(x, codes, scales, zeros, None, bias, **attrs)

    def gather(codes: Any, ids: Any, scales: Any, zeros: Any, bits: int, block: int) -> Any:
        return gather_op(codes, ids, scales, zeros, bits=bits, block_size=block, gather_axis=0, quantize_axis=1)

    return {
        torch.ops.slimkit.matmul_nbits.default: matmul,
        torch.ops.slimkit.gather_nbits.default: gather,
        torch.ops.slimkit.matmul_int8_dynamic.default: int8_dynamic_nodes,
    }


register_lowering(
    "onnx",
    Lowering(QUANTIZED_LAYERS, standin=standin, translations=translation_table, rewrite=rewrite_int8_dynamic),
)
register_lowering(
    ANY_FORMAT,  # what the ONNX stand-in does not replace reaches torch.export as fbgemm's kernel
    Lowering(
        (Int8DynamicLinear,),
        refusal="slimkit's int8-dynamic layers ({layers}: fbgemm's quantized::linear_dynamic): export the float "
        'model with quantize="int8-dynamic" (or "int8") instead, or export this model to .onnx',
    ),
)
