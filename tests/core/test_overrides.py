"""``overrides`` on every layer-wise method: per-layer options by glob, first match wins."""

import pytest
import torch
from torch import nn

import slimkit as sk
from slimkit.core.errors import InvalidConfigError


class Stack(nn.Sequential):
    def __init__(self):
        torch.manual_seed(0)
        super().__init__(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def _data():
    torch.manual_seed(1)
    return [(torch.randn(8, 64),) for _ in range(4)]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_each_pattern_gets_its_options_and_none_leaves_layers_alone(tmp_path):
    model = Stack().eval()
    out = sk.decompose(model, "svd", rank=8, overrides={"2": {"rank": 16}, "4": None})
    assert (out[0].rank, out[2].rank) == (8, 16)
    assert isinstance(out[4], nn.Linear) and torch.equal(out[4].weight, model[4].weight)
    ranks = [t.config["rank"] for t in sk.get_record(out).transforms]
    assert ranks == [16, 8]  # one transform per group, override groups first
    x = torch.randn(3, 64)
    sk.save(out, tmp_path / "m")
    assert torch.equal(sk.load(tmp_path / "m")(x), out(x))


def test_gptq_takes_overrides_it_had_no_field_for():
    model = Stack().eval()
    out = sk.quantize(model, "gptq", data=_data(), bits=4, overrides={"4": {"bits": 8}})
    transforms = sk.get_record(out).transforms
    by_layer = {t.changed[0] if len(t.changed) == 1 else "rest": t.config["bits"] for t in transforms}
    assert by_layer == {"4": 8, "rest": 4}
    assert sk.explain(out, 0).changed == ("4",) and set(sk.explain(out).changed) == {"0", "2"}


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_first_matching_pattern_wins_and_exclude_holds_for_every_group():
    out = sk.decompose(Stack().eval(), "svd", rank=4, overrides={"[02]": {"rank": 2}, "2": {"rank": 30}}, exclude="0")
    assert isinstance(out[0], nn.Linear) and out[2].rank == 2 and out[4].rank == 4


def test_methods_with_their_own_overrides_keep_them():
    out = sk.quantize(Stack().eval(), "int8-dynamic", overrides={"4": None})
    assert len(sk.get_record(out).transforms) == 1 and "4" not in sk.explain(out).changed


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"nothing.*": {"rank": 2}}, "matches no module"),
        ({"2": 3}, "must be a dict of options or None"),
        (["2"], "overrides must map glob patterns"),
        ({"2": {"rank": -1}}, "rank"),
    ],
)
def test_bad_overrides_are_refused(overrides, message):
    model = Stack().eval()
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(InvalidConfigError, match=message):
        sk.decompose(model, "svd", rank=4, overrides=overrides)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
