import json

import pytest
import torch

import slimkit as sk
from slimkit.cli import main


def run_cli(capsys, *args):
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


@pytest.mark.slow
def test_quantize_example_int8_static_json(capsys, tmp_path):
    code, out, _ = run_cli(
        capsys, "quantize", "example:digits-cnn", "--method", "int8-static", "--observer", "minmax",
        "--out", str(tmp_path / "q"), "--json", "--quiet",
    )  # fmt: skip
    assert code in (0, None)
    result = json.loads(out)
    assert result["ratios"]["size"] <= 0.28
    assert result["metric_deltas"]["accuracy"] >= -0.003
    assert len(result["details"]["layers"]) == 13
    loaded = sk.load(tmp_path / "q")
    assert sum(isinstance(m, sk.quantization.QDQLayer) for m in loaded.modules()) == 13


def test_quantize_factory_model_weight_only_table(capsys, tmp_path):
    code, out, _ = run_cli(
        capsys, "quantize", "slimkit.models.testing:EmbeddingMLP", "--method", "weight-only",
        "--bits", "4", "--group-size", "8", "--out", str(tmp_path / "q"), "--quiet",
    )  # fmt: skip
    assert code in (0, None)
    assert "size" in out and "3 layer(s) quantized" in out
    model = sk.load(tmp_path / "q")
    x = model.example_inputs()[0]
    assert torch.isfinite(model(x)).all()


def test_quantize_bad_bits_is_one_line_error(capsys, tmp_path):
    code, out, err = run_cli(
        capsys, "quantize", "slimkit.models.testing:EmbeddingMLP", "--method", "weight-only",
        "--bits", "12", "--out", str(tmp_path / "q"), "--quiet",
    )  # fmt: skip
    assert code == 2
    assert "bits" in err and "Traceback" not in err
    assert not (tmp_path / "q").exists()
