"""The protocol every factorized layer follows, and helpers they share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import nn

Rank = int | tuple[int, ...]
"""A layer's rank: one int, or one per factorized mode (Tucker-2, tensor train)."""


class FactorizedLayer(nn.Module, ABC):
    """A layer stored as factors of a dense layer's weight.

    Subclasses implement the classmethods describing the decomposition of a dense layer
    (used for rank selection and for rebuilding without data) and `to_dense`.
    """

    dense_types: ClassVar[tuple[type[nn.Module], ...]] = ()
    fixed_rank: ClassVar[str] = "strict"
    """How an int rank above a mode's full rank is treated: ``"strict"`` (error), ``"cap"``
    (clipped to each mode's full rank) or ``"free"`` (no bound, e.g. CP)."""

    @classmethod
    def plan(cls, dense: nn.Module, config: Any) -> dict[str, Any]:
        """Per-layer choices made from the config besides the rank (passed on as ``**extra``)."""
        return {}

    @classmethod
    def unsupported(cls, dense: nn.Module, **extra: Any) -> str | None:
        """Why ``dense`` cannot be decomposed this way, or ``None`` when it can."""
        return None

    @classmethod
    def full_ranks(cls, dense: nn.Module, **extra: Any) -> tuple[int, ...]:
        """The largest meaningful rank of each mode (default: a weight matrix, one mode)."""
        return (min(dense.weight.shape),)

    @classmethod
    def unfoldings(cls, dense: nn.Module, **extra: Any) -> list[torch.Tensor]:
        """One matrix per mode whose spectrum picks that mode's rank (energy, VBMF); default:
        the weight matrix itself."""
        return [dense.weight.detach()]

    @classmethod
    def combine(cls, per_mode: tuple[int, ...]) -> Rank:
        """Per-mode ranks -> this layer's rank value."""
        return per_mode[0] if len(per_mode) == 1 else per_mode

    @classmethod
    @abstractmethod
    def cost(cls, dense: nn.Module, rank: Rank, **extra: Any) -> tuple[int, int]:
        """(weights, MACs per output position) of the factorized layer."""

    @classmethod
    @abstractmethod
    def dense_cost(cls, dense: nn.Module, **extra: Any) -> tuple[int, int]:
        """(weights, MACs per output position) of ``dense``."""

    @classmethod
    @abstractmethod
    def empty_like(cls, dense: nn.Module, rank: Rank, **extra: Any) -> FactorizedLayer:
        """The factorized structure for ``dense`` at ``rank``, weights uninitialized."""

    @property
    def weight(self) -> torch.Tensor:
        """The dense weight the factors stand for, rebuilt on each read.

        Model code that reads ``layer.weight`` (its dtype, device or values, as transformers'
        T5 and ViT do) keeps working after the layer is replaced; the forward never uses it.
        """
        return self.to_dense().weight

    @abstractmethod
    def load_factors(self, weight: torch.Tensor) -> None:
        """Set the factors from the dense float64 ``weight`` (the decomposition itself)."""

    @classmethod
    def from_dense(
        cls, dense: nn.Module, rank: Rank, device: torch.device | None = None, **extra: Any
    ) -> FactorizedLayer:
        """Decompose ``dense`` at ``rank``, computing in float64 on ``device``.

        The new layer lives on the dense layer's device with its dtype; the bias is copied.
        """
        layer = cls.empty_like(dense, rank, **extra)
        layer.load_factors(weight64(dense, device))
        copy_bias(layer, dense)
        return layer

    @abstractmethod
    def to_dense(self) -> nn.Module:
        """The equivalent dense layer."""

    def extra_state_for_rebuild(self) -> dict[str, Any]:
        """Besides the rank, what `empty_like` needs to rebuild this layer."""
        return {}


def weight64(dense: nn.Module, device: torch.device | None = None) -> torch.Tensor:
    """``dense.weight`` detached, as float64 on ``device`` (default: where it lives)."""
    return dense.weight.detach().to(device or dense.weight.device, torch.float64)


def assign(param: torch.Tensor, value: torch.Tensor) -> None:
    """Copy ``value`` into ``param`` (shape, dtype and device of ``param`` kept)."""
    with torch.no_grad():
        param.copy_(value.reshape(param.shape).to(param.device, param.dtype))


def copy_bias(target: nn.Module, dense: nn.Module) -> None:
    """Copy ``dense.bias`` into ``target.bias`` when the dense layer has one."""
    if getattr(dense, "bias", None) is not None:
        assign(target.bias, dense.bias.detach())


def factory(like: nn.Module | torch.Tensor) -> dict[str, Any]:
    """``device``/``dtype`` keywords creating tensors like ``like`` (a tensor, or a module's weight)."""
    tensor = like if isinstance(like, torch.Tensor) else like.weight
    return {"device": tensor.device, "dtype": tensor.dtype}


def tall_svd(
    matrix: torch.Tensor, n_eigenvecs: int | None = None, **_: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD ``(U, S, Vh)`` computed on the tall orientation, truncated to ``n_eigenvecs``.

    LAPACK on CPU can be orders of magnitude slower on wide than on tall matrices when
    threads are contended; this is also passed to tensorly as its ``svd`` callable.
    """
    if matrix.shape[0] < matrix.shape[1]:
        v, s, uh = torch.linalg.svd(matrix.T, full_matrices=False)
        u, vh = uh.T, v.T
    else:
        u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    k = len(s) if n_eigenvecs is None else min(n_eigenvecs, len(s))
    return u[:, :k], s[:k], vh[:k]


def singular_values(matrix: torch.Tensor) -> torch.Tensor:
    """Singular values of ``matrix`` in float64 (computed on the tall orientation, see `tall_svd`)."""
    m = matrix.detach().to(torch.float64)
    return torch.linalg.svdvals(m.T if m.shape[0] < m.shape[1] else m)


def truncated_svd(matrix: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``matrix ≈ left @ right`` with ``left`` [m, rank], ``right`` [rank, n], σ split evenly."""
    u, s, vh = tall_svd(matrix)
    root = s[:rank].sqrt()
    return u[:, :rank] * root, root[:, None] * vh[:rank]


def relative_error(reference: torch.Tensor, approximation: torch.Tensor) -> float:
    """``‖reference - approximation‖_F / ‖reference‖_F`` in float64."""
    ref = reference.detach().to(torch.float64)
    diff = ref - approximation.detach().to(ref.device, torch.float64)
    return float(torch.linalg.vector_norm(diff) / torch.linalg.vector_norm(ref).clamp_min(1e-300))
