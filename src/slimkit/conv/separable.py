"""Depthwise-separable conversion of a k×k convolution, initialized by per-channel SVD.

For each input channel c the slice ``W[:, c]`` of a ``Cout×Cin×k×k`` kernel is a
``Cout×k²`` matrix; its best rank-r approximation ``Σᵢ pᵢ ⊗ dᵢ`` (Eckart-Young, from the
SVD) gives r depthwise k×k filters ``dᵢ`` and r pointwise columns ``pᵢ``. The layer becomes

    depthwise k×k (Cin -> r·Cin, groups=Cin)  then  pointwise 1×1 (r·Cin -> Cout)

which costs ``r·(1/Cout + 1/k²)`` of the original MACs. Rank 1 is the classic depthwise
separable convolution; rank ``min(Cout, k²)`` reproduces the kernel exactly.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from slimkit.core.errors import InvalidConfigError


class SeparableConv2d(nn.Sequential):
    """``depthwise`` k×k (groups = in channels, ``rank`` filters each) then ``pointwise`` 1×1.

    Args:
        conv: the convolution whose geometry (channels, kernel, stride, padding, dilation,
            bias) it copies; its weights are not used (see `from_conv`).
        rank: depthwise filters per input channel.
    """

    def __init__(self, conv: nn.Conv2d, rank: int = 1):
        cin, cout = conv.in_channels, conv.out_channels
        depthwise = nn.Conv2d(
            cin,
            cin * rank,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            groups=cin,
            bias=False,
            padding_mode=conv.padding_mode,
        )
        pointwise = nn.Conv2d(cin * rank, cout, 1, bias=conv.bias is not None)
        super().__init__(OrderedDict(depthwise=depthwise, pointwise=pointwise))
        self.rank = rank
        self.to(device=conv.weight.device, dtype=conv.weight.dtype)

    @classmethod
    @torch.no_grad()
    def from_conv(cls, conv: nn.Conv2d, rank: int = 1) -> SeparableConv2d:
        """The separable layer whose kernel is the best rank-``rank`` approximation of
        ``conv``'s, per input channel (exact when ``rank >= min(Cout, k²)``)."""
        reason = separable_ineligible(conv)
        if reason:
            raise InvalidConfigError(f"cannot make this convolution separable: {reason}")
        layer = cls(conv, rank)
        depthwise, pointwise = low_rank_factors(conv.weight, rank)
        layer.depthwise.weight.copy_(depthwise)
        layer.pointwise.weight.copy_(pointwise)
        if conv.bias is not None:
            layer.pointwise.bias.copy_(conv.bias)
        return layer

    def dense_weight(self) -> torch.Tensor:
        """The equivalent ``Cout×Cin×k×k`` kernel, ``W[o, c] = Σᵢ P[o, c·r+i] · D[c·r+i]``."""
        d = self.depthwise.weight  # [Cin·r, 1, kh, kw]
        p = self.pointwise.weight[:, :, 0, 0]  # [Cout, Cin·r]
        cin = self.depthwise.in_channels
        kernel = d.view(cin, self.rank, -1)
        return torch.einsum("ocr,crk->ock", p.view(-1, cin, self.rank), kernel).view(p.shape[0], cin, *d.shape[2:])

    @property
    def mac_ratio(self) -> float:
        """MACs of this layer over the dense convolution's: ``r·(1/Cout + 1/k²)``."""
        k2 = self.depthwise.kernel_size[0] * self.depthwise.kernel_size[1]
        return self.rank * (1 / self.pointwise.out_channels + 1 / k2)


def low_rank_factors(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Depthwise ``[Cin·r, 1, kh, kw]`` and pointwise ``[Cout, Cin·r, 1, 1]`` weights from the
    top-``rank`` singular pairs of each ``Cout×k²`` slice ``weight[:, c]`` (float64 SVD).

    Ranks above ``min(Cout, k²)`` are padded with zero filters."""
    cout, cin, kh, kw = weight.shape
    slices = weight.detach().double().permute(1, 0, 2, 3).reshape(cin, cout, kh * kw)
    u, s, vh = torch.linalg.svd(slices, full_matrices=False)  # [Cin,Cout,q] [Cin,q] [Cin,q,k²]
    keep = min(rank, s.shape[1])
    root = s[:, :keep].sqrt()
    depthwise = weight.new_zeros(cin, rank, kh * kw, dtype=torch.float64)
    pointwise = weight.new_zeros(cout, cin, rank, dtype=torch.float64)
    depthwise[:, :keep] = vh[:, :keep] * root[:, :, None]
    pointwise[:, :, :keep] = (u[:, :, :keep] * root[:, None, :]).permute(1, 0, 2)
    return (
        depthwise.view(cin * rank, 1, kh, kw).to(weight.dtype),
        pointwise.view(cout, cin * rank, 1, 1).to(weight.dtype),
    )


def separable_ineligible(conv: nn.Module) -> str | None:
    """Why ``conv`` cannot be made separable, or ``None`` when it can."""
    if type(conv) is not nn.Conv2d:
        return f"{type(conv).__name__} is not a plain nn.Conv2d"
    if conv.groups != 1:
        return f"groups={conv.groups}: already grouped/depthwise"
    if conv.kernel_size == (1, 1):
        return "a 1x1 convolution has no spatial kernel to separate"
    return None
