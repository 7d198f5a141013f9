import json
import pickle
import subprocess
import sys

import pytest

from slimkit.models.testing import ResidualNet


@pytest.mark.slow
def test_profile_example_json(run_cli):
    code, out, _ = run_cli("profile", "example:digits-cnn", "--json", "--batch-sizes", "1,32")
    assert code in (0, None)
    result = json.loads(out)
    assert set(result["latency"]) == {"1", "32"}
    assert result["metrics"]["accuracy"] >= 0.98
    assert 150_000 <= result["params"] <= 300_000
    assert result["macs"] > 0 and result["size_bytes"] > 4 * result["params"] * 0.99


def test_profile_table_for_factory_model(run_cli, tmp_path):
    from safetensors.torch import save_file

    save_file(ResidualNet().state_dict(), tmp_path / "w.safetensors")
    code, out, _ = run_cli(
        "profile",
        "slimkit.models.testing:ResidualNet",
        "--weights",
        str(tmp_path / "w.safetensors"),
        "--batch-sizes",
        "1",
        "-q",
    )
    assert code in (0, None)
    assert "MACs" in out and "latency bs=1" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["profile", "no/such/model"], "does not exist"),
        (["profile", "example:nope"], "unknown example"),
        (["profile", "???"], "malformed model spec"),
        (["profile", "example:digits-cnn", "--batch-sizes", "0"], "--batch-sizes"),
        (["profile", "example:digits-cnn", "--data", "nope.npz"], "does not exist"),
    ],
)
def test_user_errors_exit_2_with_one_line(run_cli, args, message):
    code, out, err = run_cli(*args)
    assert code == 2
    assert message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 2  # one message (may wrap once)


def test_wrong_shape_data_is_a_user_error(run_cli, tmp_path):
    import numpy as np

    np.savez(tmp_path / "bad.npz", x=np.ones((4, 3, 7, 7), dtype=np.float32), y=np.zeros(4))
    code, _, err = run_cli("profile", "example:digits-cnn", "--data", str(tmp_path / "bad.npz"))
    assert code == 2 and "forward failed" in err


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_cli_refuses_code_running_pickle_in_subprocess(tmp_path):
    marker = tmp_path / "pwned"
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump(_Evil(str(marker)), f)
    proc = subprocess.run(
        [sys.executable, "-m", "slimkit", "profile", str(tmp_path / "evil.pt")], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "--trust-pickle" in proc.stderr and "Traceback" not in proc.stderr
    assert not marker.exists()


def test_help_lists_commands():
    proc = subprocess.run([sys.executable, "-m", "slimkit", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "profile" in proc.stdout and "demo" in proc.stdout


def test_import_is_lean():
    heavy = ("onnx", "onnxruntime", "executorch", "transformers", "sklearn", "optuna", "rich", "typer")
    code = f"import sys, slimkit; print([m for m in {heavy!r} if m in sys.modules])"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"
