"""Model and data specs: the strings the CLI and recipes use to name a model or dataset.

Model specs: ``example:NAME``, ``hf:DIR`` (transformers), ``package.module:factory``
(with optional weights), ``file.pt2`` (torch.export), ``file.pt``/``.pth`` (pickle only when
trusted), or a slimkit output folder. Data specs: ``example:NAME``, ``module:function``,
``file.npz`` with arrays ``x`` (and ``y``).
"""

from __future__ import annotations

import importlib
import os
import re
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slimkit.core.data import DataSplits, TensorData
from slimkit.core.errors import DataError, InvalidConfigError, UnsafeFileError, UnsupportedModelError
from slimkit.core.hf import import_transformers
from slimkit.core.io import apply_state, is_slimkit_folder, load_checkpoint, load_folder, load_weights, state_dict_of
from slimkit.core.record import set_source

_FACTORY = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
ARTIFACT_SUFFIXES = (".onnx", ".pte", ".tflite")
MODEL_SPEC_HELP = (
    "use example:NAME, hf:DIR, package.module:factory, a .pt2 file, a .pt/.pth file, or a slimkit output folder"
)
DATA_SPEC_HELP = "use example:NAME, package.module:function, or a .npz file with arrays x (and y)"


def _import_attr(spec: str, what: str) -> Any:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidConfigError(f"cannot import module {module_name!r} for {what} {spec!r}: {exc}") from None
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise InvalidConfigError(f"module {module_name!r} has no attribute {attr!r} (from {what} {spec!r})")
        target = getattr(target, part)
    if not callable(target):
        raise InvalidConfigError(f"{spec!r} is not callable: a {what} must name a function or class")
    return target


def _call(factory: Any, spec: str) -> Any:
    try:
        return factory()
    except TypeError as exc:
        raise InvalidConfigError(f"calling {spec}() failed ({exc}): it must be callable without arguments") from None


def _hf_model(directory: str, pretrained: bool) -> nn.Module:
    transformers = import_transformers()
    AutoConfig, AutoModel = transformers.AutoConfig, transformers.AutoModel  # noqa: N806

    if not Path(directory, "config.json").is_file():
        raise InvalidConfigError(f"hf:{directory} is not a transformers model folder (no config.json there)")
    if pretrained:
        return AutoModel.from_pretrained(directory, local_files_only=True).eval()
    return AutoModel.from_config(AutoConfig.from_pretrained(directory, local_files_only=True)).eval()


def _file_model(path: Path, trust_pickle: bool) -> nn.Module:
    suffix = path.suffix.lower()
    if suffix == ".pt2":
        try:
            return torch.export.load(str(path)).module()
        except Exception as exc:  # torch raises many types for a bad archive
            raise UnsafeFileError(f"{path} is not a valid torch.export archive ({type(exc).__name__}: {exc})") from None
    if suffix in (".pt", ".pth"):
        loaded = load_checkpoint(path, trust_pickle=trust_pickle)
        if isinstance(loaded, nn.Module):
            return loaded.eval()
        raise InvalidConfigError(
            f"{path} holds weights only, not a model: give the architecture as package.module:factory "
            f"and pass this file as its weights (CLI: --weights {path})"
        )
    if suffix == ".safetensors":
        raise InvalidConfigError(
            f"{path} holds weights only: give the architecture as package.module:factory with --weights {path}"
        )
    if suffix in ARTIFACT_SUFFIXES:
        raise UnsupportedModelError(
            f"{path} is a deployed artifact, not a PyTorch model: profile or run it with "
            "slimkit profile / sk.runtime.load"
        )
    if path.is_dir():
        raise InvalidConfigError(
            f"{path} is not a slimkit output folder (no slimkit.json); for a transformers folder use hf:{path}"
        )
    raise InvalidConfigError(f"cannot load a model from {path}: {MODEL_SPEC_HELP}")


def _weights_into(model: nn.Module, weights: str | os.PathLike[str]) -> nn.Module:
    path = Path(weights)
    if not path.is_file():
        raise InvalidConfigError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        state = load_weights(path)
    else:
        state = state_dict_of(load_checkpoint(path), str(path))
    return apply_state(model, state, str(path))


def load_model(
    spec: str | os.PathLike[str] | nn.Module,
    *,
    weights: str | os.PathLike[str] | None = None,
    trust_pickle: bool = False,
    pretrained: bool = True,
) -> nn.Module:
    """Load a model from a spec (see the module doc); the result records its source.

    Args:
        spec: the model spec, or a module (returned as is).
        weights: a ``.safetensors`` or ``.pt`` state dict loaded into the built model.
        trust_pickle: allow ``.pt`` files that hold pickled objects (can run code).
        pretrained: for ``example:`` and ``hf:`` specs, False builds the architecture only.

    Raises:
        InvalidConfigError: malformed spec, missing path, unknown example.
        UnsafeFileError: corrupt files, or pickles that are not trusted.
    """
    if isinstance(spec, nn.Module):
        model = spec
    else:
        text = str(spec).strip()
        model = _model_from_text(text, trust_pickle, pretrained)
    return _weights_into(model, weights) if weights is not None else model


def _model_from_text(text: str, trust_pickle: bool, pretrained: bool) -> nn.Module:
    if text.startswith("example:"):
        from slimkit import models

        return set_source(models.get_model(text.removeprefix("example:"), pretrained=pretrained), text)
    if text.startswith("hf:"):
        return set_source(_hf_model(text.removeprefix("hf:"), pretrained), text)
    path = Path(text)
    if path.exists():
        return load_folder(path) if is_slimkit_folder(path) else _file_model(path, trust_pickle)
    if _FACTORY.fullmatch(text) and "/" not in text:
        model = _call(_import_attr(text, "model factory"), text)
        if not isinstance(model, nn.Module):
            raise InvalidConfigError(f"{text} returned {type(model).__name__}, not a torch.nn.Module")
        return set_source(model.eval(), text)
    if "/" in text or path.suffix:
        raise InvalidConfigError(f"{text} does not exist: check the path")
    raise InvalidConfigError(f"malformed model spec {text!r}: {MODEL_SPEC_HELP}")


def build_architecture(source: str) -> nn.Module:
    """The original architecture named by a saved source spec, without pretrained weights."""
    return load_model(source, pretrained=False)


def _as_tensor(value: Any, name: str) -> torch.Tensor:
    array = np.asarray(value)
    if array.dtype == object:
        raise DataError(f"{name} must be a numeric array, got dtype object")
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    return tensor.float() if tensor.is_floating_point() else tensor


def _npz_data(path: Path, batch_size: int) -> DataSplits:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except ValueError as exc:
        raise UnsafeFileError(
            f"{path} holds pickled objects, which slimkit never loads from data files ({exc})"
        ) from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path} is not a readable .npz file ({exc})") from None
    if "x" not in arrays:
        raise DataError(f"{path} has arrays {sorted(arrays)}; it needs 'x' (inputs) and optionally 'y' (targets)")
    x = _as_tensor(arrays["x"], "x")
    y = _as_tensor(arrays["y"], "y").long() if "y" in arrays else None
    return DataSplits.single(TensorData(x, y, batch_size), metric="accuracy" if y is not None else "fidelity")


def _as_splits(value: Any, spec: str, batch_size: int) -> DataSplits:
    if isinstance(value, DataSplits):
        return value
    if isinstance(value, tuple) and len(value) == 2 and not isinstance(value[0], (tuple, list, dict)):
        return DataSplits.single(TensorData(_as_tensor(value[0], "x"), _as_tensor(value[1], "y").long(), batch_size))
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes, torch.Tensor)):
        return DataSplits.single(value)
    raise DataError(f"{spec} returned {type(value).__name__}; return a DataSplits, an iterable of batches, or (x, y)")


def load_data(spec: str | os.PathLike[str], *, batch_size: int | None = None) -> DataSplits:
    """Load data splits from a spec (see the module doc).

    Raises:
        InvalidConfigError: malformed spec or unknown example.
        DataError: unreadable or malformed data.
    """
    text = str(spec).strip()
    if text.startswith("example:"):
        from slimkit import models

        return models.get_data(text.removeprefix("example:"), batch_size=batch_size)
    path = Path(text)
    if path.suffix == ".npz":
        if not path.is_file():
            raise InvalidConfigError(f"{text} does not exist: check the path")
        return _npz_data(path, batch_size or 64)
    if _FACTORY.fullmatch(text) and "/" not in text:
        return _as_splits(_call(_import_attr(text, "data function"), text), text, batch_size or 64)
    if path.exists() or "/" in text or path.suffix:
        raise InvalidConfigError(f"cannot read data from {text}: {DATA_SPEC_HELP}")
    raise InvalidConfigError(f"malformed data spec {text!r}: {DATA_SPEC_HELP}")


__all__ = ["load_model", "load_data", "build_architecture"]
