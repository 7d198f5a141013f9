"""Model inputs for export and artifact runtimes: positional binding, flat outputs, synthetic examples."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils._pytree import tree_leaves

from slimkit.core.data import Batch, primary_output


def positional(model: nn.Module, batch: Batch) -> Batch:
    """The batch with keyword inputs moved to positions when they fill the forward's leading parameters.

    Exported graphs take inputs by position; ``model(input_ids=..., attention_mask=...)``
    becomes ``model(input_ids, attention_mask)`` when those are the first two parameters.
    """
    if not batch.kwargs:
        return batch
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return batch
    names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    wanted = names[len(batch.args) : len(batch.args) + len(batch.kwargs)]
    if set(wanted) != set(batch.kwargs):
        return batch
    return Batch((*batch.args, *(batch.kwargs[n] for n in wanted)), {}, batch.target)


def input_names(model: nn.Module, batch: Batch) -> list[str]:
    """Names for the graph inputs: the forward's parameter names, else ``input_<i>``."""
    try:
        params = [p.name for p in inspect.signature(model.forward).parameters.values()]
    except (TypeError, ValueError):
        params = []
    names = [params[i] if i < len(params) else f"input_{i}" for i in range(len(batch.args))]
    return names + list(batch.kwargs)


def flat_tensors(batch: Batch) -> list[torch.Tensor]:
    """Positional inputs then keyword inputs (in insertion order), as contiguous CPU tensors."""
    return [t.detach().cpu().contiguous() for t in (*batch.args, *batch.kwargs.values())]


def flat_outputs(output: Any) -> list[torch.Tensor]:
    """Every tensor of a model output, in the order an exported graph returns them.

    Tuples, lists, dicts and model-output objects (transformers' ``ModelOutput`` is a pytree
    node) are flattened the way ``torch.export`` flattens them; an object pytree does not
    know gives its primary tensor.
    """
    if isinstance(output, torch.Tensor):
        return [output]
    leaves = [leaf for leaf in tree_leaves(output) if isinstance(leaf, torch.Tensor)]
    return leaves or [primary_output(output)]


def pack_outputs(arrays: Sequence[Any]) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """Runtime outputs (numpy arrays or tensors) as torch tensors: one tensor, or a tuple of them."""
    tensors = tuple(a if isinstance(a, torch.Tensor) else torch.from_numpy(np.asarray(a)) for a in arrays)
    return tensors[0] if len(tensors) == 1 else tensors


@dataclass(frozen=True)
class InputSpec:
    """Name, shape (batch dimension first) and numpy dtype of one artifact input."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype


def synthetic_batch(specs: Sequence[InputSpec], batch_size: int = 1) -> Batch:
    """A batch matching an artifact's inputs: ``randn`` for floats, ones for integer ids and masks.

    Ones are valid for token ids and attention masks alike; named inputs become keywords
    when the artifact names them, so runtimes can bind them by name.
    """
    generator = torch.Generator().manual_seed(0)
    tensors = []
    for spec in specs:
        shape = (batch_size, *spec.shape[1:]) if spec.shape else ()
        dtype = torch.from_numpy(np.zeros((), dtype=spec.dtype)).dtype
        if dtype.is_floating_point:
            tensors.append(torch.randn(shape, generator=generator).to(dtype))
        else:
            tensors.append(torch.ones(shape, dtype=dtype))
    return Batch(tuple(tensors))


def run_chunked(fn: Any, arrays: Sequence[Any], step: int, pad: bool) -> list[Any]:
    """Run ``fn`` on consecutive slices of at most ``step`` samples and concatenate the outputs.

    For artifacts whose batch size is fixed (``pad=True``: the last slice is padded by
    repeating its last sample, and the padding's outputs are dropped) or bounded.

    Args:
        fn: ``fn(list of arrays/tensors) -> list of outputs`` (numpy arrays or tensors).
        arrays: inputs sharing the leading batch dimension.
        step: samples per call.
        pad: pad the last slice to ``step`` samples.
    """
    size = arrays[0].shape[0]
    parts = []
    for start in range(0, size, step):
        chunk = [a[start : start + step] for a in arrays]
        missing = step - chunk[0].shape[0] if pad else 0
        if missing:
            chunk = [
                _concat(
                    [
                        c,
                        c[-1:].repeat_interleave(missing, 0)
                        if isinstance(c, torch.Tensor)
                        else np.repeat(c[-1:], missing, 0),
                    ]
                )
                for c in chunk
            ]
        parts.append([o[: step - missing] for o in fn(chunk)])
    return [_concat(list(outs)) for outs in zip(*parts, strict=True)]


def _concat(items: list[Any]) -> Any:
    return torch.cat(items) if isinstance(items[0], torch.Tensor) else np.concatenate(items)
