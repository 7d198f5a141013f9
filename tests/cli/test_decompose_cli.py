import json

import pytest
import torch

import slimkit as sk


def test_decompose_tucker_saves_and_prints_table(run_cli, tmp_path):
    out_dir = tmp_path / "out"
    code, out, _ = run_cli("decompose", "slimkit.models.testing:ResidualNet", "--method", "tucker", "--rank", "0.5",
        "--out", str(out_dir), "-q",
    )  # fmt: skip
    assert code in (0, None)
    assert "MACs" in out and "block.0.0: rank [4, 4]" in out and "shortcut: left as is" in out
    loaded = sk.load(out_dir)
    assert isinstance(loaded.block[0][0], sk.decomposition.TuckerConv)
    assert loaded.block[0][0].rank == (4, 4)
    x = loaded.example_inputs()
    with torch.no_grad():
        assert torch.equal(loaded(*x), sk.load(out_dir)(*x))


def test_decompose_json(run_cli, tmp_path):
    code, out, _ = run_cli(
        "decompose", "slimkit.models.testing:TinyAttention", "--method", "svd", "--rank", "params:0.5",
        "--include", "ffn.*", "--out", str(tmp_path / "o"), "--json",
    )  # fmt: skip
    assert code in (0, None)
    result = json.loads(out)
    assert set(result["details"]["layers"]) == {"ffn.0", "ffn.2"}
    assert result["ratios"]["params"] < 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "lowrank"], "unknown decompose method"),
        (["--rank", "energy:3"], "fraction must be in"),
        (["--include", "nosuch"], "matches no module"),
        (["--finetune-epochs", "1"], "needs --data"),
    ],
)
def test_user_errors_exit_2(run_cli, tmp_path, args, message):
    code, _, err = run_cli("decompose", "slimkit.models.testing:ResidualNet", "--out", str(tmp_path / "o"), *args)
    assert code == 2
    assert message in err
    assert "Traceback" not in err
