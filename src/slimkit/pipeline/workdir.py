"""The working folder of a compress run: stage checkpoints for resume, atomic publish."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from slimkit.core.atomic import write_file
from slimkit.core.errors import InvalidConfigError
from slimkit.core.io import load_folder, save

if TYPE_CHECKING:
    from slimkit.pipeline.compress import StageResult

PROGRESS = "progress.json"
LAST = "last-stage"


class WorkDir:
    """A hidden folder beside the output (``.NAME.slimkit-work``) that becomes the output
    folder in one rename when the run succeeds; until then it holds what `resume` needs."""

    def __init__(self, final: Path, digest: str):
        self.final = final
        self.staging = final.parent / f".{final.name}.slimkit-work"
        self.digest = digest

    @classmethod
    def open(cls, out: str | os.PathLike[str], digest: str, *, resume: bool, overwrite: bool) -> WorkDir:
        """Prepare the working folder, refusing an existing output unless ``overwrite``."""
        work = cls(Path(out), digest)
        if work.final.exists() and not overwrite:
            raise InvalidConfigError(f"{work.final} already exists: choose another --out or pass --overwrite")
        if resume:
            work._check_resumable()
        else:
            shutil.rmtree(work.staging, ignore_errors=True)
            work.staging.mkdir(parents=True)
        return work

    def _progress(self) -> dict[str, Any]:
        path = self.staging / PROGRESS
        return json.loads(path.read_text()) if path.is_file() else {}

    def _check_resumable(self) -> None:
        progress = self._progress()
        if not progress:
            raise InvalidConfigError(
                f"nothing to resume for {self.final}: no interrupted run found; run without --resume"
            )
        if progress.get("digest") != self.digest:
            raise InvalidConfigError(
                f"the recipe or model changed since the interrupted run into {self.final}; run without --resume"
            )

    @property
    def completed(self) -> int:
        """Number of stages finished by an earlier (interrupted) run."""
        return len(self._progress().get("stages", []))

    def checkpoint(self, model: nn.Module, results: list[StageResult]) -> None:
        """Keep the model and results after a finished stage."""
        save(model, self.staging / LAST)
        payload = {"digest": self.digest, "stages": [r.to_dict() for r in results]}
        write_file(self.staging / PROGRESS, lambda p: p.write_text(json.dumps(payload)))

    def restore(self) -> tuple[nn.Module, list[StageResult]]:
        """The model and results of the last finished stage."""
        from slimkit.pipeline.compress import StageResult

        results = [StageResult.from_dict(r) for r in self._progress()["stages"]]
        return load_folder(self.staging / LAST), results

    def publish(self) -> Path:
        """Drop the resume state and move the folder onto the output path in one step."""
        shutil.rmtree(self.staging / LAST, ignore_errors=True)
        (self.staging / PROGRESS).unlink(missing_ok=True)
        backup = self.final.parent / f".{self.final.name}.slimkit-old"
        if self.final.exists():
            os.replace(self.final, backup)
        os.replace(self.staging, self.final)
        shutil.rmtree(backup, ignore_errors=True)
        return self.final
