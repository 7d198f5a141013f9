"""Distillation losses against float64 hand computations, limits and properties."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from slimkit.core.errors import UnsupportedModelError
from slimkit.distillation.losses import (
    attention_loss,
    attention_map,
    embedding_loss,
    hint_loss,
    hinton_loss,
    kd_loss,
)


def _logits(rows: int = 6, classes: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return (
        torch.randn(rows, classes, generator=gen, dtype=torch.float64) * 3,
        torch.randn(rows, classes, generator=gen, dtype=torch.float64) * 3,
    )


def test_kd_loss_equals_hand_computation() -> None:
    s, t = _logits()
    temp = 4.0
    expected = 0.0
    for row_s, row_t in zip(s.tolist(), t.tolist(), strict=True):
        zs = [math.exp(v / temp) for v in row_s]
        zt = [math.exp(v / temp) for v in row_t]
        ps = [v / sum(zs) for v in zs]
        pt = [v / sum(zt) for v in zt]
        expected += sum(a * math.log(a / b) for a, b in zip(pt, ps, strict=True))
    expected = expected / len(s) * temp**2
    assert float(kd_loss(s, t, temp)) == pytest.approx(expected, rel=1e-12)


def test_kd_high_temperature_limit_is_half_the_centered_logit_mse() -> None:
    """Hinton et al.: as T grows, T²·KL -> (1/2C)·Σ(d - mean d)² with d = s - t, and the
    gradient -> (d - mean d)/(C·N) (the logit-matching limit)."""
    s, t = _logits()
    s.requires_grad_(True)
    loss = kd_loss(s, t, temperature=1e4)
    d = (s - t).detach()
    centered = d - d.mean(1, keepdim=True)
    limit = 0.5 * centered.pow(2).mean(1).mean()
    assert float(loss.detach()) == pytest.approx(float(limit), rel=1e-3)
    (grad,) = torch.autograd.grad(loss, s)
    expected = centered / (d.shape[1] * d.shape[0])
    torch.testing.assert_close(grad, expected, rtol=0, atol=1e-3 * float(expected.abs().max()))


def test_hinton_loss_mixes_soft_and_hard_terms() -> None:
    s, t = _logits()
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    mixed = hinton_loss(s, t, y, temperature=2.0, alpha=0.7)
    expected = 0.7 * kd_loss(s, t, 2.0) + 0.3 * F.cross_entropy(s, y)
    torch.testing.assert_close(mixed, expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(hinton_loss(s, t, None, 2.0, 0.7), kd_loss(s, t, 2.0))


def test_sequence_logits_are_flattened_to_rows() -> None:
    s, t = torch.randn(2, 3, 4, dtype=torch.float64), torch.randn(2, 3, 4, dtype=torch.float64)
    torch.testing.assert_close(kd_loss(s, t, 3.0), kd_loss(s.reshape(6, 4), t.reshape(6, 4), 3.0))


def test_output_shape_mismatch_names_both_shapes() -> None:
    with pytest.raises(UnsupportedModelError, match=r"\(4, 10\).*\(4, 5\)"):
        kd_loss(torch.randn(4, 10), torch.randn(4, 5), 4.0)
    with pytest.raises(UnsupportedModelError, match=r"\(2, 8\).*\(2, 16\)"):
        embedding_loss(torch.randn(2, 8), torch.randn(2, 16))


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 5),
    st.integers(2, 7),
    st.floats(0.5, 20.0),
    st.floats(-50, 50),
    st.integers(0, 10_000),
)
def test_kd_loss_is_nonnegative_and_shift_invariant(
    rows: int, classes: int, temp: float, shift: float, seed: int
) -> None:
    s, t = _logits(rows, classes, seed)
    assert float(kd_loss(s, t, temp)) >= -1e-12
    assert float(kd_loss(t + shift, t, temp)) == pytest.approx(0.0, abs=1e-9)
    assert float(kd_loss(s + shift, t, temp)) == pytest.approx(float(kd_loss(s, t, temp)), rel=1e-9, abs=1e-12)


def test_attention_map_matches_definition() -> None:
    x = torch.randn(3, 4, 5, 6, dtype=torch.float64)
    manual = x.pow(2).mean(1).reshape(3, -1)
    manual = manual / manual.norm(dim=1, keepdim=True)
    torch.testing.assert_close(attention_map(x), manual, rtol=1e-12, atol=0)


@settings(max_examples=30, deadline=None)
@given(st.floats(0.1, 100.0), st.integers(1, 6), st.integers(0, 1000))
def test_attention_loss_ignores_scale_and_channel_count(scale: float, channels: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    t = torch.randn(2, 3, 4, 4, generator=gen, dtype=torch.float64)
    same_map = t.pow(2).mean(1, keepdim=True).sqrt().expand(2, channels, 4, 4) * scale
    assert float(attention_loss(same_map, t)) == pytest.approx(0.0, abs=1e-12)
    assert float(attention_loss(torch.randn(2, channels, 4, 4, generator=gen, dtype=torch.float64), t)) > 0


def test_attention_loss_resizes_student_maps_and_rejects_2d() -> None:
    s, t = torch.randn(2, 3, 8, 8), torch.randn(2, 5, 4, 4)
    assert torch.isfinite(attention_loss(s, t))
    with pytest.raises(UnsupportedModelError, match="attention transfer needs"):
        attention_map(torch.randn(2, 3))


def test_hint_and_embedding_losses() -> None:
    s, t = torch.randn(4, 8, dtype=torch.float64), torch.randn(4, 8, dtype=torch.float64)
    torch.testing.assert_close(hint_loss(s, t), ((s - t) ** 2).mean())
    torch.testing.assert_close(embedding_loss(s, t, "mse"), ((s - t) ** 2).mean())
    cos = (s * t).sum(1) / (s.norm(dim=1) * t.norm(dim=1))
    torch.testing.assert_close(embedding_loss(s, t), (1 - cos).mean())
    assert float(embedding_loss(3 * t, t)) == pytest.approx(0.0, abs=1e-12)
