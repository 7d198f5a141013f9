"""A small real CompressResult: real verbs on a test model, each stage profiled for real.

Stages: prune channels 0.5 -> finetune 1 epoch -> fp16 (final) -> prune channels 0.8 (breaks
the budget, discarded) -> int8-dynamic (never runs). The fine-tuned model carries a training
record as `compress` writes it. Per-stage fields of newer pipelines (index, status, reason,
measured file + sha256) are set with setattr, so the report is exercised with them whatever
the pipeline's version.
"""

import hashlib

import pytest
import torch

import slimkit as sk
from slimkit.core.data import TensorData
from slimkit.core.record import Transform, append_transform
from slimkit.distillation import finetune
from slimkit.models.testing import ZOO
from slimkit.pipeline.compress import CompressResult, StageResult
from slimkit.pipeline.recipe import load_recipe

RECIPE = {
    "model": "tests:residual",
    "stages": [
        {"prune": {"method": "channels", "ratio": 0.5}},
        {"finetune": {"epochs": 1, "lr": 0.001}},
        {"quantize": {"method": "fp16"}},
        {"prune": {"method": "channels", "ratio": 0.8}},
        {"quantize": {"method": "int8-dynamic"}},
    ],
    "target": {"runtime": "torch", "max_metric_drop": 0.05, "max_size_mb": 0.005},
}


def _data():
    model = ZOO["residual"]()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(128, 3, 16, 16, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    noisy = torch.rand(128, generator=g) < 0.15  # an original accuracy below 1
    y = torch.where(noisy, torch.randint(0, 10, (128,), generator=g), y)
    return model, TensorData(x[:96], y[:96], batch_size=32), TensorData(x[96:], y[96:], batch_size=32)


def _profile(model, test):
    return sk.profile(model, data=test, budget_s=0.02)


def _measured(tmp, name, model):
    """The file a stage was measured on (relative to the run's folder, as `compress` records it)
    and its sha256."""
    sk.save(model, tmp / name, source="example:none")
    return f"{name}/model.safetensors", hashlib.sha256((tmp / name / "model.safetensors").read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def compress_result(tmp_path_factory):
    """A 5-stage result: 3 kept, 1 discarded (with its reason), 1 never run; an exported file."""
    tmp = tmp_path_factory.mktemp("result")
    original, train, test = _data()
    ex = (next(iter(test))[0][:1],)
    pruned = sk.prune(original, "channels", ratio=0.5, example_inputs=ex)
    tuned = finetune(sk.prune(original, "channels", ratio=0.5, example_inputs=ex), train, epochs=1, seed=0)
    training = {"epochs": 1, "lr": 0.001, "loss": "cross-entropy", "teacher": None, "data": "sha256:3f2a9c1d"}
    append_transform(tuned, Transform("train", "finetune", {**training, "selected_on": "calibration", "seed": 0}))
    half = sk.quantize(tuned, "fp16")
    broken = sk.prune(tuned, "channels", ratio=0.8, example_inputs=ex)
    recipe = load_recipe(RECIPE)
    stages = [
        StageResult("prune:channels", _profile(pruned, test), 0.41),
        StageResult("finetune", _profile(tuned, test), 2.37),
        StageResult("quantize:fp16", _profile(half, test), 0.12),
        StageResult("prune:channels", _profile(broken, test), 0.35, kept=False),
    ]
    before = stages[0].profile.metrics["accuracy"]
    after = stages[3].profile.metrics["accuracy"]
    stages[3].reason = f"accuracy dropped by {before - after:.4f} ({before:.4f} -> {after:.4f}), more than 0.05"
    for i, (stage, model) in enumerate(zip(stages, (pruned, tuned, half, broken), strict=True)):
        stage.index, stage.status = i + 1, "discarded" if i == 3 else "met"
        stage.measured, stage.sha256 = _measured(tmp, f"stage-{i + 1}", model)
    exported = tmp / "model.pt2"
    exported.write_bytes(b"\0" * 2048)
    result = CompressResult(
        half,
        _profile(original, test),
        stages,
        artifacts={"pt2": exported},
        stopped=f"stopped after stage 4 (prune:channels): {stages[3].reason}; kept the model of stage 3",
        recipe=recipe,
        original_model=original,
    )
    size_mb = result.final.size_bytes / 1e6
    result.unmet = [f"size {size_mb:.2f} MB is over max_size_mb=0.005"] if size_mb > 0.005 else []
    return result


@pytest.fixture(scope="session")
def bare_result():
    """A result with only the fields every version of CompressResult has."""
    original, _, test = _data()
    half = sk.quantize(original, "fp16")
    return CompressResult(half, _profile(original, test), [StageResult("quantize:fp16", _profile(half, test), 0.1)])
