"""The working folder of a compress run: one folder per finished stage, one progress file.

Layout, beside the output ``OUT``::

    .OUT.slimkit-lock           the lock (see `pipeline.lock`), removed on success
    .OUT.slimkit-work/
        progress.json           the only thing resume trusts: names the folders below
        original/               the input model and the artifact measured for it
        stage-N/                a stage's model (model.safetensors, slimkit.json) + its artifact
        output/                 the finished output, renamed onto OUT by `publish`
        tmp/                    the run's temporary files (never the system temp folder)
    .OUT.slimkit-old            the previous OUT during an --overwrite publish

A stage is committed by replacing ``progress.json`` in one `os.replace` after its folder is
complete, so a kill at any point either keeps or loses the whole stage, never applies it
twice. Folders that progress.json does not name are leftovers and are removed.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any

from slimkit.core.atomic import fix_permissions, write_file
from slimkit.core.errors import InvalidConfigError
from slimkit.pipeline.lock import OutputLock

PROGRESS = "progress.json"
ORIGINAL = "original"
OUTPUT = "output"
TMP = "tmp"
WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def _is_inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


class WorkDir:
    """The hidden working folder ``.OUT.slimkit-work`` of one run into ``OUT``.

    Attributes:
        final: the output folder.
        root: the working folder.
        state: the committed progress (empty for a fresh run).
        done: an earlier run of the same recipe had finished; its output is now in place.
    """

    def __init__(self, final: Path, digest: str):
        self.final = final
        self.root = final.parent / f".{final.name}.slimkit-work"
        self.backup = final.parent / f".{final.name}.slimkit-old"
        self.digest = digest
        self.lock = OutputLock(final)
        self.state: dict[str, Any] = {}
        self.done = False
        self.notes: list[str] = []

    # ---------------------------------------------------------------- opening

    @classmethod
    def open(
        cls,
        out: str | os.PathLike[str],
        digest: str,
        *,
        resume: bool,
        overwrite: bool,
        inputs: tuple[str, ...] = (),
        need_bytes: int = 0,
    ) -> WorkDir:
        """Lock ``out``, recover what a killed run left, and prepare the working folder.

        Raises:
            InvalidConfigError: an unusable ``out`` (the current folder or above it, holding
                an input, a file or a link, not writable, too little free space), an
                existing ``out`` without ``overwrite``, another run on it, or nothing to resume.
        """
        work = cls(Path(out), digest)
        work._check_out(inputs)
        work.final.parent.mkdir(parents=True, exist_ok=True)
        work.lock.acquire()
        try:
            work._recover()
            if not work.done:
                work._prepare(resume=resume, overwrite=overwrite, need_bytes=need_bytes)
        except BaseException:
            work.lock.release()
            raise
        return work

    def _check_out(self, inputs: tuple[str, ...]) -> None:
        final = self.final
        if final.is_symlink():
            raise InvalidConfigError(f"--out {final} is a symbolic link: give the real folder path")
        if final.exists() and not final.is_dir():
            raise InvalidConfigError(f"--out {final} is a file: give a folder path")
        target, cwd = final.resolve(), Path.cwd().resolve()
        if _is_inside(cwd, target):
            raise InvalidConfigError(f"--out {final} is the current folder or above it: give a new folder, like out/")
        for spec in inputs:
            if spec and Path(spec).exists() and _is_inside(Path(spec).resolve(), target):
                raise InvalidConfigError(f"--out {final} holds the input {spec}: choose another --out")
        for path in (self.root, self.backup):
            if path.is_symlink():
                raise InvalidConfigError(f"{path} is a symbolic link (not made by slimkit): remove it and run again")
        parent = next((p for p in (target.parent, *target.parent.parents) if p.exists()), None)
        if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise InvalidConfigError(f"cannot write {final}: {parent} is not a writable folder -- choose another --out")

    def _read_state(self) -> dict[str, Any]:
        path = self.root / PROGRESS
        if not self.root.is_dir() or not path.is_file():
            return {}
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def _recover(self) -> None:
        """Finish or undo what a run killed inside `publish` left behind."""
        state = self._read_state()
        finished = bool(state.get("finished")) and (self.root / OUTPUT).is_dir()
        if self.backup.exists() and not self.final.exists() and not finished:
            os.replace(self.backup, self.final)  # the new output never arrived: the previous one returns
            self.notes.append(f"restored the previous {self.final} left by an interrupted --overwrite run")
        if finished and (not self.final.exists() or state.get("replace")):
            self.state = state
            self._move_into_place()
            self.notes.append(f"published the finished result of an interrupted run into {self.final}")
        _remove(self.backup)
        if state.get("finished") and self.final.is_dir() and not (self.root / OUTPUT).exists():
            self.state = state
            self.done = state.get("digest") == self.digest
            self._remove_root()

    def _prepare(self, *, resume: bool, overwrite: bool, need_bytes: int) -> None:
        if self.final.exists() and not overwrite:
            raise InvalidConfigError(f"{self.final} already exists: choose another --out or pass --overwrite")
        state = self._read_state()
        if resume:
            if not state or state.get("finished"):
                raise InvalidConfigError(
                    f"nothing to resume for {self.final}: no interrupted run found; run without --resume"
                )
            if state.get("digest") != self.digest:
                raise InvalidConfigError(
                    f"the recipe or model changed since the interrupted run into {self.final}; "
                    "run without --resume to start over"
                )
            self.state = state
            self.clean()
        else:
            self._remove_root()
        free = shutil.disk_usage(self.final.parent).free
        if need_bytes and free < need_bytes:
            raise InvalidConfigError(
                f"not enough free space for {self.final}: {free / 1e6:.1f} MB free, about "
                f"{need_bytes / 1e6:.1f} MB needed -- free some space or choose another --out"
            )
        self.state["digest"] = self.digest
        self.state["replace"] = overwrite
        self.root.mkdir(exist_ok=True)
        (self.root / TMP).mkdir(exist_ok=True)

    # ---------------------------------------------------------------- stages

    def folder(self, name: str) -> Path:
        """A fresh, empty (not yet created) path for folder ``name`` in the working folder."""
        path = self.root / name
        _remove(path)
        return path

    def commit(self, **changes: Any) -> None:
        """Update the progress with ``changes`` and replace progress.json in one step."""
        self.state.update(changes)
        text = json.dumps(self.state, sort_keys=True)
        write_file(self.root / PROGRESS, lambda p: p.write_text(text))
        self.clean()

    def clean(self) -> None:
        """Remove everything progress.json does not name (leftovers of a killed run)."""
        keep = {PROGRESS, TMP, ORIGINAL, *(self.state.get(k) for k in ("current", "kept") if self.state.get(k))}
        if self.state.get("finished"):
            keep.add(OUTPUT)
        for entry in list(self.root.iterdir()) if self.root.is_dir() else []:
            if entry.name not in keep:
                _remove(entry)

    @property
    def completed(self) -> int:
        """Number of stages committed by an earlier (interrupted) run."""
        return len(self.state.get("stages", []))

    # ---------------------------------------------------------------- publishing

    @property
    def output(self) -> Path:
        """Where the finished output is assembled before `publish`."""
        return self.root / OUTPUT

    def publish(self) -> Path:
        """Move the finished output onto ``final`` (keeping an --overwrite backup until it is
        in place), then drop the working folder and the lock."""
        if not self.state.get("finished"):
            self.commit(finished=True)
        self._move_into_place()
        self._remove_root()
        return self.final

    def _move_into_place(self) -> None:
        fix_permissions(self.root / OUTPUT)
        if self.final.exists():
            _remove(self.backup)
            os.replace(self.final, self.backup)
        os.replace(self.root / OUTPUT, self.final)
        _remove(self.backup)

    def _remove_root(self) -> None:
        """Remove the working folder, progress.json last (until then a rerun can finish the job)."""
        if self.root.is_symlink() or not self.root.exists():
            return
        for entry in self.root.iterdir():
            if entry.name != PROGRESS:
                _remove(entry)
        _remove(self.root / PROGRESS)
        self.root.rmdir()

    def close(self) -> None:
        """Release the lock (the working folder stays for --resume unless published)."""
        self.lock.release()


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def write_error(exc: OSError, work: WorkDir) -> InvalidConfigError | None:
    """A clear error for a full or read-only disk while writing ``work``, else None."""
    if exc.errno not in WRITE_ERRORS:
        return None
    where = exc.filename or work.root
    return InvalidConfigError(
        f"cannot write {where}: {exc.strerror or exc} -- free some space or make {work.final.parent} writable, "
        f"then run again with --resume (finished stages are kept in {work.root})"
    )
