import pytest
import torch
from torch import nn

import slimkit as sk
from slimkit.measure import evaluate, sqnr_db
from slimkit.models.testing import ZOO
from slimkit.quantization import Int8DynamicLinear, QDQLayer, WeightOnly, WeightOnlyEmbedding, WeightOnlyLinear


def test_int8_dynamic_on_attention():
    model = ZOO["attention"]()
    (x,) = model.example_inputs()
    q = sk.quantize(model, "int8-dynamic")
    assert all(isinstance(m, Int8DynamicLinear) for n, m in q.named_modules() if n in ("query", "ffn.0", "head"))
    assert sqnr_db(model(x).detach(), q(x)) > 25
    assert isinstance(model.query, nn.Linear)  # input untouched
    emb = sk.quantize(ZOO["embedding"](), "int8-dynamic")
    assert isinstance(emb.embedding, WeightOnlyEmbedding) and emb.embedding.packed.bits == 8
    assert isinstance(sk.quantize(ZOO["embedding"](), "int8-dynamic", embeddings=False).embedding, nn.Embedding)


def test_weight_only_embeddings_and_overrides_first_match_wins():
    model = ZOO["embedding"]()
    (x,) = model.example_inputs()
    cfg = WeightOnly(bits=4, group_size=8, overrides={"mlp.0": {"bits": 8}, "mlp.*": None, "embedding": "fp16"})
    q = sk.quantize(model, cfg)
    assert isinstance(q.mlp[0], WeightOnlyLinear) and q.mlp[0].packed.bits == 8
    assert isinstance(q.mlp[2], nn.Linear)  # None: kept float
    assert q.embedding.weight.dtype == torch.float16
    state = sk.explain(q).details
    assert set(state["layers"]) == {"mlp.0", "embedding"}
    assert sqnr_db(model(x).detach(), q(x)) > 25
    q2 = sk.quantize(model, "weight-only", group_size=8)
    assert isinstance(q2.embedding, WeightOnlyEmbedding)


def test_include_exclude():
    model = ZOO["attention"]()
    q = sk.quantize(model, "weight-only", group_size=16, exclude="head")
    assert isinstance(q.head, nn.Linear) and isinstance(q.query, WeightOnlyLinear)
    q = sk.quantize(model, "int8-dynamic", include="ffn.*")
    assert isinstance(q.ffn[0], Int8DynamicLinear) and isinstance(q.query, nn.Linear)


@pytest.mark.parametrize("method", ["fp16", "bf16"])
def test_half(method):
    model = ZOO["residual"]()
    (x,) = model.example_inputs()
    q = sk.quantize(model, method)
    dtype = torch.float16 if method == "fp16" else torch.bfloat16
    assert all(p.dtype == dtype for p in q.parameters())
    y = q(x)
    assert y.dtype == torch.float32
    assert sqnr_db(model(x).detach(), y) > (40 if method == "fp16" else 25)


@pytest.mark.slow
def test_int8_static_digits_accuracy_and_size(tmp_path):
    model = sk.load("example:digits-cnn")
    data = sk.load_data("example:digits")
    q = sk.quantize(model, "int8-static", data=data.calibration)
    assert sum(isinstance(m, QDQLayer) for m in q.modules()) == 13
    assert not any(isinstance(m, nn.BatchNorm2d) for m in q.modules())
    before = evaluate(model, data.test, "accuracy")["accuracy"]
    after = evaluate(q, data.test, "accuracy")["accuracy"]
    assert before - after <= 0.003
    sk.save(model, tmp_path / "fp32")
    sk.save(q, tmp_path / "int8")
    ratio = sk.measure.artifact_bytes(tmp_path / "int8") / sk.measure.artifact_bytes(tmp_path / "fp32")
    assert ratio <= 0.275
