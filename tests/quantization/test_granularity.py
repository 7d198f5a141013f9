"""``granularity``: one value object for how many weights share a scale, in every packing method."""

import json
import warnings

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import slimkit as sk
from slimkit.core.errors import InvalidConfigError
from slimkit.core.index import integrity_hash
from slimkit.models.testing import ZOO
from slimkit.quantization import Granularity

PACKING = ["weight-only", "gptq", "bias-correction", "qat"]


@given(st.one_of(st.sampled_from([Granularity("tensor"), Granularity("channel"), Granularity("token")]), st.builds(
    Granularity, st.just("group"), st.integers(1, 1 << 20))))  # fmt: skip
def test_the_string_form_reads_back_as_the_same_value(granularity):
    assert Granularity.parse(str(granularity)) == granularity


@given(st.integers(1, 4096))
def test_every_spelling_of_a_group_is_the_same_value(size):
    spellings = [f"group:{size}", f" group: {size} ", {"group": size}, size]
    assert {Granularity.parse(s) for s in spellings} == {Granularity("group", size)}
    assert Granularity.parse(size).group_size == size


def test_none_is_per_channel_as_group_size_none_was():
    assert Granularity.parse(None) == Granularity("channel")
    assert Granularity("channel").group_size is None


@pytest.mark.parametrize("method", PACKING)
@pytest.mark.parametrize("bad", ["tensor", "token", "group:0", 0, "group", "rows", True, "group:x"])
def test_bad_granularities_are_refused_by_every_packing_method(method, bad):
    config = sk.core.registry.get_method("quantize", method).config
    with pytest.raises(InvalidConfigError, match="granularity"):
        config.build(granularity=bad)


@pytest.mark.parametrize("method", PACKING)
def test_group_size_still_works_with_a_deprecation_warning(method):
    config = sk.core.registry.get_method("quantize", method).config
    with pytest.warns(DeprecationWarning, match="'group_size' is now 'granularity'"):
        old = config.build(group_size=16)
    assert old == config.build(granularity="group:16")
    with pytest.warns(DeprecationWarning):
        assert config.build(group_size=None).granularity == Granularity("channel")


def test_old_and_new_spelling_quantize_identically_and_record_the_new_one(tmp_path):
    model = ZOO["embedding"]()
    x = model.example_inputs()
    new = sk.quantize(model, "weight-only", bits=4, granularity="group:8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old = sk.quantize(model, "weight-only", bits=4, group_size=8)
    assert torch.equal(new(*x), old(*x))
    assert sk.get_record(new).transforms[-1].config["granularity"] == "group:8"
    folder = sk.save(new, tmp_path / "new")
    assert torch.equal(sk.load(folder)(*x), new(*x))


def test_a_model_saved_with_group_size_loads(tmp_path):
    model = ZOO["embedding"]()
    x = model.example_inputs()
    quantized = sk.quantize(model, "weight-only", bits=4, granularity="group:8")
    folder = sk.save(quantized, tmp_path / "q")
    meta = folder / "slimkit.json"
    index = json.loads(meta.read_text())
    (entry,) = [t for t in index["transforms"] if t["config"].get("granularity")]
    assert entry["config"].pop("granularity") == "group:8"
    entry["config"]["group_size"] = 8  # as a record written before 0.2 holds it
    index["integrity"] = integrity_hash(index)
    meta.write_text(json.dumps(index))
    with pytest.warns(DeprecationWarning, match="group_size"):
        loaded = sk.load(folder)
    assert torch.equal(loaded(*x), quantized(*x))


def test_activation_granularity_of_int8_dynamic_and_its_old_switch():
    config = sk.core.registry.get_method("quantize", "int8-dynamic").config
    assert config.build().act_granularity == Granularity("token") and config.build().per_token
    for old, new in ((True, "token"), (False, "tensor")):
        with pytest.warns(DeprecationWarning, match="'per_token' is now 'act_granularity'"):
            assert config.build(per_token=old) == config.build(act_granularity=new)
    for bad in ("channel", "group:8"):
        with pytest.raises(InvalidConfigError, match="activations take 'token' or 'tensor'"):
            config.build(act_granularity=bad)
    model = ZOO["attention"]()
    x = model.example_inputs()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old = sk.quantize(model, "int8-dynamic", per_token=False)
    assert torch.equal(sk.quantize(model, "int8-dynamic", act_granularity="tensor")(*x), old(*x))
