"""A saved ``hf-config`` folder is data: only transformers' own classes, no custom code, no kernels."""

from __future__ import annotations

import pytest
import torch
import transformers

import slimkit as sk
from slimkit.core.errors import UnsafeFileError


@pytest.fixture
def folder(tmp_path):
    config = transformers.BertConfig(
        hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8, vocab_size=30,
        max_position_embeddings=8,
    )  # fmt: skip
    return sk.save(transformers.BertModel(config).eval(), tmp_path / "bert")


def _set(key, value):
    return lambda index: index["hf_config"].__setitem__(key, value)


CASES = [
    ("class-not-in-transformers", lambda i: i.update(source="hf-config:Popen"), r"not a model class the transformers"),
    ("class-not-a-model", lambda i: i.update(source="hf-config:BertConfig"), r"not a model class the transformers"),
    ("class-name-path", lambda i: i.update(source="hf-config:os.system"), r"is not a transformers class name"),
    ("class-other-model", lambda i: i.update(source="hf-config:GPT2Model"), r"model_type 'bert' does not fit"),
    ("auto-map", _set("auto_map", {"AutoModel": "evil.Model"}), r"custom code \(auto_map\)"),
    ("nested-auto-map", _set("text_config", {"auto_map": {"AutoModel": "x.Y"}}), r"custom code \(auto_map\)"),
    ("hub-kernel", _set("_attn_implementation", "kernels-community/flash-attn"), r"only 'eager' or 'sdpa'"),
    ("quantization-config", _set("quantization_config", {"quant_method": "bitsandbytes"}), r"quantization_config"),
    ("dunder-key", _set("__class__", "x"), r"not a config field"),
    ("config-missing", lambda i: i.pop("hf_config"), r"needs the field hf_config"),
    ("config-not-object", lambda i: i.update(hf_config=[1, 2]), r"field hf_config"),
    ("config-on-factory", lambda i: i.update(source="slimkit.models.testing:ResidualNet"), r"only valid with an"),
    ("bad-shape", _set("hidden_size", 16), r"is not in slimkit\.json shapes|does not give the saved shapes"),
]


@pytest.mark.parametrize(("case", "change", "pattern"), CASES, ids=[c[0] for c in CASES])
def test_edited_hf_config_is_refused(folder, build, case, change, pattern):
    build.edit(folder, change)
    with pytest.raises(UnsafeFileError, match=pattern):
        sk.load(folder)


def test_edit_without_rehash_is_detected(folder, build):
    build.edit(folder, _set("num_hidden_layers", 2), rehash=False)
    with pytest.raises(UnsafeFileError, match="was edited after it was saved"):
        sk.load(folder)


def test_nothing_is_downloaded(folder, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("slimkit tried to reach the hub")

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    monkeypatch.setattr(transformers.utils.hub, "cached_file", refuse, raising=False)
    loaded = sk.load(folder)
    assert type(loaded) is transformers.BertModel and loaded.dtype == torch.float32
