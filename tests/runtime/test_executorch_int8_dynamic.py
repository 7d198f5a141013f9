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
    with pytest.raises(UnsupportedModelError, match=r"int8-dynamic layers \('0' and 1 more.*quantize=\"int8-dynamic\""):
        sk.export(q, tmp_path / f"q{suffix}", example_inputs=(torch.randn(2, 64),))
    assert not (tmp_path / f"q{suffix}").exists()
