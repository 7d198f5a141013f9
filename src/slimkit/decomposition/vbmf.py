"""Analytic empirical variational Bayesian matrix factorization (EVBMF) rank estimation.

Nakajima, Sugiyama, Babacan and Tomioka, "Global analytic solution of fully-observed
variational Bayesian matrix factorization", JMLR 14 (2013). With the noise variance
unknown, EVBMF estimates it by minimizing the free energy over a bounded interval; the
rank is then the number of singular values above the analytic threshold. Used by Kim et
al. (2016) to pick Tucker-2 ranks of convolution kernels.
"""

from __future__ import annotations

import math

import torch

from slimkit.decomposition.base import singular_values

_TAU_CONSTANT = 2.5129
"""Solution of the threshold equation in Theorem 4 of Nakajima et al. (2013)."""
_GRID = 2048


def _tau(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """The shrinkage function ``tau(x; alpha)``, valid for ``x`` above the threshold."""
    shifted = x - (1 + alpha)
    return 0.5 * (shifted + torch.sqrt((shifted**2 - 4 * alpha).clamp_min(0)))


def _free_energy(sigma2: torch.Tensor, s2: torch.Tensor, m: int, alpha: float, x_bar: float) -> torch.Tensor:
    """EVBMF free energy (up to constants) for each noise variance in ``sigma2`` (shape [G])."""
    x = s2[None, :] / (m * sigma2[:, None])
    above = x > x_bar
    safe = torch.where(above, x, torch.full_like(x, x_bar + 1))
    tau = _tau(safe, alpha)
    below_terms = torch.where(above, 0.0, x - torch.log(x))
    above_terms = torch.where(above, safe - tau + torch.log((tau + 1) / safe) + alpha * torch.log(tau / alpha + 1), 0.0)
    return (below_terms + above_terms).sum(dim=1)


def evbmf_noise_and_rank(matrix: torch.Tensor) -> tuple[float, int]:
    """Estimate the noise variance and the rank of ``matrix`` by analytic EVBMF.

    Args:
        matrix: a 2-D tensor (any orientation; computed in float64 on its device).

    Returns:
        ``(sigma2, rank)``: the estimated noise variance and the number of components
        whose singular value exceeds the EVBMF threshold (0 means pure noise).
    """
    if matrix.dim() != 2 or min(matrix.shape) < 1:
        raise ValueError(f"EVBMF needs a non-empty matrix, got shape {tuple(matrix.shape)}")
    y = matrix.detach().to(torch.float64)
    rows, cols = sorted(y.shape)
    s = singular_values(y)
    s2 = s**2
    alpha = rows / cols
    tau_bar = _TAU_CONSTANT * math.sqrt(alpha)
    x_bar = (1 + tau_bar) * (1 + alpha / tau_bar)
    upper = float(s2.sum()) / (rows * cols)
    if upper == 0.0:
        return 0.0, 0
    # singular values from this index on are surely noise (the bound on the EVBMF rank)
    first_noise = min(max(math.ceil(rows / (1 + alpha)) - 1, 0), rows - 1)
    lower = max(float(s2[first_noise]) / (cols * x_bar), float(s2[first_noise:].mean()) / cols)
    lower = max(min(lower, upper), upper * 1e-12)
    grid = torch.logspace(math.log10(lower), math.log10(upper), _GRID, dtype=torch.float64, device=y.device)
    best = int(torch.argmin(_free_energy(grid, s2, cols, alpha, x_bar)))
    fine = torch.linspace(
        float(grid[max(best - 1, 0)]),
        float(grid[min(best + 1, _GRID - 1)]),
        _GRID,
        dtype=torch.float64,
        device=y.device,
    )
    sigma2 = float(fine[torch.argmin(_free_energy(fine, s2, cols, alpha, x_bar))])
    threshold = math.sqrt(cols * sigma2 * (1 + tau_bar) * (1 + alpha / tau_bar))
    return sigma2, int((s > threshold).sum())


def vbmf_rank(matrix: torch.Tensor) -> int:
    """The EVBMF rank of ``matrix``, at least 1 (see `evbmf_noise_and_rank`)."""
    return max(1, evbmf_noise_and_rank(matrix)[1])
