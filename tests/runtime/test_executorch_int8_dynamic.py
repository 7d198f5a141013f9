"""``.pte`` with ExecuTorch's dynamic int8 recipe, and slimkit int8-dynamic models refused clearly."""

import pytest
import torch
from torch import nn

import slimkit as sk
from slimkit.core.errors import UnsupportedModelError
from slimkit.measure import sqnr_db
from slimkit.runtime import load
from slimkit.runtime.export import RUNTIME_INT8_MIN_SQNR_DB


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 32)).eval()


@pytest.mark.slow
def test_pte_int8_dynamic(tmp_path):
    model, x = _mlp(), torch.randn(2, 64)
    fp32 = sk.export(model, tmp_path / "f.pte", example_inputs=(x,))
    path = sk.export(model, tmp_path / "d.pte", example_inputs=(x,), quantize="int8-dynamic")  # no data needed
    assert path.stat().st_size < 0.5 * fp32.stat().st_size  # int8 weights
    xs = torch.randn(5, 64)
    with torch.no_grad():
        assert sqnr_db(model(xs), load(path).run(xs)) >= RUNTIME_INT8_MIN_SQNR_DB


@pytest.mark.parametrize("suffix", [".pte", ".tflite", ".pt2"])
def test_slimkit_int8_dynamic_model_is_refused_outside_onnx(tmp_path, suffix):
    q = sk.quantize(_mlp(), "int8-dynamic")
    with pytest.raises(UnsupportedModelError, match=r"int8-dynamic layers.*quantize=\"int8-dynamic\""):
        sk.export(q, tmp_path / f"q{suffix}", example_inputs=(torch.randn(2, 64),))
    assert not (tmp_path / f"q{suffix}").exists()


class _KeywordModel(nn.Module):
    """Takes its inputs by name, as Hugging Face encoders do."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.proj = nn.Embedding(50, 64), nn.Linear(64, 32)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.proj(self.embed(input_ids) * attention_mask.unsqueeze(-1))


@pytest.mark.slow
def test_pte_int8_dynamic_with_keyword_inputs(tmp_path):
    torch.manual_seed(0)
    model = _KeywordModel().eval()
    inputs = {"input_ids": torch.randint(0, 50, (2, 7)), "attention_mask": torch.ones(2, 7, dtype=torch.long)}
    path = sk.export(model, tmp_path / "k.pte", example_inputs=inputs, quantize="int8-dynamic")
    assert path.exists()  # sk.export verified it in ExecuTorch against the float model (>= 15 dB)
