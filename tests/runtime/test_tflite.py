import sys

import pytest
import torch

from slimkit.core.errors import MissingExtraError, UnsupportedModelError
from slimkit.measure import sqnr_db
from slimkit.models.testing import ZOO
from slimkit.runtime import load
from slimkit.runtime.export import export
from slimkit.runtime.tflite_runtime import TFLiteRuntime


@pytest.fixture(scope="module")
def attention_tflite(tmp_path_factory):
    model = ZOO["attention"]()
    return model, export(model, tmp_path_factory.mktemp("tfl") / "m.tflite")


@pytest.mark.slow
def test_tflite_parity_fixed_batch_and_threads(attention_tflite):
    model, path = attention_tflite
    rt = load(path)
    assert isinstance(rt, TFLiteRuntime) and rt.static_batch == 1
    x = model.example_inputs()[0].repeat(3, 1, 1)[:5]
    assert sqnr_db(model(x), rt.run(x)) >= 35.0  # batch 5 on a batch-1 model
    seen, run = [], rt.run_batch
    rt.run_batch = lambda batch: (seen.append(rt.threads), run(batch))[1]
    rt.bench(batch_sizes=(1,), threads=1, budget_s=0.01)
    assert set(seen) == {1} and rt.threads is None


@pytest.mark.slow
def test_tflite_digits_cnn_parity(tmp_path):
    import slimkit as sk

    model = sk.load("example:digits-cnn")
    path = export(model, tmp_path / "d.tflite")
    x = torch.randn(3, 1, 32, 32)
    assert sqnr_db(model(x), load(path).run(x)) >= 35.0


@pytest.mark.slow
def test_tflite_int8_dynamic_range(tmp_path):
    model = ZOO["residual"]()
    path = export(model, tmp_path / "q.tflite", quantize="int8-dynamic")
    x = model.example_inputs()[0]
    assert sqnr_db(model(x), load(path).run(x)) >= 25.0


def test_tflite_missing_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "litert_torch", None)
    with pytest.raises(MissingExtraError, match=r"slimkit\[tflite\]"):
        export(ZOO["residual"](), tmp_path / "m.tflite")


@pytest.mark.slow
def test_tflite_unsupported_op(tmp_path, svd_model):
    with pytest.raises(UnsupportedModelError, match=r"TFLite cannot express the op aten._linalg_svd in layer 'body'"):
        export(svd_model, tmp_path / "m.tflite")


@pytest.mark.slow
def test_bert_keyword_inputs_and_every_output_in_the_models_order(tmp_path):
    """LiteRT names a model-output object's fields and returns them sorted by name; slimkit
    flattens the outputs first, so the pooler never comes back in place of the hidden states."""
    import transformers

    import slimkit as sk

    torch.manual_seed(0)
    config = transformers.BertConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=50
    )
    model = transformers.BertModel(config).eval()
    ids = torch.randint(0, 50, (1, 6))
    path = sk.export(model, tmp_path / "bert.tflite", example_inputs={"input_ids": ids, "attention_mask": ids > -1})
    hidden, pooled = sk.runtime.load(path).run(input_ids=ids, attention_mask=ids > -1)
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=ids > -1)
    torch.testing.assert_close(hidden, expected.last_hidden_state, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(pooled, expected.pooler_output, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_a_channels_last_model_keeps_its_numbers_in_tflite(tmp_path):
    import slimkit as sk

    model = sk.accelerate(ZOO["residual"]().eval(), "fuse", channels_last=True)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    runtime = load(export(model, tmp_path / "m.tflite", example_inputs=(x,)))  # 30 dB before: refused
    with torch.no_grad():
        assert sqnr_db(model(x), runtime.run(x)) >= 35.0
