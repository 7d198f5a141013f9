"""``slimkit distill`` end to end on a small npz dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import slimkit as sk


@pytest.fixture
def npz(tmp_path: Path) -> str:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((48, 3, 16, 16)).astype(np.float32)
    path = tmp_path / "data.npz"
    np.savez(path, x=x, y=(x[:, 0].mean((1, 2)) > 0).astype(np.int64))
    return str(path)


def test_distill_cli_saves_student_and_prints_comparison(
    run_cli, capsys: pytest.CaptureFixture[str], tmp_path: Path, npz: str
) -> None:
    out = tmp_path / "student"
    code, stdout, err = run_cli(
        "distill",
        "--teacher",
        "slimkit.models.testing:ResidualNet",
        "--student",
        "slimkit.models.testing:InvertedResidual",
        "--data",
        npz,
        "--epochs",
        "1",
        "--temperature",
        "3",
        "--options",
        "alpha=0.5,optimizer=sgd",
        "--out",
        str(out),
        "--json",
    )
    assert code in (0, None), err
    result = json.loads(stdout)
    assert "params" in result["ratios"] and "accuracy" in result["metric_deltas"]
    transform = sk.get_record(sk.load(out)).transforms[-1]
    assert (transform.method, transform.config) == ("kd", {"temperature": 3.0, "alpha": 0.5})


def test_distill_cli_needs_exactly_one_student(
    run_cli, capsys: pytest.CaptureFixture[str], tmp_path: Path, npz: str
) -> None:
    code, _, err = run_cli("distill", "--teacher", "example:digits-cnn", "--data", npz, "--out", str(tmp_path / "out"))
    assert code == 2 and "exactly one of --student" in err


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ("depth=0.5", "depth shrinking needs a transformers encoder"),
        ("depth", "key=value"),
        ("depth=0.5,layers=3", "unknown: layers"),
        ("depth=0.5,spacing=random", "spacing"),
    ],
)
def test_distill_cli_bad_shrink_is_refused(
    run_cli, capsys: pytest.CaptureFixture[str], tmp_path: Path, npz: str, shape: str, message: str
) -> None:
    out = tmp_path / "o"
    teacher = "slimkit.models.testing:ResidualNet"
    code, _, err = run_cli("distill", "--teacher", teacher, "--shrink", shape, "--data", npz, "--out", str(out))
    assert code == 2 and message in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.slow
def test_distill_cli_depth_shrink_adds_layer_hints(run_cli, tmp_path: Path) -> None:
    out = tmp_path / "student"
    code, stdout, err = run_cli(
        "distill",
        "--teacher",
        "example:minilm",
        "--shrink",
        "depth=0.5",
        "--data",
        "example:sentences",
        "--options",
        "loss=mse,steps=2",
        "--out",
        str(out),
        "--json",
    )
    assert code in (0, None), err
    assert "cosine" in json.dumps(json.loads(stdout)["metric_deltas"])
    student = sk.load(out)
    transform = sk.get_record(student).transforms[-1]
    stack = "encoder.encoder.layer"
    assert transform.method == "combined" and transform.config["embedding"]["loss"] == "mse"
    assert transform.config["hint"]["layers"] == {f"{stack}.{i}": f"{stack}.{t}" for i, t in enumerate((2, 4, 5))}
    assert (transform.config["hint"]["weight"], transform.config["hint"]["adapter"]) == (10.0, False)
    assert len(student.encoder.encoder.layer) == 3
