"""The verb contract owned by `core.registry.apply`: selection checks, measured outcome, record."""

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import slimkit as sk
from slimkit.core.config import Config
from slimkit.core.errors import InvalidConfigError
from slimkit.core.outcome import Outcome, changed_modules, fingerprint
from slimkit.core.registry import apply, register


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4), nn.LayerNorm(4)).eval()


class _ScaleFirst(Config):
    """Test method: doubles the first layer's weight in place and skips the rest."""

    method = "test-scale-first"


@register("quantize", "test-scale-first", _ScaleFirst)
def _scale_first(model: nn.Module, _config: Config, _ctx: object) -> Outcome:
    with torch.no_grad():
        model[0].weight.mul_(2)
    return Outcome(model, skipped={"2": "left alone on purpose"})


@pytest.mark.parametrize("option", ["include", "exclude"])
def test_a_pattern_matching_nothing_is_an_error(option):
    with pytest.raises(InvalidConfigError, match=rf"{option} pattern 'nothing\.\*' matches no module"):
        sk.quantize(_mlp(), "int8-dynamic", **{option: "nothing.*"})


def test_explain_lists_the_changed_and_skipped_layers():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Conv1d(4, 4, 3)).eval()
    q = sk.quantize(model, "int8-dynamic", exclude="2")
    outcome = sk.explain(q)
    assert (outcome.verb, outcome.method) == ("quantize", "int8-dynamic")
    assert outcome.changed == ("0",)


def test_a_handler_outcome_is_recorded_and_values_changed_in_place_are_seen():
    model = _mlp()
    out = apply("quantize", model, "test-scale-first")
    outcome = sk.explain(out)
    assert outcome.changed == ("0",)
    assert outcome.skipped == {"2": "left alone on purpose"}
    assert torch.equal(out[0].weight, 2 * model[0].weight)  # the input is untouched
    assert sk.get_record(out).transforms[-1].to_dict()["changed"] == ["0"]


def test_a_method_that_changes_nothing_warns():
    model = nn.Sequential(nn.Linear(4, 4), nn.Tanh()).eval()  # nothing to fold or fuse
    with pytest.warns(UserWarning, match="accelerate:fuse changed nothing"):
        sk.accelerate(model, "fuse")


def test_explain_needs_a_transform():
    with pytest.raises(InvalidConfigError, match="nothing to explain"):
        sk.explain(_mlp())


def test_result_stays_on_the_input_device():
    model = _mlp()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = sk.quantize(model, "int8-dynamic", device="cpu")
    assert {t.device.type for t in q.state_dict().values()} == {"cpu"}


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 64), st.integers(0, 2**16))
def test_fingerprint_sees_any_permutation_or_edit(n, seed):
    generator = torch.Generator().manual_seed(seed)
    layer = nn.Linear(n, 3)
    nn.init.normal_(layer.weight, generator=generator)
    before = fingerprint(layer)
    with torch.no_grad():
        perm = torch.randperm(n, generator=generator)
        if torch.equal(layer.weight[:, perm], layer.weight):
            return
        layer.weight.copy_(layer.weight[:, perm])
    assert changed_modules(before, fingerprint(layer)) == ("<root>",)


def test_replaced_children_report_the_outermost_module():
    model = _mlp()
    before = fingerprint(model)
    model[2] = nn.Sequential(nn.Linear(16, 2), nn.Linear(2, 4))
    assert changed_modules(before, fingerprint(model)) == ("2",)
