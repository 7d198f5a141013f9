"""The working folder, the lock and publishing: kills simulated by exceptions at write points."""

import errno
import json
import os
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from slimkit.core.data import DataSplits, TensorData
from slimkit.core.errors import InvalidConfigError
from slimkit.models.testing import ZOO
from slimkit.pipeline import compress
from slimkit.pipeline import workdir as workdir_module
from slimkit.pipeline.lock import OutputLock
from slimkit.pipeline.workdir import WorkDir

RECIPE = {
    "stages": [{"prune": {"method": "channels", "ratio": 0.5}}, {"quantize": {"method": "fp16"}}],
    "target": {"runtime": "torch"},
}


pytestmark = pytest.mark.usefixtures("quick_reports")


class Killed(BaseException):
    """Stands for SIGKILL: nothing after the raise point runs, no except-clause catches it."""


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


def _run(model, splits, out, **kw):
    return compress(model, RECIPE, data=splits, out=out, **kw)


def _transforms(out: Path) -> list[str]:
    return [t["verb"] for t in json.loads((out / "slimkit.json").read_text())["transforms"]]


def test_kill_between_stage_folder_and_progress_never_applies_a_stage_twice(tmp_path, model, splits, monkeypatch):
    out = tmp_path / "out"
    real = WorkDir.commit

    def commit(self, **changes):
        if len(changes.get("stages", [])) == 1:
            raise Killed  # stage-1/ is written, progress.json does not name it yet
        real(self, **changes)

    monkeypatch.setattr(WorkDir, "commit", commit)
    with pytest.raises(Killed):
        _run(model, splits, out)
    assert (tmp_path / ".out.slimkit-work" / "stage-1").is_dir()
    monkeypatch.setattr(WorkDir, "commit", real)
    result = _run(model, splits, out, resume=True)
    assert _transforms(out) == ["prune", "quantize"]  # prune applied once
    assert [s.index for s in result.stages] == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # nothing left beside the output


def test_resume_after_a_committed_stage_skips_it(tmp_path, model, splits, monkeypatch):
    out = tmp_path / "out"
    real = WorkDir.commit

    def commit(self, **changes):
        real(self, **changes)
        if len(changes.get("stages", [])) == 1:
            raise Killed

    monkeypatch.setattr(WorkDir, "commit", commit)
    with pytest.raises(Killed):
        _run(model, splits, out)
    monkeypatch.setattr(WorkDir, "commit", real)
    calls = []
    compress_module = sys.modules["slimkit.pipeline.compress"]
    original_run_stage = compress_module.run_stage
    monkeypatch.setattr(
        compress_module, "run_stage", lambda m, s, i: calls.append(s.label) or original_run_stage(m, s, i)
    )
    _run(model, splits, out, resume=True)
    assert calls == ["quantize:fp16"] and _transforms(out) == ["prune", "quantize"]


def test_kill_inside_publish_is_finished_by_the_next_run(tmp_path, model, splits, monkeypatch):
    out = tmp_path / "out"
    _run(model, splits, out)
    previous = (out / "model.safetensors").read_bytes()
    (out / "mine.txt").write_text("old output")
    real_replace = os.replace
    seen = []

    def replace(src, dst):
        seen.append(Path(dst).name)
        if Path(dst) == out:
            raise Killed  # the old output is in the backup, the new one not yet in place
        real_replace(src, dst)

    monkeypatch.setattr(workdir_module.os, "replace", replace)
    with pytest.raises(Killed):
        _run(model, splits, out, overwrite=True)
    monkeypatch.setattr(workdir_module.os, "replace", real_replace)
    assert not out.exists() and (tmp_path / ".out.slimkit-old" / "mine.txt").is_file()
    result = _run(model, splits, out, resume=True)  # publishes the finished result
    assert any("published the finished result" in n for n in result.notes)
    assert (out / "model.safetensors").read_bytes() == previous and not (out / "mine.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_kill_before_the_new_output_is_finished_restores_the_previous_one(tmp_path, model, splits, monkeypatch):
    out = tmp_path / "out"
    _run(model, splits, out)
    (out / "mine.txt").write_text("old output")
    backup = tmp_path / ".out.slimkit-old"
    os.replace(out, backup)  # as left by a kill between the two renames of an unfinished publish
    result = _run(model, splits, out, overwrite=True)
    assert any("restored the previous" in n for n in result.notes)
    assert not backup.exists() and (out / "slimkit.json").is_file() and not (out / "mine.txt").exists()


def test_stale_leftovers_never_fail_a_later_run(tmp_path, model, splits):
    out = tmp_path / "out"
    _run(model, splits, out)
    (tmp_path / ".out.slimkit-old").mkdir()  # a killed rmtree of an old backup
    work = tmp_path / ".out.slimkit-work"
    (work / "stage-7").mkdir(parents=True)  # a killed run's folder, no progress.json
    (work / ".progress.json.x.tmp").mkdir()
    _run(model, splits, out, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_finished_run_rerun_plain_reports_it(tmp_path, model, splits, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setattr(WorkDir, "_move_into_place", lambda self: (_ for _ in ()).throw(Killed()))
    with pytest.raises(Killed):
        _run(model, splits, out)
    monkeypatch.undo()
    assert not out.exists()
    result = _run(model, splits, out)  # a plain rerun of the same command
    assert (out / "slimkit.json").is_file() and result.notes
    assert [s.name for s in result.stages] == ["prune:channels", "quantize:fp16"]


def test_symlink_at_the_work_folder_is_refused(tmp_path, model, splits):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / ".out.slimkit-work").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(InvalidConfigError, match="symbolic link"):
        _run(model, splits, tmp_path / "out")
    assert not list((tmp_path / "elsewhere").iterdir())


def test_out_that_is_cwd_or_holds_an_input_is_refused(tmp_path, model, splits, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for bad in (".", str(tmp_path.parent)):
        with pytest.raises(InvalidConfigError, match="current folder or above"):
            _run(model, splits, bad, overwrite=True)
    recipe = tmp_path / "r" / "recipe.yaml"
    recipe.parent.mkdir()
    recipe.write_text(json.dumps(RECIPE))
    with pytest.raises(InvalidConfigError, match="holds the input"):
        compress(model, str(recipe), data=splits, out=tmp_path / "r", overwrite=True)


def test_a_second_run_on_the_same_out_is_refused_naming_the_pid(tmp_path, model, splits):
    out = tmp_path / "out"
    with OutputLock(out):
        with pytest.raises(InvalidConfigError, match=f"another slimkit run \\(process {os.getpid()}\\)"):
            _run(model, splits, out)
    assert not out.exists()
    _run(model, splits, out)  # released: the next run goes through
    assert not (tmp_path / ".out.slimkit-lock").exists()


def test_too_little_space_is_refused_before_the_work(tmp_path, model, splits, monkeypatch):
    import shutil

    monkeypatch.setattr(workdir_module.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10, 10, 10))
    with pytest.raises(InvalidConfigError, match="not enough free space"):
        _run(model, splits, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_disk_full_mid_run_is_one_clear_error_then_resumes(tmp_path, model, splits, monkeypatch):
    import slimkit.report.files as files

    out = tmp_path / "out"
    real = files.write_reports

    def full(result, folder):
        raise OSError(errno.ENOSPC, "No space left on device", str(folder / "report.html"))

    monkeypatch.setattr(files, "write_reports", full)
    with pytest.raises(InvalidConfigError, match="No space left on device.*--resume"):
        _run(model, splits, out)
    assert not out.exists()
    monkeypatch.setattr(files, "write_reports", real)
    _run(model, splits, out, resume=True)
    assert (out / "report.html").is_file()


def test_temp_files_stay_in_the_work_folder(tmp_path, model, splits):
    before = tempfile.gettempdir()
    _run(model, splits, tmp_path / "out")
    assert tempfile.gettempdir() == before


def test_read_only_destination_is_refused_before_the_work(tmp_path, model, splits, monkeypatch):
    """``os.access`` is what slimkit asks (root ignores permission bits, so the test answers for it)."""
    monkeypatch.setattr(workdir_module.os, "access", lambda path, mode: False)
    with pytest.raises(InvalidConfigError, match="is not a writable folder -- choose another --out"):
        _run(model, splits, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
