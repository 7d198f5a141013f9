"""docs/getting-started.md, "Your own model from the command line", run as written: a package in
the current folder, only --data / --metric, every command in its own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import onnxruntime  # noqa: F401 (required: make test installs every extra)
import pytest

SLIMKIT = [sys.executable, "-c", "from slimkit.cli import main; main()"]


def slimkit(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SLIMKIT_ALLOW_MODULES")}
    return subprocess.run([*SLIMKIT, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return result


@pytest.mark.slow
def test_own_model_through_every_command(own_project):
    tmp_path = own_project
    data = ["--data", "mypkg.data:splits"]

    # profile with a user metric (lower is better, from the function's attribute)
    prof = json.loads(
        ok(slimkit(tmp_path, "profile", "mypkg.models:trained_net", *data, "--metric", "mypkg.metrics:error_rate",
                   "--batch-sizes", "1", "--json")).stdout
    )  # fmt: skip
    assert set(prof["metrics"]) == {"error_rate"} and prof["lower_is_better"] == ["error_rate"]
    assert 0 <= prof["metrics"]["error_rate"] <= 1 and prof["threads"] == 1

    # quantize (calibrated on --data), then refuse to overwrite without --overwrite
    ok(slimkit(tmp_path, "quantize", "mypkg.models:trained_net", "--method", "int8-static", *data, "--out", "out"))
    assert (tmp_path / "out" / "slimkit.json").is_file()
    again = slimkit(tmp_path, "quantize", "mypkg.models:trained_net", "--method", "int8-static", *data, "--out", "out")
    assert again.returncode == 2 and "--overwrite" in again.stderr and "Traceback" not in again.stderr

    # export the saved folder with example inputs from --data; the exporters' chatter stays hidden
    exported = ok(slimkit(tmp_path, "export", "out", "--to", "onnx", *data, "--out", "deploy",
                          "--allow-module", "mypkg"))  # fmt: skip
    assert (tmp_path / "deploy" / "model.onnx").is_file()
    assert len(exported.stderr.strip().splitlines()) <= 2, exported.stderr

    # bench and profile the deployed file with --data
    rows = json.loads(ok(slimkit(tmp_path, "bench", "deploy/model.onnx", *data, "--batch-sizes", "1",
                                 "--json")).stdout)  # fmt: skip
    assert [r["runtime"] for r in rows] == ["onnxruntime"] and rows[0]["threads"] == 1
    deployed = json.loads(ok(slimkit(tmp_path, "profile", "deploy/model.onnx", *data, "--batch-sizes", "1",
                                     "--json")).stdout)  # fmt: skip
    assert deployed["runtime"] == "onnxruntime" and "accuracy" in deployed["metrics"]

    # distill into the user's own student
    ok(slimkit(tmp_path, "distill", "--teacher", "mypkg.models:trained_net", "--student", "mypkg.models:small_net",
               *data, "--epochs", "3", "--out", "student", "--quiet"))  # fmt: skip
    assert (tmp_path / "student" / "model.safetensors").is_file()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []
