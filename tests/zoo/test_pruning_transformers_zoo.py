"""Transformer pruning zoo (issue 17): ``heads``, ``neurons`` and ``depth`` on every family.

Tiny random-init models (`transformer_zoo`: width 64, 3 layers, 4 heads, FFN 128; Llama and
Qwen2 with 2 key/value heads), each pruned by each method: the result is smaller in params
and MACs, runs with the same output shape, has its config updated and saves/loads exactly;
or the documented error is raised (never a silent no-op).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch

import slimkit as sk
from slimkit.core.errors import InvalidConfigError, UnsupportedModelError
from slimkit.measure import count_macs, count_params

sys.path.insert(0, str(Path(__file__).parent))
import transformer_zoo as zoo  # noqa: E402  (needs its folder on sys.path, so sk.load can rebuild it too)

RATIOS = {"heads": 0.25, "neurons": 0.5, "depth": 0.5}
MAX_MACS = {"heads": 0.97, "neurons": 0.85, "depth": 0.85}
"""Upper bounds of the MACs ratio at ``RATIOS`` (the measured ratios are in docs/pruning.md)."""
HEAD_DIM_IN_CONFIG = {"llama", "qwen2", "t5_encoder", "hf_vit"}
"""Families whose config can state fewer heads (it holds the head width or the model reads ``head_dim``)."""
GQA = {"llama", "qwen2"}
UNSUPPORTED = {("tv_swin", "heads"): "ShiftedWindowAttention keeps no head width"}


@pytest.fixture(scope="module", autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _build(family: str) -> torch.nn.Module:
    if family in zoo.TORCHVISION:
        try:
            import torchvision_shim

            torchvision_shim.import_torchvision()
        except ModuleNotFoundError:
            pytest.skip("torchvision is not in .venv/zoo (make test installs it)")
    torch.manual_seed(0)
    return getattr(zoo, family)().eval()


def _run(model: torch.nn.Module, x) -> torch.Tensor:
    with torch.no_grad():
        out = model(**x) if isinstance(x, dict) else model(*x)
    if isinstance(out, tuple):
        return out[0]
    if isinstance(out, torch.Tensor):
        return out
    return out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state


def _config_value(model: torch.nn.Module, *keys: str):
    config = model.config
    return next(getattr(config, k) for k in keys if getattr(config, k, None) is not None)


def _check_config(family: str, method: str, model: torch.nn.Module, pruned: torch.nn.Module) -> None:
    if not hasattr(model, "config"):
        return
    if method == "neurons":
        assert _config_value(pruned, "intermediate_size", "n_inner", "d_ff", "hidden_dim") == zoo.FFN // 2
    elif method == "depth":
        assert pruned.config.num_hidden_layers == 2
    elif family in HEAD_DIM_IN_CONFIG:
        assert pruned.config.num_attention_heads < model.config.num_attention_heads
    else:  # the config cannot state fewer heads of the same width: left as it was (sk.save/load replays)
        assert pruned.config.num_attention_heads == model.config.num_attention_heads


def _ratio(family: str, method: str) -> float:
    return 0.5 if (family in GQA and method == "heads") else RATIOS[method]


FAST = {"bert", "llama", "gpt2"}
"""Families of the daily tier (`make test-fast`); `make test` runs every family."""


@pytest.mark.parametrize("method", ["heads", "neurons", "depth"])
@pytest.mark.parametrize("family", [f if f in FAST else pytest.param(f, marks=pytest.mark.slow) for f in zoo.FAMILIES])
def test_prune_family(family, method, tmp_path):
    model, x = _build(family), zoo.inputs(family)
    if (family, method) in UNSUPPORTED:
        with pytest.raises(UnsupportedModelError, match=UNSUPPORTED[family, method]):
            sk.prune(model, method, ratio=RATIOS[method])
        return
    pruned = sk.prune(model, method, ratio=_ratio(family, method))
    assert count_params(pruned) < count_params(model)
    assert count_macs(pruned, x).total <= MAX_MACS[method] * count_macs(model, x).total
    y = _run(pruned, x)
    assert y.shape == _run(model, x).shape and torch.isfinite(y).all()
    _check_config(family, method, model, pruned)
    source = None if hasattr(model, "config") else f"transformer_zoo:{family}"
    loaded = sk.load(sk.save(pruned, tmp_path / "m", source=source))
    assert torch.equal(_run(loaded, x), y)


CHANNELS_MAX_MACS = {
    "hf_vit": 0.30, "gpt2": 0.30, "llama": 0.40, "qwen2": 0.40, "mobilebert": 0.36, "bert": 0.52, "roberta": 0.52,
    "distilbert": 0.52, "t5_encoder": 0.52, "wav2vec2": 0.60, "tv_vit": 0.60, "tv_swin": 0.75, "torch_encoder": 1.0,
}  # fmt: skip
"""``channels`` 0.5: the residual width goes where the code allows (classifiers and LMs), only the
FFN hidden layers and head widths where the residual is the output (base encoders) or a number in
the code (tv_vit); head widths everywhere but under rotary embeddings (Llama, Qwen2);
``nn.TransformerEncoderLayer`` is one torch layer to the graph, so nothing goes (a warning says so)."""


@pytest.mark.parametrize("family", [f if f in FAST else pytest.param(f, marks=pytest.mark.slow) for f in zoo.FAMILIES])
def test_channels_prunes_the_residual_width_where_the_code_allows(family, tmp_path):
    model, x = _build(family), zoo.inputs(family)
    pruned = sk.prune(model, "channels", ratio=0.5, example_inputs=x)
    assert count_macs(pruned, x).total <= CHANNELS_MAX_MACS[family] * count_macs(model, x).total
    y = _run(pruned, x)
    assert y.shape == _run(model, x).shape and torch.isfinite(y).all()
    source = None if hasattr(model, "config") else f"transformer_zoo:{family}"
    loaded = sk.load(sk.save(pruned, tmp_path / "m", source=source))
    assert torch.equal(_run(loaded, x), y)


@pytest.mark.parametrize("family", sorted(GQA))
def test_gqa_quarter_of_two_kv_groups_removes_one_group_with_a_warning(family):
    model, x = _build(family), zoo.inputs(family)
    with pytest.warns(UserWarning, match="less than one of the 2 prunable units.*ratio 0.50"):
        pruned = sk.prune(model, "heads", ratio=0.25)
    half = sk.prune(model, "heads", ratio=0.5)  # what 0.25 rounds to: the same heads go
    assert pruned.config.num_key_value_heads == 1 and pruned.config.num_attention_heads == 2
    assert sk.explain(pruned).details["ratio"] == 0.5
    assert torch.equal(_run(pruned, x), _run(half, x))
    with pytest.raises(InvalidConfigError, match="removes no head.*ratio >= 0.25 removes one"):
        sk.prune(model, "heads", ratio=0.2)  # nearer to none than to one group: refused


def _zero_kv_group(attn, group: int, per_group: int) -> None:
    """Zero key/value head ``group`` of a Llama-style attention and its query heads' output columns."""
    hd = attn.head_dim
    q_rows = slice(group * per_group * hd, (group + 1) * per_group * hd)
    kv_rows = slice(group * hd, (group + 1) * hd)
    attn.k_proj.weight[kv_rows] = 0
    attn.v_proj.weight[kv_rows] = 0
    attn.o_proj.weight[:, q_rows] = 0


@pytest.mark.parametrize("family", sorted(GQA))
def test_gqa_removes_a_kv_group_with_its_query_heads(family):
    model, x = _build(family), zoo.inputs(family)
    with torch.no_grad():
        for layer in model.model.layers:
            _zero_kv_group(layer.self_attn, 1, layer.self_attn.num_key_value_groups)
    pruned = sk.prune(model, "heads", ratio=0.5)
    attn = pruned.model.layers[0].self_attn
    assert (attn.q_proj.out_features, attn.k_proj.out_features, attn.o_proj.in_features) == (32, 16, 32)
    assert (pruned.config.num_attention_heads, pruned.config.num_key_value_heads) == (2, 1)
    torch.testing.assert_close(_run(pruned, x), _run(model, x), atol=1e-5, rtol=0)


def test_gpt2_packed_conv1d_heads_stay_conv1d_and_exact():
    model, x = _build("gpt2"), zoo.inputs("gpt2")
    hd, width = 16, zoo.WIDTH
    with torch.no_grad():
        for block in model.transformer.h:  # zero head 2 in Q, K and V (Conv1D weight: [in, out]) and c_proj rows
            for offset in (0, width, 2 * width):
                block.attn.c_attn.weight[:, offset + 2 * hd : offset + 3 * hd] = 0
                block.attn.c_attn.bias[offset + 2 * hd : offset + 3 * hd] = 0
            block.attn.c_proj.weight[2 * hd : 3 * hd] = 0
    pruned = sk.prune(model, "heads", ratio=0.25)
    attn = pruned.transformer.h[0].attn
    assert type(attn.c_attn) is type(model.transformer.h[0].attn.c_attn)  # Conv1D, as transformers saves it
    assert attn.c_attn.weight.shape == (width, 3 * 48) and attn.split_size == 48 and attn.num_heads == 3
    torch.testing.assert_close(_run(pruned, x), _run(model, x), atol=1e-5, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["gpt2", "llama", "qwen2"])
@pytest.mark.parametrize("method", ["heads", "neurons", "depth"])
def test_pruned_decoders_generate(family, method):
    pruned = sk.prune(_build(family), method, ratio=_ratio(family, method))
    ids = zoo.inputs(family)["input_ids"][:1]
    cached = pruned.generate(ids, max_new_tokens=4, do_sample=False)
    assert cached.shape == (1, ids.shape[1] + 4)
    assert torch.equal(cached, pruned.generate(ids, max_new_tokens=4, do_sample=False, use_cache=False))


@pytest.mark.parametrize(
    ("family", "method"),
    [("llama", "heads"), ("qwen2", "heads"), ("t5_encoder", "heads"), ("hf_vit", "heads"), ("bert", "neurons"),
     ("gpt2", "neurons"), ("llama", "depth"), ("distilbert", "depth")],
)  # fmt: skip
def test_hf_format_round_trip(family, method, tmp_path):
    model, x = _build(family), zoo.inputs(family)
    pruned = sk.prune(model, method, ratio=_ratio(family, method))
    folder = sk.save(pruned, tmp_path / "hf", format="hf")
    reloaded = type(pruned).from_pretrained(folder).eval()
    torch.testing.assert_close(_run(reloaded, x), _run(pruned, x), atol=1e-6, rtol=0)


def test_hf_format_refuses_heads_the_config_cannot_state(tmp_path):
    pruned = sk.prune(_build("bert"), "heads", ratio=0.25)
    with pytest.raises(UnsupportedModelError, match="format='hf'"):
        sk.save(pruned, tmp_path / "hf", format="hf")


def test_transformer_encoder_with_padding_mask():
    """The bug of issue 17: ``heads`` crashed here and ``neurons`` changed nothing."""
    torch.manual_seed(0)
    model = torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(32, 4, 64, batch_first=True), 3).eval()
    x = torch.randn(2, 6, 32, generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([[False] * 6, [False] * 4 + [True] * 2])
    same = sk.prune(model, "heads", ratio=0.0)
    with torch.no_grad():  # the original takes the fused nested-tensor path: zeros at padded positions
        expected, got = model(x, src_key_padding_mask=mask), same(x, src_key_padding_mask=mask)
    torch.testing.assert_close(got[~mask], expected[~mask], atol=1e-5, rtol=0)
    pruned = sk.prune(sk.prune(model, "heads", ratio=0.5), "neurons", ratio=0.5)
    layer = pruned.layers[0]
    assert layer.self_attn.num_heads == 2 and layer.linear1.out_features == 32 and layer.linear2.in_features == 32
    assert pruned(x, src_key_padding_mask=mask).shape == x.shape
