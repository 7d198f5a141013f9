"""Post-training quantization: ``int8-dynamic``, ``int8-static``, ``weight-only``, ``fp16``, ``bf16``.

One driver serves every method: resolve a config per layer (the method's config, or the first
matching ``overrides`` pattern), skip and report layers no method can take, calibrate when a
layer needs activation ranges, then convert layer by layer. The record's state lists every
converted layer with its method, config and data-free info, so `rebuild` can redo the
structure without data.
"""

from __future__ import annotations

import warnings
from fnmatch import fnmatchcase
from typing import Any

import torch
from torch import nn

from slimkit.core.config import Config
from slimkit.core.errors import DataError, InvalidConfigError
from slimkit.core.heap import trim
from slimkit.core.layers import overrides_forward
from slimkit.core.registry import Context, get_method, register
from slimkit.core.walk import Selector, replace_module, select_modules
from slimkit.quantization.calibration import Point, calibrate
from slimkit.quantization.configs import BFloat16, Half, Int8Dynamic, Int8Static, QuantConfig, WeightOnly
from slimkit.quantization.layers import CANDIDATES, HALF_TYPES, LAYER_METHODS, cast_half
from slimkit.quantization.observers import make_observer

Plan = dict[str, Config]

KEPT_FLOAT = "kept in float by an override (null)"
"""The skip reason of a layer an ``overrides`` entry of ``None`` keeps in float."""


def layer_config(name: str, base: QuantConfig) -> Config | None:
    """The config for layer ``name``: the first matching override (``None``: keep float), else ``base``."""
    for pattern, override in base.overrides.items():
        if fnmatchcase(name, pattern):
            if override is None:
                return None
            options = {k: v for k, v in override.items() if k != "method"}
            method = override.get("method", base.method)
            if method == base.method:
                return base.with_options(**options, overrides={})
            if method not in LAYER_METHODS:
                valid = ", ".join(LAYER_METHODS)
                raise InvalidConfigError(f"override {pattern!r} names method {method!r}; valid here: {valid}")
            return get_method("quantize", method).config.build(**options)
    return base


def plan_layers(model: nn.Module, base: QuantConfig, selector: Selector) -> tuple[Plan, dict[str, str]]:
    """Per-layer configs for the selected layers, and ``{name: reason}`` for skipped ones."""
    plan: Plan = {}
    skipped: dict[str, str] = {}
    parents = {n: m for n, m in model.named_modules()}
    for name, module in select_modules(model, selector, CANDIDATES + HALF_TYPES):
        if any(name.startswith(p + ".") for p in plan) or any(name.startswith(p + ".") for p in skipped):
            continue
        config = layer_config(name, base)
        if config is None:
            skipped[name] = KEPT_FLOAT
            continue
        parent = parents.get(name.rpartition(".")[0])
        if isinstance(parent, nn.MultiheadAttention):
            skipped[name] = "its weights are read directly by nn.MultiheadAttention"
        elif standard := overrides_forward(module, CANDIDATES + HALF_TYPES):
            skipped[name] = f"{type(module).__name__} overrides the forward of {standard.__name__}"
        elif isinstance(module, LAYER_METHODS[config.method].types(config)):
            plan[name] = config
        elif isinstance(module, CANDIDATES):
            skipped[name] = f"{config.method} does not handle {type(module).__name__}"
    return plan, skipped


def _static_prepare(model: nn.Module, plan: Plan, ctx: Context) -> dict[str, dict[str, Any]]:
    """Fold BNs, fuse following ReLUs, calibrate activations: per-layer info for `QDQLayer`."""
    from slimkit.core.folding import find_chains

    static = {n: c for n, c in plan.items() if c.method == "int8-static"}
    if not static:
        return {}
    if ctx.data is None:
        raise DataError("int8-static needs calibration data: pass data=... (a few hundred samples)")
    relus = dict(find_chains(model, tuple(LAYER_METHODS["int8-static"].types(None)), nn.ReLU, through=nn.Identity))
    observers = {}
    for name, config in static.items():
        observers[Point(name, "input")] = make_observer(config.observer)
        if config.quantize_output:
            observers[Point(relus.get(name, name), "output")] = make_observer(config.observer)
    limit = next(iter(static.values())).calibration_batches
    calibrate(model, ctx.data, observers, device=ctx.device, limit=limit, require_all=False)
    silent = {name for name in static if observers[Point(name, "input")].count == 0}
    if silent == set(static):
        raise DataError(
            f"no layer to quantize ran during calibration ({len(silent)} silent): check that the data "
            "reaches the model (inputs, keyword names)"
        )
    info: dict[str, dict[str, Any]] = {}
    for name in static:
        if name in silent:
            info[name] = {"silent": True}
            continue
        out = observers.get(Point(relus.get(name, name), "output"))
        if out is not None and out.count == 0:
            out = None  # its output is consumed outside the module: keep that activation in float
        info[name] = {
            "input": observers[Point(name, "input")].qparams(),
            "output": out.qparams() if out is not None else None,
            "relu": name in relus,
            "relu_module": relus.get(name),
        }
    return info


def _fold(model: nn.Module, base: QuantConfig, ctx: Context) -> list[list[str]]:
    if not (isinstance(base, Int8Static) and base.fold_bn):
        return []
    from slimkit.core.folding import fold_pairs, foldable_pairs

    pairs = foldable_pairs(model, ctx.selector)
    fold_pairs(model, pairs)
    return [list(p) for p in pairs]


def quantize_model(model: nn.Module, config: QuantConfig, ctx: Context) -> nn.Module:
    """The handler of every PTQ method (see the module doc)."""
    model = model.eval()
    folded = _fold(model, config, ctx)
    whole_half = isinstance(config, Half) and not config.overrides and ctx.selector == Selector()
    if whole_half:
        cast_half(model, config)
        ctx.state.update({"layers": {"": {"method": config.method, "config": config.model_dump(mode="json")}}})
        return model
    plan, skipped = plan_layers(model, config, ctx.selector)
    with torch.no_grad():
        info = _static_prepare(model, plan, ctx)
        layers: dict[str, Any] = {}
        for name, layer_cfg in plan.items():
            extra = info.get(name, {})
            if extra.get("silent"):
                skipped[name] = (
                    "never ran as a module during calibration: the model reads its weight directly "
                    "(e.g. F.linear(x, layer.weight)), so it stays float"
                )
                continue
            new = LAYER_METHODS[layer_cfg.method].convert(model.get_submodule(name), layer_cfg, extra)
            replace_module(model, name, new)
            if extra.get("relu_module"):
                replace_module(model, extra["relu_module"], nn.Identity())
            recorded = {k: v for k, v in extra.items() if k in ("relu", "relu_module")}
            layers[name] = {"method": layer_cfg.method, "config": layer_cfg.model_dump(mode="json"), **recorded}
    trim()  # the replaced float weights are free: hand their pages back
    if unexpected := {n: why for n, why in skipped.items() if why != KEPT_FLOAT}:
        listed = "; ".join(f"{n} ({why})" for n, why in list(unexpected.items())[:5])
        warnings.warn(f"{config.method}: {len(unexpected)} layer(s) left in float: {listed}", stacklevel=4)
    if not layers:
        warnings.warn(f"{config.method}: no layer was quantized (nothing matched)", stacklevel=4)
    ctx.state.update({"layers": layers, "skipped": skipped, "folded": folded})
    return model


def rebuild_model(model: nn.Module, config: Config, state: dict[str, Any]) -> nn.Module:
    """Recreate the quantized structure recorded in ``state`` (no data; values come from the weights)."""
    from slimkit.core.folding import remove_batchnorms

    remove_batchnorms(model, [tuple(p) for p in state.get("folded", [])])
    for name, entry in state.get("layers", {}).items():
        method = LAYER_METHODS[entry["method"]]
        layer_cfg = get_method("quantize", entry["method"]).config.build(**entry["config"])
        layer = model.get_submodule(name) if name else model
        new = method.rebuild(layer, layer_cfg, entry)
        if name:
            replace_module(model, name, new)
        if entry.get("relu_module"):
            replace_module(model, entry["relu_module"], nn.Identity())
    return model


for _cls in (Int8Dynamic, Int8Static, WeightOnly, Half, BFloat16):
    register("quantize", _cls.method, _cls, rebuild=rebuild_model)(quantize_model)
