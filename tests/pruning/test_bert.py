import pytest
import torch

import slimkit as sk


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=32,
    )  # fmt: skip
    path = tmp_path_factory.mktemp("bert")
    BertModel(config).eval().save_pretrained(path)
    return path


@pytest.fixture()
def bert(bert_dir):
    return sk.load(f"hf:{bert_dir}")


def _inputs():
    ids = torch.randint(0, 60, (2, 7), generator=torch.Generator().manual_seed(1))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _hidden(model, x):
    return model(**x).last_hidden_state


@pytest.mark.parametrize("method", ["heads", "neurons"])
def test_ratio_zero_is_bit_identical(bert, method):
    x = _inputs()
    assert torch.equal(_hidden(sk.prune(bert, method, ratio=0.0), x), _hidden(bert, x))


def test_heads_and_neurons_shrink_and_save_load(bert, tmp_path):
    x = _inputs()
    pruned = sk.prune(sk.prune(bert, "heads", ratio=0.5), "neurons", ratio=0.5)
    attention = pruned.encoder.layer[0].attention.self
    assert attention.num_attention_heads == 2 and attention.query.out_features == 16
    assert pruned.encoder.layer[0].attention.output.dense.in_features == 16
    assert pruned.encoder.layer[1].intermediate.dense.out_features == 32
    assert _hidden(pruned, x).shape == _hidden(bert, x).shape
    assert sk.measure.count_params(pruned) < 0.8 * sk.measure.count_params(bert)
    sk.save(pruned, tmp_path / "m")
    loaded = sk.load(tmp_path / "m")
    assert torch.equal(_hidden(loaded, x), _hidden(pruned, x))


def test_zero_heads_are_removed_without_changing_outputs(bert):
    x = _inputs()
    with torch.no_grad():
        for layer in bert.encoder.layer:  # zero heads 1 and 3 (value rows + output columns)
            for head in (1, 3):
                cols = slice(head * 8, head * 8 + 8)
                for proj in (layer.attention.self.query, layer.attention.self.key, layer.attention.self.value):
                    proj.weight[cols] = 0
                    proj.bias[cols] = 0
                layer.attention.output.dense.weight[:, cols] = 0
    pruned = sk.prune(bert, "heads", ratio=0.5)
    torch.testing.assert_close(_hidden(pruned, x), _hidden(bert, x), atol=1e-6, rtol=0)


def test_channels_on_bert_is_captured_by_torch_export(bert, tmp_path):
    """fx cannot trace BertModel; torch.export can: the FFNs are pruned, the heads' views are listed."""
    x = _inputs()
    pruned = sk.prune(bert, "channels", example_inputs=x)
    state = sk.explain(pruned).details
    assert {label for label in state["pruned"] if "intermediate" in label}
    assert any("splits it into heads" in why for why in state["skipped"].values())
    assert _hidden(pruned, x).shape == _hidden(bert, x).shape
    assert torch.equal(_hidden(sk.load(sk.save(pruned, tmp_path / "m")), x), _hidden(pruned, x))
