"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint folder holds ``step-N/`` folders (each written whole by an atomic rename)
and ``latest.json`` naming the newest one, replaced atomically after the folder exists;
older step folders are then removed. ``best.safetensors`` + ``best.json`` hold the best
weights seen so far.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from slimkit.core.atomic import publish, write_file
from slimkit.core.errors import UnsafeFileError

LATEST = "latest.json"
BEST = "best.safetensors"
BEST_INFO = "best.json"


def cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of ``module``'s state dict (tied tensors stored once each)."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in module.state_dict().items()}


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises several types for a bad file
        raise UnsafeFileError(f"checkpoint file {path} is corrupt ({exc}); delete the checkpoint folder") from None


def optimizer_to_parts(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into tensors and JSON-ready scalars."""
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"scalars": scalars, "param_groups": state["param_groups"]}


def optimizer_from_parts(tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> dict[str, Any]:
    """Inverse of `optimizer_to_parts`."""
    state: dict[int, dict[str, Any]] = {}
    for source in (tensors, info["scalars"]):
        for name, value in source.items():
            index, _, key = name.partition(".")
            state.setdefault(int(index), {})[key] = value
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in info["param_groups"]]
    return {"state": state, "param_groups": groups}


def rng_parts() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The torch / CUDA / numpy / python RNG states as tensors + JSON."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors["numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    version, internal, py_gauss = random.getstate()
    info = {"numpy": [kind, int(pos), int(has_gauss), float(gauss)], "python": [version, list(internal), py_gauss]}
    return tensors, info


def restore_rng(tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    """Inverse of `rng_parts`."""
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    kind, pos, has_gauss, gauss = info["numpy"]
    np.random.set_state((kind, tensors["numpy"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, py_gauss = info["python"]
    random.setstate((version, tuple(internal), py_gauss))


def save_checkpoint(
    directory: str | Path,
    step: int,
    model: dict[str, torch.Tensor],
    optimizer: dict[str, Any],
    progress: dict[str, Any],
) -> Path:
    """Write checkpoint ``step-<step>/`` and point ``latest.json`` at it.

    Args:
        directory: the checkpoint folder.
        step: global optimizer step (names the folder).
        model: the trained module's state (student and any loss adapters).
        optimizer: the optimizer's state dict.
        progress: JSON-ready trainer progress (epoch, step, best score, ...).
    """
    directory = Path(directory)
    opt_tensors, opt_info = optimizer_to_parts(optimizer)
    rng_tensors, rng_info = rng_parts()
    info = {"progress": progress, "optimizer": opt_info, "rng": rng_info}
    name = f"step-{step}"
    target = directory / name
    if target.exists():
        shutil.rmtree(target)
    publish(
        {
            "model.safetensors": lambda p: _save_tensors(model, p),
            "optimizer.safetensors": lambda p: _save_tensors(opt_tensors, p),
            "rng.safetensors": lambda p: _save_tensors(rng_tensors, p),
            "trainer.json": lambda p: p.write_text(json.dumps(info)),
        },
        target,
    )
    write_file(directory / LATEST, lambda p: p.write_text(json.dumps({"checkpoint": name})))
    for old in directory.glob("step-*"):
        if old.name != name and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    return target


def load_checkpoint(directory: str | Path) -> dict[str, Any] | None:
    """The latest checkpoint in ``directory`` (``None`` when there is none).

    Returns:
        ``{"model", "optimizer", "progress"}``; RNG states are restored as a side effect.
    """
    directory = Path(directory)
    pointer = directory / LATEST
    if not pointer.is_file():
        return None
    try:
        folder = directory / json.loads(pointer.read_text())["checkpoint"]
        info = json.loads((folder / "trainer.json").read_text())
    except (OSError, KeyError, json.JSONDecodeError) as exc:
        raise UnsafeFileError(f"checkpoint in {directory} is corrupt ({exc}); delete it to start over") from None
    optimizer = optimizer_from_parts(_load_tensors(folder / "optimizer.safetensors"), info["optimizer"])
    restore_rng(_load_tensors(folder / "rng.safetensors"), info["rng"])
    return {"model": _load_tensors(folder / "model.safetensors"), "optimizer": optimizer, "progress": info["progress"]}


def save_best(directory: str | Path, state: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    """Write the best weights and their score (each file atomically, weights first)."""
    directory = Path(directory)
    write_file(directory / BEST, lambda p: _save_tensors(state, p))
    write_file(directory / BEST_INFO, lambda p: p.write_text(json.dumps(info)))


def load_best(directory: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """The best weights and their score, or ``None`` when not written yet."""
    directory = Path(directory)
    if not (directory / BEST_INFO).is_file():
        return None
    return _load_tensors(directory / BEST), json.loads((directory / BEST_INFO).read_text())
