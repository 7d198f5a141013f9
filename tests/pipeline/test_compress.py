import json
import sys

import pytest
import torch

import slimkit as sk
from slimkit.core.data import DataSplits, TensorData
from slimkit.core.errors import InvalidConfigError
from slimkit.models.testing import ZOO
from slimkit.pipeline import compress
from slimkit.pipeline import stages as stages_module


@pytest.fixture(scope="module")
def model():
    return ZOO["residual"]()


@pytest.fixture(scope="module")
def splits(model):
    x = torch.randn(64, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    data = TensorData(x, y, batch_size=32)
    return DataSplits(train=data, calibration=data, test=data, metric="accuracy")


FAST = {
    "stages": [{"accelerate": {"method": "fuse"}}, {"quantize": {"method": "fp16"}}],
    "target": {"runtime": "torch"},
}


def test_compress_runs_every_stage_and_writes_the_folder(tmp_path, splits, model):
    out = tmp_path / "out"
    result = compress(model, FAST, data=splits, out=out)
    assert [s.name for s in result.stages] == ["accelerate:fuse", "quantize:fp16"]
    assert result.stopped is None and all(s.kept for s in result.stages)
    assert result.final.size_bytes < 0.6 * result.original.size_bytes  # fp16 halves the weights
    assert result.final.metrics["accuracy"] == pytest.approx(1.0, abs=0.05)
    assert {"model.safetensors", "slimkit.json", "report.md", "report.json", "report.html"} <= {
        p.name for p in out.iterdir()
    }
    assert not list(tmp_path.glob(".*"))  # no working folder left behind
    loaded = sk.load(out)
    x = next(iter(splits.test))[0]
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), result.model(x), rtol=0, atol=0)
    report = json.loads((out / "report.json").read_text())
    assert [s["name"] for s in report["stages"]] == ["accelerate:fuse", "quantize:fp16"]
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 4


@pytest.mark.slow
def test_export_options_shape_the_measured_and_published_artifact(tmp_path, splits, model):
    recipe = {"stages": [{"accelerate": {"method": "fuse"}}], "export": [{"pte": {"max_batch": 1}}],
              "target": {"runtime": "executorch"}}  # fmt: skip
    result = compress(model, recipe, data=splits, out=tmp_path / "out")
    runtime = sk.runtime.load(tmp_path / "out" / "model.pte")
    assert runtime.max_batch == 1  # planned for one sample: what was measured is what ships
    x = next(iter(splits.test))[0][:3]
    with torch.no_grad():
        torch.testing.assert_close(runtime.run(x), result.model(x), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_stage_over_budget_stops_and_keeps_previous_model(splits, model):
    recipe = {
        "stages": [{"accelerate": {"method": "fuse"}}, {"prune": {"method": "channels", "ratio": 0.9}}],
        "target": {"max_metric_drop": 0.0},
    }
    result = compress(model, recipe, data=splits)
    assert result.stopped is not None and "stage 2 (prune:channels)" in result.stopped
    assert result.published == "stage 1 (accelerate:fuse)"
    assert [s.kept for s in result.stages] == [True, False]
    fused = compress(model, {"stages": [{"accelerate": {"method": "fuse"}}]}, data=splits).model
    x = next(iter(splits.test))[0]
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), fused(x))


@pytest.mark.slow
def test_existing_output_needs_overwrite(tmp_path, splits, model):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(InvalidConfigError, match="already exists.*--overwrite"):
        compress(model, FAST, data=splits, out=out)
    assert (out / "keep.txt").read_text() == "mine"
    compress(model, FAST, data=splits, out=out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "slimkit.json").is_file()


@pytest.mark.slow
def test_failed_run_leaves_no_output_and_resumes(tmp_path, splits, monkeypatch, model):
    out = tmp_path / "out"
    real = stages_module.run_stage
    calls = []

    def flaky(model, stage, inputs):
        calls.append(stage.label)
        if stage.kind == "quantize" and calls.count(stage.label) == 1:
            raise RuntimeError("power cut")
        return real(model, stage, inputs)

    monkeypatch.setattr(sys.modules["slimkit.pipeline.compress"], "run_stage", flaky)
    with pytest.raises(RuntimeError, match="power cut"):
        compress(model, FAST, data=splits, out=out)
    assert not out.exists()
    with pytest.raises(InvalidConfigError, match="changed since the interrupted run"):
        compress(model, {**FAST, "seed": 5}, data=splits, out=out, resume=True)
    result = compress(model, FAST, data=splits, out=out, resume=True)
    assert calls == ["accelerate:fuse", "quantize:fp16", "quantize:fp16"]  # fuse not run again
    assert [s.name for s in result.stages] == ["accelerate:fuse", "quantize:fp16"]
    assert (out / "slimkit.json").is_file()


def test_nothing_to_resume(tmp_path, splits, model):
    with pytest.raises(InvalidConfigError, match="nothing to resume"):
        compress(model, FAST, data=splits, out=tmp_path / "o", resume=True)


def test_missing_model_or_data(model):
    with pytest.raises(InvalidConfigError, match="needs a model"):
        compress(None, FAST)
    with pytest.raises(InvalidConfigError, match="needs data"):
        compress(model, FAST)


def test_unknown_method_lists_valid(splits, model):
    with pytest.raises(
        InvalidConfigError, match=r"stages\[0\].quantize.method: unknown method 'int3'; valid methods: .*int8-static"
    ):
        compress(model, {"stages": [{"quantize": {"method": "int3"}}]}, data=splits)
    with pytest.raises(InvalidConfigError, match=r"stages\[0\].quantize.bits"):
        compress(model, {"stages": [{"quantize": {"method": "weight-only", "bits": 9}}]}, data=splits)
