import sys

import onnx
import pytest
import torch
from torch import nn

import slimkit as sk
from slimkit.core.errors import InvalidConfigError, MissingExtraError, UnsupportedModelError
from slimkit.core.samples import example_batch
from slimkit.measure import count_params, sqnr_db
from slimkit.models.testing import ZOO
from slimkit.runtime import load
from slimkit.runtime.export import export
from slimkit.runtime.onnx_runtime import OnnxRuntime


@pytest.fixture(scope="module")
def residual_onnx(tmp_path_factory):
    model = ZOO["residual"]()
    return model, export(model, tmp_path_factory.mktemp("onnx") / "residual.onnx")


def _check_parity(model, path, sizes=(1, 5)):
    rt = load(path)
    x = example_batch(model, None, None).args[0]
    for size in sizes:
        xb = x.repeat(size, *([1] * (x.dim() - 1)))[:size] if size > len(x) else x[:size]
        with torch.no_grad():
            ref = model(xb)
        assert sqnr_db(ref, rt.run(xb)) >= 35.0
    return rt


def test_conv_parity_and_dynamic_batch(residual_onnx):
    model, path = residual_onnx
    rt = _check_parity(model, path, sizes=(1, 2, 7))
    assert isinstance(rt.session.get_inputs()[0].shape[0], str)  # symbolic, not baked in


def test_attention_parity_and_dynamic_batch(tmp_path):
    model = ZOO["attention"]()
    path = export(model, tmp_path / "m.onnx")
    rt = _check_parity(model, path, sizes=(1, 2, 7))
    assert isinstance(rt.session.get_inputs()[0].shape[0], str)  # symbolic, not baked in


@pytest.mark.slow
def test_digits_cnn_parity_and_accuracy(tmp_path):
    model = sk.load("example:digits-cnn")
    path = sk.export(model, tmp_path / "digits.onnx")
    _check_parity(model, path, sizes=(1, 32))
    test = sk.load_data("example:digits").test
    prof = sk.profile(path, data=test, batch_sizes=(1,))
    torch_acc = sk.measure.evaluate(model, test, "accuracy")["accuracy"]
    assert prof.runtime == "onnxruntime" and abs(prof.metrics["accuracy"] - torch_acc) <= 0.005
    assert prof.size_bytes == path.stat().st_size and prof.macs is None


def test_profile_artifact_counts_stored_weights(residual_onnx):
    model, path = residual_onnx
    prof = sk.profile(path, batch_sizes=(1, 3))
    assert set(prof.latency) == {1, 3}
    # BatchNorm is folded into the convolutions: the file holds fewer elements than the module
    assert 0.8 * count_params(model) <= prof.params <= count_params(model)
    assert prof.size_bytes == path.stat().st_size and prof.runtime == "onnxruntime"


def test_threads_set_on_the_session(residual_onnx):
    rt = load(residual_onnx[1])
    seen = []
    run = rt.run_batch

    def spy(batch):
        seen.append(rt.session.get_session_options().intra_op_num_threads)
        return run(batch)

    rt.run_batch = spy
    rt.bench(batch_sizes=(1,), threads=1, budget_s=0.01)
    assert seen and set(seen) == {1}
    assert rt.threads is None  # restored after the block


def test_pruned_model_exports_its_smaller_graph(tmp_path):
    torch.manual_seed(0)
    wide = nn.Sequential(nn.Linear(16, 256), nn.ReLU(), nn.Linear(256, 4)).eval()
    keep = torch.arange(0, 256, 2)  # prune half the hidden neurons by hand
    narrow = nn.Sequential(nn.Linear(16, 128), nn.ReLU(), nn.Linear(128, 4)).eval()
    with torch.no_grad():
        narrow[0].weight.copy_(wide[0].weight[keep])
        narrow[0].bias.copy_(wide[0].bias[keep])
        narrow[2].weight.copy_(wide[2].weight[:, keep])
        narrow[2].bias.copy_(wide[2].bias)
    x = torch.randn(3, 16)
    big = export(wide, tmp_path / "wide.onnx", example_inputs=(x,))
    small = export(narrow, tmp_path / "narrow.onnx", example_inputs=(x,))
    dims = [list(i.dims) for i in onnx.load(str(small)).graph.initializer]
    assert [128, 16] in dims or [16, 128] in dims
    assert small.stat().st_size < 0.6 * big.stat().st_size
    assert sqnr_db(narrow(x), load(small).run(x)) >= 35.0


@pytest.mark.slow
def test_int8_static_is_a_qdq_graph(tmp_path):
    model = ZOO["residual"]()
    calib = [torch.randn(4, 3, 16, 16) for _ in range(4)]
    path = export(model, tmp_path / "q.onnx", quantize="int8", data=calib)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    x = model.example_inputs()[0]
    assert sqnr_db(model(x), load(path).run(x)) >= 15.0


@pytest.mark.slow
def test_int8_dynamic_quantizes_matmuls(tmp_path):
    model = ZOO["attention"]()
    path = export(model, tmp_path / "d.onnx", quantize="int8-dynamic")
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "DynamicQuantizeLinear" in ops and ({"MatMulInteger", "DynamicQuantizeMatMul"} & ops)
    x = model.example_inputs()[0]
    assert sqnr_db(model(x), load(path).run(x)) >= 20.0


def test_failed_verification_leaves_no_file(tmp_path, monkeypatch):
    from slimkit.runtime.verify import Parity

    export_module = sys.modules["slimkit.runtime.export"]  # the module (the package attribute is the function)

    monkeypatch.setattr(export_module, "parity", lambda *a, **k: Parity(0.5, 12.0, (1, 3)))  # a lossy runtime
    target = tmp_path / "out" / "m.onnx"
    with pytest.raises(UnsupportedModelError, match=r"SQNR 12.0 dB < 35.0 dB"):
        export(nn.Sequential(nn.Linear(4, 2)).eval(), target, example_inputs=(torch.randn(2, 4),))
    assert not target.exists()
    assert list((tmp_path / "out").iterdir()) == []  # no staging leftovers


def test_artifact_its_runtime_cannot_run_is_refused_cleanly(tmp_path, monkeypatch):
    from slimkit.runtime.onnx_runtime import OnnxRuntime

    def refuse(self, batch):
        raise RuntimeError("kernel EMBEDDING_LOOKUP failed to prepare\nlong native trace")

    monkeypatch.setattr(OnnxRuntime, "run_batch", refuse)
    target = tmp_path / "out" / "m.onnx"
    message = r"does not run in its own runtime \(batch 1\): kernel EMBEDDING"
    with pytest.raises(UnsupportedModelError, match=message) as err:
        export(nn.Sequential(nn.Linear(4, 2)).eval(), target, example_inputs=(torch.randn(2, 4),))
    assert "long native trace" not in str(err.value) and "no file was written" in str(err.value)
    assert not target.exists() and list((tmp_path / "out").iterdir()) == []


def test_existing_file_is_refused_unless_overwrite(tmp_path):
    target = tmp_path / "m.onnx"
    target.write_bytes(b"keep me")
    model = nn.Sequential(nn.Linear(4, 2)).eval()
    with pytest.raises(InvalidConfigError, match="overwrite"):
        export(model, target, example_inputs=(torch.randn(2, 4),))
    assert target.read_bytes() == b"keep me"
    export(model, target, example_inputs=(torch.randn(2, 4),), overwrite=True)
    assert onnx.load(str(target)).graph.node


def test_unwritable_path(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    with pytest.raises(InvalidConfigError, match="cannot write"):
        export(ZOO["residual"](), blocker / "m.onnx")


def test_bad_suffix_and_option(tmp_path):
    with pytest.raises(InvalidConfigError, match=".onnx, .pte, .tflite, .pt2"):
        export(ZOO["residual"](), tmp_path / "m.zip")
    with pytest.raises(InvalidConfigError, match="opset"):
        export(ZOO["residual"](), tmp_path / "m.onnx", batch_size=4)
    with pytest.raises(InvalidConfigError, match="int8-dynamic"):
        export(ZOO["residual"](), tmp_path / "m.onnx", quantize="int3")


def test_unsupported_op_names_op_and_layer(tmp_path, svd_model):
    with pytest.raises(UnsupportedModelError, match=r"_linalg_svd.*layer 'body'") as info:
        export(svd_model, tmp_path / "m.onnx")
    assert "replace that layer" in str(info.value)
    assert not (tmp_path / "m.onnx").exists()


def test_missing_extra_names_the_pip_extra(tmp_path, monkeypatch, residual_onnx):
    path = residual_onnx[1]
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingExtraError, match=r"slimkit\[onnx\]"):
        OnnxRuntime(path)
    with pytest.raises(MissingExtraError, match=r"slimkit\[onnx\]"):
        export(ZOO["residual"](), tmp_path / "n.onnx")


def test_pt2_round_trip(tmp_path):
    model = ZOO["grouped"]()
    path = sk.export(model, tmp_path / "m.pt2")
    rt = load(path)
    x = model.example_inputs()[0]
    assert rt.name == "torch" and torch.allclose(rt.run(x), model(x), atol=1e-5)


def test_a_reshape_of_a_transposed_tensor_gets_a_contiguous_copy_and_exports(tmp_path):
    """T5's attention (a reshape of a transposed tensor): torch's ONNX decomposition could not
    prove the view valid for symbolic shapes; the export copies the tensor first."""
    import torch
    from torch import nn

    import slimkit as sk
    from slimkit.runtime.tracing import contiguous_views

    class MergeHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(16, 16)

        def forward(self, x):
            b, s, _ = x.shape
            heads = self.proj(x).view(b, s, 4, 4).transpose(1, 2)  # (b, heads, s, 4), not contiguous
            return heads.reshape(b, 4, -1) * 2

    model, x = MergeHeads().eval(), torch.randn(2, 5, 16)
    dims = {"x": {0: torch.export.Dim("batch", min=1), 1: torch.export.Dim("seq", min=2)}}
    program = contiguous_views(torch.export.export(model, (x,), dynamic_shapes=dims))
    clones = [n for n in program.graph.nodes if n.target is torch.ops.aten.clone.default]
    assert clones and all(n.kwargs["memory_format"] is torch.contiguous_format for n in clones)
    torch.testing.assert_close(program.module()(x), model(x))
    assert sk.export(model, tmp_path / "m.onnx", example_inputs=(x,)).stat().st_size > 0  # verified in onnxruntime
