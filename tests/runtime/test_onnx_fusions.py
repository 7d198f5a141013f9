"""Exported graphs in the forms onnxruntime fuses: GELU as one kernel."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import slimkit as sk
from slimkit.runtime import load
from slimkit.runtime.onnx_fusions import fusable_gelu


def _exporters_gelu(extra_reader: bool = False) -> onnx.ModelProto:
    """``x * (0.5 * (1 + erf(x / sqrt 2)))`` as the exporter writes it; with ``extra_reader``
    the ``x / sqrt 2`` value is also a graph output."""
    constants = {"sqrt2": np.float32(2**0.5), "one": np.float32(1.0), "half": np.float32(0.5)}
    nodes = [
        helper.make_node("Div", ["x", "sqrt2"], ["d"]),
        helper.make_node("Erf", ["d"], ["e"]),
        helper.make_node("Add", ["e", "one"], ["a"]),
        helper.make_node("Mul", ["half", "a"], ["m"]),
        helper.make_node("Mul", ["x", "m"], ["y"]),
    ]
    outputs = ["y", "d"] if extra_reader else ["y"]
    graph = helper.make_graph(
        nodes,
        "gelu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 16])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, ["b", 16]) for o in outputs],
        [numpy_helper.from_array(np.array(v), k) for k, v in constants.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _run_unoptimized(proto: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


def test_reordered_gelu_computes_the_same_and_fuses(fused_ops):
    proto = _exporters_gelu()
    x = np.linspace(-6, 6, 64, dtype=np.float32).reshape(4, 16)
    before = _run_unoptimized(proto, x)[0]
    assert fused_ops(proto)["Erf"] == 1  # onnxruntime does not fuse the exporter's order
    assert fusable_gelu(proto) == 1
    onnx.checker.check_model(proto)
    np.testing.assert_allclose(_run_unoptimized(proto, x)[0], before, rtol=1e-6, atol=1e-7)
    exact = torch.nn.functional.gelu(torch.from_numpy(x).double()).numpy()
    np.testing.assert_allclose(_run_unoptimized(proto, x)[0], exact, rtol=1e-5, atol=1e-6)
    fused = fused_ops(proto)
    assert fused["Gelu"] == 1 and not fused["Erf"]
    assert fusable_gelu(proto) == 0  # already in onnxruntime's order


def test_gelu_whose_parts_are_read_elsewhere_is_left_alone():
    proto = _exporters_gelu(extra_reader=True)
    nodes = [list(n.input) for n in proto.graph.node]
    assert fusable_gelu(proto) == 0
    assert [list(n.input) for n in proto.graph.node] == nodes


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_exported_gelu_runs_as_one_kernel(tmp_path, fused_ops, approximate):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.GELU(approximate=approximate), nn.Linear(32, 4)).eval()
    x = torch.randn(5, 16) * 3
    path = sk.export(model, tmp_path / "m.onnx", example_inputs=(x[:2],))
    with torch.no_grad():
        np.testing.assert_allclose(load(path).run(x), model(x).numpy(), rtol=1e-4, atol=1e-5)
    fused = fused_ops(onnx.load(path))
    assert fused["Gelu"] == (approximate == "none") and not fused["Erf"]  # the tanh form is not the exact GELU


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), rows=st.integers(1, 6), spread=st.floats(1e-3, 50.0))
def test_reordered_gelu_keeps_its_values(seed, rows, spread):
    proto = _exporters_gelu()
    x = np.random.default_rng(seed).normal(size=(rows, 16)).astype(np.float32) * np.float32(spread)
    before = _run_unoptimized(proto, x)[0]
    fusable_gelu(proto)
    np.testing.assert_allclose(_run_unoptimized(proto, x)[0], before, rtol=1e-6, atol=1e-7)
