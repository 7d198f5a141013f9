import math

import pytest
import tensorly as tl
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tensorly.decomposition import parafac, partial_tucker, tensor_train_matrix
from torch import nn

from slimkit.decomposition import CPConv, LowRankEmbedding, LowRankLinear, SpatialSVDConv, TTLinear, TuckerConv
from slimkit.decomposition.base import relative_error
from slimkit.decomposition.tt import factorize
from slimkit.measure import count_macs

TOL = 1e-5


def _full_rank_cases():
    conv = nn.Conv2d(6, 10, 3, stride=2, padding=1)
    odd = nn.Conv2d(5, 7, (3, 5), stride=(2, 1), padding=(2, 1), dilation=(2, 1), bias=False)
    same = nn.Conv2d(4, 6, 3, padding="same")
    return [
        (LowRankLinear, nn.Linear(24, 18), 18, {}),
        (LowRankEmbedding, nn.Embedding(30, 12, padding_idx=0), 12, {}),
        (SpatialSVDConv, conv, 18, {}),
        (SpatialSVDConv, odd, 15, {}),
        (TuckerConv, conv, (10, 6), {}),
        (TuckerConv, odd, (7, 5), {}),
        (TuckerConv, same, (6, 4), {}),
        (TTLinear, nn.Linear(64, 48), (16, 12), {"in_factors": (4, 4, 4), "out_factors": (4, 4, 3)}),
    ]


@pytest.mark.parametrize(("cls", "dense", "rank", "extra"), _full_rank_cases())
def test_full_rank_recovers_weight_and_forward_matches_dense(cls, dense, rank, extra):
    layer = cls.from_dense(dense, rank, **extra)
    rebuilt = layer.to_dense()
    assert type(rebuilt) is type(dense)
    assert relative_error(dense.weight, rebuilt.weight) < TOL
    x = _inputs(dense)
    with torch.no_grad():
        ref, got, via_dense = dense(x), layer(x), rebuilt(x)
    assert got.shape == ref.shape
    assert relative_error(via_dense, got) < TOL
    assert relative_error(ref, got) < TOL


def _inputs(dense):
    g = torch.Generator().manual_seed(3)
    if isinstance(dense, nn.Embedding):
        return torch.randint(0, dense.num_embeddings, (3, 7), generator=g)
    if isinstance(dense, nn.Linear):
        return torch.randn(2, 3, dense.in_features, generator=g)
    return torch.randn(2, dense.in_channels, 13, 11, generator=g)


@pytest.mark.parametrize(("cls", "rank"), [(LowRankLinear, 4), (SpatialSVDConv, 5), (TuckerConv, (3, 2)), (CPConv, 3)])
def test_truncated_forward_equals_to_dense_forward(cls, rank):
    dense = nn.Linear(20, 16) if cls is LowRankLinear else nn.Conv2d(6, 8, 3, stride=2, padding=1)
    layer = cls.from_dense(dense, rank)
    x = _inputs(dense)
    with torch.no_grad():
        assert relative_error(layer.to_dense()(x), layer(x)) < TOL


def test_cp_recovers_an_exact_cp_kernel():
    g = torch.Generator().manual_seed(4)
    factors = [torch.randn(size, 3, generator=g, dtype=torch.float64) for size in (8, 6, 3, 3)]
    weight = torch.einsum("or,cr,ir,jr->ocij", *factors).float()
    dense = nn.Conv2d(6, 8, 3, padding=1)
    with torch.no_grad():
        dense.weight.copy_(weight)
    layer = CPConv.from_dense(dense, 3)
    assert relative_error(weight, layer.to_dense().weight) < 1e-4


def test_embedding_padding_row_stays_zero():
    dense = nn.Embedding(20, 8, padding_idx=3)
    layer = LowRankEmbedding.from_dense(dense, 4)
    assert layer.embedding.padding_idx == 3
    assert torch.count_nonzero(layer(torch.tensor([3]))) == 0


def _tensorly_error(kind, weight, rank):
    """Relative reconstruction error of tensorly's own decomposition at ``rank``."""
    w = weight.detach().double()
    with tl.backend_context("pytorch"):
        if kind == "svd":
            u, s, vh = tl.truncated_svd(w, n_eigenvecs=rank)
            approx = u * s @ vh
        elif kind == "spatial":
            cout, cin, kh, kw = w.shape
            m = w.permute(1, 2, 0, 3).reshape(cin * kh, cout * kw)
            u, s, vh = tl.truncated_svd(m, n_eigenvecs=rank)
            approx = (u * s @ vh).reshape(cin, kh, cout, kw).permute(2, 0, 1, 3)
        elif kind == "tucker":
            (core, factors), _ = partial_tucker(w, list(rank), modes=[0, 1], init="svd")
            approx = tl.tenalg.multi_mode_dot(core, factors, modes=[0, 1])
        elif kind == "cp":
            approx = tl.cp_to_tensor(parafac(w, rank, init="svd", n_iter_max=300, tol=1e-10, random_state=0))
        else:
            out_f, in_f = rank[1]
            tt = tensor_train_matrix(w.reshape(*out_f, *in_f), [1, *rank[0], 1])
            approx = tl.tt_matrix_to_tensor(tt).reshape(w.shape)
    return relative_error(w, approx)


@pytest.mark.parametrize(
    ("kind", "cls", "dense", "rank", "extra"),
    [
        ("svd", LowRankLinear, nn.Linear(40, 30), 7, {}),
        ("spatial", SpatialSVDConv, nn.Conv2d(8, 12, 3), 6, {}),
        ("tucker", TuckerConv, nn.Conv2d(8, 12, 3), (5, 4), {}),
        pytest.param("cp", CPConv, nn.Conv2d(8, 12, 3), 6, {}, marks=pytest.mark.slow),  # ALS, ~6 s
        ("tt", TTLinear, nn.Linear(64, 48), (5, 4), {"in_factors": (4, 4, 4), "out_factors": (4, 4, 3)}),
    ],
)
def test_reconstruction_error_matches_tensorly(kind, cls, dense, rank, extra):
    layer = cls.from_dense(dense, rank, **extra)
    ours = relative_error(dense.weight, layer.to_dense().weight)
    theirs = _tensorly_error(kind, dense.weight, (rank, ((4, 4, 3), (4, 4, 4))) if kind == "tt" else rank)
    assert 0 < ours == pytest.approx(theirs, rel=0.01)


def _hand_macs(layer, dense, x):
    """MACs from the factor shapes: each conv's output elements times its (Cin/groups)·kh·kw."""
    if isinstance(layer, TTLinear):
        return layer.macs_per_token() * x.shape[0]
    if isinstance(layer, LowRankLinear):
        return x.shape[0] * layer.rank * (dense.in_features + dense.out_features)
    total, h = 0, x
    for conv in layer.children():
        h = conv(h)
        total += h.numel() * math.prod(conv.weight.shape[1:])
    return total


@pytest.mark.parametrize(
    ("cls", "dense", "rank", "extra"),
    [
        (LowRankLinear, nn.Linear(40, 30), 7, {}),
        (SpatialSVDConv, nn.Conv2d(8, 12, 3, stride=2, padding=1), 6, {}),
        (TuckerConv, nn.Conv2d(8, 12, 3, stride=2, padding=1), (5, 4), {}),
        pytest.param(CPConv, nn.Conv2d(8, 12, 3, stride=2, padding=1), 6, {}, marks=pytest.mark.slow),
        (TTLinear, nn.Linear(512, 256), (8, 8), {"in_factors": (8, 8, 8), "out_factors": (8, 8, 4)}),
    ],
)
def test_profile_macs_match_hand_count(cls, dense, rank, extra):
    layer = cls.from_dense(dense, rank, **extra)
    x = torch.randn(3, dense.in_features) if isinstance(dense, nn.Linear) else torch.randn(2, 8, 16, 16)
    with torch.no_grad():
        assert count_macs(layer, (x,)).total == _hand_macs(layer, dense, x)
    if not isinstance(layer, TTLinear):
        spatial = 1 if isinstance(dense, nn.Linear) else 8 * 8
        _, per_position = cls.cost(dense, rank, **extra)
        assert count_macs(layer, (x[:1],)).total == per_position * spatial


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5000), st.integers(2, 5))
def test_factorize_multiplies_back(n, parts):
    factors = factorize(n, parts)
    assert len(factors) == parts and math.prod(factors) == n
    assert list(factors) == sorted(factors, reverse=True)


def test_factorize_balanced_power_of_two():
    assert factorize(4096, 4) == (8, 8, 8, 8)


def test_tt_forward_does_not_build_the_dense_weight():
    from torch.utils._python_dispatch import TorchDispatchMode

    class Largest(TorchDispatchMode):
        largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if isinstance(out, torch.Tensor):
                Largest.largest = max(Largest.largest, out.numel())
            return out

    dense = nn.Linear(256, 256)
    layer = TTLinear.from_dense(dense, (4, 4, 4), in_factors=(4,) * 4, out_factors=(4,) * 4)
    with torch.no_grad(), Largest():
        y = layer(torch.randn(2, 256))
    assert y.shape == (2, 256)
    assert 0 < Largest.largest < 256 * 256 / 4
