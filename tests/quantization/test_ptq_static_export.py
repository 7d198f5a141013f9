from collections import Counter

import onnx
import onnxruntime as ort
import pytest
import torch

import slimkit as sk
from slimkit.measure import sqnr_db


@pytest.mark.slow
def test_qdq_onnx_export_matches_pytorch_int8(tmp_path):
    model = sk.load("example:digits-cnn")
    data = sk.load_data("example:digits")
    q = sk.quantize(model, "int8-static", data=data.calibration, observer="percentile")
    x = next(iter(data.test))[0][:8]
    path = tmp_path / "digits_int8.onnx"
    torch.onnx.export(q, (x,), str(path), dynamo=True, verbose=False)
    ops = Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    assert ops["QuantizeLinear"] >= 13 and ops["DequantizeLinear"] >= 26 + 13
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (y_ort,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        y_torch = q(x)
    assert sqnr_db(y_torch, torch.from_numpy(y_ort)) >= 30
