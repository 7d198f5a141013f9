"""The ``accelerate`` methods: configs, handlers and their ``rebuild`` for `sk.load`."""

from __future__ import annotations

import copy
import math
import warnings
from functools import partial
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from slimkit.conv.separable import SeparableConv2d, separable_ineligible
from slimkit.conv.timing import ab_timing, example_batch
from slimkit.conv.winograd import WinogradConv2d, winograd_ineligible
from slimkit.core import folding as fusion
from slimkit.core.config import Config
from slimkit.core.data import run_model
from slimkit.core.errors import DataError, InvalidConfigError
from slimkit.core.layerwise import rebuild_layers, replace_layers, select_layers
from slimkit.core.registry import Context, register
from slimkit.training.config import Finetune

# ----------------------------------------------------------------------------- fuse


class Fuse(Config):
    """BatchNorm folding, conv/linear + ReLU fusion and channels_last (inference only)."""

    method: ClassVar[str] = "fuse"
    relu: bool = True
    """fuse conv/linear + ReLU into ``torch.ao.nn.intrinsic`` modules (what static quantization
    consumes; the same speed in float eager mode)."""
    channels_last: bool | Literal["auto"] = "auto"
    """``"auto"`` switches 4-D weights to channels_last only when a quick measurement on the
    current device shows the model runs faster; ``True``/``False`` force it."""


def _has_4d_weights(model: nn.Module) -> bool:
    return any(p.dim() == 4 for p in model.parameters())


def _channels_last_decision(model: nn.Module, config: Fuse, ctx: Context) -> tuple[bool, dict[str, Any]]:
    """Whether to switch to channels_last, and why (timings when measured)."""
    if config.channels_last is not True and not _has_4d_weights(model):
        return False, {"reason": "no 4-D weights"}
    if config.channels_last != "auto":
        return bool(config.channels_last), {"reason": "forced by config"}
    try:
        batch = example_batch(model, ctx.example_inputs, ctx.data, ctx.device)
    except DataError:
        return False, {"reason": "not measured: no example_inputs or data"}
    candidate = copy.deepcopy(model).to(memory_format=torch.channels_last)
    was_training = model.training
    model.eval()
    candidate.eval()
    base_ms, cl_ms = ab_timing(lambda: run_model(model, batch), lambda: run_model(candidate, batch), device=ctx.device)
    model.train(was_training)
    faster = cl_ms < 0.95 * base_ms
    return faster, {
        "reason": "measured faster" if faster else "measured not faster",
        "nchw_ms": base_ms,
        "nhwc_ms": cl_ms,
    }


@torch.no_grad()
def _fuse(model: nn.Module, config: Fuse, ctx: Context) -> nn.Module:
    if model.training:
        warnings.warn(
            "fuse folds BatchNorm running statistics: the result behaves like the model in eval mode", stacklevel=4
        )
    pairs, skipped = fusion.fold_plan(model, ctx.selector)
    fusion.fold_pairs(model, pairs)
    relus = fusion.relu_pairs(model, ctx.selector) if config.relu else []
    fusion.fuse_relu(model, relus)
    channels_last, why = _channels_last_decision(model, config, ctx)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    ctx.state.update(
        folded=[list(p) for p in pairs],
        skipped=skipped,
        fused_relu=[list(p) for p in relus],
        channels_last=channels_last,
        channels_last_why=why,
    )
    return model


def _rebuild_fuse(model: nn.Module, config: Fuse, state: dict[str, Any]) -> nn.Module:
    fusion.remove_batchnorms(model, [tuple(p) for p in state.get("folded", [])])
    fusion.fuse_relu(model, [tuple(p) for p in state.get("fused_relu", [])])
    if state.get("channels_last"):
        model.to(memory_format=torch.channels_last)
    return model


register("accelerate", "fuse", Fuse, rebuild=_rebuild_fuse)(_fuse)


# ----------------------------------------------------------------------------- winograd


class Winograd(Config):
    """Replace 3×3 stride-1 convolutions by `WinogradConv2d`."""

    method: ClassVar[str] = "winograd"
    tile: Literal["auto", 2, 4] = "auto"
    """``"auto"`` times direct, F(2×2,3×3) and F(4×4,3×3) per layer on the current device and
    converts a layer only to a tile that is faster (so the model never gets slower); ``2`` or
    ``4`` converts every eligible layer with that tile."""
    margin: float = Field(0.95, gt=0, le=1)
    """with ``"auto"``, a tile must take under ``margin`` × the direct time."""


def _layer_inputs(model: nn.Module, names: list[str], batch: Any) -> dict[str, torch.Tensor]:
    """The input each named layer sees when ``model`` runs on ``batch`` (first call)."""
    seen: dict[str, torch.Tensor] = {}

    def hook(name: str) -> Any:
        return lambda _module, args: seen.setdefault(name, args[0].detach())

    handles = [model.get_submodule(n).register_forward_pre_hook(hook(n)) for n in names]
    was_training = model.training
    model.eval()
    try:
        run_model(model, batch)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return seen


def _auto_tiles(model: nn.Module, names: list[str], config: Winograd, ctx: Context) -> dict[str, dict[str, Any]]:
    """Per layer: the timings of direct / F(2) / F(4) and the tile chosen (``None``: stay direct)."""
    try:
        batch = example_batch(model, ctx.example_inputs, ctx.data, ctx.device)
    except DataError:
        raise InvalidConfigError(
            "winograd with tile='auto' times each layer: pass example_inputs or data, or choose tile=2 or tile=4"
        ) from None
    inputs = _layer_inputs(model, names, batch)
    report = {}
    for name in names:
        if name not in inputs:
            report[name] = {"tile": None, "reason": "not run on the example inputs"}
            continue
        conv, x = model.get_submodule(name), inputs[name]
        direct, times = partial(conv, x), {"direct_ms": math.inf}
        for tile in (2, 4):
            candidate = partial(WinogradConv2d.from_conv(conv, tile), x)
            direct_ms, times[f"f{tile}_ms"] = ab_timing(direct, candidate, device=ctx.device)
            times["direct_ms"] = min(times["direct_ms"], direct_ms)
        best = min((2, 4), key=lambda t: times[f"f{t}_ms"])
        chosen = best if times[f"f{best}_ms"] < config.margin * times["direct_ms"] else None
        reason = f"F({best}x{best},3x3) measured faster twice" if chosen else "direct convolution measured faster"
        if chosen:  # a second, independent measurement guards against one noisy run
            candidate = partial(WinogradConv2d.from_conv(conv, chosen), x)
            times["confirm_direct_ms"], times["confirm_ms"] = ab_timing(direct, candidate, device=ctx.device)
            if times["confirm_ms"] >= config.margin * times["confirm_direct_ms"]:
                chosen, reason = None, f"F({best}x{best},3x3) faster once but not when re-measured"
        report[name] = {**times, "tile": chosen, "reason": reason}
    return report


@torch.no_grad()
def _winograd(model: nn.Module, config: Winograd, ctx: Context) -> nn.Module:
    convs, skipped = select_layers(model, ctx.selector, (nn.Conv2d,))
    skipped.update({name: why for name, conv in convs.items() if (why := winograd_ineligible(conv))})
    eligible = [name for name in convs if name not in skipped]
    if config.tile == "auto":
        layers = _auto_tiles(model, eligible, config, ctx)
    else:
        layers = {name: {"tile": config.tile, "reason": "forced by config"} for name in eligible}
    chosen = {name: convs[name] for name, info in layers.items() if info["tile"]}
    converted, _ = replace_layers(
        model, chosen, lambda name, conv: (WinogradConv2d.from_conv(conv, layers[name]["tile"]), layers[name]["tile"])
    )
    ctx.state.update(converted=converted, layers=layers, skipped=skipped)
    return model


def _rebuild_winograd(model: nn.Module, config: Winograd, state: dict[str, Any]) -> nn.Module:
    return rebuild_layers(
        model, state.get("converted", {}), lambda _n, conv, tile: WinogradConv2d.from_conv(conv, int(tile))
    )


register("accelerate", "winograd", Winograd, rebuild=_rebuild_winograd)(_winograd)


# ----------------------------------------------------------------------------- separable


class Separable(Config):
    """Replace k×k convolutions by depthwise k×k + pointwise 1×1, initialized by per-channel
    SVD, then (with ``data`` and ``finetune.epochs``) distill from the original model.
    """

    method: ClassVar[str] = "separable"
    renamed = {"finetune_epochs": "finetune.epochs", "lr": "finetune.lr"}
    rank: int = Field(1, ge=1, le=64)
    """depthwise filters per input channel (1: the classic separable convolution)."""
    finetune: Finetune = Finetune(epochs=0, distill=True)
    """fine-tuning on ``data`` after the conversion (default: none; distilling from the original
    model). ``finetune_epochs``/``lr`` before 0.2."""


def _separable(model: nn.Module, config: Separable, ctx: Context) -> nn.Module:
    if config.finetune.epochs and ctx.data is None:
        raise InvalidConfigError("separable with finetune.epochs > 0 needs data to fine-tune on: pass data=...")
    model.to(ctx.device)
    teacher = copy.deepcopy(model).eval() if config.finetune.epochs else None
    convs, skipped = select_layers(model, ctx.selector, (nn.Conv2d,))

    def separate(_name: str, conv: nn.Module) -> tuple[nn.Module, float] | str:
        if why := separable_ineligible(conv):
            return why
        layer = SeparableConv2d.from_conv(conv, config.rank)
        if layer.mac_ratio >= 1:
            return f"rank {config.rank} would not reduce MACs (ratio {layer.mac_ratio:.2f})"
        return layer, layer.mac_ratio

    mac_ratio, refused = replace_layers(model, convs, separate)
    skipped.update(refused)
    converted = dict.fromkeys(mac_ratio, config.rank)
    ctx.state.update(converted=converted, mac_ratio=mac_ratio, skipped=skipped)
    if converted:
        model = config.finetune.run(model, ctx.data, teacher, device=ctx.device)
    return model


def _rebuild_separable(model: nn.Module, config: Separable, state: dict[str, Any]) -> nn.Module:
    return rebuild_layers(model, state.get("converted", {}), lambda _n, conv, rank: SeparableConv2d(conv, int(rank)))


register("accelerate", "separable", Separable, rebuild=_rebuild_separable)(_separable)
