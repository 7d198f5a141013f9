import pytest
import torch
from torch import nn

import slimkit as sk
from slimkit.core.blocks import spread
from slimkit.core.errors import InvalidConfigError, UnsupportedModelError
from slimkit.pruning.depth import kept_blocks

FACTORY = """
from torch import nn


def build(layers: int = 6) -> nn.Module:
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
"""
_namespace: dict = {}
exec(FACTORY, _namespace)


def _encoder(layers: int = 6) -> nn.Module:
    torch.manual_seed(0)
    return _namespace["build"](layers).eval()


def test_kept_blocks_keep_first_and_last_spread_like_shrink():
    assert spread(12, 6) == [0, 2, 4, 7, 9, 11]  # DistilBERT's pick, as `shrink(depth=0.5)`
    assert kept_blocks(6, 0.5) == [0, 3, 5]
    assert kept_blocks(4, 0.25) == [0, 2, 3]
    assert kept_blocks(3, 0.9) == [0, 2]  # never fewer than the first and the last


def test_depth_drops_blocks_updates_count_and_replays(tmp_path, monkeypatch):
    model, x = _encoder(), torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(1))
    pruned = sk.prune(model, sk.pruning.Depth(ratio=0.5))
    assert len(pruned.layers) == 3 and pruned.num_layers == 3
    for kept, index in zip(pruned.layers, (0, 3, 5), strict=True):  # the same blocks, weights untouched
        assert torch.equal(kept.linear1.weight, model.layers[index].linear1.weight)
    expected = model.layers[5](model.layers[3](model.layers[0](x)))
    torch.testing.assert_close(pruned(x), expected)
    assert sk.measure.count_params(pruned) == sk.measure.count_params(model) // 2
    (tmp_path / "depth_zoo_factory.py").write_text(FACTORY)  # a source sk.load can import
    monkeypatch.syspath_prepend(str(tmp_path))
    folder = sk.save(pruned, tmp_path / "m", source="depth_zoo_factory:build")
    assert torch.equal(sk.load(folder)(x), pruned(x))


def test_ratio_removing_nothing_is_refused():
    with pytest.raises(InvalidConfigError, match="removes no block.*ratio >= 0.33"):
        sk.prune(_encoder(3), "depth", ratio=0.2)


def test_model_without_block_list():
    with pytest.raises(UnsupportedModelError, match="repeated block list"):
        sk.prune(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)), "depth")


def test_include_selects_the_list():
    model = nn.Sequential(_encoder(4), _encoder(4))
    pruned = sk.prune(model, "depth", ratio=0.5, include="1.layers")
    assert (len(pruned[0].layers), len(pruned[1].layers)) == (4, 2)
