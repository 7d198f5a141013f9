import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import slimkit as sk
from slimkit.core.errors import InvalidConfigError
from slimkit.core.index import WEIGHTS
from slimkit.pruning.masks import masked_layers, nm_mask, sparsity_masks
from slimkit.pruning.sparse import SparseWeight, pack_bits, unpack_bits


@settings(max_examples=40, deadline=None)
@given(
    n_m=st.sampled_from([(1, 2), (2, 4), (1, 4), (3, 4), (4, 8), (2, 8)]),
    out=st.integers(1, 6),
    blocks=st.integers(1, 4),
    kernel=st.sampled_from([None, 1, 3]),
    seed=st.integers(0, 1000),
)
def test_nm_mask_has_exactly_n_per_group_of_m(n_m, out, blocks, kernel, seed):
    n, m = n_m
    shape = (out, blocks * m) if kernel is None else (out, blocks * m, kernel, kernel)
    weight = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    mask = nm_mask(weight, n, m)
    groups = mask.movedim(1, -1).reshape(-1, m)
    assert (groups.sum(1) == n).all()
    kept = weight.abs().movedim(1, -1).reshape(-1, m)
    # the kept ones are the largest of each group
    assert (kept.masked_fill(~groups, float("inf")).amin(1) >= kept.masked_fill(groups, -1).amax(1)).all()


@settings(max_examples=40, deadline=None)
@given(numel=st.integers(1, 300), p=st.floats(0, 1), seed=st.integers(0, 100))
def test_bit_packing_round_trips(numel, p, seed):
    mask = torch.rand(numel, generator=torch.Generator().manual_seed(seed)) < p
    packed = pack_bits(mask)
    assert packed.dtype == torch.uint8 and packed.numel() == -(-numel // 8)
    assert torch.equal(unpack_bits(packed, numel), mask)


@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.99])
@pytest.mark.parametrize("shape", [(16, 40), (8, 4, 3, 3)])
def test_sparse_storage_is_bit_identical(sparsity, shape):
    weight = torch.randn(shape)
    weight[torch.rand(shape) < sparsity] = 0
    storage = SparseWeight.from_dense(weight)
    assert torch.equal(storage.dense(), weight)
    for fmt in ("bitmask", "csr"):  # both formats, whichever from_dense picked
        assert torch.equal(SparseWeight.from_dense(weight, fmt).dense(), weight)


def test_local_and_global_sparsity():
    scores = {"a": torch.rand(10, 10), "b": torch.rand(4, 5) * 10}
    local = sparsity_masks(scores, 0.5, "layer")
    assert int(local["a"].sum()) == 50 and int(local["b"].sum()) == 10
    glob = sparsity_masks(scores, 0.5, "global")
    assert int(glob["a"].sum() + glob["b"].sum()) == 60
    assert int(glob["b"].sum()) > 10  # larger weights survive a global threshold


def _digits():
    return sk.load("slimkit.models.digits:DigitsCNN")


def test_unstructured_masks_and_saves_small(tmp_path):
    model = _digits()
    x = torch.randn(2, 1, 32, 32)
    sparse = sk.prune(model, "unstructured", ratio=0.9)
    assert sk.pruning.sparsity_of(sparse) == pytest.approx(0.9, abs=0.01)
    sk.save(model, tmp_path / "dense")
    sk.save(sparse, tmp_path / "sparse")
    ratio = (tmp_path / "sparse" / WEIGHTS).stat().st_size / (tmp_path / "dense" / WEIGHTS).stat().st_size
    assert ratio <= 0.25
    loaded = sk.load(tmp_path / "sparse")
    assert torch.equal(loaded(x), sparse(x))
    assert sk.measure.count_params(sparse) == sk.measure.count_params(model)
    assert sk.measure.count_nonzero(sparse) < 0.2 * sk.measure.count_params(model)


def test_trainable_masks_then_make_permanent(tmp_path):
    model = _digits()
    x = torch.randn(2, 1, 32, 32)
    masked = sk.prune(model, "unstructured", ratio=0.5, permanent=False)
    assert masked_layers(masked)
    masked.train()
    masked(x).sum().backward()
    conv = masked.stem[0][0]
    mask = conv.parametrizations.weight[0].mask
    assert (conv.parametrizations.weight.original.grad[~mask] == 0).all()  # pruned weights stay pruned
    assert (conv.weight[~mask] == 0).all() and conv.parametrizations.weight.original.grad[mask].abs().sum() > 0
    masked.eval()
    sk.save(masked, tmp_path / "masked")
    assert torch.equal(sk.load(tmp_path / "masked")(x), masked(x))
    permanent = sk.pruning.make_permanent(masked)
    assert not masked_layers(permanent)
    sk.save(permanent, tmp_path / "permanent")
    assert torch.equal(sk.load(tmp_path / "permanent")(x), permanent(x))


def test_nm_prune_and_save_load(tmp_path):
    model = sk.load("slimkit.models.testing:EmbeddingMLP")
    x = model.example_inputs()
    pruned = sk.prune(model, "nm", n=2, m=4)
    w = pruned.mlp[0].weight
    assert ((w.reshape(-1, 4) != 0).sum(1) <= 2).all()
    sk.save(pruned, tmp_path / "m")
    assert torch.equal(sk.load(tmp_path / "m")(*x), pruned(*x))


def test_nm_skips_layers_it_cannot_take():
    model = sk.load("slimkit.models.testing:ResidualNet")
    with pytest.warns(UserWarning, match="stem.0"):
        pruned = sk.prune(model, "nm")
    assert "stem.0" in sk.explain(pruned).skipped


def test_cubic_schedule():
    from slimkit.pruning import cubic_sparsity

    values = [cubic_sparsity(t, 4, 0.9, 0.1) for t in range(5)]
    assert values[0] == pytest.approx(0.1) and values[-1] == pytest.approx(0.9)
    assert all(a < b for a, b in zip(values, values[1:], strict=False))
    assert values[2] == pytest.approx(0.9 + (0.1 - 0.9) * (1 - 2 / 4) ** 3)


def test_gradual_reaches_final_sparsity(tmp_path):
    model = sk.load("slimkit.models.testing:EmbeddingMLP")
    x = model.example_inputs()[0]
    data = [(x, torch.tensor([0, 1]))] * 2
    pruned = sk.prune(model, "gradual", data=data, ratio=0.8, steps=2, final_epochs=1, finetune={"distill": True})
    state = sk.explain(pruned).details
    assert state["schedule"][-1] == pytest.approx(0.8)
    assert sk.pruning.sparsity_of(pruned) == pytest.approx(0.8, abs=0.01)
    sk.save(pruned, tmp_path / "m")
    assert torch.equal(sk.load(tmp_path / "m")(x), pruned(x))


def test_the_old_sparsity_spellings_still_work_with_a_deprecation_warning():
    from slimkit.pruning import Gradual, Unstructured

    with pytest.warns(DeprecationWarning, match="option 'sparsity' is now 'ratio'"):
        assert Unstructured.build(sparsity=0.7).ratio == 0.7
    with pytest.warns(DeprecationWarning, match="'epochs_per_step' is now 'finetune.epochs'"):
        old = Gradual.build(sparsity=0.8, initial_sparsity=0.1, epochs_per_step=3, distill=True, lr=5e-4)
    assert (old.ratio, old.initial_ratio) == (0.8, 0.1)
    assert (old.finetune.epochs, old.finetune.distill, old.finetune.lr) == (3, True, 5e-4)


def test_a_partial_finetune_mapping_keeps_the_methods_other_defaults():
    from slimkit.pruning import Gradual
    from slimkit.quantization.qat import QAT

    assert QAT.build(finetune={"epochs": 5}).finetune.model_dump() == {"epochs": 5, "lr": 1e-4, "distill": True}
    with pytest.raises(InvalidConfigError, match="finetune.epochs must be at least 1"):
        Gradual.build(finetune={"epochs": 0})
