"""transformers support: importing it offline, and rebuilding a model from its config as data.

A transformers model is saved by slimkit as source ``hf-config:ClassName`` plus the
model's full config (``config.to_dict()``) in ``slimkit.json``. Loading rebuilds the class
from that config with random weights (nothing downloads, no custom code: the class must be
one the ``transformers`` package itself exports), then the saved weights replace them.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import sys
from types import ModuleType
from typing import Any

import torch
from torch import nn

from slimkit.core.errors import UnsafeFileError, UnsupportedModelError, first_line, require

# Libraries transformers may pull in that log import-time warnings irrelevant to the user.
_NOISY_LOGGERS = ("torchao", "torch.utils._pytree")

HF_CONFIG = "hf-config"
"""Source kind of a transformers model rebuilt from the config stored in ``slimkit.json``."""
CLASS_NAME = re.compile(r"[A-Z][A-Za-z0-9_]{0,127}")
_SNAPSHOT = "_slimkit_hf_config"
_ATTENTION_KEYS = ("attn_implementation", "_attn_implementation", "_attn_implementation_internal")
_SAFE_ATTENTION = (None, "eager", "sdpa")


def import_transformers(extra: str = "examples") -> ModuleType:
    """Import transformers with the hub switched off (nothing downloads at run time)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    return require("transformers", extra)


def is_transformers_model(model: Any) -> bool:
    """True for a transformers ``PreTrainedModel`` (never imports transformers itself)."""
    transformers = sys.modules.get("transformers")
    base = getattr(transformers, "PreTrainedModel", None) if transformers is not None else None
    return isinstance(base, type) and isinstance(model, base)


def _config_dict(model: nn.Module) -> dict[str, Any]:
    return json.loads(model.config.to_json_string(use_diff=False))  # type: ignore[union-attr]


def remember_config(model: nn.Module) -> nn.Module:
    """Keep a transformers model's config as it is now (before any transform changes it).

    `config_source` stores this snapshot, so a transform that later updates ``model.config``
    (e.g. pruning) does not change what the saved folder rebuilds before replaying it.
    Does nothing for other models or when a snapshot exists already.
    """
    if is_transformers_model(model) and getattr(model, _SNAPSHOT, None) is None:
        object.__setattr__(model, _SNAPSHOT, (type(model).__name__, _config_dict(model)))
    return model


def config_source(model: nn.Module) -> tuple[str, dict[str, Any]]:
    """``("hf-config:ClassName", config dict)`` that rebuilds ``model``'s original architecture.

    Raises:
        UnsupportedModelError: the class is not exported by ``transformers`` (remote or
            custom code), or the model was quantized by transformers itself.
    """
    name, config = getattr(model, _SNAPSHOT, None) or (type(model).__name__, _config_dict(model))
    transformers = import_transformers()
    if not CLASS_NAME.fullmatch(name) or getattr(transformers, name, None) is not type(model):
        raise UnsupportedModelError(
            f"cannot save {type(model).__module__}.{type(model).__qualname__} from its config: it is not a class "
            "the transformers package exports (custom or remote code); pass source='package.module:factory'"
        )
    if config.get("quantization_config"):
        raise UnsupportedModelError(
            f"{name} was quantized by transformers (quantization_config); slimkit cannot rebuild its layers: "
            "save it with model.save_pretrained, or load it unquantized and quantize it with slimkit"
        )
    return f"{HF_CONFIG}:{name}", config


def _check_config(config: dict[str, Any], origin: str) -> None:
    stack: list[Any] = [config]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if not isinstance(key, str) or key.startswith("__"):
                    raise UnsafeFileError(f"{origin}: field hf_config holds key {key!r}, which is not a config field")
                if key == "auto_map" and value:
                    raise UnsafeFileError(
                        f"{origin}: field hf_config names custom code (auto_map); slimkit never runs a model's own code"
                    )
                if key == "quantization_config" and value:
                    raise UnsafeFileError(f"{origin}: field hf_config holds a transformers quantization_config")
                if key in _ATTENTION_KEYS and value not in _SAFE_ATTENTION:
                    raise UnsafeFileError(
                        f"{origin}: field hf_config.{key} is {value!r}; slimkit builds only 'eager' or 'sdpa' "
                        "attention (others may load kernels)"
                    )
                stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)


def model_class(name: str, origin: str) -> type[nn.Module]:
    """The ``PreTrainedModel`` subclass ``transformers.<name>``; anything else is refused."""
    if not CLASS_NAME.fullmatch(name):
        raise UnsafeFileError(f"{origin}: {name!r} is not a transformers class name")
    transformers = import_transformers()
    try:
        cls = getattr(transformers, name, None)
    except Exception as exc:  # transformers' lazy import of a model whose dependencies are missing
        raise UnsupportedModelError(f"{origin}: transformers cannot import {name}: {first_line(exc)}") from None
    if not (
        isinstance(cls, type)
        and issubclass(cls, transformers.PreTrainedModel)
        and (cls.__module__ or "").startswith("transformers.")
    ):
        raise UnsafeFileError(f"{origin}: {name!r} is not a model class the transformers package exports")
    return cls


def build_from_config(name: str, config: dict[str, Any], origin: str, *, meta: bool = False) -> nn.Module:
    """``transformers.<name>`` built from ``config`` (a dict) with random weights, in eval mode
    (on the ``meta`` device, shapes only, with ``meta``).

    Raises:
        UnsafeFileError: the class is not a transformers model class, or the config names
            custom code, a quantization config or an attention implementation other than
            ``eager``/``sdpa``, or transformers refuses it.
    """
    if not isinstance(config, dict):
        raise UnsafeFileError(f"{origin}: field hf_config must be an object (the model's config)")
    _check_config(config, origin)
    cls = model_class(name, origin)
    config_class = getattr(cls, "config_class", None)
    expected = getattr(config_class, "model_type", "") or ""
    if config_class is None or (expected and config.get("model_type") != expected):
        raise UnsafeFileError(
            f"{origin}: hf_config.model_type {config.get('model_type')!r} does not fit {name} (expects {expected!r})"
        )
    try:
        built = config_class.from_dict(copy.deepcopy(config))
        if meta:
            with torch.device("meta"):
                model = cls._from_config(built)
        else:
            model = cls._from_config(built)
    except Exception as exc:  # transformers raises many types for a config it cannot use
        raise UnsafeFileError(f"{origin}: transformers cannot build {name} from hf_config: {first_line(exc)}") from None
    object.__setattr__(model, _SNAPSHOT, (name, copy.deepcopy(config)))
    return model.eval()


def hf_layer_mismatches(model: nn.Module) -> list[str]:
    """What ``from_pretrained`` would not restore exactly: modules or tensors that differ
    from what ``model.config`` builds (replaced layers, changed shapes), one line each."""
    with torch.device("meta"):
        fresh = type(model)._from_config(copy.deepcopy(model.config))  # type: ignore[operator, union-attr]
    problems: list[str] = []
    theirs = dict(fresh.named_modules())
    replaced: dict[str, list[str]] = {}
    for name, module in model.named_modules():
        other = theirs.get(name)
        if other is not None and type(other) is not type(module):
            replaced.setdefault(f"{type(module).__name__} (was {type(other).__name__})", []).append(name)
        elif other is None and name and not any(name.startswith(r + ".") for v in replaced.values() for r in v):
            replaced.setdefault(type(module).__name__, []).append(name)
    for kind, names in replaced.items():
        problems.append(f"{kind}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}")
    if not problems:
        mine, fresh_state = model.state_dict(), fresh.state_dict()
        for key in sorted(set(mine) | set(fresh_state)):
            if key not in fresh_state or key not in mine:
                problems.append(f"{key}: {'not built by the config' if key in mine else 'missing from the model'}")
            elif tuple(mine[key].shape) != tuple(fresh_state[key].shape):
                problems.append(
                    f"{key}: shape {list(mine[key].shape)}, the config builds {list(fresh_state[key].shape)}"
                )
    return problems


__all__ = ["import_transformers", "is_transformers_model", "config_source", "build_from_config", "remember_config"]
