"""A Fisher-information proxy for what a per-layer weight change costs, without evaluating it.

Changing a layer's weight by ``Δw`` raises the loss by about ``½ Σ F_ii Δw_i²``, ``F`` the
Fisher information of the model's output distribution (the diagonal, second-order proxy of
Optimal Brain Damage and HAWQ). The diagonal comes from gradients, one backward per batch
and draw, over every scored layer at once:

- a classifier (metric ``accuracy``): the cross-entropy at labels *drawn from the model's own
  softmax* (the true Fisher; the empirical Fisher at the data's labels is biased for a
  trained model);
- any other output (embeddings, fidelity, a user metric): ``<output, r>`` with ``r``
  standard normal, whose squared gradient is the Gauss-Newton diagonal ``diag(JᵀJ)`` of a
  squared-error loss on the output.

The per-sample noise (drawn label, ``r``) has zero mean, so cross terms between the samples
of a batch vanish in expectation: the squared batch gradient is an unbiased estimate of the
sum of the per-sample diagonals.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from slimkit.core.data import iter_batches, primary_output, run_model
from slimkit.core.registry import apply
from slimkit.measure.metrics import eval_mode
from slimkit.measure.size import tensor_bytes
from slimkit.search.candidates import Setting


def _pseudo_loss(output: Tensor, classifier: bool, generator: torch.Generator) -> Tensor:
    """A loss whose squared gradient estimates the Fisher diagonal (see the module doc)."""
    if classifier:
        logits = output.reshape(-1, output.shape[-1]).float()
        drawn = torch.multinomial(logits.detach().softmax(-1), 1, generator=generator).squeeze(1)
        return nn.functional.cross_entropy(logits, drawn, reduction="sum")
    noise = torch.randn(output.shape, generator=generator, device=output.device, dtype=output.dtype)
    return (output * noise).sum()


def fisher_diagonals(
    model: nn.Module,
    data: Iterable[Any],
    layers: Sequence[str],
    *,
    classifier: bool,
    max_batches: int | None = None,
    draws: int = 2,
    seed: int = 0,
) -> dict[str, Tensor]:
    """The Fisher diagonal of each layer's ``weight``, averaged per sample (float64).

    Args:
        model: the model (its parameters' ``requires_grad`` and train flags are restored).
        data: batches (``(inputs, targets)`` or inputs; targets are not used).
        layers: module names whose ``weight`` is scored.
        classifier: the output is class logits (last dimension); otherwise any tensor.
        max_batches: use at most this many batches.
        draws: label / noise draws per batch (more: less variance, one backward each).
        seed: seeds the draws.

    Returns:
        ``{layer: diagonal}`` shaped like the layer's weight, for the layers a gradient
        reached (a layer that never ran on the data, or does not affect the output, is left
        out: its cost cannot be estimated, only measured).
    """
    weights = {name: model.get_submodule(name).weight for name in layers}
    device = next(iter(weights.values())).device
    flags = [(p, p.requires_grad) for p in model.parameters()]
    sums = {name: torch.zeros_like(w, dtype=torch.float64) for name, w in weights.items()}
    generator = torch.Generator(device).manual_seed(seed)
    samples = 0
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        for w in weights.values():
            w.requires_grad_(True)
        with eval_mode(model), torch.enable_grad():
            for batch in iter_batches(data, device, max_batches):
                output = primary_output(run_model(model, batch))
                for draw in range(draws):
                    loss = _pseudo_loss(output, classifier, generator)
                    grads = torch.autograd.grad(
                        loss, list(weights.values()), retain_graph=draw < draws - 1, allow_unused=True
                    )
                    for (name, _), grad in zip(weights.items(), grads, strict=True):
                        if grad is not None:
                            sums[name] += grad.double().square()
                samples += output.shape[0]
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
    return {name: s / (draws * samples) for name, s in sums.items() if s.any()}


def alone(layer: nn.Module, setting: Setting) -> nn.Module:
    """A copy of ``layer`` with ``setting`` applied by its verb (as it would be inside the model)."""
    holder = nn.ModuleDict({"layer": copy.deepcopy(layer)})
    options = dict(setting.options)
    return apply(setting.verb, holder, setting.method, include=["layer"], **options)["layer"]


def fisher_cost(diagonal: Tensor, layer: nn.Module, changed: nn.Module) -> float:
    """``½ Σ F_ii Δw_i²``: the estimated loss increase of replacing ``layer`` by ``changed``."""
    delta = changed.weight.detach().double() - layer.weight.detach().double()
    return 0.5 * float((diagonal * delta.square()).sum())


def estimate_rows(
    model: nn.Module, settings: Sequence[Setting], diagonals: dict[str, Tensor]
) -> dict[str, dict[str, float]]:
    """``{setting key: {"proxy", "bytes_saved"}}`` for single-layer weight settings, none evaluated."""
    rows = {}
    for setting in settings:
        layer = model.get_submodule(setting.unit)
        changed = alone(layer, setting)
        rows[setting.key] = {
            "proxy": fisher_cost(diagonals[setting.unit], layer, changed),
            "bytes_saved": tensor_bytes(layer) - tensor_bytes(changed),
        }
    return rows


def fit_scale(proxies: Sequence[float], drops: Sequence[float]) -> float:
    """The least-squares slope through the origin from proxy to measured drop (never negative)."""
    p, d = torch.tensor(proxies, dtype=torch.float64), torch.tensor(drops, dtype=torch.float64)
    denominator = float(p.square().sum())
    return max(0.0, float((p * d).sum()) / denominator) if denominator > 0 else 0.0


def anchors(proxies: dict[str, float], count: int) -> list[str]:
    """``count`` keys spread over the proxy's range (evenly spaced ranks, the largest included)."""
    ranked = sorted(proxies, key=proxies.__getitem__)
    if count >= len(ranked):
        return ranked
    step = len(ranked) / count
    return [ranked[len(ranked) - 1 - int(i * step)] for i in range(count)]
