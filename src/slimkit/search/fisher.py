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
import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from slimkit.core.data import iter_batches, primary_output, run_model
from slimkit.core.record import get_record
from slimkit.core.registry import apply, replay
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


def parameter_diagonals(
    model: nn.Module,
    data: Iterable[Any],
    names: Sequence[str] | None = None,
    *,
    classifier: bool,
    max_batches: int | None = None,
    draws: int = 2,
    seed: int = 0,
) -> dict[str, Tensor]:
    """The Fisher diagonal of each named parameter, averaged per sample (float64).

    Args:
        model: the model (its parameters' ``requires_grad`` and train flags are restored).
        data: batches (``(inputs, targets)`` or inputs; targets are not used).
        names: parameter names (``fc.weight``) to score (None: every floating-point one).
        classifier: the output is class logits (last dimension); otherwise any tensor.
        max_batches: use at most this many batches.
        draws: label / noise draws per batch (more: less variance, one backward each).
        seed: seeds the draws.

    Returns:
        ``{name: diagonal}`` shaped like the parameter, for the parameters a gradient reached
        (one that never ran on the data, or does not affect the output, is left out: its cost
        cannot be estimated, only measured).
    """
    if names is None:
        params = {n: p for n, p in model.named_parameters() if p.is_floating_point()}
    else:
        params = {n: model.get_parameter(n) for n in names}
    device = next(iter(params.values())).device
    flags = [(p, p.requires_grad) for p in model.parameters()]
    sums = {name: torch.zeros_like(p, dtype=torch.float64) for name, p in params.items()}
    generator = torch.Generator(device).manual_seed(seed)
    samples = 0
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        for p in params.values():
            p.requires_grad_(True)
        with eval_mode(model), torch.enable_grad():
            for batch in iter_batches(data, device, max_batches):
                output = primary_output(run_model(model, batch))
                for draw in range(draws):
                    loss = _pseudo_loss(output, classifier, generator)
                    grads = torch.autograd.grad(
                        loss, list(params.values()), retain_graph=draw < draws - 1, allow_unused=True
                    )
                    for name, grad in zip(params, grads, strict=True):
                        if grad is not None:
                            sums[name] += grad.double().square()
                samples += output.shape[0]
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
    return {name: s / (draws * samples) for name, s in sums.items() if s.any()}


def fisher_diagonals(
    model: nn.Module, data: Iterable[Any], layers: Sequence[str], *, classifier: bool, **options: Any
) -> dict[str, Tensor]:
    """The Fisher diagonal of each layer's ``weight`` (`parameter_diagonals`), by layer name."""
    names = [f"{name}.weight" for name in layers]
    return layer_diagonals(parameter_diagonals(model, data, names, classifier=classifier, **options))


def layer_diagonals(diagonals: dict[str, Tensor]) -> dict[str, Tensor]:
    """``{layer: diagonal of its weight}`` from `parameter_diagonals`' ``{"layer.weight": ...}``."""
    return {name[: -len(".weight")]: d for name, d in diagonals.items() if name.endswith(".weight")}


def removal_cost(model: nn.Module, removed: nn.Module, diagonals: dict[str, Tensor]) -> float:
    """``½ Σ F_ii w_i²`` over the weights that carried what ``removed`` (``model`` after one
    channel-pruning verb) cut: Optimal Brain Damage's cost of setting them to zero.

    A removed channel's effect on the function is its consumers' input columns going to zero
    (the producer's rows, and a BatchNorm between, only feed those columns), so the cost is
    taken over the ``in`` side of the recorded cut. That cut is replayed on a copy of
    ``model`` whose parameters hold ``F_ii w_i²`` (0 where no diagonal reached), so whatever
    layer types the pruning slices, the cost is what the copy loses — no map from pruned to
    original indices is needed. A structural verb that records no per-axis cut is priced by
    everything it removes.
    """
    transform = get_record(removed).transforms[-1]
    if "keeps" in transform.state:
        inputs = {name: {"in": axes["in"]} for name, axes in transform.state["keeps"].items() if "in" in axes}
        transform = dataclasses.replace(transform, state={**transform.state, "keeps": inputs, "attrs": {}})
    weighted = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in weighted.named_parameters():
            diagonal = diagonals.get(name)
            p.copy_(diagonal.to(p.dtype) * p.square() if diagonal is not None else torch.zeros_like(p))
        before = sum(float(p.double().sum()) for p in weighted.parameters())
        replay(weighted, transform)
        after = sum(float(p.double().sum()) for p in weighted.parameters())
    return 0.5 * max(0.0, before - after)


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
