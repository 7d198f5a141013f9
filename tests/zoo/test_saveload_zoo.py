"""Save/load of torchvision models (issue 18): module versions in the state dict survive."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

import slimkit as sk

_spec = importlib.util.spec_from_file_location("slimkit_zoo_shim", Path(__file__).with_name("torchvision_shim.py"))
_shim = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_shim)


@pytest.fixture(scope="module")
def torchvision():
    try:
        return _shim.import_torchvision()
    except ModuleNotFoundError:
        pytest.skip("torchvision is not in .venv/zoo (make test installs it)")


@pytest.mark.filterwarnings("ignore:int8-dynamic")
@pytest.mark.parametrize("method", [None, "int8-dynamic"])
def test_mnasnet_round_trips_with_its_module_versions(tmp_path, torchvision, method):
    torch.manual_seed(0)
    model = torchvision.models.mnasnet0_5().eval()
    assert model.state_dict()._metadata[""]["version"] == 2  # MNASNet refuses a state dict without it
    if method is not None:
        model = sk.quantize(model, method)
    out = sk.save(model, tmp_path / "m", source="torchvision.models:mnasnet0_5")
    loaded = sk.load(out)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
