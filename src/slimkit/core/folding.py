"""BatchNorm folding and conv/linear + ReLU fusion: graph rewrites shared by `sk.accelerate(m, "fuse")`
and the quantizers (which fold BatchNorm before quantizing), so neither imports the other.

A BatchNorm that directly follows a convolution or linear layer is an affine map per
output channel, so in inference it can be folded into that layer's weight and bias::

    s = gamma / sqrt(running_var + eps)
    W' = W * s[:, None, ...]          b' = (b - running_mean) * s + beta

The BatchNorm is then replaced by ``nn.Identity`` (its state disappears from the state
dict; the layer gains a bias when it had none). A BatchNorm subclass whose own forward does
more (e.g. ``BatchNormAct2d``: BatchNorm then an activation) is replaced by its forward's
graph without the ``batch_norm`` call, so the activation stays. Pairs are found on the
``torch.fx`` graph (every BatchNorm a leaf) when the model traces, else from adjacency
inside ``nn.Sequential`` containers.
"""

from __future__ import annotations

import warnings
from collections import Counter
from typing import Any

import torch
import torch.ao.nn.intrinsic as nni
from torch import fx, nn

from slimkit.core.data import batch_from_inputs, primary_output, run_model
from slimkit.core.walk import Selector, replace_module

FOLDABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
"""Layers a following BatchNorm folds into (weight dim 0 = output channels)."""
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
FUSED_RELU: dict[type[nn.Module], type[nn.Module]] = {
    nn.Conv1d: nni.ConvReLU1d,
    nn.Conv2d: nni.ConvReLU2d,
    nn.Conv3d: nni.ConvReLU3d,
    nn.Linear: nni.LinearReLU,
}
"""Layer type -> the ``torch.ao.nn.intrinsic`` fused module static quantization understands."""

Types = type[nn.Module] | tuple[type[nn.Module], ...]


class _NormLeafTracer(fx.Tracer):
    """An fx tracer that keeps BatchNorm subclasses (not only ``torch.nn``'s own) as leaves."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, nn.modules.batchnorm._BatchNorm) or super().is_leaf_module(m, module_qualified_name)


def _fx_chains(model: nn.Module, first: Types, second: Types, through: Types) -> list[tuple[str, str]]:
    """(first, second) module names where second consumes first's only output on the fx graph,
    possibly via single-use ``through`` modules; modules called more than once are left out."""
    graph = _NormLeafTracer().trace(model)
    modules = dict(model.named_modules())
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")

    def module(node: Any) -> nn.Module | None:
        is_call = isinstance(node, fx.Node) and node.op == "call_module" and calls[node.target] == 1
        return modules.get(node.target) if is_call else None

    pairs = []
    for node in graph.nodes:
        if not isinstance(module(node), second) or not node.args:
            continue
        prev = node.args[0]
        while isinstance(module(prev), through) and len(prev.users) == 1 and prev.args:
            prev = prev.args[0]
        if isinstance(module(prev), first) and len(prev.users) == 1:
            pairs.append((str(prev.target), str(node.target)))
    return pairs


def _sequential_chains(model: nn.Module, first: Types, second: Types, through: Types) -> list[tuple[str, str]]:
    """(first, second) names of neighbours inside ``nn.Sequential`` containers."""
    pairs = []
    for prefix, seq in model.named_modules():
        if not isinstance(seq, nn.Sequential):
            continue
        children = list(seq.named_children())
        for i, (name, child) in enumerate(children):
            if not isinstance(child, first):
                continue
            j = i + 1
            while j < len(children) and isinstance(children[j][1], through):
                j += 1
            if j < len(children) and isinstance(children[j][1], second):
                pairs.append(tuple(f"{prefix}.{n}" if prefix else n for n in (name, children[j][0])))
    return pairs


def find_chains(model: nn.Module, first: Types, second: Types, through: Types = ()) -> list[tuple[str, str]]:
    """Pairs of module names ``(a, b)`` where ``b`` is applied to ``a``'s output and nothing
    else uses it; from the ``torch.fx`` graph, or ``nn.Sequential`` adjacency when the model
    does not trace."""
    try:
        return _fx_chains(model, first, second, through)
    except Exception:  # fx raises many kinds (TraceError, TypeError, ...) on untraceable code
        return _sequential_chains(model, first, second, through)


def foldable_pairs(model: nn.Module, selector: Selector | None = None) -> list[tuple[str, str]]:
    """The (layer, batchnorm) pairs of ``model`` that `fold_pair` can fold."""
    pairs, _ = fold_plan(model, selector)
    return pairs


def fold_plan(model: nn.Module, selector: Selector | None = None) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """The (layer, batchnorm) pairs `fold_pair` can fold, and ``{batchnorm: why not}`` for the others."""
    selector = selector or Selector()
    pairs, unfolded = [], {}
    for layer, bn in find_chains(model, FOLDABLE, BATCHNORMS):
        if not (selector(layer) and selector(bn)):
            unfolded[bn] = "excluded by include/exclude"
        elif why := _why_not(model.get_submodule(layer), model.get_submodule(bn)):
            unfolded[bn] = why
        else:
            pairs.append((layer, bn))
    return pairs, unfolded


def _why_not(layer: nn.Module, bn: nn.Module) -> str | None:
    channels = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
    if bn.running_mean is None or bn.running_var is None:
        return "the BatchNorm tracks no running statistics"
    if bn.num_features != channels:
        return f"the BatchNorm has {bn.num_features} features but the layer {channels} outputs"
    if type(bn).forward is not nn.modules.batchnorm._BatchNorm.forward:
        try:
            without_batchnorm(bn)
        except ValueError as exc:
            return str(exc)
    return None


def without_batchnorm(bn: nn.Module) -> nn.Module:
    """What is left of a BatchNorm layer once its normalization is folded into the layer before.

    ``nn.Identity`` for torch's own BatchNorms; for a subclass with its own forward (BatchNorm
    then an activation, ...), that forward's fx graph with the ``batch_norm`` call removed.

    Raises:
        ValueError: when the subclass's forward does not trace, or does not apply one
            ``batch_norm`` to its input first.
    """
    if type(bn).forward is nn.modules.batchnorm._BatchNorm.forward:  # torch's own forward: nothing more
        return nn.Identity()
    try:
        gm = fx.symbolic_trace(bn)
    except Exception as exc:  # fx raises many kinds on untraceable code
        raise ValueError(f"{type(bn).__name__}'s forward does not trace ({type(exc).__name__})") from exc
    norms = [n for n in gm.graph.nodes if n.op == "call_function" and n.target is torch.nn.functional.batch_norm]
    inputs = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(norms) != 1 or len(inputs) != 1 or norms[0].args[0] is not inputs[0]:
        raise ValueError(f"{type(bn).__name__}'s forward does not apply one batch_norm to its input")
    norms[0].replace_all_uses_with(inputs[0])
    gm.graph.erase_node(norms[0])
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    used = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    for name in [n for n, _ in (*gm.named_parameters(recurse=False), *gm.named_buffers(recurse=False))]:
        if name not in used:
            delattr(gm, name)
    gm.recompile()
    return gm


def ensure_bias(layer: nn.Module) -> None:
    """Give ``layer`` a zero bias parameter when it has none."""
    if layer.bias is None:
        layer.bias = nn.Parameter(layer.weight.new_zeros(layer.weight.shape[0]))


@torch.no_grad()
def fold_pair(layer: nn.Module, bn: nn.Module) -> None:
    """Fold ``bn``'s eval-mode affine map into ``layer``'s weight and bias (in float64)."""
    mean, var = bn.running_mean.double(), bn.running_var.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + bn.eps)
    ensure_bias(layer)
    shape = (-1,) + (1,) * (layer.weight.dim() - 1)
    layer.weight.copy_(layer.weight.double() * scale.view(shape))
    layer.bias.copy_((layer.bias.double() - mean) * scale + beta)


def remove_batchnorms(model: nn.Module, pairs: list[tuple[str, str]]) -> None:
    """Replace each pair's BatchNorm by ``nn.Identity`` and give its layer a bias (rebuild step)."""
    for layer, bn in pairs:
        ensure_bias(model.get_submodule(layer))
        replace_module(model, bn, without_batchnorm(model.get_submodule(bn)))


def fold_pairs(model: nn.Module, pairs: list[tuple[str, str]]) -> None:
    """Fold every (layer, batchnorm) pair and replace the BatchNorms by ``nn.Identity``."""
    for layer, bn in pairs:
        fold_pair(model.get_submodule(layer), model.get_submodule(bn))
    remove_batchnorms(model, pairs)


def fold_batchnorm(model: nn.Module, example_inputs: Any = None, selector: Selector | None = None) -> nn.Module:
    """Fold every BatchNorm that follows a conv/linear layer into it, in place.

    Uses the BatchNorms' running statistics (their eval-mode behaviour), handles layers
    without bias and grouped/depthwise convolutions. BatchNorms whose input is used
    elsewhere, that are called twice, or that track no statistics are left alone.

    Args:
        model: changed in place (the BatchNorms become ``nn.Identity``).
        example_inputs: when given, the eval-mode outputs before and after folding are
            compared and a `UserWarning` is raised if they differ beyond 1e-4 relative.
        selector: restricts folding to matching module names.

    Returns:
        ``model``.
    """
    pairs = foldable_pairs(model, selector)
    reference = _eval_output(model, example_inputs)
    fold_pairs(model, pairs)
    if reference is not None:
        folded = _eval_output(model, example_inputs)
        error = float((folded - reference).norm() / reference.norm().clamp_min(1e-12))
        if error > 1e-4:
            warnings.warn(f"folding BatchNorm changed the outputs by {error:.2e} (relative)", stacklevel=2)
    return model


@torch.no_grad()
def _eval_output(model: nn.Module, example_inputs: Any) -> torch.Tensor | None:
    if example_inputs is None:
        return None
    was_training = model.training
    model.eval()
    try:
        return primary_output(run_model(model, batch_from_inputs(example_inputs))).double()
    finally:
        model.train(was_training)


def relu_pairs(model: nn.Module, selector: Selector | None = None) -> list[tuple[str, str]]:
    """(layer, relu) pairs that `fuse_relu` can turn into ``torch.ao.nn.intrinsic`` modules
    (an ``nn.Identity`` left by folding may sit between them)."""
    selector = selector or Selector()
    found = find_chains(model, FOLDABLE, nn.ReLU, through=nn.Identity)
    return [
        (layer, relu) for layer, relu in found if selector(layer) and type(model.get_submodule(layer)) in FUSED_RELU
    ]


def fuse_relu(model: nn.Module, pairs: list[tuple[str, str]]) -> None:
    """Replace each layer by its fused ``ConvReLU*``/``LinearReLU`` and the ReLU by ``nn.Identity``."""
    for layer, relu in pairs:
        module = model.get_submodule(layer)
        replace_module(model, layer, FUSED_RELU[type(module)](module, nn.ReLU()))
        replace_module(model, relu, nn.Identity())
