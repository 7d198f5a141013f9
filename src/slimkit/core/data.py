"""The one data adapter: anything iterable that yields batches becomes model calls.

Accepted batch forms (from a DataLoader, a list, a generator, or a `TensorData`):

- a tensor ``x``                         -> ``model(x)``, no target
- ``(inputs, targets)`` pair             -> ``model(inputs)``; ``inputs`` may itself be a
  tuple/list of tensors (``model(*inputs)``) or a mapping (``model(**inputs)``)
- a mapping (transformers' ``BatchEncoding``) -> ``model(**mapping)``; a ``"labels"`` key
  becomes the target and is not passed to the model
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from slimkit.core.errors import DataError, first_line


@dataclass
class Batch:
    """One batch as the model sees it: positional inputs, keyword inputs, optional target."""

    args: tuple[torch.Tensor, ...] = ()
    kwargs: dict[str, torch.Tensor] = field(default_factory=dict)
    target: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> Batch:
        """Return the batch with every tensor moved to ``device``."""
        return Batch(
            tuple(_to(a, device) for a in self.args),
            {k: _to(v, device) for k, v in self.kwargs.items()},
            _to(self.target, device),
        )

    @property
    def size(self) -> int:
        """Number of samples (the leading dimension of the first input)."""
        first = next(iter(self.args), None)
        if first is None:
            first = next(iter(self.kwargs.values()))
        return int(first.shape[0]) if first.dim() else 1

    def fingerprint(self) -> bytes:
        """A digest of the inputs' names, dtypes, shapes and values (not of the target)."""
        digest = hashlib.blake2b(digest_size=16)
        for name, tensor in [*enumerate(self.args), *self.kwargs.items()]:
            values = tensor.detach().cpu().contiguous().flatten()
            digest.update(f"{name}:{values.dtype}:{tuple(tensor.shape)};".encode())
            digest.update(values.view(torch.uint8).numpy().tobytes())
        return digest.digest()

    def shapes(self) -> str:
        """A short human description of the input shapes, for error messages."""
        parts = [str(tuple(a.shape)) for a in self.args]
        parts += [f"{k}={tuple(v.shape)}" for k, v in self.kwargs.items()]
        return ", ".join(parts)


def _to(x: Any, device: torch.device | str) -> Any:
    return x.to(device) if isinstance(x, torch.Tensor) else x


class TensorData:
    """In-memory dataset of inputs ``x`` and optional targets ``y``, iterated in batches.

    Args:
        x: inputs, first dimension is the sample dimension.
        y: targets aligned with ``x`` (or ``None``).
        batch_size: samples per batch.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor | None = None, batch_size: int = 64):
        if len(x) == 0:
            raise DataError("the dataset is empty: give at least one sample")
        if y is not None and len(y) != len(x):
            raise DataError(f"inputs have {len(x)} samples but targets have {len(y)}: they must match")
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        for i in range(0, len(self.x), self.batch_size):
            xb = self.x[i : i + self.batch_size]
            yield xb if self.y is None else (xb, self.y[i : i + self.batch_size])

    def take(self, n: int) -> TensorData:
        """The first ``n`` samples, same batch size."""
        return TensorData(self.x[:n], None if self.y is None else self.y[:n], self.batch_size)

    def rebatch(self, batch_size: int) -> TensorData:
        """The same samples with another batch size."""
        return TensorData(self.x, self.y, batch_size)


def to_batch(item: Any) -> Batch:
    """Turn one item yielded by user data into a `Batch` (see the module doc for forms)."""
    if isinstance(item, torch.Tensor):
        return Batch(args=(item,))
    if isinstance(item, Mapping):
        kwargs = {k: v for k, v in item.items() if k != "labels"}
        return Batch(kwargs=kwargs, target=item.get("labels"))
    if isinstance(item, (tuple, list)) and len(item) == 2:
        inputs, target = item
        if isinstance(inputs, Mapping):
            return Batch(kwargs=dict(inputs), target=target)
        if isinstance(inputs, (tuple, list)):
            return Batch(args=tuple(inputs), target=target)
        return Batch(args=(inputs,), target=target)
    if isinstance(item, (tuple, list)) and len(item) == 1:
        return to_batch(item[0])
    raise DataError(
        f"cannot read a batch of type {type(item).__name__}: yield a tensor, an "
        "(inputs, targets) pair, or a dict of tensors"
    )


def _check_finite(batch: Batch) -> None:
    for t in (*batch.args, *batch.kwargs.values()):
        if not isinstance(t, torch.Tensor):
            raise DataError(f"model inputs must be tensors, got {type(t).__name__}")
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise DataError("the data contains NaN or Inf values: clean or drop those samples")


def iter_batches(
    data: Iterable[Any], device: torch.device | str | None = None, limit: int | None = None
) -> Iterator[Batch]:
    """Yield validated `Batch` objects from any supported data.

    Args:
        data: a DataLoader, list of tensors, list of (inputs, targets) pairs, dicts, ...
        device: move tensors there when given.
        limit: stop after this many batches.

    Raises:
        DataError: when the data is not iterable, is empty, or holds NaN/Inf.
    """
    if data is None or isinstance(data, (torch.Tensor, str, bytes)):
        kind = "None" if data is None else type(data).__name__
        raise DataError(f"data must be an iterable of batches (DataLoader, list of tensors, ...), got {kind}")
    try:
        iterator = iter(data)
    except TypeError:
        raise DataError(f"data of type {type(data).__name__} is not iterable") from None
    count = 0
    for item in iterator:
        if limit is not None and count >= limit:
            break
        batch = to_batch(item)
        _check_finite(batch)
        yield batch.to(device) if device is not None else batch
        count += 1
    if count == 0:
        raise DataError("the data yielded no batches: give at least one sample")


def batch_from_inputs(example_inputs: Any) -> Batch:
    """A `Batch` from ``example_inputs`` (a tensor, a tuple of tensors or a dict)."""
    if isinstance(example_inputs, torch.Tensor):
        return Batch(args=(example_inputs,))
    if isinstance(example_inputs, (Mapping, tuple, list)) and not example_inputs:
        raise DataError("example_inputs is empty: give at least one input tensor")
    if isinstance(example_inputs, Mapping):
        return Batch(kwargs=dict(example_inputs))
    if isinstance(example_inputs, (tuple, list)):
        return Batch(args=tuple(example_inputs))
    raise DataError(
        f"example_inputs must be a tensor, a tuple of tensors or a dict, got {type(example_inputs).__name__}"
    )


def primary_output(output: Any) -> torch.Tensor:
    """The main tensor of a model output (logits, last hidden state, first element)."""
    if isinstance(output, torch.Tensor):
        return output
    for key in ("logits", "sentence_embedding", "last_hidden_state"):
        value = getattr(output, key, None)
        if value is None and isinstance(output, Mapping):
            value = output.get(key)
        if isinstance(value, torch.Tensor):
            return value
    if isinstance(output, Mapping) and output:
        return primary_output(next(iter(output.values())))
    if isinstance(output, (tuple, list)) and output:
        return primary_output(output[0])
    raise DataError(f"cannot find a tensor in the model output of type {type(output).__name__}")


_DATA_MISMATCH = re.compile(
    r"shape|size mismatch|sizes? of tensor|must match the size|mat1 and mat2|cannot be multiplied|dtype|scalar type"
    r"|expected (input|object|all tensors|\d+d|\d+D|.*channels)|input type|channels|dimension|index out of range"
    r"|positional argument|keyword argument|required argument|unexpected keyword|missing \d+ required",
    re.IGNORECASE,
)
"""Messages of forward errors caused by inputs that do not fit the model (shape, dtype, arguments)."""


def run_model(model: nn.Module, batch: Batch) -> Any:
    """Call ``model`` on a batch, turning a forward that fails because the data does not fit the
    model (shape, dtype, argument or missing key) into one clear `DataError`; other errors (a bug
    in the model, out of memory) propagate as they are."""
    try:
        return model(*batch.args, **batch.kwargs)
    except (RuntimeError, ValueError, TypeError, IndexError, KeyError) as exc:
        if not (isinstance(exc, KeyError) or _DATA_MISMATCH.search(str(exc))):
            raise
        first = first_line(exc)
        raise DataError(
            f"the model's forward failed on inputs of shape {batch.shapes()}: {first} "
            "-- check that the data matches what the model expects"
        ) from exc


SPLIT_SEED = 0
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
"""How `DataSplits.split` divides one set of samples: train, calibration, test."""


@dataclass
class DataSplits:
    """Named splits of one dataset, as returned for a data spec.

    Attributes:
        train: batches for fine-tuning.
        calibration: a small set for calibration statistics (disjoint from ``test``).
        test: held-out batches for the metric.
        metric: ``"accuracy"`` (targets are class indices) or ``"fidelity"`` (compare to a
            reference model's outputs).
    """

    train: Iterable[Any]
    calibration: Iterable[Any]
    test: Iterable[Any]
    metric: str = "accuracy"

    @classmethod
    def single(cls, data: Iterable[Any], metric: str = "accuracy") -> DataSplits:
        """All three splits served by the same data (a user iterable with one set)."""
        return cls(train=data, calibration=data, test=data, metric=metric)

    @classmethod
    def split(
        cls, x: torch.Tensor, y: torch.Tensor | None, batch_size: int = 64, *, seed: int = SPLIT_SEED
    ) -> DataSplits:
        """Disjoint train/calibration/test splits of one set of samples.

        A seeded shuffle (``seed``, default 0, so every run gets the same split) puts 80 %
        of the samples in ``train``, 10 % in ``calibration`` and 10 % in ``test`` (at least
        one each). Fewer than 3 samples cannot be split: all splits are then the same set.
        """
        n = len(x)
        if y is not None and len(y) != n:
            raise DataError(f"inputs have {n} samples but targets have {len(y)}: they must match")
        metric = "accuracy" if y is not None else "fidelity"
        if n < 3:
            return cls.single(TensorData(x, y, batch_size), metric=metric)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        n_test = max(1, round(n * SPLIT_FRACTIONS[2]))
        n_cal = max(1, round(n * SPLIT_FRACTIONS[1]))
        parts = order[: n - n_test - n_cal], order[n - n_test - n_cal : n - n_test], order[n - n_test :]
        train, calibration, test = (
            TensorData(x[idx], None if y is None else y[idx], batch_size) for idx in (p.sort().values for p in parts)
        )
        return cls(train, calibration, test, metric=metric)


def check_targets(output: Any, target: Any) -> None:
    """Check class-index targets against the model's output on the first batch.

    Raises:
        DataError: targets that are not 1-D integer class indices in ``0..C-1``, where ``C``
            is the size of the output's last dimension (out-of-range labels would otherwise
            score 0 silently or crash the loss).
    """
    if not isinstance(target, torch.Tensor):
        return
    logits = primary_output(output)
    if logits.dim() != 2:
        return  # not a classifier output: nothing to check against
    if target.dim() != 1:
        raise DataError(f"targets must be 1-D class indices, one per sample; got shape {tuple(target.shape)}")
    if target.is_floating_point() or target.dtype == torch.bool or target.is_complex():
        raise DataError(f"targets must be integer class indices, got dtype {target.dtype}")
    classes = logits.shape[-1]
    if len(target) and (int(target.min()) < 0 or int(target.max()) >= classes):
        raise DataError(
            f"labels range {int(target.min())}..{int(target.max())} but the model outputs {classes} classes "
            f"(labels must be 0..{classes - 1})"
        )


def resize_batch(batch: Batch, size: int) -> Batch:
    """The batch with its leading dimension cut or tiled to ``size`` samples (targets dropped)."""
    if size < 1:
        raise DataError(f"batch size must be >= 1, got {size}")

    def fit(t: torch.Tensor) -> torch.Tensor:
        if t.dim() == 0:
            return t
        reps = -(-size // t.shape[0])
        return t.repeat(reps, *([1] * (t.dim() - 1)))[:size] if reps > 1 else t[:size]

    return Batch(tuple(fit(a) for a in batch.args), {k: fit(v) for k, v in batch.kwargs.items()})
