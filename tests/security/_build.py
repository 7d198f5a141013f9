"""Builders of hostile and broken inputs for the trust-boundary tests (everything under a tmp folder)."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

import slimkit as sk
from slimkit.core.index import integrity_hash
from slimkit.models.testing import ResidualNet, TinyAttention

FACTORY = "slimkit.models.testing:ResidualNet"


class Evil:
    """Unpickling this creates ``marker``: proof that a pickle ran code."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


def saved(tmp: Path, kind: str = "plain") -> Path:
    """A valid saved folder: plain ResidualNet, channel-pruned, int8-dynamic TinyAttention or SVD."""
    model = ResidualNet()
    if kind == "pruned":
        model = sk.prune(model, "channels", ratio=0.5, example_inputs=model.example_inputs())
    elif kind == "quantized":
        model = sk.quantize(TinyAttention(), "int8-dynamic")
    elif kind == "svd":
        model = sk.decompose(TinyAttention(), "svd", rank=4)
    return sk.save(model, tmp / f"saved-{kind}", source=None if kind in ("quantized", "svd") else FACTORY)


def edit(folder: Path, change: Callable[[dict[str, Any]], Any], *, rehash: bool = True) -> Path:
    """Apply ``change`` to ``slimkit.json``; recompute its integrity hash as an attacker would."""
    path = folder / "slimkit.json"
    index = json.loads(path.read_text())
    change(index)
    if rehash and isinstance(index, dict) and "integrity" in index:
        index["integrity"] = integrity_hash(index)
    path.write_text(json.dumps(index))
    return folder


def pt2(tmp: Path, name: str = "model.pt2") -> Path:
    """A valid torch.export archive of a small model."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(model, (torch.randn(2, 4),), dynamic_shapes=({0: batch},))
    path = tmp / name
    torch.export.save(program, str(path))
    return path


def _rewrite_zip(path: Path, change: Callable[[str, bytes], bytes | None]) -> None:
    with zipfile.ZipFile(path) as archive:
        members = [(i.filename, archive.read(i.filename)) for i in archive.infolist()]
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members:
            new = change(name, data)
            if new is not None:
                archive.writestr(name, new)


def evil_pt2(tmp: Path, marker: Path, name: str = "evil.pt2", where: str = "weights") -> Path:
    """A valid export with one weight (or its sample inputs) replaced by a code-running pickle."""
    path = pt2(tmp, name)
    buffer = io.BytesIO()
    torch.save(Evil(str(marker)), buffer)
    payload = buffer.getvalue()
    flipped: dict[str, str] = {}

    def change(member: str, data: bytes) -> bytes:
        if where == "weights" and member.endswith("data/weights/model_weights_config.json"):
            config = json.loads(data)
            fqn = next(iter(config["config"]))
            config["config"][fqn]["use_pickle"] = True
            flipped["file"] = config["config"][fqn]["path_name"]
            return json.dumps(config).encode()
        if where == "sample_inputs" and "/data/sample_inputs/" in member:
            return payload
        return data

    _rewrite_zip(path, change)
    if flipped:
        _rewrite_zip(path, lambda m, d: payload if m.endswith("data/weights/" + flipped["file"]) else d)
    return path


def npz_with_huge_header(path: Path) -> Path:
    """An .npz whose ``x`` header declares shape (10**12, 4) over 32 bytes of data."""
    header = np.lib.format.header_data_from_array_1_0(np.zeros((2, 4), np.float32))
    header["shape"] = (10**12, 4)
    member = io.BytesIO()
    np.lib.format.write_array_header_1_0(member, header)
    member.write(b"\0" * 32)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", member.getvalue())
    return path


def images_npz(path: Path, labels: Any) -> Path:
    """Inputs for ResidualNet (3x16x16) with the given labels."""
    labels = np.asarray(labels)
    x = np.random.default_rng(0).normal(size=(len(labels), 3, 16, 16)).astype(np.float32)
    np.savez(path, x=x, y=labels)
    return path
