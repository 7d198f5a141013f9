"""Where a search's study lives: Optuna's RDB storage (a SQLite file by default), so an
interrupted search resumes where it stopped and a finished one can be extended.

A study remembers what it was made for (objectives, target, budget, search space, a digest of
the model's weights); opening it for anything else is refused. Each finished trial stores its
stages and figures as user attributes, so the whole record is read back from the database.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimkit.core.errors import InvalidConfigError

STUDY_NAME = "slimkit-search"
"""The study name `search` uses unless told another."""


def storage_url(storage: str | Path) -> str:
    """An Optuna storage URL: a URL as given (``sqlite:///...``, ``postgresql://...``), a path as SQLite."""
    text = str(storage)
    if "://" in text:
        return text
    path = Path(text).expanduser()
    if path.is_dir():
        raise InvalidConfigError(f"--storage {text} is a folder: give a database file such as {path / 'study.db'}")
    if not path.parent.is_dir():
        raise InvalidConfigError(f"--storage {text}: the folder {path.parent} does not exist")
    return f"sqlite:///{path.resolve()}"


def model_digest(model: nn.Module) -> str:
    """A short digest of the model's parameter and buffer values (what a study was made for)."""
    digest = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in sorted(model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def open_study(optuna: Any, storage: str | Path | None, name: str, directions: list[str], sampler: Any,
               identity: dict[str, Any]) -> tuple[Any, bool]:  # fmt: skip
    """Create the study, or load it to resume when ``storage`` already holds one by ``name``.

    Trials a killed run left running are marked failed (their recipe is tried again).

    Returns:
        ``(study, created)``.

    Raises:
        InvalidConfigError: when the stored study was made for another model, target, budget,
            objectives or search space.
    """
    rdb = None if storage is None else optuna.storages.RDBStorage(storage_url(storage))
    study = optuna.create_study(
        storage=rdb, study_name=name, directions=directions, sampler=sampler, load_if_exists=rdb is not None
    )
    stored = study.user_attrs.get("identity")
    if stored is None:
        study.set_user_attr("identity", identity)
        return study, True
    if stored != json.loads(json.dumps(identity)):
        differs = sorted(k for k in {*stored, *identity} if stored.get(k) != identity.get(k))
        raise InvalidConfigError(
            f"study {name!r} in {storage} was made for another {', '.join(differs)}: "
            "give another --study-name or --storage to start a new search"
        )
    running = optuna.trial.TrialState.RUNNING
    for trial in study.get_trials(deepcopy=False, states=(running,)):  # optuna names trials by a private id
        rdb.set_trial_state_values(trial._trial_id, state=optuna.trial.TrialState.FAIL)
    return study, False
