"""slimkit int8-dynamic layers exported as DynamicQuantizeLinear + MatMulInteger (onnxruntime's pattern)."""

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
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


@EIGHT_BIT_SATURATES
@pytest.mark.parametrize("per_token", [True, False])
def test_mlp_exports_the_dynamic_quantization_pattern(tmp_path, fused_ops, per_token):
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
    fused = fused_ops(proto)
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


def test_pair_bounded_exports_one_matmul_for_layers_sharing_an_input(tmp_path, fused_ops):
    _, q, x = _pair_bounded_attention()
    proto = _export(q, tmp_path, x, PAIR_BOUNDED_MIN_SQNR_DB)
    linears = sum(isinstance(m, Int8DynamicLinear) for m in q.modules())
    ops = _ops(proto)
    assert ops["MatMulInteger"] == linears - 2 and ops["Split"] == 1  # query, key and value: one matmul
    assert not ops["QuantizeLinear"] and not ops["Abs"]  # 8-bit, per tensor: nothing spelled out
    fused = fused_ops(proto)
    assert not fused["MatMulInteger"] and fused["DynamicQuantizeMatMul"] + fused["MatMulIntegerToFloat"] == linears - 2


def test_smoothing_after_gelu_keeps_gelu_one_kernel(tmp_path, fused_ops):
    _, q, x = _pair_bounded_attention(**{"ffn.2": SMOOTHED})
    assert q.ffn[2].inv_scale is not None
    proto = _export(q, tmp_path, x, PAIR_BOUNDED_MIN_SQNR_DB)
    assert [n.op_type for n in proto.graph.node if any(i.endswith("ffn.2.inv_scale") for i in n.input)] == ["Mul"]
    fused = fused_ops(proto)
    assert fused["Gelu"] == 1 and not fused["Erf"]  # the scale after GELU leaves its fusion alone


def test_smoothing_after_a_layernorm_folds_into_a_second_one(tmp_path, fused_ops):
    _, q, x = _pair_bounded_attention(**{"ffn.0": SMOOTHED})  # reads norm1, which the residual reads too
    proto = _export(q, tmp_path, x, PAIR_BOUNDED_MIN_SQNR_DB)
    assert not [n for n in proto.graph.node if any(i.endswith("ffn.0.inv_scale") for i in n.input)]
    norms = [n for n in proto.graph.node if n.op_type == "LayerNormalization"]
    assert len(norms) == 3 and len({n.input[0] for n in norms}) == 2  # norm1 twice: residual and ffn.0
    scaled = next(n for n in norms if n.input[1].endswith("_scaled_scale"))
    gamma = numpy_helper.to_array(next(i for i in proto.graph.initializer if i.name == scaled.input[1]))
    expected = (q.norm1.weight * q.ffn[0].inv_scale).detach().numpy()
    np.testing.assert_allclose(gamma, expected, rtol=1e-6)
    fused = fused_ops(proto)
    assert fused["SkipLayerNormalization"] == 1  # norm2's; norm1's Add now has two readers


def _layernorm_graph(scaled: int, residual: bool, seed: int = 0) -> onnx.ModelProto:
    """``y = LayerNorm(x)`` read by ``scaled`` ``Mul(y, c_i)`` (random vectors) and, with
    ``residual``, by ``Add(y, x)``; every reader's result is a graph output."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng([scaled, seed])
    arrays = {"gamma": rng.normal(size=8), "beta": rng.normal(size=8)}
    nodes = [helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["y"], axis=-1, epsilon=1e-5)]
    outputs = []
    for i in range(scaled):
        arrays[f"c{i}"] = rng.uniform(0.1, 4.0, size=8)
        nodes.append(helper.make_node("Mul", ["y", f"c{i}"], [f"out{i}"]))
        outputs.append(f"out{i}")
    if residual:
        nodes.append(helper.make_node("Add", ["y", "x"], ["res"]))
        outputs.append("res")
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 5, 8])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, ["b", 5, 8]) for o in outputs],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in arrays.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _run(proto: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})


def _folded_matches(proto: onnx.ModelProto, x: np.ndarray) -> Counter:
    """Fold ``proto``'s LayerNorm scales; check the graph and that every output keeps its value
    (1e-5); the op counts after the fold."""
    from slimkit.quantization.onnx_rewrites import fold_scales_into_layernorms

    before = _run(proto, x)
    fold_scales_into_layernorms(proto)
    onnx.checker.check_model(proto)
    for a, b in zip(_run(proto, x), before, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    return _ops(proto)


@pytest.mark.parametrize(
    ("scaled", "residual", "norms", "muls"),
    [(1, False, 1, 0), (1, True, 2, 0), (2, False, 2, 0), (2, True, 1, 2), (3, False, 1, 3)],
)
def test_layernorm_scale_fold_writes_at_most_two_normalizations(scaled, residual, norms, muls):
    x = np.random.default_rng(0).normal(size=(3, 5, 8)).astype(np.float32) * 3
    ops = _folded_matches(_layernorm_graph(scaled, residual), x)
    assert (ops["LayerNormalization"], ops["Mul"]) == (norms, muls)


@settings(max_examples=25, deadline=None)
@given(
    scaled=st.integers(1, 3),
    residual=st.booleans(),
    seed=st.integers(0, 2**16),
    batch=st.integers(1, 4),
    spread=st.floats(1e-3, 1e3),
)
def test_layernorm_scale_fold_keeps_every_output(scaled, residual, seed, batch, spread):
    x = np.random.default_rng(seed).normal(size=(batch, 5, 8)).astype(np.float32) * np.float32(spread)
    ops = _folded_matches(_layernorm_graph(scaled, residual, seed), x)
    folded = scaled + residual <= 2  # otherwise the Muls stay beside the one LayerNorm
    assert (ops["LayerNormalization"], ops["Mul"]) == ((scaled + residual, 0) if folded else (1, scaled))
