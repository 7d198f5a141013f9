"""Model and data specs: the strings the CLI and recipes use to name a model or dataset.

Model specs: ``example:NAME``, ``hf:DIR`` (transformers), ``package.module:factory``
(with optional weights), ``file.pt2`` (torch.export), ``file.pt``/``.pth`` (pickle only when
trusted), or a slimkit output folder. Data specs: ``example:NAME``, ``module:function``,
``file.npz`` with arrays ``x`` (and ``y``), split 80/10/10 into train/calibration/test by a
seeded shuffle (`DataSplits.split`), or with explicit ``x_train``/``x_test`` (``y_*``,
``x_calibration``) arrays used as given.
"""

from __future__ import annotations

import importlib
import inspect
import io
import json
import os
import re
import sys
import types
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slimkit.core import trust
from slimkit.core.data import DataSplits, TensorData
from slimkit.core.errors import (
    DataError,
    InvalidConfigError,
    SlimkitError,
    UnsafeFileError,
    UnsupportedModelError,
    first_line,
)
from slimkit.core.examples import SPEC_PREFIX, catalog
from slimkit.core.formats import ARTIFACT_SUFFIXES
from slimkit.core.hf import import_transformers
from slimkit.core.index import is_slimkit_folder
from slimkit.core.io import load_folder
from slimkit.core.record import set_source
from slimkit.core.weights import apply_state, load_checkpoint, load_weights, state_dict_of

_FACTORY = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
MODEL_SPEC_HELP = (
    "use example:NAME, hf:DIR, package.module:factory, a .pt2 file, a .pt/.pth file, or a slimkit output folder"
)
DATA_SPEC_HELP = (
    "use example:NAME, package.module:function, or a .npz file with arrays x (and y) "
    "or x_train/x_test (and y_train/y_test)"
)


def _import_module(module_name: str, spec: str, what: str) -> Any:
    """Import ``module_name`` with the current folder on ``sys.path`` (like ``python -m``)."""
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise InvalidConfigError(
                f"cannot import module {module_name!r} for {what} {spec!r}: no module named {exc.name!r} in the "
                f"current folder ({cwd}) or on the Python path; run slimkit from the folder that holds it"
            ) from None
        raise InvalidConfigError(f"importing {module_name!r} for {what} {spec!r} failed: {first_line(exc)}") from None
    except Exception as exc:  # user code: a syntax error or an exception raised at import time
        raise InvalidConfigError(
            f"importing {module_name!r} for {what} {spec!r} failed: {type(exc).__name__}: {first_line(exc)}"
        ) from None
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def _import_attr(spec: str, what: str, within: str | None = None) -> Any:
    """The callable named by ``module:attr``; with ``within``, it must be defined in that module tree."""
    module_name, _, attr = spec.partition(":")
    module = _import_module(module_name, spec, what)
    target: Any = module
    for part in attr.split("."):
        if part.startswith("__") or not hasattr(target, part):
            raise InvalidConfigError(f"module {module_name!r} has no attribute {attr!r} (from {what} {spec!r})")
        target = getattr(target, part)
    if not callable(target):
        raise InvalidConfigError(f"{spec!r} is not callable: a {what} must name a function or class")
    if within is not None:
        defined = getattr(target, "__module__", None) or ""
        if not (defined == within or defined.startswith(within + ".")):
            raise UnsafeFileError(f"{spec!r} is defined in {defined or 'an unknown module'!r}, not in {within!r}")
    return target


def _call(factory: Any, spec: str) -> Any:
    try:
        return factory()
    except TypeError as exc:
        raise InvalidConfigError(f"calling {spec}() failed ({exc}): it must be callable without arguments") from None
    except SlimkitError:
        raise
    except Exception as exc:  # user code raised: one line naming it, not a traceback
        raise InvalidConfigError(f"calling {spec}() failed: {type(exc).__name__}: {first_line(exc)}") from None


def _hf_model(directory: str, pretrained: bool) -> nn.Module:
    """A transformers model from a local folder; custom code (``trust_remote_code``) never runs."""
    path = Path(directory)
    config_path = path / "config.json"
    if not config_path.is_file():
        raise InvalidConfigError(f"hf:{directory} is not a transformers model folder (no config.json there)")
    try:
        if config_path.stat().st_size > 16 << 20:
            raise ValueError("larger than 16 MB")
        raw = json.loads(config_path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidConfigError(f"{config_path} is not valid JSON ({first_line(exc)})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("model_type"), str):
        raise InvalidConfigError(f"{config_path} has no model_type: it is not a transformers config")
    if raw.get("auto_map"):
        raise UnsafeFileError(
            f"hf:{directory} needs custom code (auto_map in config.json); slimkit never runs a model folder's code"
        )
    transformers = import_transformers()
    try:
        config = transformers.AutoConfig.from_pretrained(directory, local_files_only=True, trust_remote_code=False)
    except Exception as exc:  # transformers raises ValueError/KeyError/OSError for unknown or bad configs
        raise InvalidConfigError(f"{config_path} is not a config transformers can read: {first_line(exc)}") from None
    cls: Any = transformers.AutoModel
    names = getattr(config, "architectures", None) or []
    candidate = getattr(transformers, names[0], None) if names and isinstance(names[0], str) else None
    if isinstance(candidate, type) and issubclass(candidate, transformers.PreTrainedModel):
        cls = candidate
    try:
        if pretrained:
            if not any((path / f).is_file() for f in _HF_WEIGHTS):
                raise InvalidConfigError(
                    f"hf:{directory} has no weights ({' or '.join(_HF_WEIGHTS)}); add them, or build the "
                    "architecture only with pretrained=False"
                )
            model = cls.from_pretrained(directory, local_files_only=True, trust_remote_code=False, use_safetensors=None)
        else:
            model = cls.from_config(config) if cls is transformers.AutoModel else cls._from_config(config)
    except SlimkitError:
        raise
    except Exception as exc:  # corrupt weights, mismatched config: one line
        raise UnsafeFileError(f"cannot load hf:{directory}: {type(exc).__name__}: {first_line(exc)}") from None
    return model.eval()


_HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


class ExportedModel(nn.Module):
    """A ``torch.export`` program as an `nn.Module` that accepts ``train()``/``eval()``.

    The unlifted module of an exported program refuses mode changes; its graph already
    has the mode it was exported in, so the wrapper only records the flag.
    """

    def __init__(self, program: nn.Module):
        super().__init__()
        self.program = program
        try:  # show the program's own input names (exporters and input matching read them)
            signature = inspect.signature(program.forward)
        except (TypeError, ValueError):
            return
        if all(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in signature.parameters.values()):

            def forward(self: ExportedModel, *args: Any, **kwargs: Any) -> Any:
                return self.program(*args, **kwargs)

            first = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
            forward.__signature__ = signature.replace(parameters=[first, *signature.parameters.values()])  # type: ignore[attr-defined]
            self.forward = types.MethodType(forward, self)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the exported graph."""
        return self.program(*args, **kwargs)

    def train(self, mode: bool = True) -> ExportedModel:
        """Record the mode only (the exported graph keeps the mode it was exported in)."""
        self.training = mode
        return self


def check_pt2(path: str | os.PathLike[str]) -> None:
    """Refuse a ``.pt2`` archive that would unpickle anything or load compiled code.

    ``torch.export.load`` unpickles weights and constants flagged ``use_pickle``, custom and
    opaque objects, legacy-format payloads, and sample inputs that ``weights_only`` rejects;
    AOTInductor packages load shared libraries. Each is refused unless the user trusts the file.

    Raises:
        UnsafeFileError: the archive holds such an entry, or is not a readable archive.
    """
    advice = "if you trust the file, pass trust_pickle=True (CLI: --trust-pickle)"
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if not names or len(names) > 100_000:
                raise UnsafeFileError(f"{path} is not a torch.export archive (no or too many entries)")
            root = names[0].split("/", 1)[0] + "/"
            if any(not n.startswith(root) for n in names):
                raise UnsafeFileError(f"{path} is not a torch.export archive (entries outside one root folder)")
            rel = {n[len(root) :]: n for n in names}
            fmt = archive.read(rel["archive_format"]).strip() if "archive_format" in rel else b""
            if fmt != b"pt2":
                raise UnsafeFileError(
                    f"{path} is an old-format .pt2 whose contents are pickled; re-export it with this torch's "
                    f"torch.export.save, or {advice}"
                )
            for name in rel:
                if name.startswith(("data/aotinductor/", "data/executorch/", "data/mtia", "xl_model_weights/")):
                    raise UnsafeFileError(f"{path} holds compiled code ({name}); slimkit loads only exported graphs")
            models = [n[len("models/") : -len(".json")] for n in rel if n.startswith("models/") and n.endswith(".json")]
            if not models:
                raise UnsafeFileError(f"{path} holds no exported program")
            for model in models:
                for kind in ("weights", "constants"):
                    if f"data/{kind}/{model}.pt" in rel:
                        raise UnsafeFileError(f"{path} stores its {kind} as a pickle (legacy format); {advice}")
                    config_name = f"data/{kind}/{model}_{kind}_config.json"
                    if config_name not in rel:
                        raise UnsafeFileError(f"{path} has no {config_name}: not a current torch.export archive")
                    config = json.loads(archive.read(rel[config_name]).decode("utf-8")).get("config", {})
                    for fqn, entry in config.items():
                        pickled = entry.get("use_pickle") or str(entry.get("path_name", "")).startswith(
                            ("custom_obj_", "opaque_obj_")
                        )
                        if pickled:
                            raise UnsafeFileError(
                                f"{path}: {kind} entry {fqn!r} is a pickle that could run arbitrary code; {advice}"
                            )
                sample = rel.get(f"data/sample_inputs/{model}.pt")
                if sample is not None:
                    try:
                        torch.load(io.BytesIO(archive.read(sample)), weights_only=True)
                    except Exception:
                        raise UnsafeFileError(
                            f"{path}: its sample inputs hold pickled objects that could run arbitrary code; {advice}"
                        ) from None
    except UnsafeFileError:
        raise
    except (OSError, zipfile.BadZipFile, KeyError, ValueError, AttributeError, TypeError, RecursionError) as exc:
        raise UnsafeFileError(f"{path} is not a valid torch.export archive ({first_line(exc)})") from None


def load_pt2(path: str | os.PathLike[str], *, trust_pickle: bool = False) -> nn.Module:
    """An exported program as a module (see `ExportedModel`), refusing pickles unless trusted."""
    if not trust_pickle:
        check_pt2(path)
    try:
        program = torch.export.load(str(path)).module()
    except Exception as exc:  # torch raises many types for a bad archive
        raise UnsafeFileError(f"{path} is not a valid torch.export archive ({type(exc).__name__}: {exc})") from None
    return ExportedModel(program).eval()


def _file_model(path: Path, trust_pickle: bool) -> nn.Module:
    suffix = path.suffix.lower()
    if suffix == ".pt2":
        return set_source(load_pt2(path, trust_pickle=trust_pickle), str(path))
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


def _weights_into(model: nn.Module, weights: str | os.PathLike[str], trust_pickle: bool = False) -> nn.Module:
    path = Path(weights)
    if not path.is_file():
        raise InvalidConfigError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        state = load_weights(path)
    else:
        state = state_dict_of(load_checkpoint(path, trust_pickle=trust_pickle), str(path))
    return apply_state(model, state, str(path))


def load_model(
    spec: str | os.PathLike[str] | nn.Module,
    *,
    weights: str | os.PathLike[str] | None = None,
    trust_pickle: bool = False,
    pretrained: bool = True,
    allow_modules: tuple[str, ...] | list[str] = (),
) -> nn.Module:
    """Load a model from a spec (see the module doc); the result records its source.

    Args:
        spec: the model spec, or a module (returned as is).
        weights: a ``.safetensors`` or ``.pt`` state dict loaded into the built model.
        trust_pickle: allow ``.pt``/``.pt2`` files that hold pickled objects (can run code).
        pretrained: for ``example:`` and ``hf:`` specs, False builds the architecture only.
        allow_modules: for a slimkit folder, modules its ``source`` may import besides
            ``slimkit.models`` (see docs/saving.md).

    Raises:
        InvalidConfigError: malformed spec, missing path, unknown example.
        UnsafeFileError: corrupt files, pickles that are not trusted, folders naming
            modules that are not allowed.
    """
    if isinstance(spec, nn.Module):
        model = spec
    else:
        text = str(spec).strip()
        model = _model_from_text(text, trust_pickle, pretrained, tuple(allow_modules))
    return _weights_into(model, weights, trust_pickle) if weights is not None else model


def _model_from_text(text: str, trust_pickle: bool, pretrained: bool, allow: tuple[str, ...] = ()) -> nn.Module:
    if text.startswith(SPEC_PREFIX):
        return set_source(catalog().get_model(text.removeprefix(SPEC_PREFIX), pretrained=pretrained), text)
    if text.startswith("hf:"):
        return set_source(_hf_model(text.removeprefix("hf:"), pretrained), text)
    if text.startswith("hf-config:"):
        raise InvalidConfigError(
            f"{text} is how a saved folder rebuilds a transformers model from the config in its slimkit.json, "
            "not a model spec: load the folder itself, or name the original model with hf:DIR"
        )
    path = Path(text)
    if path.exists():
        if is_slimkit_folder(path):
            return load_folder(path, allow_modules=allow, trust_pickle=trust_pickle)
        return _file_model(path, trust_pickle)
    if _FACTORY.fullmatch(text) and "/" not in text:
        model = _factory_model(text, None)
        trust.allow_modules(text.partition(":")[0])  # the user named it: its saved folders may rebuild from it
        return model
    if "/" in text or path.suffix:
        raise InvalidConfigError(f"{text} does not exist: check the path")
    raise InvalidConfigError(f"malformed model spec {text!r}: {MODEL_SPEC_HELP}")


def _factory_model(text: str, within: str | None) -> nn.Module:
    model = _call(_import_attr(text, "model factory", within), text)
    if not isinstance(model, nn.Module):
        raise InvalidConfigError(f"{text} returned {type(model).__name__}, not a torch.nn.Module")
    return set_source(model.eval(), text)


def build_architecture(
    source: str,
    *,
    directory: str | os.PathLike[str] | None = None,
    allow_modules: tuple[str, ...] = (),
    trust_pickle: bool = False,
) -> nn.Module:
    """The original architecture named by a saved source spec, without pretrained weights.

    With ``directory`` (a saved folder being loaded), the spec was checked by
    `slimkit.core.io.load_folder`: a ``.pt2`` is read from inside the folder and a factory
    must be defined in the module the spec names.
    """
    if directory is None:
        return load_model(source, pretrained=False, trust_pickle=trust_pickle, allow_modules=allow_modules)
    if source.startswith(("example:", "hf:")):
        return _model_from_text(source, False, False)
    if source.lower().endswith(".pt2"):
        pt2 = (Path(directory) / source).resolve()
        return set_source(load_pt2(pt2, trust_pickle=trust_pickle), str(pt2))
    return _factory_model(source, source.partition(":")[0])


NPZ_MIN_BUDGET = 1 << 30
NPZ_MAX_RATIO = 100
"""An ``.npz`` may declare at most ``max(1 GiB, 100 x its file size)`` of array data."""
SPLIT_NAMES = {"train": "train", "calibration": "calibration", "val": "calibration", "test": "test"}


def _as_tensor(value: Any, name: str) -> torch.Tensor:
    array = np.asarray(value)
    if array.dtype == object or array.dtype.kind not in "biuf":
        raise DataError(f"{name} must be a numeric array, got dtype {array.dtype}")
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    return tensor.float() if tensor.is_floating_point() else tensor


def _as_labels(value: Any, name: str) -> torch.Tensor:
    """Class-index targets: 1-D, integer-valued, non-negative (anything else is refused, not truncated)."""
    y = _as_tensor(value, name)
    if y.dim() != 1:
        raise DataError(f"{name} must be 1-D class indices, one per sample; got shape {tuple(y.shape)}")
    if y.is_floating_point():
        if not torch.isfinite(y).all() or not torch.equal(y, y.round()):
            raise DataError(f"{name} holds non-integer values: targets must be class indices 0..C-1")
    if y.dtype == torch.bool:
        y = y.long()
    if len(y) and int(y.min()) < 0:
        raise DataError(f"{name} holds negative labels (min {int(y.min())}): targets must be class indices 0..C-1")
    return y.long()


def _check_npz_headers(path: Path) -> None:
    """Check every member's ``.npy`` header (dtype, shape, size) before numpy allocates anything."""
    file_size = path.stat().st_size
    budget = max(NPZ_MIN_BUDGET, NPZ_MAX_RATIO * file_size)
    total = 0
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        if len(infos) > 1000:
            raise DataError(f"{path} holds {len(infos)} arrays; slimkit reads at most 1000")
        for info in infos:
            name = info.filename.removesuffix(".npy")
            with archive.open(info) as f:
                version = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, _, dtype = read(f, max_header_size=10_000)
            if dtype.hasobject:
                raise UnsafeFileError(f"{path}: array {name!r} holds pickled objects, which slimkit never loads")
            if dtype.kind not in "biuf":
                raise DataError(f"{path}: array {name!r} has dtype {dtype}; data must be numeric (bool, int, float)")
            nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
            total += nbytes
            if nbytes > info.file_size or total > budget:
                raise UnsafeFileError(
                    f"{path}: array {name!r} declares shape {shape} ({nbytes} bytes), more than the file holds"
                )


def _npz_data(path: Path, batch_size: int) -> DataSplits:
    try:
        _check_npz_headers(path)
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except SlimkitError:
        raise
    except ValueError as exc:
        raise UnsafeFileError(
            f"{path} holds pickled objects or a malformed array, which slimkit never loads ({first_line(exc)})"
        ) from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise DataError(f"{path} is not a readable .npz file ({first_line(exc)})") from None
    explicit = {f"{a}_{s}" for a in "xy" for s in SPLIT_NAMES} & set(arrays)
    if explicit:
        return _explicit_splits(path, arrays, batch_size)
    if "x" not in arrays:
        raise DataError(
            f"{path} has arrays {sorted(arrays)}; it needs 'x' (inputs) and optionally 'y' (targets), "
            "or x_train/x_test (and y_train/y_test, x_calibration/y_calibration)"
        )
    x = _as_tensor(arrays["x"], "x")
    y = _as_labels(arrays["y"], "y") if "y" in arrays else None
    return DataSplits.split(x, y, batch_size)


def _explicit_splits(path: Path, arrays: dict[str, np.ndarray], batch_size: int) -> DataSplits:
    parts: dict[str, TensorData] = {}
    for suffix, split in SPLIT_NAMES.items():
        if f"x_{suffix}" in arrays and split not in parts:
            x = _as_tensor(arrays[f"x_{suffix}"], f"x_{suffix}")
            y = _as_labels(arrays[f"y_{suffix}"], f"y_{suffix}") if f"y_{suffix}" in arrays else None
            parts[split] = TensorData(x, y, batch_size)
    if "train" not in parts or "test" not in parts:
        raise DataError(f"{path} has arrays {sorted(arrays)}; explicit splits need at least x_train and x_test")
    labelled = {s: d.y is not None for s, d in parts.items()}
    if len(set(labelled.values())) > 1:
        raise DataError(f"{path}: either every split has targets (y_train, y_test, ...) or none has")
    calibration = parts.get("calibration") or parts["train"]
    metric = "accuracy" if parts["train"].y is not None else "fidelity"
    return DataSplits(parts["train"], calibration, parts["test"], metric=metric)


def _as_splits(value: Any, spec: str, batch_size: int) -> DataSplits:
    if isinstance(value, DataSplits):
        return value
    if isinstance(value, tuple) and len(value) == 2 and not isinstance(value[0], (tuple, list, dict)):
        return DataSplits.split(_as_tensor(value[0], "x"), _as_labels(value[1], "y"), batch_size)
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
    if text.startswith(SPEC_PREFIX):
        return catalog().get_data(text.removeprefix(SPEC_PREFIX), batch_size=batch_size)
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
