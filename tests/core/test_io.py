import json
import os
import pickle

import pytest
import torch
from torch import nn

import slimkit as sk
from slimkit.core import io
from slimkit.core.errors import InvalidConfigError, UnsafeFileError
from slimkit.core.index import read_index
from slimkit.core.record import Transform, append_transform, get_record
from slimkit.core.weights import apply_state, load_weights
from slimkit.models.testing import ResidualNet


def _outputs_equal(a: nn.Module, b: nn.Module) -> None:
    x = a.example_inputs()
    torch.testing.assert_close(a.eval()(*x), b.eval()(*x), rtol=0, atol=0)


def test_roundtrip_rebuilds_class_and_weights(tmp_path):
    model = ResidualNet().eval()
    out = sk.save(model, tmp_path / "out")
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors", "slimkit.json"]
    index = json.loads((out / "slimkit.json").read_text())
    assert index["source"] == "slimkit.models.testing:ResidualNet"
    assert index["shapes"]["head.weight"] == [10, 16]
    loaded = sk.load(out)
    assert type(loaded) is ResidualNet
    _outputs_equal(model, loaded)
    assert get_record(loaded).source == "slimkit.models.testing:ResidualNet"


def test_no_pickle_in_artifact(tmp_path):
    out = sk.save(ResidualNet(), tmp_path / "out")
    raw = (out / "model.safetensors").read_bytes()
    assert b"\x80\x04" not in raw[:8] and raw[8:9] == b"{"  # safetensors header, not a pickle


def test_record_travels_through_save_and_load(tmp_path):
    model = append_transform(ResidualNet(), Transform("quantize", "fp16-test", {"x": 1}, {}))
    loaded_index = read_index(sk.save(model, tmp_path / "o", source="slimkit.models.testing:ResidualNet"))
    assert loaded_index["transforms"] == [
        {"verb": "quantize", "method": "fp16-test", "config": {"x": 1}, "state": {}, "changed": [], "skipped": {}}
    ]


def test_unknown_architecture_needs_source(tmp_path):
    class Local(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2)

    with pytest.raises(InvalidConfigError, match="source='package.module:factory'"):
        sk.save(Local(), tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_tied_weights_roundtrip(tmp_path):
    from slimkit.models.testing import EmbeddingMLP

    model = EmbeddingMLP()
    head = nn.Linear(16, 100, bias=False)
    head.weight = model.embedding.weight  # tie
    model.tied = head
    out = sk.save(model, tmp_path / "o", source="slimkit.models.testing:EmbeddingMLP")
    rebuilt = EmbeddingMLP()
    rebuilt.tied = nn.Linear(16, 100, bias=False)
    rebuilt.tied.weight = rebuilt.embedding.weight
    state = load_weights(out / "model.safetensors")
    apply_state(rebuilt, state, "test")
    torch.testing.assert_close(rebuilt.tied.weight, model.embedding.weight)


def test_save_into_existing_folder_keeps_other_files(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"keep me")
    sk.save(ResidualNet(), tmp_path)
    assert (tmp_path / "model.onnx").read_bytes() == b"keep me"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left


def test_failed_save_leaves_nothing(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(io, "save_model", boom)
    with pytest.raises(OSError):
        sk.save(ResidualNet(), tmp_path / "o")
    assert list(tmp_path.iterdir()) == []


def test_failed_overwrite_keeps_previous_save(tmp_path, monkeypatch):
    out = sk.save(ResidualNet(), tmp_path / "o")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setattr(io, "save_model", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        sk.save(ResidualNet(width=4), out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_truncated_weights_are_refused(tmp_path):
    out = sk.save(ResidualNet(), tmp_path / "o")
    weights = out / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(UnsafeFileError, match="does not match slimkit.json"):
        sk.load(out)
    # the checksum is mandatory: removing it is refused before the weights are read
    index = json.loads((out / "slimkit.json").read_text())
    index["weights"].pop("sha256")
    (out / "slimkit.json").write_text(json.dumps(index))
    with pytest.raises(UnsafeFileError, match=r"field weights\.sha256"):
        sk.load(out)


def test_corrupt_index_is_refused(tmp_path):
    out = sk.save(ResidualNet(), tmp_path / "o")
    (out / "slimkit.json").write_text("{not json")
    with pytest.raises(UnsafeFileError, match="corrupt"):
        sk.load(out)
    (out / "slimkit.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(UnsafeFileError, match="not a slimkit index"):
        sk.load(out)


def test_weights_that_do_not_fit_name_the_keys(tmp_path):
    out = sk.save(ResidualNet(width=4), tmp_path / "o", source="slimkit.models.testing:ResidualNet")
    with pytest.raises(UnsafeFileError, match=r"shape mismatch.*stem.0.weight"):
        sk.load(out)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_code_running_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = str(tmp_path / "pwned")
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"weights": _Evil(marker)}, f)
    with pytest.raises(UnsafeFileError, match="trust_pickle=True"):
        sk.load(path)
    assert not os.path.exists(marker)


def test_trusted_full_model_pickle_loads(tmp_path):
    model = ResidualNet()
    torch.save(model, tmp_path / "full.pt")
    with pytest.raises(UnsafeFileError, match="--trust-pickle"):
        sk.load(tmp_path / "full.pt")
    loaded = sk.load(tmp_path / "full.pt", trust_pickle=True)
    _outputs_equal(model, loaded)


def test_state_dict_checkpoint_with_factory(tmp_path):
    model = ResidualNet()
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, tmp_path / "ckpt.pt")
    loaded = sk.load("slimkit.models.testing:ResidualNet", weights=tmp_path / "ckpt.pt")
    _outputs_equal(model, loaded)
    with pytest.raises(InvalidConfigError, match="weights only"):
        sk.load(tmp_path / "ckpt.pt")


def test_corrupt_checkpoint(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"garbage" * 10)
    with pytest.raises(UnsafeFileError, match="corrupt"):
        sk.load(tmp_path / "bad.pt")


def test_pt2_roundtrip(tmp_path):
    model = ResidualNet().eval()
    ep = torch.export.export(model, model.example_inputs())
    torch.export.save(ep, tmp_path / "m.pt2")
    loaded = sk.load(tmp_path / "m.pt2")
    x = model.example_inputs()
    torch.testing.assert_close(loaded(*x), model(*x))
    (tmp_path / "bad.pt2").write_bytes(b"nope")
    with pytest.raises(UnsafeFileError, match="torch.export"):
        sk.load(tmp_path / "bad.pt2")
