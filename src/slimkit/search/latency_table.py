"""Latency look-up tables: predict a model's latency on a device from per-layer costs measured there.

`measure_table` (CLI: ``slimkit bench --lut lut.json``) times a grid of single-layer models
(`latency_grid`) exported to the runtime on the device, and fits by non-negative least
squares (each row weighted by its own latency, so small models count as much as large)::

    latency ≈ overhead + Σ_layers (per_layer[k] + per_mmac[k] · MACs / 1e6)
                       + Σ_elementwise (per_op + per_kelement · elements / 1e3)

with one ``k`` per layer kind and precision (``conv2d/fp32``, ``depthwise/int8``, ...). The
table (`LatencyTable`, a JSON file) keeps the raw grid timings beside the coefficients, the
runtime, threads, batch size and the machine it was measured on. `predict_latency` walks a
model's forward (`latency_ops.walk`) and sums the costs; a layer whose kind or precision the
table lacks is priced as the nearest one it has and listed in `Prediction.approximated`.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from slimkit.core.atomic import write_file
from slimkit.core.data import resize_batch
from slimkit.core.errors import InvalidConfigError, UnsafeFileError, require
from slimkit.core.formats import RUNTIMES
from slimkit.core.samples import example_batch
from slimkit.search.latency_grid import DEFAULT_GRID, GridPoint, GridRow, model_grid, time_grid
from slimkit.search.latency_ops import ELEMENTWISE, Op, fixed_features, op_features, walk

log = logging.getLogger(__name__)

SCHEMA = "slimkit-latency-table"
VERSION = 1
"""The version of the JSON layout this slimkit writes and reads."""

KIND_FALLBACK = {
    "conv2d": ("depthwise", "linear"),
    "depthwise": ("conv2d", "linear"),
    "linear": ("conv2d", "depthwise"),
    "matmul": ("linear", "conv2d"),
}
PRECISION_FALLBACK = {
    "fp32": ("int8",), "int8": ("fp32",), "int8-dynamic": ("int8", "fp32"), "weight-only": ("int8", "fp32"),
}  # fmt: skip
"""The kinds and precisions a missing layer class is priced as, nearest first."""
RUNTIME_PACKAGES = {
    "onnxruntime": "onnxruntime",
    "executorch": "executorch",
    "tflite": "ai-edge-litert",
    "torch": "torch",
}


def fit(rows: Sequence[GridRow]) -> dict[str, float]:
    """Coefficients (ms per unit of each feature) that best predict the rows' latencies (`fast_ms`).

    Non-negative least squares on relative error: each row is divided by its latency, each
    feature column scaled to at most 1 for conditioning.

    Raises:
        InvalidConfigError: with no rows, or a latency that is not positive.
    """
    if not rows:
        raise InvalidConfigError("a latency table needs at least one timed grid row to fit")
    nnls = require("scipy.optimize", "search").nnls
    names = sorted({name for row in rows for name in row.features})
    x = np.array([[row.features.get(name, 0.0) for name in names] for row in rows], dtype=np.float64)
    y = np.array([row.fast_ms for row in rows], dtype=np.float64)
    if not np.all(y > 0):
        raise InvalidConfigError("grid latencies must be positive milliseconds")
    scale = np.abs(x).max(axis=0)
    scale[scale == 0] = 1.0
    coefficients, _ = nnls(x / scale / y[:, None], np.ones_like(y))
    return dict(zip(names, (coefficients / scale).tolist(), strict=True))


def describe_machine(runtime: str) -> dict[str, str]:
    """Where a table is measured: platform, processor, CPU count, runtime and torch versions."""

    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "unknown"

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "machine": platform.machine(),
        "cpus": str(os.cpu_count()),
        "runtime_version": version(RUNTIME_PACKAGES.get(runtime, runtime)),
        "torch_version": version("torch"),
    }


@dataclass
class Prediction:
    """A predicted latency and where it comes from.

    Attributes:
        total_ms: predicted latency (ms).
        fixed_ms: the once-per-model costs inside ``total_ms`` (``overhead``, ``KEY:present``).
        costs: every priced op (as priced: a missing class replaced by the nearest) and its ms.
        approximated: ``"name: why"`` for each op priced as another kind than it is.
    """

    total_ms: float
    fixed_ms: dict[str, float]
    costs: list[tuple[Op, float]] = field(default_factory=list)
    approximated: list[str] = field(default_factory=list)

    def by_kind(self) -> dict[str, float]:
        """Predicted ms per ``kind/precision`` (its layers and its fixed cost), ``elementwise``
        and ``overhead``."""
        totals: dict[str, float] = {}
        named = [(name.split(":")[0], ms) for name, ms in self.fixed_ms.items()]
        for key, ms in [*named, *((op.key, ms) for op, ms in self.costs)]:
            totals[key] = totals.get(key, 0.0) + ms
        return totals


class LatencyTable(BaseModel):
    """Per-layer latency costs measured on one device and runtime (the ``--lut`` JSON file).

    Attributes:
        format, version: the file's schema (`SCHEMA`, `VERSION`).
        runtime: where the grid ran (``onnxruntime``, ...).
        threads: intra-op threads while timing (None: the runtime's default).
        batch_size: the grid's batch size (predictions are for this batch size).
        machine: `describe_machine` of the device.
        created: when it was measured (UTC, ISO 8601).
        coefficients_ms: ms per unit of each feature (`latency_ops.op_features` names, and
            ``overhead``).
        grid: the raw timings the coefficients were fitted on.
        fit_mape: mean absolute % error of the fit on its own grid.
        skipped: ``"name: why"`` of grid points the runtime refused.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["slimkit-latency-table"] = SCHEMA
    version: Literal[1] = VERSION
    runtime: str
    threads: int | None
    batch_size: int = 1
    machine: dict[str, str]
    created: str
    coefficients_ms: dict[str, float]
    grid: list[GridRow]
    fit_mape: float
    skipped: list[str] = []

    @classmethod
    def from_rows(
        cls,
        rows: Sequence[GridRow],
        runtime: str,
        threads: int | None,
        batch_size: int = 1,
        skipped: Sequence[str] = (),
    ) -> LatencyTable:
        """The table fitted on ``rows`` timed on this machine."""
        coefficients = fit(rows)
        predicted = np.array([_dot(coefficients, row.features) for row in rows])
        measured = np.array([row.fast_ms for row in rows])
        return cls(
            runtime=runtime, threads=threads, batch_size=batch_size, machine=describe_machine(runtime),
            created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            coefficients_ms=coefficients,
            grid=list(rows), fit_mape=float(np.mean(np.abs(predicted - measured) / measured) * 100),
            skipped=list(skipped),
        )  # fmt: skip

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LatencyTable:
        """Read a table written by `save` (or ``slimkit bench --lut``).

        Raises:
            InvalidConfigError: no such file, not a latency table, another version, bad fields.
            UnsafeFileError: the file is not JSON (corrupt or truncated).
        """
        path = Path(path)
        if not path.is_file():
            raise InvalidConfigError(
                f"latency table {path} does not exist: measure one with slimkit bench --lut {path}"
            )
        remedy = f"measure it again with slimkit bench --lut {path}"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UnsafeFileError(
                f"latency table {path} is not valid JSON (corrupt or truncated: {exc}); {remedy}"
            ) from None
        if not isinstance(data, dict) or data.get("format") != SCHEMA:
            raise InvalidConfigError(f'{path} is not a slimkit latency table (no "format": "{SCHEMA}")')
        if data.get("version") != VERSION:
            raise InvalidConfigError(
                f"{path} is a version {data.get('version')!r} latency table; this slimkit reads version "
                f"{VERSION}: {remedy}"
            )
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise InvalidConfigError(f"latency table {path}: {where}: {first['msg']}; {remedy}") from None

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the table as JSON, atomically (the file appears whole or not at all)."""
        text = self.model_dump_json(indent=2)
        return write_file(check_table_path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"))

    @property
    def layer_classes(self) -> tuple[str, ...]:
        """The ``kind/precision`` classes the table prices."""
        return tuple(sorted({name.split(":")[0] for name in self.coefficients_ms if name.endswith(":layers")}))

    def describe(self) -> str:
        """``onnxruntime, 1 thread, batch 1, on Linux-...``."""
        return (
            f"{self.runtime}, {self.threads or 'default'} thread(s), batch {self.batch_size}, "
            f"measured {self.created} on {self.machine.get('platform', '?')}"
        )

    def price(self, op: Op) -> tuple[Op, str | None]:
        """``op`` as the table prices it (a missing layer class: the nearest it has) and why."""
        if not op.is_layer or op.key in self.layer_classes:
            return op, op.note
        for kind in (op.kind, *KIND_FALLBACK[op.kind]):
            for precision in (op.precision, *PRECISION_FALLBACK[op.precision]):
                if f"{kind}/{precision}" in self.layer_classes:
                    why = f"{op.key} not in the table, priced as {kind}/{precision}"
                    return replace(op, kind=kind, precision=precision), "; ".join(filter(None, (op.note, why)))
        raise InvalidConfigError("the latency table prices no layer: measure it again with slimkit bench --lut")

    def cost(self, op: Op) -> float:
        """Milliseconds of one (priced) op."""
        return _dot(self.coefficients_ms, op_features(op))

    def predict(self, model: nn.Module, example_inputs: Any) -> Prediction:
        """`predict_latency` of ``model`` with this table."""
        return predict_latency(model, self, example_inputs)

    def predict_ms(self, model: nn.Module, example_inputs: Any = None, data: Any = None) -> float:
        """The predicted ms of ``model`` at the table's batch size, on ``example_inputs`` (else
        ``data``'s first sample, else the model's own example; see `core.samples.example_batch`)."""
        batch = example_batch(model, example_inputs, data, "a latency-table prediction")
        return self.predict(model, resize_batch(batch, self.batch_size)).total_ms


def _dot(coefficients: dict[str, float], features: dict[str, float]) -> float:
    return sum(coefficients.get(name, 0.0) * value for name, value in features.items())


def predict_latency(model: nn.Module, table: LatencyTable, example_inputs: Any) -> Prediction:
    """The latency ``table`` predicts for ``model`` on ``example_inputs`` (batch `LatencyTable.batch_size`).

    Every costed op of one forward (`latency_ops.walk`) is priced and summed with the table's
    per-model overhead. Nothing is dropped: ops priced as another kind are listed in
    `Prediction.approximated` (and logged once each).

    Raises:
        DataError: when the forward fails on ``example_inputs``.
    """
    costs, approximated = [], []
    for op in walk(model, example_inputs):
        priced, note = table.price(op)
        if op.kind == ELEMENTWISE and f"{ELEMENTWISE}:ops" not in table.coefficients_ms:
            note = "elementwise work not priced: the table has no elementwise rows"
        if note:
            approximated.append(f"{op.name}: {note}")
        costs.append((priced, table.cost(priced)))
    for line in dict.fromkeys(approximated):
        log.info("latency table: %s", line)
    fixed = fixed_features(op for op, _ in costs)
    fixed_ms = {name: table.coefficients_ms.get(name, 0.0) * value for name, value in fixed.items()}
    return Prediction(sum(fixed_ms.values()) + sum(ms for _, ms in costs), fixed_ms, costs, approximated)


def check_table_path(path: str | os.PathLike[str]) -> Path:
    """``path`` if a table can be written there (its folder is created).

    Raises:
        InvalidConfigError: ``path`` is a folder, or its folder cannot be created or written.
    """
    path = Path(path)
    if path.is_dir():
        raise InvalidConfigError(f"{path} is a folder: give a file path such as {path / 'lut.json'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidConfigError(f"cannot write {path}: {exc.strerror or exc} -- choose a writable folder") from None
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise InvalidConfigError(
            f"cannot write {path}: folder {path.parent} is not writable -- choose a writable folder"
        )
    return path


def measure_table(
    runtime: str = "onnxruntime",
    threads: int | None = 1,
    *,
    grid: Sequence[GridPoint] | None = None,
    model: nn.Module | None = None,
    example_inputs: Any = None,
    budget_s: float = 0.3,
    on_point: Callable[[int, GridPoint], None] | None = None,
) -> LatencyTable:
    """Time a grid of single-layer models on ``runtime`` here and fit a `LatencyTable` (batch 1).

    Args:
        runtime: one of `slimkit.core.formats.RUNTIMES`.
        threads: intra-op threads while timing (keep the search's: 1).
        grid: the points to time (default: ``model``'s layers by `model_grid`, else `DEFAULT_GRID`).
        model: seeds the grid with its own Conv2d/Linear shapes at full and half width.
        example_inputs: ``model``'s inputs (a tensor, a tuple of tensors, a `Batch`; cut to 1 sample).
        budget_s: timing budget per point once its minimum runs are done.
        on_point: called with ``(index, point)`` before each point (progress).

    Raises:
        InvalidConfigError: unknown runtime, or a model without example inputs.
    """
    if runtime not in RUNTIMES:
        raise InvalidConfigError(f"unknown runtime {runtime!r}; valid: {', '.join(RUNTIMES)}")
    if grid is None and model is not None:
        if example_inputs is None:
            raise InvalidConfigError("a model seeding the grid needs its example_inputs")
        grid = model_grid(model, example_inputs)
    rows, skipped = time_grid(list(grid or DEFAULT_GRID), runtime, threads, budget_s, on_point)
    return LatencyTable.from_rows(rows, runtime, threads, skipped=skipped)


def table_for(source: str | os.PathLike[str] | LatencyTable, runtime: str) -> LatencyTable:
    """The table at ``source`` (or ``source`` itself), checked to be measured on ``runtime``.

    Raises:
        InvalidConfigError: the table was measured on another runtime (or cannot be read).
        UnsafeFileError: the file is corrupt or truncated.
    """
    table = source if isinstance(source, LatencyTable) else LatencyTable.load(source)
    if table.runtime != runtime:
        where = "" if isinstance(source, LatencyTable) else f" {source}"
        raise InvalidConfigError(
            f"the latency table{where} was measured on {table.runtime}, but the search targets {runtime}: measure "
            f"one with slimkit bench --lut FILE --runtime {runtime}, or search with --target {table.runtime}"
        )
    return table


__all__ = [
    "LatencyTable", "Prediction", "check_table_path", "fit", "measure_table", "predict_latency", "table_for",
]  # fmt: skip
