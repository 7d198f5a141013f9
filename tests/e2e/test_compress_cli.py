"""`slimkit demo` and `slimkit compress` as a user runs them: subprocesses, onnxruntime target.

Each asserts that the published ``model.onnx`` is the very file measured for the last kept
stage (sha256 from report.json) and that report.json's final accuracy is what the
published file scores when loaded in onnxruntime on the test split.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

FALLBACK = """\
model: example:digits-cnn
data: example:digits
seed: 0
stages:
  - prune: {method: channels, ratio: 0.9}  # BatchNorm adaptation and one epoch do not bring 90% back
  - finetune: {epochs: 1}
export: [onnx]
target: {runtime: onnxruntime, max_metric_drop: 0.01}
"""


def slimkit(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """Run the CLI in ``cwd`` with its own empty temp folder ``cwd/../tmp`` (checked after)."""
    cwd.mkdir(exist_ok=True)
    (cwd.parent / "tmp").mkdir(exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(cwd.parent / "tmp")}
    return subprocess.run(
        [sys.executable, "-m", "slimkit", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def temp_leftovers(folder: Path) -> list[str]:
    """What a run left in its temp folder, less onnxruntime's own session-id file ``.ses``
    (one small file the runtime keeps and reuses, written straight from C)."""
    return sorted(p.name for p in folder.iterdir() if p.name != ".ses")


def onnx_accuracy(path: Path) -> float:
    import onnxruntime as ort

    from slimkit.core.specs import load_data

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    correct = total = 0
    for x, y in load_data("example:digits").test:
        logits = session.run(None, {name: x.numpy()})[0]
        correct += int((np.argmax(logits, axis=1) == y.numpy()).sum())
        total += len(y)
    return correct / total


def check_published(out: Path) -> dict:
    """The published model.onnx is the file measured for the last kept stage, and scores what
    report.json says."""
    report = json.loads((out / "report.json").read_text())
    kept = [s for s in report["stages"] if s["kept"]]
    measured = kept[-1]["measured"] if kept else report["original_measured"]
    final = kept[-1]["profile"] if kept else report["original"]
    assert hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest() == measured["sha256"]
    assert onnx_accuracy(out / "model.onnx") == pytest.approx(final["metrics"]["accuracy"], abs=1e-12)
    for name in ("report.md", "report.html", "model.safetensors", "slimkit.json"):
        assert (out / name).is_file(), name
    return report


def test_demo(tmp_path):
    cwd = tmp_path / "cwd"
    done = slimkit(cwd, "demo", "--out", "demo")
    assert done.returncode == 0, done.stderr[-3000:]
    report = check_published(cwd / "demo")
    assert report["stopped"] is None and report["published"].startswith("stage 3")
    assert "published stage 3 (quantize:int8-static)" in " ".join(done.stdout.split())
    assert sorted(p.name for p in cwd.iterdir()) == ["demo"]  # nothing beside the output
    assert temp_leftovers(tmp_path / "tmp") == []  # nothing in the temp folder


def test_bundled_recipe(tmp_path):
    cwd = tmp_path / "cwd"
    done = slimkit(
        cwd, "compress", "edge-int8", "--model", "example:digits-cnn", "--data", "example:digits", "--out", "o"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    check_published(cwd / "o")
    assert sorted(p.name for p in cwd.iterdir()) == ["o"]
    assert temp_leftovers(tmp_path / "tmp") == []


def test_budget_fallback_exits_3_and_publishes_the_last_stage_that_met_it(tmp_path):
    (tmp_path / "fallback.yaml").write_text(FALLBACK)
    done = slimkit(tmp_path, "compress", "fallback.yaml", "--out", "o")
    assert done.returncode == 3, done.stderr[-3000:]
    report = check_published(tmp_path / "o")
    assert report["published"] == "the original model"
    assert [(s["index"], s["status"]) for s in report["stages"]] == [(1, "discarded"), (2, "discarded")]
    assert "did not recover it" in report["stages"][0]["reason"]
    assert "max_metric_drop" in report["stages"][1]["reason"]
    text = " ".join((done.stdout + done.stderr).split())
    assert "the budget stopped the run at stage 2 (finetune)" in text
    assert "published the original model" in text and "stage 0" not in text
