"""GPTQ: beats round-to-nearest on correlated inputs, matches a float64 reference, round-trips."""

import pytest
import torch
from torch import nn

import slimkit as sk
from slimkit.core.data import TensorData
from slimkit.core.errors import DataError, InvalidConfigError
from slimkit.core.statistics import InputHessian
from slimkit.measure import evaluate
from slimkit.quantization.algorithms.gptq_core import gptq_quantize
from slimkit.quantization.modules import WeightOnlyLinear, weight_spec


def correlated_inputs(rows: int, features: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    latent = torch.randn(rows, 6, generator=g)
    return latent @ torch.randn(6, features, generator=g) + 0.05 * torch.randn(rows, features, generator=g)


def hessian(x: torch.Tensor) -> torch.Tensor:
    acc = InputHessian(x.shape[1])
    for chunk in x.split(100):  # batched accumulation must equal the one-shot 2XᵀX/N
        acc.add(chunk)
    return acc.hessian


def reference_gptq(weight, h, spec, group, damp=0.01):
    """Textbook GPTQ in float64: one column at a time, no blocks, no lazy updates."""
    w, h = weight.double().clone(), h.double().clone()
    h += damp * h.diagonal().mean() * torch.eye(h.shape[0], dtype=torch.float64)
    hinv = torch.linalg.cholesky(torch.linalg.inv(h), upper=True)
    col = spec.with_(axis=0, group_size=None)
    codes = torch.zeros_like(w, dtype=torch.int64)
    for j in range(w.shape[1]):
        if j % group == 0:
            scale, zero = col.qparams(*col.minmax(w[:, j : j + group]))
        q = col.quantize(w[:, j : j + 1], scale, zero)
        codes[:, j] = q[:, 0].long()
        err = (w[:, j] - col.dequantize(q, scale, zero, dtype=torch.float64)[:, 0]) / hinv[j, j]
        w[:, j:] -= err[:, None] * hinv[j, j:][None, :]
    return codes


@pytest.mark.parametrize("group", [None, 8])
def test_gptq_output_error_below_round_to_nearest(group):
    x = correlated_inputs(1024, 64)
    w = torch.randn(48, 64, generator=torch.Generator().manual_seed(1))
    spec = weight_spec(3, group or 64, symmetric=False)
    codes, scale, zero = gptq_quantize(w, hessian(x), spec, block_size=16)
    rtn = spec.dequantize(*spec.quantize_tensor(w))
    gptq = spec.dequantize(codes, scale, zero)
    error = lambda wq: float((x @ w.T - x @ wq.T).norm())  # noqa: E731
    assert error(gptq) < 0.6 * error(rtn)


@pytest.mark.parametrize("group", [4, 12])
def test_gptq_matches_float64_reference(group):
    x = correlated_inputs(256, 12).double()
    w = torch.randn(6, 12, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    h = 2 * x.T @ x / x.shape[0]
    spec = weight_spec(4, group, symmetric=False)
    codes, _, _ = gptq_quantize(w, h.clone(), spec, block_size=4)  # several lazy blocks
    assert torch.equal(codes.long(), reference_gptq(w, h, spec, group))


def test_hessian_accumulator_matches_dense():
    x = correlated_inputs(300, 10)
    torch.testing.assert_close(hessian(x), 2 * x.T @ x / 300, rtol=1e-5, atol=1e-5)


def test_act_order_keeps_contiguous_groups():
    x = correlated_inputs(512, 32) * torch.linspace(0.1, 3, 32)
    w = torch.randn(16, 32)
    spec = weight_spec(4, 8, symmetric=True)
    codes, scale, zero = gptq_quantize(w, hessian(x), spec, act_order=True)
    assert scale.shape == (16, 4) and codes.dtype == torch.uint8
    rtn = spec.dequantize(*spec.quantize_tensor(w))
    err = lambda wq: float((x @ (w - wq).T).norm())  # noqa: E731
    assert err(spec.dequantize(codes, scale, zero)) < err(rtn)


def calibration():
    return TensorData(torch.randn(64, 8, 32, generator=torch.Generator().manual_seed(3)), batch_size=16)


def test_gptq_method_packs_like_weight_only_and_round_trips(tmp_path):
    model = sk.load("slimkit.models.testing:TinyAttention")
    data = calibration()
    q = sk.quantize(model, "gptq", data=data, bits=4, group_size=16)
    assert isinstance(q.query, WeightOnlyLinear) and q.query.packed.qweight.dtype == torch.uint8
    assert isinstance(model.query, nn.Linear)  # input untouched
    rtn = sk.quantize(model, "weight-only", bits=4, group_size=16, embeddings=False)
    fid_gptq = evaluate(q, data, "fidelity", reference=model)["sqnr_db"]
    fid_rtn = evaluate(rtn, data, "fidelity", reference=model)["sqnr_db"]
    assert fid_gptq > fid_rtn
    sk.save(q, tmp_path / "q")
    loaded = sk.load(tmp_path / "q")
    x = data.x[:4]
    assert torch.equal(loaded(x), q(x))


def test_gptq_group_not_dividing_pads():
    model = sk.load("slimkit.models.testing:TinyAttention")
    q = sk.quantize(model, "gptq", data=calibration(), bits=3, group_size=12, include="ffn.*")
    assert q.ffn[0].packed.n_groups == 3 and isinstance(q.query, nn.Linear)
    x = calibration().x[:4]
    assert evaluate(q, [x], "fidelity", reference=model)["cosine"] > 0.99


def test_gptq_bad_inputs():
    model = sk.load("slimkit.models.testing:TinyAttention")
    with pytest.raises(DataError, match="calibration data"):
        sk.quantize(model, "gptq")
    bad = calibration().x.clone()
    bad[20, 0, 0] = float("nan")
    with pytest.raises(DataError, match="batch 1"):
        sk.quantize(model, "gptq", data=TensorData(bad, batch_size=16))
    with pytest.raises(InvalidConfigError, match="bits"):
        sk.quantize(model, "gptq", data=calibration(), bits=9)
    with pytest.raises(DataError, match="no batches|empty"):
        sk.quantize(model, "gptq", data=[])
