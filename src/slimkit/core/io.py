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

This module saves and loads; the index schema and its reading are in `slimkit.core.index`,
the weights in `slimkit.core.weights`, the import allowlist in `slimkit.core.trust`.
"""

from __future__ import annotations

import copy
import inspect
import json
import os
import shutil
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save_model
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
from slimkit.core.index import FORMAT_VERSION, INDEX, WEIGHTS, inside_folder, integrity_hash, read_index, sha256_of
from slimkit.core.record import Record, Transform, get_record
from slimkit.core.trust import FACTORY, MODULE_NAME, allow_modules, check_source
from slimkit.core.weights import (
    apply_state,
    keep_saved_dtypes,
    load_weights,
    module_versions,
    numel_of,
    read_safetensors_header,
)


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
    only_varargs = all(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params.values())
    if params and only_varargs and next(model.children(), None) is not None:
        return None  # a container (nn.Sequential(*layers)): its class alone does not rebuild it
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
    if FACTORY.fullmatch(source) and MODULE_NAME.fullmatch(source.partition(":")[0]):
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
            "weights": {"file": WEIGHTS, "sha256": sha256_of(path.parent / WEIGHTS)},
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
    weights = inside_folder(directory, index["weights"]["file"], "weights.file")
    if sha256_of(weights) != index["weights"]["sha256"]:
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
    check_source(source, directory, tuple(allow_modules), index.get("hf_config"))
    if source.startswith(f"{HF_CONFIG}:"):
        model = build_from_config(source.partition(":")[2], index["hf_config"], str(origin))
    else:
        model = build_architecture(
            source, directory=directory, allow_modules=tuple(allow_modules), trust_pickle=trust_pickle
        )
    stored = sum(numel_of(s) for _, s in header.values())
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
    keep_saved_dtypes(model, state)
    object.__setattr__(model, "_slimkit_record", Record(get_record(model).source or source, transforms))
    return model.eval()
