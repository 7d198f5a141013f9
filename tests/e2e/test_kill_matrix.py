"""Kill the real CLI (SIGKILL) at each write point of `compress`, then finish the run.

After every kill, ``--resume`` (or a plain rerun when there was nothing to resume yet)
must finish with the same weights (model.safetensors bytes) and the same report metrics
as an uninterrupted run; an ``--overwrite`` run killed while publishing never loses the
previous output.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
RECIPE = HERE / "tiny.yaml"

pytestmark = pytest.mark.slow


def _run(cwd: Path, args: list[str], kill: tuple[str, str, int] = ("-", "-", 0)) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(HERE), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(HERE / "kill_runner.py"), *map(str, kill), "--", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _compress(cwd: Path, *extra: str, kill: tuple[str, str, int] = ("-", "-", 0)) -> subprocess.CompletedProcess:
    return _run(cwd, ["compress", str(RECIPE), "--out", "out", "-q", *extra], kill)


def _metrics(out: Path) -> list:
    report = json.loads((out / "report.json").read_text())
    rows = [report["original"], *(s["profile"] for s in report["stages"])]
    return [row["metrics"] for row in rows] + [[(s["name"], s["status"]) for s in report["stages"]]]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != "out")


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("reference")
    done = _compress(cwd)
    assert done.returncode == 0, done.stderr
    assert _leftovers(cwd) == []
    return cwd / "out"


WRITE_POINTS = [
    ("slimkit.core.io", "save", 1),  # the first stage checkpoint
    ("slimkit.pipeline.workdir", "WorkDir.commit", 3),  # progress write after the finetune
    ("slimkit.runtime.export", "export", 1),  # the export of the published artifact
    ("slimkit.report.files", "write_reports", 1),  # the report write
    ("slimkit.pipeline.workdir", "WorkDir._remove_root", 1),  # published, work folder not yet removed
]
"""The publish renames are killed in `test_overwrite_killed_in_publish_never_loses_the_previous_output`."""


@pytest.mark.parametrize("point", WRITE_POINTS, ids=lambda p: f"{p[1]}-{p[2]}")
def test_killed_run_resumes_bit_identical(tmp_path, reference, point):
    killed = _compress(tmp_path, kill=point)
    assert killed.returncode == -9, f"the kill point was never reached: {killed.stderr[-2000:]}"
    finish = _compress(tmp_path, "--resume")
    if finish.returncode == 2 and "run without --resume" in finish.stderr:
        finish = _compress(tmp_path)  # killed before the first commit: the message says what to do
    assert finish.returncode == 0, finish.stderr[-2000:]
    out = tmp_path / "out"
    assert (out / "model.safetensors").read_bytes() == (reference / "model.safetensors").read_bytes()
    assert _metrics(out) == _metrics(reference)
    assert (out / "model.pt2").is_file()
    assert _leftovers(tmp_path) == []


def test_overwrite_killed_in_publish_never_loses_the_previous_output(tmp_path, reference):
    out, backup = tmp_path / "out", tmp_path / ".out.slimkit-old"
    shutil.copytree(reference, out)
    (out / "previous.txt").write_text("the previous output")
    killed = _compress(tmp_path, "--overwrite", kill=("slimkit.pipeline.workdir", "WorkDir._move_into_place", 1))
    assert killed.returncode == -9
    assert (out / "previous.txt").is_file()  # killed before any rename: untouched
    # the next run publishes the finished result; kill it between the two renames
    killed = _compress(tmp_path, "--overwrite", kill=("posix", "replace", 2))
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not out.exists() and (backup / "previous.txt").is_file()  # kept aside, not lost
    finish = _compress(tmp_path, "--overwrite")
    assert finish.returncode == 0, finish.stderr[-2000:]
    assert not (out / "previous.txt").exists()  # the new output is complete in its place
    assert (out / "model.safetensors").read_bytes() == (reference / "model.safetensors").read_bytes()
    assert _leftovers(tmp_path) == []


def test_second_run_is_refused_while_the_first_holds_the_lock(tmp_path):
    import fcntl

    lock = tmp_path / ".out.slimkit-lock"
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("4242\n")
        held.flush()
        refused = _compress(tmp_path)
    assert refused.returncode == 2
    assert "another slimkit run (process 4242)" in " ".join(refused.stderr.split())
    assert not (tmp_path / "out").exists()
