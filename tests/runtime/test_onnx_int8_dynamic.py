"""slimkit int8-dynamic layers exported as DynamicQuantizeLinear + MatMulInteger (onnxruntime's pattern)."""

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from torch import nn

import slimkit as sk
from slimkit.core.device import int8_saturates
from slimkit.measure import sqnr_db
from slimkit.models.testing import ZOO
from slimkit.quantization.dynamic import Int8DynamicLinear
from slimkit.quantization.onnx_lowering import Int8DynamicMatMul
from slimkit.runtime import load

MIN_SQNR_DB = 35.0
REDUCE_RANGE_MIN_SQNR_DB = 60.0
"""The 7-bit emulation matches fbgemm to float rounding (8-bit codes would measure ~35 dB)."""
EIGHT_BIT_SATURATES = pytest.mark.skipif(
    int8_saturates(),
    reason="x86 CPU without VNNI: 8-bit activations saturate fbgemm's 16-bit adds, so the PyTorch "
    "reference is itself wrong here (slimkit picks 7 bits on such machines: reduce_range=None)",
)


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 96), nn.ReLU(), nn.Linear(96, 32)).eval()


def _export(q: nn.Module, tmp_path, x: torch.Tensor, min_sqnr_db: float = MIN_SQNR_DB) -> onnx.ModelProto:
    """Export (verified against slimkit's model), check a fresh batch in onnxruntime."""
    path = sk.export(q, tmp_path / "q.onnx", example_inputs=(x[:2],), min_sqnr_db=min_sqnr_db)
    with torch.no_grad():
        assert sqnr_db(q(x), load(path).run(x)) >= min_sqnr_db
    return onnx.load(path)


def _ops(proto: onnx.ModelProto) -> Counter:
    return Counter(n.op_type for n in proto.graph.node)


def _optimized_ops(proto: onnx.ModelProto, tmp_path) -> Counter:
    """Op counts of the graph onnxruntime runs (after its fusions)."""
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return _ops(onnx.load(options.optimized_model_filepath))


@EIGHT_BIT_SATURATES
@pytest.mark.parametrize("per_token", [True, False])
def test_mlp_exports_the_dynamic_quantization_pattern(tmp_path, per_token):
    q = sk.quantize(_mlp(), "int8-dynamic", per_token=per_token, reduce_range=False)
    proto = _export(q, tmp_path, 4 * torch.randn(5, 64))
    ops = _ops(proto)
    assert ops["DynamicQuantizeLinear"] == ops["MatMulInteger"] == 2 and not ops["Gemm"] and not ops["MatMul"]
    assert (ops["Abs"], ops["ReduceMax"]) == ((2, 2) if per_token else (0, 0))
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    matmul = next(n for n in proto.graph.node if n.op_type == "MatMulInteger")
    weight = inits[matmul.input[1]]
    assert weight.dtype == np.int8 and np.array_equal(weight, q[0].weight_int8.numpy().T)  # [in, out], no copy
    assert max(a.size for a in inits.values() if a.dtype == np.float32) == 96  # scales and biases only
    fused = _optimized_ops(proto, tmp_path)
    assert fused["DynamicQuantizeMatMul"] == 2 and not fused["MatMulInteger"]  # onnxruntime's fused kernel


@pytest.mark.slow
@pytest.mark.parametrize("per_token", [True, False])
def test_reduce_range_is_written_as_7_bit_quantization(tmp_path, per_token):
    q = sk.quantize(_mlp(), "int8-dynamic", reduce_range=True, per_token=per_token)
    ops = _ops(_export(q, tmp_path, 4 * torch.randn(5, 64), REDUCE_RANGE_MIN_SQNR_DB))
    assert ops["QuantizeLinear"] == ops["MatMulInteger"] == 2 and not ops["DynamicQuantizeLinear"]


def test_attention_block_parity(tmp_path):
    model = ZOO["attention"]()
    q = sk.quantize(model, "int8-dynamic")
    x = model.example_inputs()[0].repeat(3, 1, 1)
    proto = _export(q, tmp_path, x + 0.1 * torch.randn(x.shape))
    linears = sum(isinstance(m, Int8DynamicLinear) for m in q.modules())
    ops = _ops(proto)
    assert ops["MatMulInteger"] == linears - 2 and ops["Split"] == 1 and not ops["Gemm"]  # query/key/value: one


@pytest.mark.parametrize(
    ("per_token", "reduce_range"),
    [
        pytest.param(True, False, marks=EIGHT_BIT_SATURATES),
        pytest.param(False, False, marks=EIGHT_BIT_SATURATES),
        (True, True),
        (False, True),
    ],
)
def test_standin_computes_what_the_layer_computes(per_token, reduce_range):
    torch.manual_seed(0)
    layer = Int8DynamicLinear.from_float(nn.Linear(48, 20), reduce_range, per_token=per_token)
    x = torch.randn(3, 7, 48) * torch.logspace(-2, 1, 7)[:, None]  # rows of very different scales
    with torch.no_grad():
        assert sqnr_db(layer(x), Int8DynamicMatMul(layer)(x)) >= 60.0  # a code off by one in a near-tie at most
        assert torch.equal(Int8DynamicMatMul(layer)(torch.zeros(2, 48)), layer.bias.expand(2, -1))


PAIR_BOUNDED_MIN_SQNR_DB = 60.0
"""8-bit activations use DynamicQuantizeLinear's own parameters in PyTorch too: the same codes
(one off by one in a float near-tie at most), so the artifact matches to float rounding."""


SMOOTHED = {"method": "smoothquant", "alpha": 0.8, "act_granularity": "tensor", "pair_bounded": True}
"""A smoothquant layer with the pair-bounded, per-tensor options of the rest."""


def _pair_bounded_attention(**overrides) -> tuple[nn.Module, nn.Module, torch.Tensor]:
    model = ZOO["attention"]()
    x = model.example_inputs()[0]
    data = [x + 0.1 * torch.randn(x.shape) for _ in range(3)]
    options = {"act_granularity": "tensor", "pair_bounded": True, "overrides": overrides}
    return (
        model,
        sk.quantize(model, "int8-dynamic", data=data, **options),
        x.repeat(2, 1, 1) + 0.1 * torch.randn(4, *x.shape[1:]),
    )


def test_pair_bounded_exports_one_matmul_for_layers_sharing_an_input(tmp_path):
    _, q, x = _pair_bounded_attention()
    proto = _export(q, tmp_path, x, PAIR_BOUNDED_MIN_SQNR_DB)
    linears = sum(isinstance(m, Int8DynamicLinear) for m in q.modules())
    ops = _ops(proto)
    assert ops["MatMulInteger"] == linears - 2 and ops["Split"] == 1  # query, key and value: one matmul
    assert not ops["QuantizeLinear"] and not ops["Abs"]  # 8-bit, per tensor: nothing spelled out
    fused = _optimized_ops(proto, tmp_path)
    assert not fused["MatMulInteger"] and fused["DynamicQuantizeMatMul"] + fused["MatMulIntegerToFloat"] == linears - 2


def test_smoothing_after_gelu_folds_into_its_constant(tmp_path):
    _, q, x = _pair_bounded_attention(**{"ffn.2": SMOOTHED})
    assert q.ffn[2].inv_scale is not None
    proto = _export(q, tmp_path, x, PAIR_BOUNDED_MIN_SQNR_DB)
    assert not [n for n in proto.graph.node if any(i.endswith("inv_scale") for i in n.input)]  # no Mul of its own
    assert [i.name for i in proto.graph.initializer if "inv_scale_folded" in i.name]


def test_smoothing_without_a_foldable_producer_keeps_its_mul(tmp_path):
    _, q, x = _pair_bounded_attention(**{"ffn.0": SMOOTHED})  # reads a LayerNorm output
    proto = _export(q, tmp_path, x, PAIR_BOUNDED_MIN_SQNR_DB)
    assert [n.op_type for n in proto.graph.node if any(i.endswith("ffn.0.inv_scale") for i in n.input)] == ["Mul"]
