"""The GPTQ weight update (Frantar et al., 2023): Hessian-aware rounding of one Linear weight.

Columns are quantized one at a time; each column's rounding error, weighted by the inverse
Hessian ``H⁻¹`` of the layer's inputs (``H = 2 XᵀX``), is spread over the columns not yet
quantized. The update runs in column blocks with lazy batched updates of the remaining
columns, on whatever device the tensors live on. Quantization grids come from
`slimkit.quantization.primitives.QuantSpec` (the same grids as ``weight-only``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from slimkit.quantization.primitives import QuantSpec


def _inverse_cholesky(hessian: Tensor, damp: float) -> Tensor:
    """Upper Cholesky factor of ``(H + λI)⁻¹`` with ``λ = damp · mean(diag H)``, computed
    in the storage of ``hessian`` (no ``[in, in]`` copies are kept alive)."""
    h = hessian
    h.diagonal().add_(damp * float(h.diagonal().mean()))
    torch.linalg.cholesky(h, out=h)
    torch.cholesky_inverse(h, out=h)
    return torch.linalg.cholesky(h, upper=True, out=h)


def gptq_quantize(
    weight: Tensor,
    hessian: Tensor,
    spec: QuantSpec,
    *,
    block_size: int = 128,
    damp: float = 0.01,
    act_order: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Quantize ``weight`` ``[out, in]`` with GPTQ against the input Hessian ``[in, in]``.

    Args:
        weight: the Linear weight (not modified).
        hessian: ``2 XᵀX / N`` of the layer inputs (consumed: overwritten by the inverse
            factor, so no ``[in, in]`` copy of it is kept alive).
        spec: the grid: bits, symmetry and ``group_size`` (``None``: one scale per output row).
        block_size: columns per lazy-update block (rounded to whole groups).
        damp: dampening ``λ`` as a fraction of the mean Hessian diagonal.
        act_order: visit columns by decreasing Hessian diagonal. Group scales are then
            fixed from the original weight first ("static groups"), so the groups stay
            the contiguous input ranges ``weight-only`` stores.

    Returns:
        ``(codes, scale, zero_point)`` in the layout of ``spec``: codes ``[out, in]``,
        qparams ``[out, groups]`` (per-group) or ``[out]`` (per-row).
    """
    dtype = torch.promote_types(weight.dtype, torch.float32)
    w = weight.detach().to(dtype).clone()
    rows, cols = w.shape
    group = spec.group_size if spec.group_size and spec.group_size < cols else None
    col_spec = spec.with_(axis=0, group_size=None)
    h = hessian.to(dtype)
    dead = h.diagonal() == 0
    h.diagonal()[dead] = 1
    w[:, dead] = 0

    def params(block: Tensor) -> tuple[Tensor, Tensor]:
        return col_spec.qparams(*col_spec.minmax(block))

    n_groups = -(-cols // group) if group else 1
    scale = torch.zeros(rows, n_groups, device=w.device)
    zero = torch.zeros(rows, n_groups, device=w.device, dtype=torch.int32)
    if group is None:
        scale[:, 0], zero[:, 0] = params(w)
    elif act_order:
        scale, zero = spec.with_(group_size=group).qparams(*spec.with_(group_size=group).minmax(w))
    perm = torch.argsort(h.diagonal(), descending=True) if act_order else None
    if perm is not None:
        w = w[:, perm]
        h.copy_(h[perm])  # permute in place, one [in, in] copy alive at a time
        h.copy_(h[:, perm])
    hinv = _inverse_cholesky(h, damp)
    del h
    col_group = torch.arange(cols, device=w.device) // (group or cols)
    if perm is not None:
        col_group = col_group[perm]
    if group:
        block_size = group * max(1, block_size // group)
    codes = torch.zeros(rows, cols, dtype=spec.dtype, device=w.device)
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        w1, err1, hinv1 = w[:, i1:i2].clone(), torch.zeros_like(w[:, i1:i2]), hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            if group and not act_order and col % group == 0:
                g = col // group
                scale[:, g], zero[:, g] = params(w1[:, i : i + group])
            g = int(col_group[col])
            q = col_spec.quantize(w1[:, i : i + 1], scale[:, g], zero[:, g])
            codes[:, col] = q[:, 0]
            dq = col_spec.dequantize(q, scale[:, g], zero[:, g], dtype=dtype)[:, 0]
            err = (w1[:, i] - dq) / hinv1[i, i]
            w1[:, i:] -= err.unsqueeze(1) * hinv1[i, i:].unsqueeze(0)
            err1[:, i] = err
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    if perm is not None:
        codes = codes[:, torch.argsort(perm)]
    if spec.group_size is None:
        scale, zero = scale[:, 0], zero[:, 0]
    return codes, scale.float(), zero
