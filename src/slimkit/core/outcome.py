"""What one verb did to a model: the layers it changed, the ones it skipped and why.

`core.registry.apply` builds an `Outcome` for every transform. A handler may return one
(``Outcome(model, skipped={...})``) or just the model; either way ``changed`` is measured
by comparing the modules before and after (class, parameter shapes and values), so a
method can never report a change it did not make, nor hide one. `explain` is the public
way to read it back (never ``transforms[-1].state``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class Outcome:
    """The result of one verb.

    Attributes:
        model: the transformed model (only set while a handler hands it to `apply`).
        changed: names of the modules whose class, parameter shapes or values changed.
        skipped: ``{module name: reason}`` for layers the method could not or would not change.
        verb: the verb (``"quantize"``, ``"prune"``, ...), filled in by `apply`.
        method: the registered method name, filled in by `apply`.
        details: what the method reports beyond changed/skipped (ranks chosen, layers folded,
            the schedule it followed...); each method's page in ``docs/`` lists its keys.
    """

    model: nn.Module | None = None
    changed: tuple[str, ...] = ()
    skipped: dict[str, str] = field(default_factory=dict)
    verb: str = ""
    method: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (without the model)."""
        return {
            "verb": self.verb,
            "method": self.method,
            "changed": list(self.changed),
            "skipped": self.skipped,
            "details": self.details,
        }

    def summary(self) -> str:
        """One line: ``quantize:int8-dynamic changed 12 modules, skipped 2 (fc: reason, ...)``."""
        text = f"{self.verb}:{self.method} changed {len(self.changed)} module(s)"
        if self.skipped:
            listed = "; ".join(f"{n}: {why}" for n, why in list(self.skipped.items())[:3])
            more = f"; and {len(self.skipped) - 3} more" if len(self.skipped) > 3 else ""
            text += f", skipped {len(self.skipped)} ({listed}{more})"
        return text


def normalize_skipped(raw: Any, method: str) -> dict[str, str]:
    """``{name: reason}`` from what handlers historically stored (a dict, or a list of names)."""
    if raw is None:
        return {}
    if isinstance(raw, Mapping):
        return {str(k): str(v) for k, v in raw.items()}
    if isinstance(raw, (list, tuple, set)):
        return {str(name): f"not handled by {method}" for name in raw}
    return {}


Fingerprint = dict[str, tuple[str, tuple[tuple[str, tuple[int, ...], str, float, float], ...]]]


@torch.no_grad()
def fingerprint(model: nn.Module) -> Fingerprint:
    """Per module: its class and, for each of its own tensors, name, shape, dtype and two
    checksums (plain and position-weighted sums in float64, so permutations show too).
    Vectorised on the tensors' own device; one host sync for the whole model."""
    entries: list[tuple[str, str, list[tuple[str, torch.Tensor]]]] = []
    sums: list[torch.Tensor] = []
    for name, module in model.named_modules():
        tensors = [(k, t) for k, t in (*module.named_parameters(recurse=False), *module.named_buffers(recurse=False))]
        tensors = [(k, t) for k, t in tensors if t is not None and not t.is_meta and not t.is_complex()]
        entries.append((name, type(module).__qualname__, tensors))
        sums += [_checksums(t) for _, t in tensors]
    values = torch.stack([s.to(sums[0].device) for s in sums]).cpu().tolist() if sums else []
    prints: Fingerprint = {}
    position = 0
    for name, kind, tensors in entries:
        marks = []
        for key, tensor in tensors:
            plain, weighted = values[position]
            position += 1
            marks.append((key, tuple(tensor.shape), str(tensor.dtype), plain, weighted))
        prints[name] = (kind, tuple(marks))
    return prints


_CHUNK = 1 << 24
"""Elements summed at a time, so checksumming a large embedding needs little extra memory."""


def _checksums(tensor: torch.Tensor) -> torch.Tensor:
    flat = tensor.detach().reshape(-1)
    total = torch.zeros(2, dtype=torch.float64, device=flat.device)
    for start in range(0, flat.numel(), _CHUNK):
        chunk = flat[start : start + _CHUNK].to(torch.float64)
        weights = torch.arange(start, start + chunk.numel(), device=flat.device, dtype=torch.float64)
        total += torch.stack([chunk.sum(), (chunk * weights.remainder_(251).add_(1)).sum()])
    return total.nan_to_num(nan=0.5, posinf=1.5, neginf=-1.5)


def changed_modules(before: Fingerprint, after: Fingerprint) -> tuple[str, ...]:
    """The outermost modules that are new, or whose class or own tensors differ."""
    changed = [name for name, mark in after.items() if before.get(name) != mark]
    changed += [name for name in before if name not in after]
    outermost: list[str] = []
    for name in sorted(set(changed), key=lambda n: (n.count("."), n)):
        if not any(name == p or name.startswith(p + ".") for p in outermost if p) or name == "":
            outermost.append(name)
    return tuple(n or "<root>" for n in outermost)


def explain(model: nn.Module, index: int = -1) -> Outcome:
    """The `Outcome` of a transform the model went through (the last one by default).

    Raises:
        InvalidConfigError: when the model has no recorded transform.
    """
    from slimkit.core.errors import InvalidConfigError
    from slimkit.core.record import get_record

    transforms = get_record(model).transforms
    if not transforms:
        raise InvalidConfigError("this model went through no slimkit transform, so there is nothing to explain")
    transform = transforms[index]
    return Outcome(
        changed=tuple(transform.changed),
        skipped=dict(transform.skipped),
        verb=transform.verb,
        method=transform.method,
        details=dict(transform.state),
    )
