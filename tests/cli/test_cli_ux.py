"""The command line's shared behaviour: --version, -v/-q, --threads default, tables at 80 columns,
the --out rule of single-verb commands, and a user's model that has only --data for inputs."""

from __future__ import annotations

import json
import logging

import pytest
from rich.console import Console

from slimkit.cli import take_allow_modules
from slimkit.cli.logs import NORMAL, QUIET, VERBOSE, configure_logging, verbosity_from_argv
from slimkit.measure.latency import Latency
from slimkit.measure.profile import Profile, compare

MODEL = "slimkit.models.testing:ResidualNet"


def test_version(run_cli):
    import slimkit

    code, out, _ = run_cli("--version")
    assert code == 0 and out.strip() == f"slimkit {slimkit.__version__}"


def test_verbose_anywhere_and_allow_module_taken_out_of_the_line():
    assert verbosity_from_argv(["export", "m", "-v"]) == (["export", "m"], VERBOSE)
    assert verbosity_from_argv(["--verbose", "bench", "m"]) == (["bench", "m"], VERBOSE)
    assert verbosity_from_argv(["bench", "m", "-q"]) == (["bench", "m", "-q"], QUIET)
    assert verbosity_from_argv(["bench", "--", "-v"]) == (["bench", "--", "-v"], NORMAL)
    args = ["export", "out", "--allow-module", "mypkg", "--allow-module=other.pkg", "--to", "onnx"]
    assert take_allow_modules(args) == (["export", "out", "--to", "onnx"], ["mypkg", "other.pkg"])


def test_logging_levels_follow_verbosity():
    configure_logging(VERBOSE)
    assert logging.getLogger("slimkit").level == logging.DEBUG and logging.getLogger("torch").level == logging.INFO
    configure_logging(QUIET)
    assert logging.getLogger("slimkit").level == logging.ERROR
    configure_logging(NORMAL)
    assert logging.getLogger("slimkit").level == logging.WARNING
    assert logging.getLogger("torchao").level == logging.ERROR  # "Failed to load ..." noise
    assert len([h for h in logging.getLogger("slimkit").handlers if getattr(h, "_slimkit_cli", False)]) == 1


def _profile(name: str, metrics: dict[str, float], noisy: bool, lower: list[str]) -> Profile:
    lat = {bs: Latency(0.5 * bs, 0.9 * bs, 0.6 * bs, 20, 1.8 if noisy else 1.05, noisy) for bs in (1, 32, 128)}
    return Profile(
        name, "onnxruntime", 123_456_789, 61_000_000, 987_654_321, 12_345_678_901, {"conv": 1}, lat, 456_789_012,
        metrics, threads=1, lower_is_better=lower,
    )  # fmt: skip


def _tables():
    from slimkit.cli.export import bench_table
    from slimkit.report import comparison_table, profile_table

    metrics = {"accuracy": 0.98765, "cosine": 0.99999, "sqnr_db": 41.2, "word_error_rate_on_validation": 12345.678}
    before = _profile("mypkg.models:a_rather_long_factory_name_for_a_model", metrics, False, [])
    after = _profile("int8-static -> out/a/deeply/nested/folder", metrics, True, ["word_error_rate_on_validation"])
    rows = [
        {"runtime": rt, "batch": bs, "p50_ms": 12345.678, "p90_ms": 2345.678, "spread": 1.9, "noisy": True,
         "threads": 1, "metrics": {"word_error_rate_on_validation": 0.1234, "accuracy": 0.9}}
        for rt in ("torch", "onnxruntime[Tensorrt]") for bs in (1, 32)
    ]  # fmt: skip
    bench = bench_table(rows, "latency of m (1 thread)")
    return [profile_table(after), comparison_table(compare(before, after)), bench]


def test_every_table_fits_80_columns_with_nothing_cut():
    for table in _tables():
        console = Console(record=True, width=80)
        console.print(table)
        text = console.export_text()
        assert "…" not in text, text
        assert all(len(line) <= 80 for line in text.splitlines()), text
        columns = _columns(text)
        for needed in ("word_error_rate_on_validation", "noisy", "12345.678" if "bench" in str(table.title) else ""):
            assert any(needed in column for column in columns) or needed in "".join(text.split()), (needed, text)


def _columns(text: str) -> list[str]:
    """Each table column's text, top to bottom, whitespace removed (wrapped cells read whole again)."""
    import re

    parts: dict[int, list[str]] = {}
    for line in text.splitlines():
        if line.startswith(("│", "┃")):
            for i, cell in enumerate(re.split("[│┃]", line)[1:-1]):
                parts.setdefault(i, []).append("".join(cell.split()))
    return ["".join(cells) for cells in parts.values()]


def test_single_verb_commands_refuse_an_existing_out_and_replace_it_whole(run_cli, tmp_path):
    out = tmp_path / "out"
    args = ["prune", MODEL, "--method", "channels", "--ratio", "0.5", "--out", str(out), "--json"]
    code, stdout, _ = run_cli(*args)
    assert code == 0 and json.loads(stdout)["after"]["threads"] == 1
    (out / "stale.onnx").write_text("an old export that must not survive")
    code, _, err = run_cli(*args)
    assert code == 2 and "already exists" in err and "--overwrite" in err
    code, _, _ = run_cli(*args, "--overwrite")
    assert code == 0 and not (out / "stale.onnx").exists() and (out / "slimkit.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # nothing staged or moved aside is left
    code, _, err = run_cli("quantize", MODEL, "--out", str(tmp_path / "q"), "--threads", "0")
    assert code == 2


def test_out_that_would_swallow_the_input_is_refused(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli("decompose", MODEL, "--out", ".", "--overwrite")
    assert code == 2 and "current folder" in err


@pytest.mark.slow
def test_own_model_gets_inputs_from_data_in_export_bench_and_profile(run_cli, own_project, monkeypatch):
    import onnxruntime  # noqa: F401 (required: make test installs every extra)

    monkeypatch.chdir(own_project)
    data = ["--data", "mypkg.data:splits"]
    code, _, err = run_cli("export", "mypkg.models:trained_net", "--to", "onnx", "--out", "deploy")
    assert code == 2 and "--data" in err and "example_inputs" in err
    code, _, err = run_cli("export", "mypkg.models:trained_net", "--to", "onnx", *data, "--out", "deploy")
    assert code == 0, err
    code, out, err = run_cli("bench", "mypkg.models:trained_net", *data, "--batch-sizes", "1", "--json",
                             "--metric", "mypkg.metrics:error_rate")  # fmt: skip
    rows = json.loads(out)
    assert {r["runtime"] for r in rows} == {"torch", "onnxruntime"} and all(r["threads"] == 1 for r in rows)
    errors = {r["runtime"]: r["metrics"]["error_rate"] for r in rows}
    assert errors["onnxruntime"] == pytest.approx(errors["torch"], abs=0.02)
    code, out, err = run_cli("profile", "deploy/model.onnx", *data, "--metric", "mypkg.metrics:error_rate",
                             "--batch-sizes", "1", "--json")  # fmt: skip
    assert code == 0, err
    prof = json.loads(out)
    assert prof["runtime"] == "onnxruntime" and prof["lower_is_better"] == ["error_rate"]
    assert prof["metrics"]["error_rate"] == pytest.approx(errors["onnxruntime"], abs=1e-6)
    code, _, err = run_cli("profile", "deploy/model.onnx", "--metric", "accuracy", "--lower-is-better")
    assert code == 2 and "higher-is-better" in err


def test_native_log_lines_routed_through_python_are_held_back():
    import io

    from slimkit.cli.logs import _NativeLinesDropped

    shown, hidden = io.StringIO(), []
    stream = _NativeLinesDropped(shown, hidden)
    pieces = ["[", "cpuinfo_utils.cpp", ":", "71", "] ", "Reading", "\n", "bar 50%\r", "[bold] text\n"]
    pieces.append("ok\n[x.cc:3] y\nz\n")
    for piece in pieces:
        stream.write(piece)
    stream.flush()
    assert shown.getvalue() == "bar 50%\r[bold] text\nok\nz\n"
    assert hidden == ["[cpuinfo_utils.cpp:71] Reading\n", "[x.cc:3] y\n"]
