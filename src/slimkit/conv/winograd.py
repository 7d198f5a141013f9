"""Winograd convolution F(m×m, 3×3) for 3×3 stride-1 convolutions (Lavin & Gray, 2016).

A 2-D output tile of m×m values is computed from an α×α input tile (α = m + 2) as::

    Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A

so the element-wise stage needs α² multiplications per tile instead of 9·m² for the direct
convolution: 16 vs 36 for F(2×2,3×3) (2.25× fewer), 36 vs 144 for F(4×4,3×3) (4× fewer).
Summed over input channels, the element-wise stage becomes α² independent matrix products
``U[ξν] (Cout×Cin) @ V[ξν] (Cin×tiles)``, run as one ``torch.bmm``.

The transforms come from the Toom-Cook construction over the interpolation points
0, ±1 (F(2)) and 0, ±1, ±1/2 (F(4)), plus the point at infinity; the small points keep
F(4)'s transforms well conditioned in float32.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from slimkit.core.errors import InvalidConfigError
from slimkit.core.walk import replace_module

POINTS = {2: (0.0, 1.0, -1.0), 4: (0.0, 1.0, -1.0, 0.5, -0.5)}
"""Finite interpolation points per output tile size (infinity is always added)."""


def _toom_cook(m: int, r: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(Aᵀ, G, Bᵀ)`` in float64 for F(m, r): shapes (m, α), (α, r), (α, α).

    Built by Toom-Cook: with V the α×α Vandermonde matrix of the points (the point at
    infinity picks the leading coefficient), correlation is ``y = V_mᵀ [(V_r g) ⊙ (V⁻ᵀ d)]``.
    Row scales are moved from Bᵀ into G so that Bᵀ has small integer entries
    (exact in float32).
    """
    alpha = m + r - 1
    points = torch.tensor(POINTS[m], dtype=torch.float64)

    def vandermonde(columns: int) -> torch.Tensor:
        finite = points[:, None] ** torch.arange(columns, dtype=torch.float64)
        infinity = torch.zeros(1, columns, dtype=torch.float64)
        infinity[0, -1] = 1.0
        return torch.cat([finite, infinity])

    a_t = vandermonde(m).T.contiguous()
    g = vandermonde(r)
    b_t = torch.linalg.inv(vandermonde(alpha)).T
    magnitude = b_t.abs()
    scale = torch.where(magnitude > 1e-12, magnitude, torch.inf).amin(dim=1)  # smallest nonzero entry per row
    b_t = b_t / scale[:, None]
    b_t = torch.where((b_t - b_t.round()).abs() < 1e-9, b_t.round(), b_t)  # drop inversion round-off
    return a_t, (g * scale[:, None]).contiguous(), b_t.contiguous()


_MATRICES = {m: _toom_cook(m) for m in POINTS}
_KRON = {m: (torch.kron(b_t, b_t).float(), torch.kron(a_t, a_t).float()) for m, (a_t, _, b_t) in _MATRICES.items()}
"""Built once at import (never while tracing, so no fake tensors get cached)."""


def winograd_matrices(m: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(Aᵀ, G, Bᵀ)`` in float64 for F(m×m, 3×3) (see `_toom_cook`)."""
    if m not in _MATRICES:
        raise InvalidConfigError(f"Winograd tile must be one of {sorted(POINTS)}, got {m}")
    return _MATRICES[m]


def kron_transforms(m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Bᵀ⊗Bᵀ, Aᵀ⊗Aᵀ)`` in float32: the 2-D input and output transforms of flattened α×α
    tiles, so each is one matrix product over all tiles."""
    winograd_matrices(m)
    return _KRON[m]


def transform_weight(weight: torch.Tensor, m: int) -> torch.Tensor:
    """``G g Gᵀ`` for every (out, in) kernel, laid out ``[α², Cout, Cin]`` for the bmm (float64 math)."""
    _, g, _ = winograd_matrices(m)
    g = g.to(weight.device)
    u = g @ weight.double() @ g.T  # [Cout, Cin, α, α]
    alpha = g.shape[0]
    return u.permute(2, 3, 0, 1).reshape(alpha * alpha, *weight.shape[:2]).to(weight.dtype).contiguous()


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


class WinogradConv2d(nn.Module):
    """A 3×3, stride-1, dilation-1, groups-1 convolution computed with Winograd F(m×m, 3×3).

    Holds the same ``weight`` and ``bias`` as the ``nn.Conv2d`` it replaces (so state dicts
    match); the transformed weight is a non-persistent buffer recomputed whenever the weight
    changes (loading, training steps, moving devices). Under autograd it is recomputed
    differentiably on every call.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        padding: zero padding (int, pair, ``"same"`` or ``"valid"``).
        bias: whether there is a bias.
        tile: output tile size m, 2 or 4.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        padding: int | tuple[int, int] | str = 0,
        bias: bool = True,
        tile: int = 4,
    ):
        super().__init__()
        winograd_matrices(tile)  # validates the tile
        self.in_channels, self.out_channels, self.tile = in_channels, out_channels, tile
        self.padding = {"same": (1, 1), "valid": (0, 0)}[padding] if isinstance(padding, str) else _pair(padding)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.register_buffer("transformed_weight", transform_weight(self.weight.detach(), tile), persistent=False)
        self._source_key: tuple[int, int, torch.device] | None = None

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, tile: int = 4) -> WinogradConv2d:
        """The Winograd equivalent of an eligible ``conv`` (see `winograd_eligible`), sharing nothing."""
        reason = winograd_ineligible(conv)
        if reason:
            raise InvalidConfigError(f"cannot convert this convolution to Winograd: {reason}")
        layer = cls(conv.in_channels, conv.out_channels, conv.padding, conv.bias is not None, tile)
        layer.to(device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            layer.weight.copy_(conv.weight)
            if conv.bias is not None:
                layer.bias.copy_(conv.bias)
        layer.refresh()
        return layer

    def to_conv(self) -> nn.Conv2d:
        """The equivalent plain ``nn.Conv2d`` (for export to runtimes that do Winograd internally)."""
        conv = nn.Conv2d(self.in_channels, self.out_channels, 3, padding=self.padding, bias=self.bias is not None)
        conv.to(device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            conv.weight.copy_(self.weight)
            if self.bias is not None:
                conv.bias.copy_(self.bias)
        return conv

    @property
    def multiplication_ratio(self) -> float:
        """Direct-convolution multiplications per Winograd multiplication (2.25 for F(2), 4 for F(4))."""
        alpha = self.tile + 2
        return 9 * self.tile**2 / alpha**2

    def elementwise_multiplications(self, height: int, width: int, batch: int = 1) -> int:
        """Multiplications of the element-wise stage for an input of this size (tiles padded)."""
        out_h, out_w = height + 2 * self.padding[0] - 2, width + 2 * self.padding[1] - 2
        tiles = math.ceil(out_h / self.tile) * math.ceil(out_w / self.tile)
        return batch * tiles * (self.tile + 2) ** 2 * self.in_channels * self.out_channels

    def _weights(self) -> torch.Tensor:
        if torch.compiler.is_compiling() or torch.compiler.is_exporting():
            return self.transformed_weight  # kept fresh by loading (see _load_from_state_dict)
        if torch.is_grad_enabled() and self.weight.requires_grad:
            return transform_weight(self.weight, self.tile)
        key = (self.weight._version, self.weight.data_ptr(), self.weight.device)
        if key != self._source_key or self.transformed_weight.device != self.weight.device:
            self.refresh()
        return self.transformed_weight

    def refresh(self) -> None:
        """Recompute the transformed weight from ``weight`` now."""
        self.transformed_weight = transform_weight(self.weight.detach(), self.tile)
        self._source_key = (self.weight._version, self.weight.data_ptr(), self.weight.device)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self.refresh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        m, (ph, pw) = self.tile, self.padding
        alpha = m + 2
        input_kron, output_kron = (t.to(device=x.device, dtype=x.dtype) for t in kron_transforms(m))
        out_h, out_w = h + 2 * ph - 2, w + 2 * pw - 2
        tiles_h, tiles_w = math.ceil(out_h / m), math.ceil(out_w / m)
        x = F.pad(x, (pw, pw + tiles_w * m - out_w, ph, ph + tiles_h * m - out_h))
        d = x.transpose(0, 1).unfold(2, alpha, m).unfold(3, alpha, m)  # [C, N, tH, tW, α, α] strided view
        v = input_kron @ d.reshape(-1, alpha * alpha).T  # Bᵀ d B for all tiles: [α², C·N·tH·tW]
        product = torch.bmm(self._weights(), v.view(alpha * alpha, c, -1))  # [α², Cout, N·tH·tW]
        y = output_kron @ product.view(alpha * alpha, -1)  # Aᵀ M A: [m², Cout·N·tH·tW]
        y = y.view(m, m, self.out_channels, n, tiles_h, tiles_w).permute(3, 2, 4, 0, 5, 1)
        y = y.reshape(n, self.out_channels, tiles_h * m, tiles_w * m)[:, :, :out_h, :out_w]
        return y + self.bias.view(1, -1, 1, 1) if self.bias is not None else y.contiguous()

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, padding={self.padding}, "
            f"bias={self.bias is not None}, tile=F({self.tile}x{self.tile},3x3)"
        )


def winograd_ineligible(conv: nn.Module) -> str | None:
    """Why ``conv`` cannot become a `WinogradConv2d`, or ``None`` when it can."""
    if type(conv) is not nn.Conv2d:
        return f"{type(conv).__name__} is not a plain nn.Conv2d"
    checks = (
        (conv.kernel_size == (3, 3), f"kernel {conv.kernel_size} is not 3x3"),
        (conv.stride == (1, 1), f"stride {conv.stride} is not 1"),
        (conv.dilation == (1, 1), f"dilation {conv.dilation} is not 1"),
        (conv.groups == 1, f"groups={conv.groups} (grouped/depthwise)"),
        (conv.padding_mode == "zeros", f"padding_mode {conv.padding_mode!r} is not 'zeros'"),
    )
    return next((why for ok, why in checks if not ok), None)


def plain_convs(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every `WinogradConv2d` turned back into an ``nn.Conv2d``.

    Use before export: ONNX Runtime, XNNPACK and cuDNN pick Winograd (or better) kernels for
    3×3 convolutions themselves, and a ``Conv`` node is what their optimizers understand.
    """
    model = copy.deepcopy(model)
    for name, module in list(model.named_modules()):
        if isinstance(module, WinogradConv2d):
            replace_module(model, name, module.to_conv())
    return model
