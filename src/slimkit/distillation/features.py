"""Capture intermediate outputs of named submodules with forward hooks."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

import torch
from torch import nn

from slimkit.core.data import primary_output
from slimkit.core.errors import InvalidConfigError


def resolve_module(model: nn.Module, name: str, role: str) -> nn.Module:
    """The submodule ``name`` of ``model``; `InvalidConfigError` lists close names when missing."""
    modules = dict(model.named_modules())
    if name in modules and name:
        return modules[name]
    close = difflib.get_close_matches(name, [n for n in modules if n], n=5, cutoff=0.5)
    hint = f"close names: {', '.join(close)}" if close else f"names look like: {', '.join(list(modules)[1:8])}"
    raise InvalidConfigError(f"the {role} has no layer named {name!r}; {hint}")


class FeatureTap:
    """Records the output of each named module on every forward, until `close`.

    Args:
        model: the model to observe.
        names: dotted module names.
        role: ``"student"`` or ``"teacher"`` (for error messages).
    """

    def __init__(self, model: nn.Module, names: Iterable[str], role: str):
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles = []
        for name in dict.fromkeys(names):
            module = resolve_module(model, name, role)
            self._handles.append(module.register_forward_hook(self._hook(name)))

    def _hook(self, name: str):  # noqa: ANN202 - hook closure
        def record(_module: nn.Module, _inputs: object, output: object) -> None:
            self.outputs[name] = primary_output(output)

        return record

    def take(self) -> dict[str, torch.Tensor]:
        """The outputs recorded by the last forward (and forget them)."""
        outputs, self.outputs = self.outputs, {}
        return outputs

    def close(self) -> None:
        """Remove the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
