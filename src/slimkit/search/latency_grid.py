"""The grid a latency table is measured on: one small model per layer kind, size and precision.

Each `GridPoint` builds a model of a single layer (a conv2d or a depthwise conv2d, in fp32 or
as slimkit's ``int8-static`` QDQ layer; a linear in those and as slimkit's ``int8-dynamic`` and
``weight-only`` layers), a chain of attention's activation products, or a chain of
elementwise adds; `time_grid`
exports each to the runtime, times them there in interleaved rounds (batch 1, fixed threads)
and describes each with the same `latency_ops.features` a prediction sums, so the fit and the
prediction read models the same way.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from slimkit.core.data import batch_from_inputs, resize_batch, run_model
from slimkit.core.errors import SlimkitError, first_line
from slimkit.core.formats import artifact_of
from slimkit.measure.latency import measure_latency
from slimkit.runtime.base import Runtime
from slimkit.search.latency_ops import ELEMENTWISE, LAYER_KINDS, features, walk

log = logging.getLogger(__name__)

MEASURED_PRECISIONS = {
    "conv2d": ("fp32", "int8"),
    "depthwise": ("fp32", "int8"),
    "linear": ("fp32", "int8", "int8-dynamic", "weight-only"),
    "matmul": ("fp32",),
}
"""Precisions a table measures per layer kind (the others are priced as the nearest, and say so)."""
QUANTIZE_METHODS = {"int8": "int8-static", "int8-dynamic": "int8-dynamic", "weight-only": "weight-only"}
"""The slimkit method that builds each precision's layer (``weight-only``: its defaults, 4 bits)."""


@dataclass(frozen=True)
class GridPoint:
    """One grid model: a chain of ``repeat`` layers, of ``repeat`` activation products, or of
    ``repeat`` elementwise adds, on a batch-1 input.

    Attributes:
        kind: one of `LAYER_KINDS` or ``elementwise``.
        cin, cout: channels (features for linear) of the first layer, which has ``stride``;
            the others map ``cout`` to ``cout`` at stride 1. Depthwise and elementwise use
            ``cin``. A matmul chain's head width and tokens.
        kernel, stride: of a convolution.
        size: input height and width of a convolution or an elementwise chain; a linear's
            rows (tokens); a matmul chain's heads.
        repeat: layers (or products, or adds) in the chain: chains of several tell the cost of
            one more layer inside a model from the cost of a model's edges.
        precision: one of the kind's `MEASURED_PRECISIONS` (``int8``: ``int8-static``).
    """

    kind: str
    cin: int
    cout: int = 0
    kernel: int = 1
    size: int = 1
    stride: int = 1
    repeat: int = 1
    precision: str = "fp32"

    @property
    def name(self) -> str:
        """e.g. ``conv2d/int8 32->64 k3 s1 @16 x3``."""
        if self.kind == ELEMENTWISE:
            return f"elementwise {self.cin}@{self.size} x{self.repeat}"
        if self.kind == "linear":
            rows = f" @{self.size} rows" if self.size > 1 else ""
            return f"linear/{self.precision} {self.cin}->{self.cout}{rows} x{self.repeat}"
        if self.kind == "matmul":
            return f"matmul/{self.precision} {self.size} heads x {self.cout} tokens x {self.cin} x{self.repeat}"
        return (
            f"{self.kind}/{self.precision} {self.cin}->{self.cout} k{self.kernel} s{self.stride} @{self.size} "
            f"x{self.repeat}"
        )

    def _layer(self, cin: int, stride: int) -> nn.Module:
        if self.kind == "linear":
            return nn.Linear(cin, self.cout)
        groups = cin if self.kind == "depthwise" else 1
        return nn.Conv2d(cin, self.cout, self.kernel, stride, self.kernel // 2, groups=groups)

    def build(self) -> tuple[nn.Module, Tensor]:
        """The float model (a Sequential, so quantization can replace its layers) and a seeded
        batch-1 input."""
        if self.kind == "matmul":
            layers = [AttentionProducts(self.repeat)]
        elif self.kind == ELEMENTWISE:
            layers = [AddConstant(self.cin, i) for i in range(self.repeat)]
        else:
            layers = [self._layer(self.cin, self.stride), *(self._layer(self.cout, 1) for _ in range(self.repeat - 1))]
        return nn.Sequential(*layers).eval(), torch.randn(self.input_shape, generator=torch.Generator().manual_seed(0))

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Batch 1: features (on ``size`` rows when more than one) for a linear, heads x tokens x
        width for a matmul chain, channels x size x size otherwise."""
        if self.kind == "linear":
            return (1, self.cin) if self.size == 1 else (1, self.size, self.cin)
        if self.kind == "matmul":
            return (1, self.size, self.cout, self.cin)
        return (1, self.cin, self.size, self.size)


class AddConstant(nn.Module):
    """``x + c`` with a distinct per-channel constant (nothing for a runtime to fold)."""

    def __init__(self, channels: int, index: int) -> None:
        super().__init__()
        self.register_buffer("offset", torch.linspace(0.1, 1.0, channels).reshape(channels, 1, 1) + index)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.offset


class AttentionProducts(nn.Module):
    """``repeat`` products of activations as attention computes them on ``x`` (heads x tokens x
    width): scores ``y @ xᵀ`` and context ``scores @ x``, alternately."""

    def __init__(self, repeat: int) -> None:
        super().__init__()
        self.repeat = repeat

    def forward(self, x: Tensor) -> Tensor:
        y = x
        for i in range(self.repeat):
            y = y @ x.transpose(-1, -2) if i % 2 == 0 else y @ x
        return y


def _layers(kind: str, shapes: Iterable[tuple[int, ...]]) -> list[GridPoint]:
    """Points of one kind in every measured precision; a shape is (cin, cout, kernel, size, stride, repeat)."""
    return [GridPoint(kind, *shape, precision=p) for shape in shapes for p in MEASURED_PRECISIONS[kind]]


def _products(shapes: Iterable[tuple[int, int, int, int]]) -> list[GridPoint]:
    """Attention product chains; a shape is (heads, tokens, head width, repeat)."""
    return [GridPoint("matmul", width, tokens, size=heads, repeat=n) for heads, tokens, width, n in shapes]


def _elementwise(shapes: Iterable[tuple[int, int, int]]) -> list[GridPoint]:
    """Add chains; a shape is (repeat, channels, size)."""
    return [GridPoint(ELEMENTWISE, channels, size=size, repeat=n) for n, channels, size in shapes]


DEFAULT_GRID: tuple[GridPoint, ...] = (
    *_layers("conv2d", [
        (3, 16, 3, 32, 1, 1), (16, 16, 3, 32, 1, 1), (16, 16, 3, 32, 1, 3), (16, 32, 3, 32, 2, 1),
        (32, 32, 3, 16, 1, 1), (32, 32, 3, 16, 1, 3), (32, 64, 1, 16, 1, 1), (64, 64, 3, 8, 1, 1),
        (64, 64, 3, 8, 1, 3), (64, 128, 3, 8, 2, 1), (128, 128, 3, 8, 1, 1), (48, 48, 3, 4, 1, 1),
        (48, 48, 3, 4, 1, 3), (16, 16, 3, 16, 1, 3),
        (24, 18, 3, 32, 1, 1), (36, 36, 3, 16, 1, 3), (72, 100, 3, 8, 1, 1),  # channels off the blocks of 8
    ]),
    *_layers("depthwise", [
        (16, 16, 3, 32, 1, 1), (32, 32, 3, 16, 1, 1), (32, 32, 3, 16, 1, 3), (64, 64, 3, 16, 2, 1),
        (128, 128, 3, 8, 1, 3), (256, 256, 3, 8, 1, 1), (36, 36, 3, 16, 1, 3), (100, 100, 3, 8, 1, 1),
    ]),
    *_layers("linear", [
        (64, 10, 1, 1, 1, 1), (128, 128, 1, 1, 1, 1), (128, 128, 1, 1, 1, 3), (256, 512, 1, 1, 1, 1),
        (512, 512, 1, 1, 1, 3), (1024, 1024, 1, 1, 1, 1),
        (128, 512, 1, 32, 1, 1), (256, 256, 1, 64, 1, 3), (512, 128, 1, 128, 1, 1),  # token rows: products
    ]),
    *_products([(2, 8, 16, 1), (4, 16, 16, 2), (4, 64, 32, 2), (8, 128, 64, 2), (12, 32, 32, 4)]),
    *_elementwise([(1, 16, 8), (8, 16, 8), (1, 64, 32), (8, 64, 32)]),
)  # fmt: skip
"""The generic grid: 17 dense and 8 depthwise conv2d shapes (images of 4 to 32 pixels, 5 with
channels off the blocks of 8), each in fp32 and int8; 9 linear shapes (6 on one row, 3 on 32
to 128 token rows), each in fp32, int8, int8-dynamic and weight-only; some alone and as
chains of 3; 5 chains of attention products (2 to 12 heads, 8 to 128 tokens); and 4 add
chains: 95 models, about three minutes on onnxruntime."""

QUICK_GRID: tuple[GridPoint, ...] = (
    *_layers("conv2d", [(8, 16, 3, 16, 1, 1), (32, 32, 3, 16, 1, 3)]),
    *_layers("depthwise", [(16, 16, 3, 16, 1, 1), (64, 64, 3, 16, 1, 3)]),
    *_layers("linear", [(64, 64, 1, 1, 1, 1), (512, 512, 1, 1, 1, 3), (128, 128, 1, 32, 1, 1)]),
    *_products([(2, 8, 16, 1), (4, 64, 32, 2)]),
    *_elementwise([(1, 16, 8), (4, 16, 8), (1, 64, 32)]),
)  # fmt: skip
"""Two points per layer class (and a linear on 32 rows), 2 product chains and 3 add chains: a
coarse table in seconds."""


def _halved(channels: int) -> int:
    """A pruned width: half, rounded up to a multiple of 8 (inputs of 4 channels or fewer stay)."""
    return channels if channels <= 4 else max(8, math.ceil(channels / 16) * 8)


def model_grid(model: nn.Module, example_inputs: Any) -> list[GridPoint]:
    """Points seeded by ``model``'s own Conv2d and Linear layers: each alone at full width, and
    at half width (the widths pruning gives) as a chain of 2; plus `QUICK_GRID`'s points of the
    classes the model lacks, and its add chains."""
    seen: list[GridPoint] = []

    def hook(module: nn.Module, args: tuple[Tensor, ...], _out: Any) -> None:
        if isinstance(module, nn.Linear):
            rows = max(args[0].numel() // module.in_features, 1)
            seen.append(GridPoint("linear", module.in_features, module.out_features, size=rows))
        else:
            kind = "depthwise" if module.groups > 1 else "conv2d"
            seen.append(GridPoint(kind, module.in_channels, module.out_channels, module.kernel_size[0],
                                  args[0].shape[-1], module.stride[0]))  # fmt: skip

    layers = [m for m in model.modules() if isinstance(m, nn.Linear) or _is_square_conv(m)]
    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        with torch.no_grad():
            run_model(model, resize_batch(batch_from_inputs(example_inputs), 1))
    finally:
        for handle in handles:
            handle.remove()
    narrow = [
        replace(p, cin=_halved(p.cin), cout=p.cout if p.kind == "linear" else _halved(p.cout), repeat=2) for p in seen
    ]
    narrow = [replace(p, cout=p.cin) if p.kind == "depthwise" else p for p in narrow]
    points = [replace(p, precision=q) for p in [*seen, *narrow] for q in MEASURED_PRECISIONS[p.kind]]
    covered = {p.kind for p in points}
    points += [p for p in QUICK_GRID if p.kind not in covered or p.kind == ELEMENTWISE]
    return list(dict.fromkeys(points))


def _is_square_conv(module: nn.Module) -> bool:
    return (
        isinstance(module, nn.Conv2d)
        and module.kernel_size[0] == module.kernel_size[1]
        and (module.groups == 1 or module.groups == module.in_channels == module.out_channels)
    )


class GridRow(BaseModel):
    """One timed grid model: its name, features (`latency_ops.features`) and `Timing` (ms)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    features: dict[str, float]
    fast_ms: float
    p50_ms: float
    runs: int


def deploy(
    model: nn.Module, inputs: tuple[Tensor, ...], runtime: str, folder: Path, threads: int | None = 1
) -> Runtime:
    """``model`` exported to ``runtime`` into ``folder`` and loaded there with ``threads`` intra-op
    threads (torch: the module itself)."""
    from slimkit.runtime import export, load

    if runtime == "torch":
        return load(model, inputs)
    folder.mkdir(parents=True, exist_ok=True)
    path = export(model, folder / f"model{artifact_of(runtime).suffix}", example_inputs=inputs, overwrite=True)
    return load(path, inputs, threads=threads)


@dataclass(frozen=True)
class Timing:
    """One model's timing: ``fast_ms``, the 10th percentile of its runs in its fastest round
    (what a table fits and predicts), and that round's median."""

    fast_ms: float
    p50_ms: float
    runs: int


def _time_round(run: Callable[[], Any], budget_s: float) -> Timing:
    """At least 30 runs after 5 warm-up runs, for the whole ``budget_s`` (a spread of 1.0 is
    never reached, so `measure_latency` does not stop early)."""
    latency = measure_latency(run, warmup=5, min_runs=30, max_runs=10**9, budget_s=budget_s, max_spread=1.0)
    return Timing(latency.p10_ms, latency.p50_ms, latency.runs)


def time_interleaved(
    deployed: Sequence[Runtime], threads: int | None, budget_s: float, rounds: int = 3
) -> list[Timing]:
    """Time every runtime once per round, ``rounds`` rounds, keeping each one's fastest round.

    A round runs a model at least 30 times after 5 warm-up runs, for ``budget_s`` seconds.
    Other work on the machine only ever adds time, and on a shared machine even the median of
    a sub-millisecond model moves by a third from one minute to the next (the fastest runs
    switch between two levels too): the 10th percentile of the fastest of several rounds is
    the figure that repeats, and interleaving spreads a busy spell over all models.
    """
    best: list[Timing | None] = [None] * len(deployed)
    for _ in range(rounds):
        for i, runtime in enumerate(deployed):
            batch = runtime.example
            with runtime.use_threads(threads):
                timing = _time_round(lambda r=runtime, b=batch: r.run_batch(b), budget_s)
            if best[i] is None or timing.fast_ms < best[i].fast_ms:
                best[i] = timing
    return best  # type: ignore[return-value]


def _prepared(point: GridPoint) -> tuple[nn.Module, Tensor]:
    """The point's model in its precision, and its input."""
    model, x = point.build()
    if point.precision != "fp32":
        from slimkit.quantization import quantize

        generator = torch.Generator().manual_seed(1)
        calibration = [torch.randn((4, *x.shape[1:]), generator=generator) for _ in range(2)]
        model = quantize(model, QUANTIZE_METHODS[point.precision], data=calibration)
    return model, x


def time_grid(
    points: Sequence[GridPoint],
    runtime: str,
    threads: int | None = 1,
    budget_s: float = 0.3,
    on_point: Callable[[int, GridPoint], None] | None = None,
    rounds: int = 3,
) -> tuple[list[GridRow], list[str]]:
    """Time every point on ``runtime``: each exported to a temporary folder and loaded, then all
    timed in interleaved rounds (`time_interleaved`), each described by `latency_ops.features`.

    Args:
        points: the grid.
        runtime: where the points run (``onnxruntime``, ``torch``, ...).
        threads: intra-op threads while timing.
        budget_s: timing budget of one point once its minimum runs are done.
        on_point: called with ``(index, point)`` before each point is exported (progress).
        rounds: timing rounds over the whole grid.

    Returns:
        The timed rows, and ``"name: why"`` for each point the runtime refused (e.g. an int8
        layer a runtime's exporter does not take): its kind is then priced as the nearest.
    """
    timed: list[tuple[GridPoint, dict[str, float], Runtime]] = []
    skipped: list[str] = []
    with tempfile.TemporaryDirectory(prefix="slimkit-lut-") as tmp:
        for i, point in enumerate(points):
            if on_point is not None:
                on_point(i, point)
            model, x = _prepared(point)
            try:
                timed.append(
                    (point, features(walk(model, (x,))), deploy(model, (x,), runtime, Path(tmp) / str(i), threads))
                )
            except SlimkitError as exc:
                skipped.append(f"{point.name}: {first_line(exc)}")
                log.warning("latency table: %s left out: %s", point.name, first_line(exc))
        timings = time_interleaved([runtime for *_, runtime in timed], threads, budget_s, rounds)
    rows = [
        GridRow(name=p.name, features=f, fast_ms=t.fast_ms, p50_ms=t.p50_ms, runs=t.runs)
        for (p, f, _), t in zip(timed, timings, strict=True)
    ]
    return rows, skipped


__all__ = [
    "DEFAULT_GRID",
    "LAYER_KINDS",
    "QUICK_GRID",
    "GridPoint",
    "GridRow",
    "Timing",
    "deploy",
    "model_grid",
    "time_grid",
    "time_interleaved",
]
