"""Weights on disk: safetensors headers read without loading, state dicts applied with their
saved dtypes and module versions, and pickled checkpoints (only when trusted).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from slimkit.core.errors import SlimkitError, UnsafeFileError, UnsupportedModelError, first_line

MAX_HEADER_BYTES = 100 << 20
"""Largest safetensors header read (safetensors itself refuses more than 100 MB)."""


_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8, "C64": 8,
}  # fmt: skip


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


def keep_saved_dtypes(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
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


def module_versions(state: dict[str, torch.Tensor]) -> dict[str, int | None]:
    """``{module name: version}`` from a state dict's ``_metadata``, leaving out version 1
    (every module's default), so the index stays small."""
    meta = getattr(state, "_metadata", None) or {}
    return {name: info.get("version") for name, info in meta.items() if info.get("version", 1) != 1}


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


def numel_of(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
