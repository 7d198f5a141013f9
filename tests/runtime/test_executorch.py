import pytest

from slimkit.core.errors import UnsupportedModelError
from slimkit.measure import sqnr_db
from slimkit.models.testing import ZOO
from slimkit.runtime import load
from slimkit.runtime.executorch_runtime import ExecuTorchRuntime
from slimkit.runtime.export import export


@pytest.mark.slow
def test_pte_parity_dynamic_batch_and_thread_pool(tmp_path):
    model = ZOO["attention"]()
    path = export(model, tmp_path / "m.pte")
    rt = load(path)
    assert isinstance(rt, ExecuTorchRuntime)
    x = model.example_inputs()[0]
    for size in (1, 2, 40):  # 40 is past the memory-planned bound: run in slices
        xb = x.repeat(20, 1, 1)[:size]
        assert sqnr_db(model(xb), rt.run(xb)) >= 35.0
    before = ExecuTorchRuntime.pool_threads()
    other = before + 1
    with pytest.warns(UserWarning, match=f"has {before} threads and cannot be resized safely"):
        latency = rt.bench(batch_sizes=(1,), threads=other, budget_s=0.01)
    assert latency[1].runs >= 1 and ExecuTorchRuntime.pool_threads() == before


@pytest.mark.slow
def test_pte_unsupported_op(tmp_path, svd_model):
    with pytest.raises(
        UnsupportedModelError, match=r"ExecuTorch cannot express the op aten._linalg_svd in layer 'body'"
    ):
        export(svd_model, tmp_path / "m.pte")
    assert not (tmp_path / "m.pte").exists()


@pytest.mark.slow
def test_slimkit_int8_static_model_exports_to_pte_and_loads_in_a_fresh_process(tmp_path):
    """Its quantize/dequantize nodes that XNNPACK leaves need ExecuTorch's quantized kernels,
    at export and in any process that loads the program."""
    import subprocess
    import sys

    import slimkit as sk

    splits = sk.load_data("example:digits")
    quantized = sk.quantize(sk.load("example:digits-cnn"), "int8-static", data=splits.calibration)
    expected = sk.profile(quantized, data=splits, batch_sizes=(1,)).metrics["accuracy"]
    path = export(quantized, tmp_path / "m.pte", data=splits)
    code = (
        "import slimkit as sk; s = sk.load_data('example:digits'); "
        f"print(sk.profile({str(path)!r}, data=s, batch_sizes=(1,)).metrics['accuracy'])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert abs(float(done.stdout.strip().splitlines()[-1]) - expected) <= 0.01


@pytest.mark.slow
def test_a_channels_last_model_exports_at_any_batch_bound_and_stays_channels_last(tmp_path):
    import torch

    import slimkit as sk

    model = sk.accelerate(ZOO["residual"]().eval(), "fuse", channels_last=True)
    assert not model.stem[0][0].weight.is_contiguous()  # XNNPACK's layout pass wanted NCHW weights
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    for bound in (1024, 2):  # a bound below the example batch exports the example cut to it
        runtime = load(export(model, tmp_path / f"m{bound}.pte", example_inputs=(x,), max_batch=bound))
        assert runtime.max_batch == bound if bound < len(x) else runtime.max_batch >= len(x)
        with torch.no_grad():
            assert sqnr_db(model(x), runtime.run(x)) >= 35.0
    assert not model.stem[0][0].weight.is_contiguous()  # the model given is left as it was
