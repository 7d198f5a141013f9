from collections import Counter

import onnx
import pytest
import torch
from torch import nn


class SvdHead(nn.Module):
    """A layer whose op (singular values) no deployment format can express."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return torch.linalg.svdvals(self.fc(x))


class NeedsSvd(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = SvdHead()

    def forward(self, x):
        return self.body(x)

    def example_inputs(self):
        return (torch.randn(2, 4, 4),)


@pytest.fixture
def svd_model():
    return NeedsSvd().eval()


@pytest.fixture
def fused_ops(tmp_path):
    """``fused_ops(proto)``: the op counts of the graph onnxruntime runs (after its CPU fusions)."""

    def count(proto: onnx.ModelProto) -> Counter:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
        options.log_severity_level = 3
        ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)

    return count
