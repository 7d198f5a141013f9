"""Saving transformers models: ``hf-config`` source (no ``source=``) and ``format="hf"``."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch
import transformers

import slimkit as sk
from slimkit.core.errors import InvalidConfigError, UnsupportedModelError
from slimkit.core.hf import remember_config
from slimkit.core.index import read_index
from slimkit.core.record import get_record
from slimkit.models.testing import ResidualNet

VOCAB = 50


def _bert_config(**extra):
    return transformers.BertConfig(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, vocab_size=VOCAB,
        max_position_embeddings=16, **extra,
    )  # fmt: skip


def _gpt2():
    config = transformers.GPT2Config(
        n_embd=16, n_layer=2, n_head=2, vocab_size=VOCAB, n_positions=16, bos_token_id=0, eos_token_id=0
    )
    return transformers.GPT2LMHeadModel(config).eval()


def _ids():
    return torch.randint(0, VOCAB, (2, 7), generator=torch.Generator().manual_seed(0))


def _out(model):
    with torch.no_grad():
        result = model(input_ids=_ids())
    return result.logits if hasattr(result, "logits") else result.last_hidden_state


def _assert_same(a, b):
    assert torch.equal(_out(a), _out(b))


def test_from_pretrained_model_saves_without_source_and_needs_nothing_else(tmp_path, monkeypatch):
    torch.manual_seed(0)
    transformers.BertModel(_bert_config()).save_pretrained(tmp_path / "bert")
    model = transformers.AutoModel.from_pretrained(tmp_path / "bert").eval()
    out = sk.save(model, tmp_path / "saved")
    shutil.rmtree(tmp_path / "bert")  # the saved folder is complete on its own
    index = json.loads((out / "slimkit.json").read_text())
    assert index["source"] == "hf-config:BertModel"
    assert index["hf_config"]["hidden_size"] == 16 and "auto_map" not in index["hf_config"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = sk.load(out)
    assert type(loaded) is transformers.BertModel
    assert get_record(loaded).source == "hf-config:BertModel"
    _assert_same(model, loaded)


@pytest.mark.parametrize("build", ["gpt2", "classifier"])
def test_models_built_from_a_config_round_trip(tmp_path, build):
    torch.manual_seed(0)
    if build == "gpt2":
        model = _gpt2()
    else:
        model = transformers.BertForSequenceClassification(_bert_config(num_labels=3)).eval()
    loaded = sk.load(sk.save(model, tmp_path / "m"))
    assert type(loaded) is type(model)
    if build == "classifier":
        assert loaded.classifier.out_features == 3
    _assert_same(model, loaded)


def test_int8_dynamic_gpt2_round_trips_bit_identical(tmp_path):
    torch.manual_seed(0)
    q = sk.quantize(_gpt2(), "int8-dynamic")
    loaded = sk.load(sk.save(q, tmp_path / "q"))
    assert type(loaded.transformer.h[0].attn.c_attn) is type(q.transformer.h[0].attn.c_attn)
    _assert_same(q, loaded)
    again = sk.load(sk.save(loaded, tmp_path / "again"))  # a loaded model saves again from its stored config
    _assert_same(q, again)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_model_keeps_its_dtype(tmp_path, dtype):
    torch.manual_seed(0)
    model = transformers.BertModel(_bert_config()).eval().to(dtype)
    loaded = sk.load(sk.save(model, tmp_path / "m"))
    assert loaded.embeddings.word_embeddings.weight.dtype == dtype
    _assert_same(model, loaded)


def test_config_snapshot_survives_a_transform_that_updates_the_config(tmp_path):
    torch.manual_seed(0)
    model = remember_config(transformers.BertModel(_bert_config()).eval())  # registry.apply does this
    pruned = sk.prune(model, "neurons", ratio=0.5)
    pruned.config.intermediate_size = pruned.encoder.layer[0].intermediate.dense.out_features
    index = json.loads((sk.save(pruned, tmp_path / "m") / "slimkit.json").read_text())
    assert index["hf_config"]["intermediate_size"] == 32  # the original config: the prune is replayed on it
    _assert_same(pruned, sk.load(tmp_path / "m"))


def test_config_that_no_longer_rebuilds_the_model_is_refused_at_save(tmp_path):
    torch.manual_seed(0)
    pruned = sk.prune(transformers.BertModel(_bert_config()).eval(), "neurons", ratio=0.5)
    object.__setattr__(pruned, "_slimkit_hf_config", None)  # as if no snapshot had been taken
    pruned.config.num_hidden_layers = 1
    with pytest.raises(UnsupportedModelError, match="config with the recorded transforms does not rebuild"):
        sk.save(pruned, tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_subclass_outside_transformers_needs_a_source(tmp_path):
    class Mine(transformers.BertModel):
        pass

    with pytest.raises(UnsupportedModelError, match="not a class the transformers package exports"):
        sk.save(Mine(_bert_config()), tmp_path / "m")


# --- format="hf" ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_hf_format_loads_with_from_pretrained(tmp_path, dtype):
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(_bert_config(num_labels=3)).eval().to(dtype)
    out = sk.save(model, tmp_path / "hf", format="hf")
    assert {"config.json", "model.safetensors"} <= {p.name for p in out.iterdir()}
    loaded = transformers.AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert type(loaded) is type(model) and loaded.dtype == dtype
    _assert_same(model, loaded)


def test_hf_format_of_pruned_model_needs_an_updated_config(tmp_path):
    torch.manual_seed(0)
    pruned = sk.prune(transformers.BertModel(_bert_config()).eval(), "neurons", ratio=0.5)
    width = pruned.encoder.layer[0].intermediate.dense.out_features
    assert all(layer.intermediate.dense.out_features == width for layer in pruned.encoder.layer)
    assert pruned.config.intermediate_size == width  # uniform pruning: the pruner updates the config
    stale = copy.deepcopy(pruned)
    stale.config.intermediate_size = _bert_config().intermediate_size
    with pytest.raises(UnsupportedModelError, match=r"intermediate\.dense\.weight: shape"):
        sk.save(stale, tmp_path / "stale", format="hf")
    assert not (tmp_path / "stale").exists()
    out = sk.save(pruned, tmp_path / "hf", format="hf")
    _assert_same(pruned, transformers.BertModel.from_pretrained(out).eval())


@pytest.mark.filterwarnings("ignore:svd")
@pytest.mark.parametrize("method", ["int8-dynamic", "svd"])
def test_hf_format_refuses_slimkit_layers(tmp_path, method):
    torch.manual_seed(0)
    model = _gpt2()
    changed = sk.quantize(model, method) if method == "int8-dynamic" else sk.decompose(model, method, rank=4)
    with pytest.raises(UnsupportedModelError) as refused:
        sk.save(changed, tmp_path / "hf", format="hf")
    message = str(refused.value)
    assert "default slimkit format" in message and "was Conv1D" in message
    assert not (tmp_path / "hf").exists()


def test_hf_format_needs_a_transformers_model(tmp_path):
    with pytest.raises(InvalidConfigError, match="needs a transformers PreTrainedModel"):
        sk.save(ResidualNet(), tmp_path / "hf", format="hf")
    with pytest.raises(InvalidConfigError, match="unknown save format"):
        sk.save(ResidualNet(), tmp_path / "x", format="onnx")


def test_versions_are_stored_and_index_stays_valid(tmp_path):
    torch.manual_seed(0)
    out = sk.save(_gpt2(), tmp_path / "m")
    stored = read_index(out)
    assert stored["versions"] == {}  # every module at version 1: nothing stored


def test_model_loaded_through_hf_spec_keeps_its_source(tmp_path):
    torch.manual_seed(0)
    transformers.BertModel(_bert_config()).save_pretrained(tmp_path / "bert")
    model = sk.load(f"hf:{tmp_path / 'bert'}")
    out = sk.save(model, tmp_path / "saved")
    assert read_index(out)["source"] == f"hf:{tmp_path / 'bert'}"  # the reference for fidelity stays reachable
    _assert_same(model, sk.load(out))


def test_hf_config_source_is_not_a_model_spec():
    from slimkit.core.specs import load_model

    with pytest.raises(InvalidConfigError, match="load the folder itself"):
        load_model("hf-config:BertModel")
