"""Named tables (`slimkit.core.tables.Table`) and the method registry keyed by config class."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import slimkit as sk
from slimkit.core import registry
from slimkit.core.config import Config
from slimkit.core.errors import InvalidConfigError
from slimkit.core.tables import Table

NAMES = st.text(st.characters(categories=("L", "N"), include_characters="-_"), min_size=1, max_size=8)


@given(st.dictionaries(NAMES, st.integers(), min_size=1, max_size=10), NAMES)
def test_a_table_returns_what_was_registered_and_refuses_the_rest_by_listing_it(entries, missing):
    table = Table("widget", entries.items(), hint="register_widget adds one")
    for name, value in entries.items():
        assert table.lookup(name) == value and table.check(name) == name
    if missing not in entries:
        with pytest.raises(InvalidConfigError) as refused:
            table.lookup(missing)
        assert f"unknown widget {missing!r}" in str(refused.value) and "register_widget adds one" in str(refused.value)
        assert all(name in str(refused.value) for name in entries)
        with pytest.raises(ValueError, match="unknown widget"):
            table.check(missing)


def test_aliases_name_their_first_registration_and_copies_are_independent():
    value, other = object(), object()
    table = Table("loss", [("hint", value), ("fitnets", value), ("kd", other)])
    assert table.name_of(value) == "hint" and table.aliases() == {"fitnets": "hint"}
    copied = table.copy()
    copied.register("extra", other)
    assert "extra" not in table and copied.what == "loss"
    with pytest.raises(InvalidConfigError, match="non-empty name"):
        table.register("", value)


def test_the_tables_behind_names_are_tables():
    from slimkit.distillation.methods import CONFIGS
    from slimkit.pruning.importance import IMPORTANCES
    from slimkit.quantization.layers import LAYER_METHODS
    from slimkit.quantization.observers import OBSERVERS

    assert all(isinstance(t, Table) for t in (CONFIGS, IMPORTANCES, LAYER_METHODS, OBSERVERS))
    with pytest.raises(InvalidConfigError, match="unknown importance 'nope'.*register_importance"):
        sk.prune(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2)), "channels", importance="nope",
                 example_inputs=torch.randn(1, 4))  # fmt: skip


def test_a_method_is_its_config_class_and_its_other_names_are_aliases():
    methods = registry.methods("distill")
    assert methods["fitnets"] is methods["hint"] and methods["fitnets"].name == "hint"
    config = methods["fitnets"].config.build(layers={"0": "0"})
    found, _ = registry.resolve("distill", config, {})
    assert found.name == "hint"


class _Twice(Config):
    method = "twice"


def test_one_config_class_for_two_different_handlers_is_refused(monkeypatch):
    monkeypatch.setitem(registry._METHODS, "testverb", Table("testverb method"))
    registry.register("testverb", "twice", _Twice)(lambda model, config, ctx: model)
    registry.register("testverb", "again", _Twice)(registry.methods("testverb")["twice"].handler)
    assert registry.methods("testverb")["again"].name == "twice"
    with pytest.raises(InvalidConfigError, match="already the config of testverb method 'twice'"):
        registry.register("testverb", "other", _Twice)(lambda model, config, ctx: model)
