"""Safe save/load of slimkit models: ``model.safetensors`` + ``slimkit.json``, no pickle.

A saved folder is data, not code. `load_folder` checks everything in it before it
allocates a tensor or imports a module (docs/saving.md states the trust model):

1. ``slimkit.json`` is size-capped, parsed, depth-checked and validated by `IndexFile`
   (types and bounds of every field), and its ``integrity`` hash (SHA-256 over the
   canonical JSON of the other fields) must match;
2. ``weights.file`` is a plain file name inside the folder (no path, no symlink), its
   safetensors header is read without loading (offsets and sizes against the file) and
   its shapes must equal the index's ``shapes``; its SHA-256 is mandatory and must match;
3. ``source`` may only be ``example:NAME``, ``hf:DIR``, ``hf-config:Class`` (a class the
   ``transformers`` package exports, built from the config stored in ``hf_config``: data, never
   custom code), a ``.pt2`` file inside the folder, or ``module:factory`` from an allowed
   module (``slimkit.models``, modules passed in ``allow_modules``/`allow_modules`, and
   modules this process already trusted: named in a model spec the user loaded, or the
   source of a model it saved);
4. every replayed transform's state is bounds-checked, replayed first on the ``meta``
   device (no memory) and must produce the recorded shapes before the real replay.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import os
import re
import shutil
import stat
import struct
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_model
from torch import nn

import slimkit
from slimkit.core.atomic import publish, staging_dir
from slimkit.core.errors import InvalidConfigError, SlimkitError, UnsafeFileError, UnsupportedModelError, first_line
from slimkit.core.hf import (
    HF_CONFIG,
    build_from_config,
    config_source,
    hf_layer_mismatches,
    import_transformers,
    is_transformers_model,
)
from slimkit.core.record import Record, Transform, get_record

WEIGHTS = "model.safetensors"
INDEX = "slimkit.json"
FORMAT_VERSION = 2
"""Version 2 added the mandatory ``integrity`` field; version-1 folders load with a warning."""
MAX_INDEX_BYTES = 64 << 20
"""Largest ``slimkit.json`` read (a real index is a few KB to a few MB)."""
MAX_JSON_DEPTH = 32
MAX_HEADER_BYTES = 100 << 20
"""Largest safetensors header read (safetensors itself refuses more than 100 MB)."""
SAFE_MODULES = ("slimkit.models",)
"""Modules a saved ``source`` may always name (the bundled examples and test models)."""

_HEX64 = r"^[0-9a-f]{64}$"
_PLAIN_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,200}$"
_MODULE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_FACTORY = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
_trusted_modules: set[str] = set()

_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8, "C64": 8,
}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# the index schema


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Dim = Annotated[StrictInt, Field(ge=0, le=1 << 40)]


class TransformEntry(_Strict):
    """One recorded transform as stored in ``slimkit.json``."""

    verb: Annotated[StrictStr, Field(pattern=r"^[a-z][a-z0-9_\-]{0,63}$")]
    method: Annotated[StrictStr, Field(pattern=r"^[a-z0-9][a-z0-9_\-]{0,63}$")]
    config: dict[StrictStr, Any] = Field(default_factory=dict)
    state: dict[StrictStr, Any] = Field(default_factory=dict)
    changed: list[StrictStr] = Field(default_factory=list)
    skipped: dict[StrictStr, StrictStr] = Field(default_factory=dict)


class WeightsEntry(_Strict):
    """Where the weights are and their checksum (both mandatory)."""

    file: Annotated[StrictStr, Field(pattern=_PLAIN_NAME)]
    sha256: Annotated[StrictStr, Field(pattern=_HEX64)]


class IndexFile(_Strict):
    """The schema of ``slimkit.json``; every field is checked before anything is loaded."""

    format: Literal["slimkit"]
    format_version: Annotated[StrictInt, Field(ge=1, le=FORMAT_VERSION)]
    slimkit_version: Annotated[StrictStr, Field(max_length=64)] = ""
    source: Annotated[StrictStr, Field(min_length=1, max_length=4096)]
    transforms: Annotated[list[TransformEntry], Field(max_length=10_000)] = Field(default_factory=list)
    shapes: dict[StrictStr, Annotated[list[Dim], Field(max_length=16)]]
    weights: WeightsEntry
    hf_config: dict[StrictStr, Any] | None = None
    """The transformers config (``config.to_dict()``) of an ``hf-config:Class`` source."""
    versions: dict[StrictStr, Annotated[StrictInt, Field(ge=0, le=1 << 31)] | None] | None = None
    """Module versions (``state_dict()._metadata``) other than 1, by module name; they tell
    ``load_state_dict`` which layout the saved tensors have (e.g. BatchNorm version 2)."""
    integrity: Annotated[StrictStr, Field(pattern=_HEX64)] | None = None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def integrity_hash(index: dict[str, Any]) -> str:
    """SHA-256 over the canonical JSON (sorted keys, compact) of the index without ``integrity``."""
    body = {k: v for k, v in index.items() if k != "integrity"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# trusted modules


def allow_modules(*names: str) -> None:
    """Let saved folders in this process name factories from ``names`` (and their submodules).

    Loading a folder never imports a module you did not allow; pass the packages of your
    own model factories here (or ``sk.load(dir, allow_modules=[...])``, CLI
    ``--allow-module``, or the ``SLIMKIT_ALLOW_MODULES`` environment variable, comma-separated).
    """
    for name in names:
        if not isinstance(name, str) or not _MODULE.fullmatch(name):
            raise InvalidConfigError(f"allow_modules: {name!r} is not a module name like 'mypkg.models'")
        _trusted_modules.add(name)


def _allowed(module: str, extra: tuple[str, ...]) -> bool:
    env = tuple(m.strip() for m in os.environ.get("SLIMKIT_ALLOW_MODULES", "").split(",") if m.strip())
    return any(module == m or module.startswith(m + ".") for m in (*SAFE_MODULES, *_trusted_modules, *extra, *env))


# ---------------------------------------------------------------------------------------------
# save


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


def save(
    model: nn.Module,
    directory: str | os.PathLike[str],
    *,
    source: str | None = None,
    format: Literal["slimkit", "hf"] = "slimkit",  # noqa: A002 (the user-facing keyword)
) -> Path:
    """Save ``model`` to ``directory`` as ``model.safetensors`` + ``slimkit.json``.

    A transformers ``PreTrainedModel`` needs no ``source``: its config is stored in
    ``slimkit.json`` (source ``hf-config:ClassName``) and `sk.load` rebuilds the class from it.

    Args:
        model: the model (its record says how to rebuild the architecture).
        directory: output folder; created if missing, other files in it are kept.
        source: model spec that rebuilds the original architecture, when the model
            was not loaded through slimkit (e.g. ``"mypkg.nets:build"``).
        format: ``"slimkit"`` (default), or ``"hf"``: a folder transformers'
            ``from_pretrained`` loads (``save_pretrained``), for transformers models whose
            layers transformers builds from the config (plain, fp16/bf16, pruned with an
            updated config).

    Returns:
        The folder written.

    Raises:
        InvalidConfigError: when no source spec is known, the path is not a folder or the
            format is unknown.
        UnsupportedModelError: ``format="hf"`` for a model transformers would not rebuild
            exactly (slimkit-replaced layers, shapes its config does not give).
    """
    if not isinstance(model, nn.Module):
        raise InvalidConfigError(f"save needs a torch.nn.Module, got {type(model).__name__}")
    if format == "hf":
        return save_hf(model, directory)
    if format != "slimkit":
        raise InvalidConfigError(f"unknown save format {format!r}: use 'slimkit' (default) or 'hf'")
    hf_config: dict[str, Any] | None = None
    recorded = get_record(model).source
    if source is None and is_transformers_model(model) and (recorded is None or recorded.startswith(f"{HF_CONFIG}:")):
        source, hf_config = config_source(model)  # the config as data: the folder needs nothing else
        _check_hf_rebuild(model, source, hf_config)
    source = source or infer_source(model)
    if source is None:
        raise InvalidConfigError(
            f"cannot tell how to rebuild {type(model).__name__}: pass source='package.module:factory' "
            "(a function that returns the original architecture)"
        )
    if _FACTORY.fullmatch(source) and _MODULE.fullmatch(source.partition(":")[0]):
        allow_modules(source.partition(":")[0])  # this process built the model: it may rebuild it
    files: dict[str, Any] = {}
    if source.lower().endswith(".pt2") and Path(source).is_file():  # the program travels with the folder
        pt2 = Path(source)
        files[pt2.name] = lambda path: shutil.copyfile(pt2, path)
        source = pt2.name
    record = get_record(model)
    state = model.state_dict()
    shapes = {k: list(v.shape) for k, v in state.items()}
    versions = module_versions(state)

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
            "versions": versions,
        }
        if hf_config is not None:
            index["hf_config"] = hf_config
        index = json.loads(json.dumps(index))  # the hash covers exactly what a reader will parse
        index["integrity"] = integrity_hash(index)
        path.write_text(json.dumps(index, separators=(",", ":")))  # compact: it counts in the artifact size

    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise InvalidConfigError(f"{directory} exists and is not a folder: give a folder path to save into")
    return publish({**files, WEIGHTS: write_weights, INDEX: write_index}, directory)


def _check_hf_rebuild(model: nn.Module, source: str, config: dict[str, Any]) -> None:
    """Refuse to save a transformers model whose stored config and transforms would not
    rebuild its shapes (a config changed after a transform, without its snapshot)."""
    meta = build_from_config(source.partition(":")[2], config, f"saving {type(model).__name__}", meta=True)
    problem = ""
    try:
        with torch.device("meta"):
            planned = _shapes_of(_replay_all(meta, get_record(model).transforms, Path(INDEX), meta=True))
    except _NoMeta:
        return
    except UnsafeFileError as exc:
        problem = str(exc).partition(": field ")[2] or str(exc)
    else:
        own = _shapes_of(model)
        wrong = [k for k, v in own.items() if planned.get(k) != v] + sorted(set(planned) - set(own))
        problem = ", ".join(wrong[:3])
    if problem:
        raise UnsupportedModelError(
            f"cannot save {type(model).__name__}: its config with the recorded transforms does not rebuild it "
            f"({problem}); was model.config changed after slimkit transformed it? Pass "
            "source='package.module:factory' that builds the original model"
        )


def module_versions(state: dict[str, torch.Tensor]) -> dict[str, int | None]:
    """``{module name: version}`` from a state dict's ``_metadata``, leaving out version 1
    (every module's default), so the index stays small."""
    meta = getattr(state, "_metadata", None) or {}
    return {name: info.get("version") for name, info in meta.items() if info.get("version", 1) != 1}


def save_hf(model: nn.Module, directory: str | os.PathLike[str]) -> Path:
    """Write ``model`` with ``save_pretrained`` so transformers' ``from_pretrained`` loads it.

    Raises:
        InvalidConfigError: ``model`` is not a transformers model.
        UnsupportedModelError: it holds layers or shapes its config does not build (they
            would load with random weights or not at all); the message names them.
    """
    if not is_transformers_model(model):
        raise InvalidConfigError(
            f"format='hf' needs a transformers PreTrainedModel, got {type(model).__name__}; use the default format"
        )
    problems = hf_layer_mismatches(model)
    if problems:
        raise UnsupportedModelError(
            f"cannot save {type(model).__name__} in format='hf': transformers would not rebuild these from its "
            f"config ({'; '.join(problems[:4])}{' ...' if len(problems) > 4 else ''}), so from_pretrained would "
            "fail or load random weights; save it in the default slimkit format (sk.save(model, dir)) and load it "
            "with sk.load"
        )
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise InvalidConfigError(f"{directory} exists and is not a folder: give a folder path to save into")
    with staging_dir(directory) as raw:
        bars = import_transformers().utils.logging
        shown = bars.is_progress_bar_enabled()
        bars.disable_progress_bar()  # slimkit prints its own progress; a save is quick
        try:
            model.save_pretrained(raw)  # type: ignore[operator]
        finally:
            if shown:
                bars.enable_progress_bar()
        written = sorted(p for p in raw.iterdir() if p.is_file())
        index = [p for p in written if p.name == "config.json"]  # last: a reader sees it only when complete
        moves = {
            p.name: (lambda path, p=p: os.replace(p, path)) for p in [*(w for w in written if w not in index), *index]
        }
        return publish(moves, directory)


def _on_cpu(model: nn.Module) -> bool:
    return all(t.device.type == "cpu" for t in (*model.parameters(), *model.buffers()))


# ---------------------------------------------------------------------------------------------
# reading and checking a folder


def is_slimkit_folder(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a folder written by `save`."""
    return (Path(path) / INDEX).is_file()


def _depth_ok(value: Any) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return False
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return True


def _field_path(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def read_index(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate ``slimkit.json`` (schema, bounds, integrity hash).

    Raises:
        UnsafeFileError: corrupt, malformed (the message names the field), edited, or newer.
    """
    path = Path(directory) / INDEX
    try:
        if path.stat().st_size > MAX_INDEX_BYTES:
            raise UnsafeFileError(f"{path} is larger than {MAX_INDEX_BYTES >> 20} MB: not a slimkit index")
        raw = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise UnsafeFileError(f"{path} is corrupt or unreadable ({first_line(exc)}); save the model again") from None
    if not isinstance(raw, dict) or raw.get("format") != "slimkit":
        raise UnsafeFileError(f"{path} is not a slimkit index file; save the model again with slimkit")
    version = raw.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise UnsafeFileError(f"{path} was written by a newer slimkit (format {version}): upgrade slimkit to load it")
    if not _depth_ok(raw):
        raise UnsafeFileError(f"{path} nests deeper than {MAX_JSON_DEPTH} levels: not a slimkit index")
    try:
        IndexFile.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
        raise UnsafeFileError(
            f"{path}: field {_field_path(tuple(err['loc']))}: {err['msg']}{more}; the file is malformed or was edited"
        ) from None
    if raw["format_version"] >= 2:
        if raw.get("integrity") is None:
            raise UnsafeFileError(f"{path}: field integrity is missing; the file was edited: save the model again")
        if integrity_hash(raw) != raw["integrity"]:
            raise UnsafeFileError(
                f"{path} was edited after it was saved (its integrity hash does not match); save the model again"
            )
    else:
        warnings.warn(
            f"{path} is format version 1 (no integrity hash): it was checked field by field but edits cannot be "
            "detected; save it again to upgrade it",
            stacklevel=3,
        )
    return raw


def _inside(directory: Path, name: str, what: str) -> Path:
    """``directory/name`` when ``name`` is a plain regular file there (no link, no path)."""
    if not re.fullmatch(_PLAIN_NAME, name) or name in (".", ".."):
        raise UnsafeFileError(f"{directory / INDEX}: {what} {name!r} must be a plain file name inside the folder")
    path = directory / name
    try:
        mode = path.lstat().st_mode
    except OSError:
        raise UnsafeFileError(f"{path} is missing: the folder is incomplete; save the model again") from None
    if not stat.S_ISREG(mode):
        raise UnsafeFileError(f"{path} is not a regular file (a link or folder); slimkit only reads plain files")
    return path


def read_safetensors_header(path: str | os.PathLike[str]) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``{name: (dtype, shape)}`` of a safetensors file, read and checked without loading tensors.

    Raises:
        UnsafeFileError: the header is malformed or does not fit the file's size.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ValueError("shorter than a safetensors header")
            (length,) = struct.unpack("<Q", head)
            if length > min(MAX_HEADER_BYTES, size - 8):
                raise ValueError(f"header length {length} does not fit the file ({size} bytes)")
            header = json.loads(f.read(length).decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise UnsafeFileError(f"{path} is corrupt or truncated ({first_line(exc)}); save the model again") from None
    if not isinstance(header, dict):
        raise UnsafeFileError(f"{path} has a malformed safetensors header; save the model again")
    data_bytes = size - 8 - length
    out: dict[str, tuple[str, tuple[int, ...]]] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
            ok = (
                dtype in _DTYPE_BYTES
                and isinstance(shape, list)
                and len(shape) <= 16
                and all(type(d) is int and 0 <= d <= 1 << 40 for d in shape)
                and type(begin) is int
                and type(end) is int
                and 0 <= begin <= end <= data_bytes
            )
            numel = 1
            for d in shape if ok else ():
                numel *= d
            ok = ok and numel * _DTYPE_BYTES[dtype] == end - begin
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise UnsafeFileError(f"{path}: tensor {name!r} has a malformed or oversized header entry")
        out[name] = (dtype, tuple(shape))
    return out


def load_weights(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a safetensors file (header checked first), turning corruption into `UnsafeFileError`."""
    read_safetensors_header(path)
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise UnsafeFileError(f"{path} is corrupt or truncated ({exc}); save or download it again") from None


_KINDS = {torch.bool: "bool", torch.complex64: "complex", torch.complex128: "complex", torch.complex32: "complex"}


def _kind(dtype: torch.dtype) -> str:
    return _KINDS.get(dtype) or ("float" if dtype.is_floating_point else "integer")


def apply_state(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    origin: str,
    versions: dict[str, int | None] | None = None,
) -> nn.Module:
    """Load ``state`` into ``model`` strictly, naming missing/unexpected/mismatched keys on failure.

    A tensor whose kind (bool, integer, float, complex) differs from the model's is refused:
    casting bool or complex values into float weights silently changes the model.

    Modules read their version from the state dict's ``_metadata`` (a safetensors file has
    none): it is ``versions`` (saved by `save`; a module missing there had version 1), or
    else the model's own versions (the tensors were written by the same code).
    """
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
    kinds = [k for k in own if k in state and _kind(state[k].dtype) != _kind(own[k].dtype)]
    if kinds:
        listed = ", ".join(f"{k} ({state[k].dtype} into {own[k].dtype})" for k in kinds[:3])
        raise UnsafeFileError(f"weights in {origin} have the wrong kind of values: {listed}")
    meta = getattr(state, "_metadata", None)
    if meta is None:
        meta = {name: dict(info) for name, info in (getattr(own, "_metadata", None) or {}).items()}
        if versions is not None:
            meta = {name: {**info, "version": versions.get(name, 1)} for name, info in meta.items()}
    with_meta = _WithMetadata(state)
    with_meta._metadata = meta  # type: ignore[attr-defined]
    model.load_state_dict(with_meta, strict=False)
    return model


class _WithMetadata(dict):  # type: ignore[type-arg]
    """A state dict that carries ``_metadata`` (module versions), as ``state_dict()`` returns."""


def _keep_saved_dtypes(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Give each floating parameter/buffer the dtype it was saved with (an fp16 model stays fp16)."""
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        saved = state.get(name)
        if (
            saved is not None
            and saved.dtype != tensor.dtype
            and saved.is_floating_point()
            and tensor.is_floating_point()
        ):
            tensor.data = tensor.data.to(saved.dtype)


def _check_source(
    source: str, directory: Path, allow: tuple[str, ...], hf_config: dict[str, Any] | None = None
) -> None:
    """Refuse a saved ``source`` that would import or run something the user did not allow."""
    where = f"{directory / INDEX}: source {source!r}"
    if hf_config is not None and not source.startswith(f"{HF_CONFIG}:"):
        raise UnsafeFileError(f"{where}: field hf_config is only valid with an {HF_CONFIG}:Class source")
    if source.startswith("example:"):
        if not re.fullmatch(r"example:[A-Za-z0-9_.\-]{1,100}", source):
            raise UnsafeFileError(f"{where} is not a valid example name")
        return
    if source.startswith("hf:"):  # config.json is read as data; transformers never runs remote code here
        return
    if source.startswith(f"{HF_CONFIG}:"):  # the class is checked against transformers' own exports when built
        if hf_config is None:
            raise UnsafeFileError(f"{where} needs the field hf_config (the model's config), which is missing")
        return
    if source.lower().endswith(".pt2"):
        _inside(directory, source, "source")
        return
    if _FACTORY.fullmatch(source):
        module = source.partition(":")[0]
        if not _allowed(module, allow):
            raise UnsafeFileError(
                f"{where} would import module {module!r}, which you have not allowed; loading a folder "
                f"never imports a module you did not name: if you trust it, pass allow_modules=['{module}'] "
                f"(CLI: --allow-module {module})"
            )
        return
    raise UnsafeFileError(
        f"{where} is not allowed: a saved source is example:NAME, hf:DIR, {HF_CONFIG}:Class, a .pt2 file inside "
        "the folder, or package.module:factory from an allowed module"
    )


def _walk_ints(value: Any, path: str, limit: int) -> None:
    stack = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, bool):
            continue
        if isinstance(item, int):
            if not 0 <= item <= limit:
                raise UnsafeFileError(f"{INDEX}: field {where}: {item} is out of range (0..{limit})")
        elif isinstance(item, dict):
            for key, v in item.items():
                if isinstance(key, str) and (key.startswith(("/", "\\")) or "../" in key or "..\\" in key):
                    raise UnsafeFileError(f"{INDEX}: field {where}: {key!r} is not a module name")
                if key != "config":  # nested method configs are validated by their config class on replay
                    stack.append((v, f"{where}.{key}"))
        elif isinstance(item, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(item))


class _NoMeta(Exception):
    """A transform's rebuild needs real values (e.g. ``.item()``): no dry run on ``meta``."""


def _replay_all(model: nn.Module, transforms: list[Transform], origin: Path, meta: bool = False) -> nn.Module:
    from slimkit.core.registry import replay

    for i, transform in enumerate(transforms):
        try:
            model = replay(model, transform)
        except (NotImplementedError, RuntimeError) as exc:
            if meta and "meta" in str(exc):
                raise _NoMeta from None
            raise UnsafeFileError(
                f"{origin}: field transforms[{i}] ({transform.verb}:{transform.method}) does not fit the model: "
                f"{first_line(exc)}"
            ) from None
        except MemoryError:
            raise UnsafeFileError(f"{origin}: transforms[{i}] would need more memory than the weights hold") from None
        except Exception as exc:  # any failure of untrusted state is a malformed file, not a crash
            if isinstance(exc, SlimkitError) and not isinstance(exc, (InvalidConfigError, UnsupportedModelError)):
                raise
            raise UnsafeFileError(
                f"{origin}: field transforms[{i}] ({transform.verb}:{transform.method}) does not fit the model: "
                f"{first_line(exc)}"
            ) from None
    return model


def _shapes_of(model: nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def _dry_run(model: nn.Module, transforms: list[Transform], origin: Path) -> dict[str, list[int]] | None:
    """Replay on the ``meta`` device (shapes only, no memory); None when the model cannot move there."""
    memo: dict[int, Any] = {}
    for t in (*model.parameters(), *model.buffers()):  # copy the module tree, not the weights
        shadow = t.detach().to("meta")
        memo[id(t)] = nn.Parameter(shadow, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else shadow
    try:
        meta = copy.deepcopy(model, memo).to("meta")
    except Exception:  # a model that refuses deepcopy or meta: the real replay still runs checked
        return None
    try:
        with torch.device("meta"):
            return _shapes_of(_replay_all(meta, transforms, origin, meta=True))
    except _NoMeta:
        return None


def load_folder(
    directory: str | os.PathLike[str],
    *,
    allow_modules: tuple[str, ...] | list[str] = (),
    trust_pickle: bool = False,
) -> nn.Module:
    """Rebuild a model saved by `save` after checking the folder (see the module doc).

    Args:
        directory: the folder.
        allow_modules: modules (and their submodules) the saved ``source`` may import,
            besides ``slimkit.models`` and those allowed with `allow_modules`.
        trust_pickle: let a ``.pt2`` source inside the folder unpickle objects.

    Raises:
        UnsafeFileError: anything malformed, edited, outside the folder or not allowed.
    """
    from slimkit.core.specs import build_architecture

    directory = Path(directory)
    index = read_index(directory)
    origin = directory / INDEX
    weights = _inside(directory, index["weights"]["file"], "weights.file")
    if _sha256(weights) != index["weights"]["sha256"]:
        raise UnsafeFileError(
            f"{weights} does not match {INDEX} (truncated, corrupt or replaced); save the model again"
        )
    header = read_safetensors_header(weights)
    shapes = index["shapes"]
    for name, (_, shape) in header.items():
        if name not in shapes or list(shape) != shapes[name]:
            raise UnsafeFileError(
                f"{weights}: tensor {name!r} with shape {list(shape)} is not in {INDEX} shapes; save the model again"
            )
    source = index["source"]
    _check_source(source, directory, tuple(allow_modules), index.get("hf_config"))
    if source.startswith(f"{HF_CONFIG}:"):
        model = build_from_config(source.partition(":")[2], index["hf_config"], str(origin))
    else:
        model = build_architecture(
            source, directory=directory, allow_modules=tuple(allow_modules), trust_pickle=trust_pickle
        )
    stored = sum(_numel(s) for _, s in header.values())
    limit = 4 * max(stored, sum(p.numel() for p in model.state_dict().values())) + 4096
    transforms = []
    for i, entry in enumerate(index["transforms"]):
        _walk_ints(entry.get("state", {}), f"transforms[{i}].state", limit)
        transforms.append(Transform.from_dict(entry))
    planned = _dry_run(model, transforms, origin)
    if planned is not None and planned != shapes:
        odd = sorted(set(planned) ^ set(shapes))
        wrong = [f"{k} {planned[k]} != {shapes[k]}" for k in planned if k in shapes and planned[k] != shapes[k]]
        raise UnsafeFileError(
            f"{origin}: the architecture from {source!r} with the recorded transforms does not give the saved "
            f"shapes: shape mismatch {'; '.join(wrong[:3]) or ''}{' names ' + str(odd[:3]) if odd else ''}"
        )
    model = _replay_all(model, transforms, origin)
    state = load_weights(weights)
    apply_state(model, state, str(weights), index.get("versions"))
    _keep_saved_dtypes(model, state)
    object.__setattr__(model, "_slimkit_record", Record(get_record(model).source or source, transforms))
    return model.eval()


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


# ---------------------------------------------------------------------------------------------
# pickle-based files


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
