import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import slimkit as sk
from slimkit.core.data import Batch
from slimkit.core.errors import InvalidConfigError
from slimkit.models.testing import ZOO
from slimkit.runtime import TorchRuntime, load
from slimkit.runtime.inputs import InputSpec, positional, run_chunked, synthetic_batch


def test_load_module_gives_torch_runtime_and_bench():
    model = ZOO["residual"]()
    rt = load(model, model.example_inputs())
    assert isinstance(rt, TorchRuntime)
    stats = rt.bench(batch_sizes=(1, 2), threads=1, budget_s=0.01)
    assert set(stats) == {1, 2} and all(s.p50_ms > 0 for s in stats.values())


def test_torch_compile_mode_is_validated():
    with pytest.raises(InvalidConfigError, match="reduce-overhead"):
        TorchRuntime(ZOO["residual"](), compile="fastest")


@pytest.mark.slow
def test_torch_compile_runs_like_eager():
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU()).eval()
    rt = load(model, compile="default")
    x = torch.randn(3, 8)
    assert rt.name == "torch.compile(default)"
    torch.testing.assert_close(rt.run(x), model(x), rtol=1e-5, atol=1e-6)


def test_sk_export_is_the_export_function():
    from slimkit.runtime.export import export

    assert sk.export is export and sk.runtime.export is export


def test_positional_binds_keyword_inputs_in_forward_order():
    class Two(torch.nn.Module):
        def forward(self, input_ids, attention_mask):
            return input_ids * attention_mask

    ids, mask = torch.ones(2, 3), torch.zeros(2, 3)
    bound = positional(Two(), Batch(kwargs={"attention_mask": mask, "input_ids": ids}))
    assert bound.kwargs == {} and bound.args[0] is ids and bound.args[1] is mask


def test_synthetic_batch_matches_specs():
    batch = synthetic_batch(
        [InputSpec("x", (1, 3, 4), np.dtype(np.float32)), InputSpec("ids", (1, 5), np.dtype(np.int64))], 2
    )
    assert batch.args[0].shape == (2, 3, 4) and batch.args[0].dtype == torch.float32
    assert batch.args[1].dtype == torch.int64 and bool((batch.args[1] == 1).all())


@settings(max_examples=30, deadline=None)
@given(size=st.integers(1, 23), step=st.integers(1, 8), pad=st.booleans(), as_numpy=st.booleans())
def test_run_chunked_equals_one_call(size, step, pad, as_numpy):
    x = torch.arange(size * 3, dtype=torch.float32).reshape(size, 3)
    y = torch.arange(size, dtype=torch.float32)
    calls = []

    def fn(chunk):
        calls.append(chunk[0].shape[0])
        return [chunk[0] * 2 + chunk[1][:, None], chunk[1] - 1]

    arrays = [x.numpy(), y.numpy()] if as_numpy else [x, y]
    out = run_chunked(fn, arrays, step, pad)
    np.testing.assert_allclose(np.asarray(out[0]), (x * 2 + y[:, None]).numpy())
    np.testing.assert_allclose(np.asarray(out[1]), (y - 1).numpy())
    assert all(c == step for c in calls) if pad else max(calls) <= step
