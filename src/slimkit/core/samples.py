"""Sample inputs for a model: what tracing, timing and MAC counting run it on."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

from slimkit.core.data import Batch, DataSplits, batch_from_inputs, iter_batches, resize_batch
from slimkit.core.errors import DataError
from slimkit.core.examples import SPEC_PREFIX, catalog
from slimkit.core.record import get_record

NO_EXAMPLE_INPUTS = (
    "{what} needs sample inputs to run the model: pass data= (its first batch is used; CLI: --data "
    "package.module:function or file.npz) or example_inputs=(tensor,), or give the model an "
    "example_inputs() method"
)


def example_batch(
    model: nn.Module, example_inputs: Any, data: Iterable[Any] | DataSplits | None, what: str = "this"
) -> Batch:
    """Sample inputs for a model: ``example_inputs``, else the first data batch cut to 1 sample
    (the test split of `DataSplits`), else the model's own ``example_inputs()``, else its bundled example's.

    Raises:
        DataError: when none of these is available, saying what to pass.
    """
    if example_inputs is not None:
        return batch_from_inputs(example_inputs)
    if isinstance(data, DataSplits):
        data = data.test
    if data is not None:
        try:
            first = next(iter_batches(data))
        except StopIteration:
            raise DataError(f"{what} got empty data: it needs at least one batch for sample inputs") from None
        return resize_batch(first, 1)
    own = getattr(model, "example_inputs", None)
    if callable(own):
        return batch_from_inputs(own())
    source = get_record(model).source or ""
    if source.startswith(SPEC_PREFIX):
        return batch_from_inputs(catalog().example_inputs(source.removeprefix(SPEC_PREFIX)))
    raise DataError(NO_EXAMPLE_INPUTS.format(what=what))
