"""Module versions (``state_dict()._metadata``) survive save/load: ``_load_from_state_dict`` reads them."""

from __future__ import annotations

import json
import sys
import types

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import slimkit as sk
from slimkit.core.errors import UnsafeFileError
from slimkit.core.index import integrity_hash, read_index
from slimkit.core.specs import load_model


class Versioned(nn.Module):
    """Like torchvision's MNASNet: refuses a state dict whose version it cannot read."""

    _version = 3

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)
        self.bn = nn.BatchNorm1d(2)  # BatchNorm is version 2
        self.seen: list[int | None] = []

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args):
        version = local_metadata.get("version", None)
        if version not in (2, 3):
            raise ValueError(f"version should be set to 2 or 3 instead of {version}")
        self.seen.append(version)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args)

    def forward(self, x):
        return self.bn(self.fc(x))


@pytest.fixture
def versioned(monkeypatch):
    module = types.ModuleType("sk_versioned_models")
    Versioned.__module__ = module.__name__
    module.Versioned = Versioned
    monkeypatch.setitem(sys.modules, module.__name__, module)
    model = Versioned().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_()
    return model


def _rewrite(folder, change):
    path = folder / "slimkit.json"
    index = json.loads(path.read_text())
    change(index)
    index["integrity"] = integrity_hash(index)
    path.write_text(json.dumps(index))


def test_versions_are_saved_and_given_back_to_load_state_dict(tmp_path, versioned):
    out = sk.save(versioned, tmp_path / "m")
    assert read_index(out)["versions"] == {"": 3, "bn": 2}
    loaded = sk.load(out)
    assert loaded.seen == [3]
    x = torch.randn(3, 4)
    assert torch.equal(loaded(x), versioned(x))


def test_the_saved_version_wins_over_the_class_version(tmp_path, versioned):
    out = sk.save(versioned, tmp_path / "m")
    _rewrite(out, lambda index: index["versions"].update({"": 2}))
    assert sk.load(out).seen == [2]


def test_folder_without_versions_uses_the_models_own(tmp_path, versioned):
    out = sk.save(versioned, tmp_path / "m")
    _rewrite(out, lambda index: index.pop("versions"))
    assert sk.load(out).seen == [3]


def test_plain_safetensors_weights_load_into_a_versioned_model(tmp_path, versioned):
    save_file({k: v.contiguous() for k, v in versioned.state_dict().items()}, tmp_path / "w.safetensors")
    loaded = load_model("sk_versioned_models:Versioned", weights=tmp_path / "w.safetensors")
    assert loaded.seen == [3]
    torch.testing.assert_close(loaded.bn.running_mean, versioned.bn.running_mean, rtol=0, atol=0)


def test_a_version_that_is_not_an_int_is_refused(tmp_path, versioned):
    out = sk.save(versioned, tmp_path / "m")
    _rewrite(out, lambda index: index["versions"].update({"": "2"}))
    with pytest.raises(UnsafeFileError, match=r"field versions"):
        sk.load(out)
