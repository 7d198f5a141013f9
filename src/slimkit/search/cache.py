"""A cache of measured rows keyed by what determines them: model weights, data and setting.

Entries live in memory and, when a folder is given, as one small JSON file each, so a
rerun in another process is free too. Keys are sha256 digests; nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimkit.core.atomic import write_file
from slimkit.core.errors import InvalidConfigError


def model_fingerprint(model: nn.Module) -> str:
    """sha256 of the model's class, state-dict names, dtypes, shapes and values."""
    digest = hashlib.sha256(type(model).__qualname__.encode())
    for name, tensor in model.state_dict().items():
        if not isinstance(tensor, torch.Tensor):
            continue
        values = tensor.detach().cpu().contiguous().flatten()
        digest.update(f"{name}:{values.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(values.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def data_fingerprint(data: Any, limit: int | None) -> str:
    """Digest of the first ``limit`` batches (inputs and targets) of ``data``."""
    from slimkit.pipeline.stages import data_fingerprint as fingerprint_batches

    return fingerprint_batches(list(islice(iter(data), limit)))


def key_of(*parts: Any) -> str:
    """sha256 of the JSON of ``parts`` (strings, numbers, lists, dicts)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class Cache:
    """Rows by key, in memory and optionally in ``folder`` (one ``KEY.json`` each).

    Args:
        folder: where entries persist across runs (created when missing); None keeps them
            in memory only.
    """

    def __init__(self, folder: str | os.PathLike[str] | None = None):
        self.folder = Path(folder) if folder is not None else None
        if self.folder is not None:
            if self.folder.exists() and not self.folder.is_dir():
                raise InvalidConfigError(f"cache folder {self.folder} is a file: give a folder path")
            self.folder.mkdir(parents=True, exist_ok=True)
        self._rows: dict[str, dict[str, Any]] = {}

    def get(self, key: str) -> dict[str, Any] | None:
        """The row stored under ``key``, or None."""
        if key in self._rows:
            return self._rows[key]
        path = self._path(key)
        if path is None or not path.is_file():
            return None
        try:
            row = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None  # a damaged entry is measured again
        self._rows[key] = row
        return row

    def put(self, key: str, row: dict[str, Any]) -> None:
        """Store ``row`` (JSON-ready) under ``key``."""
        self._rows[key] = row
        path = self._path(key)
        if path is not None:
            text = json.dumps(row)
            write_file(path, lambda tmp: tmp.write_text(text))

    def __len__(self) -> int:
        return len(self._rows)

    def _path(self, key: str) -> Path | None:
        return None if self.folder is None else self.folder / f"{key}.json"
