import pytest
import torch
from pydantic import ValidationError
from torch import nn

from slimkit.core.config import Config
from slimkit.core.errors import InvalidConfigError
from slimkit.core.record import get_record
from slimkit.core.registry import Context, apply, get_method, methods, register, replay
from slimkit.core.walk import select_modules


class ScaleConfig(Config):
    method = "scale"
    factor: float = 2.0


class WidenConfig(Config):
    method = "widen"
    width: int = 4


@register("t-scale", "scale", ScaleConfig)
def _scale(model: nn.Module, config: ScaleConfig, ctx: Context) -> nn.Module:
    with torch.no_grad():
        for _, module in select_modules(model, ctx.selector, nn.Linear):
            module.weight.mul_(config.factor)
    return model


def _widen_rebuild(model: nn.Module, config: WidenConfig, state: dict) -> nn.Module:
    model[0] = nn.Linear(model[0].in_features, state["width"])
    model[1] = nn.Linear(state["width"], model[1].out_features)
    return model


@register("t-widen", "widen", WidenConfig, rebuild=_widen_rebuild)
def _widen(model: nn.Module, config: WidenConfig, ctx: Context) -> nn.Module:
    ctx.state["width"] = config.width
    return _widen_rebuild(model, config, ctx.state)


def _mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(3, 5), nn.Linear(5, 2))


def test_unknown_option_lists_valid_fields():
    with pytest.raises(InvalidConfigError, match=r"unknown option 'fctor'.*valid options: factor"):
        ScaleConfig.build(fctor=3)


def test_bad_value_names_field_and_input():
    with pytest.raises(InvalidConfigError, match=r"factor: .*'abc'"):
        ScaleConfig.build(factor="abc")


def test_configs_are_immutable_and_with_options_validates():
    cfg = ScaleConfig.build(factor=3)
    with pytest.raises(ValidationError):
        cfg.factor = 4  # type: ignore[misc]
    assert cfg.with_options(factor=5).factor == 5
    with pytest.raises(InvalidConfigError):
        cfg.with_options(factor="x")


def test_unknown_method_lists_registered_names():
    with pytest.raises(InvalidConfigError, match=r"unknown t-scale method 'nope'; valid methods: scale"):
        get_method("t-scale", "nope")
    assert set(methods("t-scale")) == {"scale"}


def test_apply_copies_by_default_and_records_transform():
    model = _mlp()
    before = model[0].weight.clone()
    out = apply("t-scale", model, "scale", factor=3.0)
    assert out is not model
    torch.testing.assert_close(model[0].weight, before)  # input untouched
    torch.testing.assert_close(out[0].weight, before * 3.0)
    record = get_record(out)
    assert [(t.verb, t.method, t.config) for t in record.transforms] == [("t-scale", "scale", {"factor": 3.0})]
    assert get_record(model).transforms == []


def test_apply_inplace_and_include_exclude():
    model = _mlp()
    w0, w1 = model[0].weight.clone(), model[1].weight.clone()
    out = apply("t-scale", model, ScaleConfig(factor=2.0), exclude="1", inplace=True)
    assert out is model
    torch.testing.assert_close(model[0].weight, w0 * 2)
    torch.testing.assert_close(model[1].weight, w1)


def test_config_object_with_overrides_and_wrong_verb():
    out = apply("t-scale", _mlp(), ScaleConfig(factor=2.0), factor=5.0)
    assert get_record(out).transforms[0].config == {"factor": 5.0}
    with pytest.raises(InvalidConfigError, match="not a t-scale config"):
        apply("t-scale", _mlp(), WidenConfig())


def test_apply_rejects_non_module():
    with pytest.raises(InvalidConfigError, match="needs a torch.nn.Module"):
        apply("t-scale", "model.pt", "scale")


def test_replay_rebuilds_structure_from_recorded_state():
    out = apply("t-widen", _mlp(), "widen", width=7)
    transform = get_record(out).transforms[0]
    rebuilt = replay(_mlp(), transform)
    assert rebuilt[0].out_features == 7 and rebuilt[1].in_features == 7
    # value-only transforms replay as a no-op
    scaled = apply("t-scale", _mlp(), "scale")
    plain = _mlp()
    assert replay(plain, get_record(scaled).transforms[0]) is plain
