import json

import onnx
import pytest

import slimkit as sk

MODEL = "slimkit.models.testing:GroupedConvNet"


def test_export_writes_verified_files_and_refuses_existing(run_cli, tmp_path):
    code, out, _ = run_cli("export", MODEL, "--to", "onnx,pt2", "--out", str(tmp_path / "out"), "--json")
    assert code in (0, None)
    sizes = json.loads(out)
    assert set(sizes) == {str(tmp_path / "out" / "model.onnx"), str(tmp_path / "out" / "model.pt2")}
    assert onnx.load(str(tmp_path / "out" / "model.onnx")).graph.node
    code, _, err = run_cli("export", MODEL, "--to", "onnx", "--out", str(tmp_path / "out"))
    assert code == 2 and "--overwrite" in err


def test_export_bad_format_and_unwritable_out(run_cli, tmp_path):
    code, _, err = run_cli("export", MODEL, "--to", "onnx,coreml", "--out", str(tmp_path / "out"))
    assert code == 2 and "onnx, pte, tflite, pt2" in err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run_cli("export", MODEL, "--to", "onnx", "--out", str(blocker / "sub"))
    assert code == 2 and "cannot write" in err


@pytest.mark.slow
def test_export_options_go_to_the_formats_that_take_them(run_cli, tmp_path):
    out_dir = tmp_path / "out"
    code, out, _ = run_cli("export", MODEL, "--to", "onnx,pte", "-o", "opset=18", "-o", "max_batch=1",
                           "--out", str(out_dir))  # fmt: skip
    assert code in (0, None)
    assert onnx.load(str(out_dir / "model.onnx")).opset_import[0].version == 18
    assert sk.runtime.load(out_dir / "model.pte").max_batch == 1
    assert "plans" in out and "of activations" in out
    code, _, err = run_cli("export", MODEL, "--to", "onnx", "-o", "max_batch=1", "--out", str(tmp_path / "o2"))
    assert code == 2 and "max_batch" in err and "onnx: opset, accuracy_level" in err
    assert not (tmp_path / "o2").exists()


def test_bench_table_across_runtimes(run_cli, tmp_path):
    code, out, _ = run_cli(
        "bench", MODEL, "--runtime", "torch,onnxruntime", "--batch-sizes", "1,2", "--threads", "1", "--json"
    )
    assert code in (0, None)
    rows = json.loads(out)
    assert {(r["runtime"], r["batch"]) for r in rows} == {(rt, b) for rt in ("torch", "onnxruntime") for b in (1, 2)}
    assert all(r["p90_ms"] >= r["p50_ms"] > 0 for r in rows)


def test_bench_unknown_runtime(run_cli):
    code, _, err = run_cli("bench", MODEL, "--runtime", "tensorrt")
    assert code == 2 and "torch, onnxruntime, executorch, tflite" in err
