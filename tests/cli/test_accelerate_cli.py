import json

import pytest
import torch

import slimkit as sk
from slimkit.conv import SeparableConv2d, WinogradConv2d


@pytest.mark.slow
def test_fuse_digits_prints_comparison_and_saves(run_cli, tmp_path):
    code, out, _ = run_cli("accelerate", "example:digits-cnn", "--method", "fuse", "--out", str(tmp_path / "out"), "-q")
    assert code in (0, None)
    assert "latency bs=1" in out and "folded stages.0.0.bn1 into stages.0.0.conv1" in out
    assert "accuracy" in out and "+0.0000" in out
    loaded = sk.load(tmp_path / "out")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in loaded.modules())


def test_winograd_forced_tile_json(run_cli, tmp_path):
    code, out, _ = run_cli(
        "accelerate",
        "slimkit.models.testing:ResidualNet",
        "--method",
        "winograd",
        "--tile",
        "2",
        "--out",
        str(tmp_path / "out"),
        "--json",
    )
    assert code in (0, None)
    result = json.loads(out)
    converted = result["details"]["converted"]
    assert set(converted.values()) == {2} and len(converted) == 4
    assert isinstance(sk.load(tmp_path / "out").get_submodule("stem.0"), WinogradConv2d)


def test_separable_table(run_cli, tmp_path):
    code, out, _ = run_cli(
        "accelerate",
        "slimkit.models.testing:ResidualNet",
        "--method",
        "separable",
        "--out",
        str(tmp_path / "out"),
    )
    assert code in (0, None)
    assert "stem.0: MACs x0.236" in out and "MACs" in out
    assert isinstance(sk.load(tmp_path / "out").get_submodule("stem.0"), SeparableConv2d)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "nope"], "valid methods"),
        (["--method", "winograd", "--tile", "3"], "--tile must be auto, 2 or 4"),
        (["--method", "fuse", "--tile", "2"], "--tile only applies"),
        (["--method", "fuse", "--finetune-epochs", "2"], "only apply to --method separable"),
        (["--method", "separable", "--finetune-epochs", "2"], "needs --data"),
    ],
)
def test_user_errors_exit_2_with_one_line(run_cli, tmp_path, args, message):
    code, _, err = run_cli("accelerate", "slimkit.models.testing:ResidualNet", "--out", str(tmp_path / "out"), *args)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
