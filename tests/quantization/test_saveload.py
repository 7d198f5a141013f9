import pytest
import torch

import slimkit as sk
from slimkit.measure import artifact_bytes


def _model(name):
    model = sk.load(f"slimkit.models.testing:{name}")
    return model, model.example_inputs()


CASES = [
    ("TinyAttention", "int8-dynamic", {}),
    ("EmbeddingMLP", "int8-dynamic", {}),
    ("EmbeddingMLP", "weight-only", {"bits": 2, "group_size": 8}),
    ("EmbeddingMLP", "weight-only", {"bits": 3, "group_size": 7}),
    ("TinyAttention", "weight-only", {"bits": 4, "group_size": 16}),
    ("TinyAttention", "weight-only", {"bits": 8, "group_size": None}),
    ("ResidualNet", "fp16", {}),
    ("ResidualNet", "bf16", {}),
    ("TinyAttention", "fp16", {"include": "ffn.*"}),
    ("TinyAttention", "int8-dynamic", {"overrides": {"ffn.*": {"method": "weight-only", "bits": 4, "group_size": 16}}}),
]


@pytest.mark.parametrize(("name", "method", "options"), CASES)
def test_round_trip_bit_identical(tmp_path, name, method, options):
    model, inputs = _model(name)
    q = sk.quantize(model, method, **options)
    sk.save(q, tmp_path)
    loaded = sk.load(tmp_path)
    with torch.no_grad():
        assert torch.equal(q(*inputs), loaded(*inputs))


@pytest.mark.parametrize("name", ["ResidualNet", "ConcatNet"])
def test_int8_static_round_trip(tmp_path, name):
    model, inputs = _model(name)
    calibration = [torch.randn_like(inputs[0]) for _ in range(3)]
    q = sk.quantize(model, "int8-static", data=calibration, observer="percentile")
    sk.save(q, tmp_path)
    loaded = sk.load(tmp_path)
    with torch.no_grad():
        assert torch.equal(q(*inputs), loaded(*inputs))


@pytest.mark.parametrize(("bits", "limit"), [(8, 0.27), (4, 0.14), (3, 0.11), (2, 0.075)])
def test_saved_bytes_are_about_bits_over_32(tmp_path, bits, limit):
    model = torch.nn.Sequential(torch.nn.Linear(1024, 1024), torch.nn.Linear(1024, 512))
    q = sk.quantize(model, "weight-only", bits=bits, group_size=128)
    sk.save(model, tmp_path / "fp32", source="slimkit.models.testing:ResidualNet")  # bytes only, never loaded
    sk.save(q, tmp_path / "q", source="slimkit.models.testing:ResidualNet")
    ratio = artifact_bytes(tmp_path / "q" / "model.safetensors") / artifact_bytes(
        tmp_path / "fp32" / "model.safetensors"
    )
    assert bits / 32 < ratio < limit
