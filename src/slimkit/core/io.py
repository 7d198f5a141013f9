"""Safe save/load of slimkit models: ``model.safetensors`` + ``slimkit.json``, no pickle."""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_model
from torch import nn

import slimkit
from slimkit.core.atomic import publish
from slimkit.core.errors import InvalidConfigError, SlimkitError, UnsafeFileError, UnsupportedModelError
from slimkit.core.record import Record, Transform, get_record

WEIGHTS = "model.safetensors"
INDEX = "slimkit.json"
FORMAT_VERSION = 1


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def infer_source(model: nn.Module) -> str | None:
    """The model's source spec: from its record, else ``module:Class`` for an importable
    class whose constructor takes no arguments."""
    record = get_record(model)
    if record.source:
        return record.source
    cls = type(model)
    if cls.__module__ in ("__main__", "builtins") or "<locals>" in cls.__qualname__:
        return None
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return None
    if any(
        p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        for p in params.values()
    ):
        return None
    return f"{cls.__module__}:{cls.__qualname__}"


def save(model: nn.Module, directory: str | os.PathLike[str], *, source: str | None = None) -> Path:
    """Save ``model`` to ``directory`` as ``model.safetensors`` + ``slimkit.json``.

    Args:
        model: the model (its record says how to rebuild the architecture).
        directory: output folder; created if missing, other files in it are kept.
        source: model spec that rebuilds the original architecture, when the model
            was not loaded through slimkit (e.g. ``"mypkg.nets:build"``).

    Returns:
        The folder written.

    Raises:
        InvalidConfigError: when no source spec is known or the path is not a folder.
    """
    if not isinstance(model, nn.Module):
        raise InvalidConfigError(f"save needs a torch.nn.Module, got {type(model).__name__}")
    source = source or infer_source(model)
    if source is None:
        raise InvalidConfigError(
            f"cannot tell how to rebuild {type(model).__name__}: pass source='package.module:factory' "
            "(a function that returns the original architecture)"
        )
    record = get_record(model)
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}

    def write_weights(path: Path) -> None:
        save_model(model if _on_cpu(model) else copy.deepcopy(model).cpu(), str(path), metadata={"format": "pt"})

    def write_index(path: Path) -> None:
        index = {
            "format": "slimkit",
            "format_version": FORMAT_VERSION,
            "slimkit_version": slimkit.__version__,
            "source": source,
            "transforms": [t.to_dict() for t in record.transforms],
            "shapes": shapes,
            "weights": {"file": WEIGHTS, "sha256": _sha256(path.parent / WEIGHTS)},
        }
        path.write_text(json.dumps(index, separators=(",", ":")))  # compact: it counts in the artifact size

    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise InvalidConfigError(f"{directory} exists and is not a folder: give a folder path to save into")
    return publish({WEIGHTS: write_weights, INDEX: write_index}, directory)


def _on_cpu(model: nn.Module) -> bool:
    return all(t.device.type == "cpu" for t in (*model.parameters(), *model.buffers()))


def is_slimkit_folder(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a folder written by `save`."""
    return (Path(path) / INDEX).is_file()


def read_index(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate ``slimkit.json``, raising `UnsafeFileError` when it is corrupt."""
    path = Path(directory) / INDEX
    try:
        index = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UnsafeFileError(f"{path} is corrupt or unreadable ({exc}); save the model again") from None
    if not isinstance(index, dict) or index.get("format") != "slimkit" or "source" not in index:
        raise UnsafeFileError(f"{path} is not a slimkit index file; save the model again with slimkit")
    if index.get("format_version", 0) > FORMAT_VERSION:
        raise UnsafeFileError(f"{path} was written by a newer slimkit: upgrade slimkit to load it")
    return index


def load_weights(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a safetensors file, turning corruption into `UnsafeFileError`."""
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise UnsafeFileError(f"{path} is corrupt or truncated ({exc}); save or download it again") from None


def apply_state(model: nn.Module, state: dict[str, torch.Tensor], origin: str) -> nn.Module:
    """Load ``state`` into ``model`` strictly, naming missing/unexpected/mismatched keys on failure."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    # tied weights are stored once; accept a missing key whose tensor shares storage with a present one
    tied = {k for k in missing if any(own[k].data_ptr() == own[j].data_ptr() for j in state if j in own)}
    missing = [k for k in missing if k not in tied]
    unexpected = sorted(set(state) - set(own))
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        details = []
        if missing:
            details.append(f"missing {missing[:5]}")
        if unexpected:
            details.append(f"unexpected {unexpected[:5]}")
        if wrong:
            details.append(f"shape mismatch {[(k, tuple(state[k].shape), tuple(own[k].shape)) for k in wrong[:5]]}")
        raise UnsupportedModelError(f"weights in {origin} do not fit the architecture: " + "; ".join(details))
    model.load_state_dict(state, strict=False)
    return model


def load_folder(directory: str | os.PathLike[str]) -> nn.Module:
    """Rebuild a model saved by `save`: architecture from the source spec, structural
    transforms replayed, then weights loaded (verified against the index's checksum)."""
    from slimkit.core.registry import replay
    from slimkit.core.specs import build_architecture

    directory = Path(directory)
    index = read_index(directory)
    weights = directory / index.get("weights", {}).get("file", WEIGHTS)
    if not weights.is_file():
        raise UnsafeFileError(f"{weights} is missing: the folder is incomplete; save the model again")
    expected = index.get("weights", {}).get("sha256")
    if expected and _sha256(weights) != expected:
        raise UnsafeFileError(
            f"{weights} does not match {INDEX} (truncated, corrupt or replaced); save the model again"
        )
    model = build_architecture(index["source"])
    transforms = [Transform.from_dict(t) for t in index.get("transforms", [])]
    for transform in transforms:
        model = replay(model, transform)
    apply_state(model, load_weights(weights), str(weights))
    object.__setattr__(model, "_slimkit_record", Record(index["source"], transforms))
    return model.eval()


def load_checkpoint(path: str | os.PathLike[str], *, trust_pickle: bool = False) -> Any:
    """Load a ``.pt``/``.pth`` file; only tensors and plain containers unless ``trust_pickle``.

    Raises:
        UnsafeFileError: when the file holds pickled objects that could run code and
            ``trust_pickle`` is False, or when it is corrupt.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for bad files
        if not trust_pickle and "weights_only" in str(exc):
            raise UnsafeFileError(
                f"{path} contains pickled Python objects and loading it could run arbitrary code; "
                "if you trust the file, pass trust_pickle=True (CLI: --trust-pickle)"
            ) from None
        raise UnsafeFileError(f"{path} is corrupt or not a PyTorch checkpoint ({type(exc).__name__}: {exc})") from None


def state_dict_of(checkpoint: Any, origin: str) -> dict[str, torch.Tensor]:
    """The state dict inside a checkpoint (bare, or under ``state_dict``/``model``)."""
    if isinstance(checkpoint, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(checkpoint.get(key), dict):
                checkpoint = checkpoint[key]
                break
        if checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
            return checkpoint
    raise SlimkitError(f"{origin} holds no state dict of tensors")
