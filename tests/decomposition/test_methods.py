import warnings

import pytest
import torch

import slimkit as sk
from slimkit.decomposition import CPConv, LowRankEmbedding, LowRankLinear, SpatialSVDConv, TTLinear, TuckerConv

SPEC = "slimkit.models.testing:"
CASES = [
    ("ResidualNet", "spatial-svd", {"rank": 0.3}, SpatialSVDConv),
    pytest.param("ResidualNet", "tucker", {"rank": 0.5}, TuckerConv, marks=pytest.mark.slow),
    pytest.param("ResidualNet", "cp", {"rank": 4}, CPConv, marks=pytest.mark.slow),
    ("TinyAttention", "svd", {"rank": "params:0.5"}, LowRankLinear),
    ("EmbeddingMLP", "svd", {"rank": 4, "include": "embedding"}, LowRankEmbedding),
    pytest.param(
        "TinyAttention",
        "tt",
        {"rank": 4, "cores": 2, "include": "ffn.*", "force": True},
        TTLinear,
        marks=pytest.mark.slow,
    ),
]


def _decompose(model, method, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return sk.decompose(model, method, **options)


@pytest.mark.parametrize(("name", "method", "options", "cls"), CASES)
def test_decompose_records_errors_and_round_trips(tmp_path, name, method, options, cls):
    model = sk.load(SPEC + name)
    x = model.example_inputs()
    result = _decompose(model, method, **options)
    assert not any(isinstance(m, cls) for m in model.modules()), "input model must stay unchanged"
    state = sk.explain(result).details
    assert state["layers"], state["skipped"]
    for layer_name, entry in state["layers"].items():
        layer = result.get_submodule(layer_name)
        assert isinstance(layer, cls)
        dense = model.get_submodule(layer_name)
        with torch.no_grad():
            expected = torch.linalg.norm(dense.weight - layer.to_dense().weight) / torch.linalg.norm(dense.weight)
        assert entry["error"] == pytest.approx(float(expected), rel=1e-4, abs=1e-6)
    sk.save(result, tmp_path / "out")
    loaded = sk.load(tmp_path / "out")
    with torch.no_grad():
        assert torch.equal(loaded(*x), result(*x))
    assert sum(p.numel() for p in loaded.parameters()) == sum(p.numel() for p in result.parameters())


def test_full_rank_svd_model_matches_original():
    model = sk.load(SPEC + "TinyAttention")
    result = _decompose(model, "svd", rank=1.0, force=True)
    x = model.example_inputs()
    with torch.no_grad():
        ref, got = model(*x), result(*x)
    assert torch.linalg.norm(got - ref) / torch.linalg.norm(ref) < 1e-5


def test_svd_fewer_params_and_macs():
    model = sk.load(SPEC + "TinyAttention")
    result = _decompose(model, "svd", rank="params:0.5")
    before = sk.profile(model, batch_sizes=(1,), budget_s=0.05)
    after = sk.profile(result, batch_sizes=(1,), budget_s=0.05)
    assert after.params < before.params and after.macs < before.macs


def test_config_objects_and_names_are_the_same():
    assert sk.decomposition.Tucker().rank == "vbmf"
    model = sk.load(SPEC + "ResidualNet")
    a = _decompose(model, sk.decomposition.Tucker(rank=0.5))
    b = _decompose(model, "tucker", rank=0.5)
    x = model.example_inputs()
    with torch.no_grad():
        assert torch.equal(a(*x), b(*x))


@pytest.mark.slow
def test_vbmf_tucker_on_digits_cnn_lists_skipped_layers():
    model = sk.load("example:digits-cnn")
    with pytest.warns(UserWarning, match="left dense"):
        result = sk.decompose(model, "tucker", rank="vbmf")
    state = sk.explain(result).details
    assert "stages.0.0.conv1" in state["layers"]
    assert "1x1 kernel" in state["skipped"]["stages.0.0.shortcut.0"]
    assert all(1 <= r for entry in state["layers"].values() for r in entry["rank"])


def test_grouped_conv_is_skipped_and_listed():
    model = sk.load(SPEC + "GroupedConvNet")
    with pytest.warns(UserWarning, match="grouped"):
        result = sk.decompose(model, "tucker", rank=0.5)
    state = sk.explain(result).details
    assert "groups=4" in state["skipped"]["grouped.0"]
    assert isinstance(result.grouped[0], torch.nn.Conv2d)


def test_rank_that_saves_nothing_is_skipped_unless_forced():
    model = sk.load(SPEC + "TinyAttention")  # 32x32 layers: rank 16 = mn/(m+n) saves nothing
    with pytest.warns(UserWarning, match="saves nothing"):
        result = sk.decompose(model, "svd", rank=16, include="query")
    assert "saves nothing" in sk.explain(result).details["skipped"]["query"]
    forced = _decompose(model, "svd", rank=16, include="query", force=True)
    assert isinstance(forced.query, LowRankLinear)


def test_rank_larger_than_possible_is_a_clear_error():
    model = sk.load(SPEC + "TinyAttention")
    with pytest.raises(sk.InvalidConfigError, match=r"rank 40 is larger than possible for layer 'query'"):
        sk.decompose(model, "svd", rank=40, include="query")


def test_pattern_matching_nothing_is_an_error():
    with pytest.raises(sk.InvalidConfigError, match="matches no module"):
        sk.decompose(sk.load(SPEC + "ResidualNet"), "tucker", include="nosuch.*")


@pytest.mark.parametrize(
    ("method", "options", "message"),
    [
        ("svd", {"rank": "energy:2"}, "fraction must be in"),
        ("svd", {"rank": 0}, "rank must be >= 1"),
        ("tt", {"cores": 1}, "cores"),
        ("svd", {"ranks": 3}, "unknown option 'ranks'"),
        ("lowrank", {}, "valid methods: cp, spatial-svd, svd, tt, tucker"),
    ],
)
def test_bad_options_are_rejected(method, options, message):
    with pytest.raises(sk.InvalidConfigError, match=message):
        sk.decompose(sk.load(SPEC + "TinyAttention"), method, **options)


def test_tt_factors_that_do_not_fit_are_skipped():
    model = sk.load(SPEC + "TinyAttention")
    with pytest.warns(UserWarning, match="do not multiply"):
        result = sk.decompose(model, "tt", in_factors=(4, 4), out_factors=(8, 8), include="ffn.0")
    assert "ffn.0" in sk.explain(result).details["skipped"]


def test_second_decomposition_does_not_touch_factorized_layers(tmp_path):
    model = sk.load(SPEC + "TinyAttention")
    once = _decompose(model, "svd", rank=4, include="ffn.*")
    twice = _decompose(once, "svd", rank=4, include="query")
    assert set(sk.explain(twice).details["layers"]) == {"query"}
    sk.save(twice, tmp_path / "out")
    x = model.example_inputs()
    with torch.no_grad():
        assert torch.equal(sk.load(tmp_path / "out")(*x), twice(*x))
