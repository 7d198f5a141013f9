import json

import pytest
import torch

import slimkit as sk


@pytest.mark.slow
def test_quantize_example_int8_static_json(run_cli, tmp_path):
    code, out, _ = run_cli("quantize", "example:digits-cnn", "--method", "int8-static", "--observer", "minmax",
        "--out", str(tmp_path / "q"), "--json", "--quiet",
    )  # fmt: skip
    assert code in (0, None)
    result = json.loads(out)
    assert result["ratios"]["size"] <= 0.28
    assert result["metric_deltas"]["accuracy"] >= -0.003
    assert len(result["details"]["layers"]) == 13
    loaded = sk.load(tmp_path / "q")
    assert sum(isinstance(m, sk.quantization.QDQLayer) for m in loaded.modules()) == 13


def test_quantize_factory_model_weight_only_table(run_cli, tmp_path):
    code, out, _ = run_cli("quantize", "slimkit.models.testing:EmbeddingMLP", "--method", "weight-only",
        "--bits", "4", "--group-size", "8", "--out", str(tmp_path / "q"), "--quiet",
    )  # fmt: skip
    assert code in (0, None)
    assert "size" in out and "3 layer(s) quantized" in out
    model = sk.load(tmp_path / "q")
    x = model.example_inputs()[0]
    assert torch.isfinite(model(x)).all()


def test_granularity_from_the_generic_option_and_the_group_size_shorthand(run_cli, tmp_path):
    records = []
    for flags in (["-o", "granularity=group:8"], ["--group-size", "8"], ["-o", "granularity=channel"]):
        code, _, err = run_cli("quantize", "slimkit.models.testing:EmbeddingMLP", "--method", "weight-only",
            *flags, "--out", str(tmp_path / flags[-1].replace(":", "-")), "--quiet",
        )  # fmt: skip
        assert code in (0, None), err
        records.append(sk.get_record(sk.load(tmp_path / flags[-1].replace(":", "-"))).transforms[-1].config)
    assert [r["granularity"] for r in records] == ["group:8", "group:8", "channel"]


def test_quantize_bad_bits_is_one_line_error(run_cli, tmp_path):
    code, out, err = run_cli("quantize", "slimkit.models.testing:EmbeddingMLP", "--method", "weight-only",
        "--bits", "12", "--out", str(tmp_path / "q"), "--quiet",
    )  # fmt: skip
    assert code == 2
    assert "bits" in err and "Traceback" not in err
    assert not (tmp_path / "q").exists()


def test_max_drop_keeps_layers_float_and_lists_them(run_cli, own_project, monkeypatch):
    monkeypatch.chdir(own_project)
    code, out, err = run_cli(
        "quantize", "mypkg.models:trained_net", "--data", "mypkg.data:splits", "--method", "int8-static",
        "--metric", "fidelity", "--max-drop", "0", "--out", "q", "--json", "--quiet",
    )  # fmt: skip
    assert code in (0, None), err
    result = json.loads(out)
    # any int8 layer moves the cosine below 1, so a zero budget keeps every layer in float
    assert set(result["skipped"]) == {"features.0", "features.3", "head"}
    assert set(result["skipped"].values()) == {"kept in float by an override (null)"}
    assert result["metric_deltas"]["cosine"] == pytest.approx(0, abs=1e-12)  # only BatchNorm folding moved it


def test_max_drop_needs_a_quantize_budget_it_can_read(run_cli, tmp_path):
    code, _, err = run_cli("quantize", "example:digits-cnn", "--method", "int8-static", "--max-drop", "-1",
        "--out", str(tmp_path / "q"), "--quiet",
    )  # fmt: skip
    assert code == 2 and "max_metric_drop must be >= 0" in err and "Traceback" not in err
    assert not (tmp_path / "q").exists()
