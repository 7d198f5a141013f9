"""The driver of every layer-wise quantization method: ``int8-dynamic``, ``int8-static``,
``weight-only``, ``fp16``, ``bf16``, and the ``smoothquant`` and ``bias-correction`` that
register their `LayerMethod` from `slimkit.quantization.algorithms`.

Resolve a config per layer (the method's config, or the first matching ``overrides``
pattern), skip and report layers no method can take, fill every layer's declared statistics
in one calibration pass, then convert layer by layer. The record's state lists every
converted layer with its method, config and data-free info, so `rebuild` can redo the
structure without data.
"""

from __future__ import annotations

import warnings
from fnmatch import fnmatchcase
from typing import Any

import torch
from torch import nn

from slimkit.core.calibration import Point, calibrate
from slimkit.core.config import Config
from slimkit.core.errors import DataError, InvalidConfigError
from slimkit.core.heap import trim
from slimkit.core.layers import overrides_forward
from slimkit.core.registry import Context, get_method, register
from slimkit.core.walk import Selector, replace_module, select_modules
from slimkit.quantization.configs import BFloat16, Half, Int8Dynamic, Int8Static, QuantConfig, WeightOnly
from slimkit.quantization.layers import CANDIDATES, HALF_TYPES, LAYER_METHODS, cast_half

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


def _observe(model: nn.Module, plan: Plan, ctx: Context) -> dict[str, dict[str, Any]]:
    """One calibration pass filling every planned layer's declared statistics.

    Returns:
        ``{name: stats}`` for the layers that declared any: the filled statistics by point
        (``"input"``, ``"output"``), ``silent`` when the data never reached the layer, and for
        methods that fold a following ReLU, ``relu`` / ``relu_module``.
    """
    from slimkit.core.folding import find_chains

    needs = {name: LAYER_METHODS[c.method].needs(model.get_submodule(name), c) for name, c in plan.items()}
    needs = {name: stats for name, stats in needs.items() if stats}
    if not needs:
        return {}
    if ctx.data is None:
        methods = " and ".join(sorted({plan[name].method for name in needs}))
        raise DataError(f"{methods} needs calibration data: pass data=... (a few hundred samples)")
    fusing = {name for name in needs if LAYER_METHODS[plan[name].method].fuses_relu}
    types = tuple({t for name in fusing for t in LAYER_METHODS[plan[name].method].types(plan[name])})
    relus = dict(find_chains(model, types, nn.ReLU, through=nn.Identity)) if fusing else {}
    points = {}
    for name, stats in needs.items():
        for where, statistic in stats.items():
            module = relus.get(name, name) if where == "output" and name in fusing else name
            points[Point(module, where)] = statistic
    limits = [c.calibration_batches for c in plan.values() if getattr(c, "calibration_batches", None)]
    calibrate(model, ctx.data, points, device=ctx.device, limit=min(limits, default=None), require_all=False)
    info: dict[str, dict[str, Any]] = {}
    for name, stats in needs.items():
        info[name] = {**stats, "silent": any(s.count == 0 for where, s in stats.items() if where == "input")}
        if name in fusing:
            info[name].update(relu=name in relus, relu_module=relus.get(name))
    if all(entry["silent"] for entry in info.values()):
        raise DataError(
            f"no layer to quantize ran during calibration ({len(info)} silent): check that the data "
            "reaches the model (inputs, keyword names)"
        )
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
    notes: dict[str, list[str]] = {}
    with torch.no_grad():
        info = _observe(model, plan, ctx)
        layers: dict[str, Any] = {}
        for name, layer_cfg in plan.items():
            method, stats, layer = LAYER_METHODS[layer_cfg.method], info.get(name, {}), model.get_submodule(name)
            if stats.get("silent") and method.observed_only:
                skipped[name] = (
                    "never ran as a module during calibration: the model reads its weight directly "
                    "(e.g. F.linear(x, layer.weight)), so it stays float"
                )
                continue
            for key in method.notes(layer, stats):
                notes.setdefault(key, []).append(name)
            replace_module(model, name, method.convert(layer, layer_cfg, stats))
            if stats.get("relu_module"):
                replace_module(model, stats["relu_module"], nn.Identity())
            recorded = {k: v for k, v in stats.items() if k in ("relu", "relu_module")}
            layers[name] = {"method": layer_cfg.method, "config": layer_cfg.model_dump(mode="json"), **recorded}
    trim()  # the replaced float weights are free: hand their pages back
    if unexpected := {n: why for n, why in skipped.items() if why != KEPT_FLOAT}:
        listed = "; ".join(f"{n} ({why})" for n, why in list(unexpected.items())[:5])
        warnings.warn(f"{config.method}: {len(unexpected)} layer(s) left in float: {listed}", stacklevel=4)
    if not layers:
        warnings.warn(f"{config.method}: no layer was quantized (nothing matched)", stacklevel=4)
    ctx.state.update({"layers": layers, "skipped": skipped, "folded": folded, **notes})
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
