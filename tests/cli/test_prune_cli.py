import json

import pytest
import torch

import slimkit as sk


def test_prune_channels_prints_table_and_saves(run_cli, tmp_path):
    code, out, _ = run_cli("prune", "slimkit.models.testing:ResidualNet", "--method", "channels", "--ratio", "0.5",
        "--out", str(tmp_path / "o"), "-q",
    )  # fmt: skip
    assert code in (0, None)
    assert "MACs" in out and "kept 4 of 8" in out and "head: left as is" in out
    loaded = sk.load(tmp_path / "o")
    assert loaded.stem[0].out_channels == 4
    assert loaded(torch.randn(1, 3, 16, 16)).shape == (1, 10)


@pytest.mark.slow
def test_prune_with_finetune_json(run_cli, tmp_path):
    code, out, _ = run_cli("prune", "example:digits-cnn", "--ratio", "0.5", "--finetune-epochs", "1", "--json",
        "--out", str(tmp_path / "o"),
    )  # fmt: skip
    assert code in (0, None)
    result = json.loads(out)
    assert result["ratios"]["macs"] <= 0.30
    assert result["after"]["metrics"]["accuracy"] > 0.3  # chance is 0.1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ratio", "1.0"], "ratio"),
        (["--method", "nope"], "unknown prune method"),
        (["--include", "nope.*"], "matches no module"),
        (["--finetune-epochs", "2"], "--data"),
    ],
)
def test_user_errors_exit_2(run_cli, tmp_path, args, message):
    code, _, err = run_cli("prune", "slimkit.models.testing:ResidualNet", *args, "--out", str(tmp_path / "o"))
    assert code == 2
    assert message in err
