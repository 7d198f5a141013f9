"""Attention heads and FFN neurons as groups, for `nn.MultiheadAttention` and BERT layers.

Heads are found structurally (no tracing needed, so transformers models work):

- transformers' BERT-style self-attention (a module with ``query``/``key``/``value``
  Linears and ``num_attention_heads``) together with its sibling ``output.dense``;
- ``nn.MultiheadAttention``, first converted to `SplitMultiheadAttention` (same math,
  separate q/k/v/out projections) because its packed ``in_proj_weight`` must stay
  ``embed_dim`` wide.

FFN neurons of BERT layers are the ``intermediate.dense`` outputs and ``output.dense`` inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from slimkit.core.walk import Selector, replace_module
from slimkit.pruning.groups import Group, Member


class SplitMultiheadAttention(nn.Module):
    """``nn.MultiheadAttention`` with separate projections, so heads can be removed.

    Returns ``(output, None)``: attention weights are not materialized.

    Args:
        embed_dim: model width (input and output).
        num_heads: heads kept.
        head_dim: width of each head.
        batch_first: inputs are ``(batch, seq, feature)``.
        dropout: attention dropout in training.
        kdim: key input width.
        vdim: value input width.
    """

    def __init__(
        self, embed_dim: int, num_heads: int, head_dim: int, batch_first: bool = False, dropout: float = 0.0,
        kdim: int | None = None, vdim: int | None = None,
    ):  # fmt: skip
        super().__init__()
        inner = num_heads * head_dim
        self.num_heads, self.head_dim, self.batch_first, self.dropout = num_heads, head_dim, batch_first, dropout
        self.q_proj = nn.Linear(embed_dim, inner)
        self.k_proj = nn.Linear(kdim or embed_dim, inner)
        self.v_proj = nn.Linear(vdim or embed_dim, inner)
        self.out_proj = nn.Linear(inner, embed_dim)

    @classmethod
    def from_mha(cls, mha: nn.MultiheadAttention) -> SplitMultiheadAttention:
        """The same attention as ``mha`` (weights copied)."""
        new = cls(mha.embed_dim, mha.num_heads, mha.head_dim, mha.batch_first, mha.dropout, mha.kdim, mha.vdim)
        e = mha.embed_dim
        if mha._qkv_same_embed_dim:
            weights = mha.in_proj_weight.detach().split(e)
        else:
            weights = (mha.q_proj_weight.detach(), mha.k_proj_weight.detach(), mha.v_proj_weight.detach())
        biases = mha.in_proj_bias.detach().split(e) if mha.in_proj_bias is not None else (None,) * 3
        for proj, w, b in zip((new.q_proj, new.k_proj, new.v_proj), weights, biases, strict=True):
            proj.weight.data.copy_(w)
            proj.bias.data.copy_(b) if b is not None else proj.bias.data.zero_()
        new.out_proj.weight.data.copy_(mha.out_proj.weight.detach())
        if mha.out_proj.bias is not None:
            new.out_proj.bias.data.copy_(mha.out_proj.bias.detach())
        else:
            new.out_proj.bias.data.zero_()
        return new.to(mha.out_proj.weight.device)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def forward(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
        attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True, is_causal: bool = False,
    ) -> tuple[torch.Tensor, None]:  # fmt: skip
        """Same arguments as ``nn.MultiheadAttention.forward``."""
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        q, k, v = self._heads(self.q_proj(query)), self._heads(self.k_proj(key)), self._heads(self.v_proj(value))
        mask = None
        if attn_mask is not None:
            mask = ~attn_mask if attn_mask.dtype == torch.bool else attn_mask
        if key_padding_mask is not None:
            pad = key_padding_mask[:, None, None, :]
            pad = ~pad if pad.dtype == torch.bool else pad
            mask = pad if mask is None else (mask & pad if mask.dtype == torch.bool else mask + pad)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0,
            is_causal=is_causal and mask is None,
        )  # fmt: skip
        out = self.out_proj(out.transpose(1, 2).flatten(2))
        return (out if self.batch_first else out.transpose(0, 1)), None


def convert_mha(model: nn.Module, names: list[str]) -> None:
    """Replace the named ``nn.MultiheadAttention`` modules by `SplitMultiheadAttention`."""
    for name in names:
        replace_module(model, name, SplitMultiheadAttention.from_mha(model.get_submodule(name)))


def convertible_mha(model: nn.Module, selector: Selector) -> tuple[list[str], dict[str, str]]:
    """Selected MHA modules that can be converted, and those that cannot (with why)."""
    ok, skipped = [], {}
    for name, module in model.named_modules():
        if isinstance(module, nn.MultiheadAttention) and selector(name):
            if module.bias_k is not None or module.add_zero_attn:
                skipped[name] = "nn.MultiheadAttention with add_bias_kv/add_zero_attn is not supported"
            else:
                ok.append(name)
    return ok, skipped


def _is_bert_self_attention(module: nn.Module) -> bool:
    return all(isinstance(getattr(module, n, None), nn.Linear) for n in ("query", "key", "value")) and hasattr(
        module, "num_attention_heads"
    )


def head_groups(model: nn.Module, selector: Selector) -> list[Group]:
    """One group per attention module: its heads (BERT self-attention and split MHA)."""
    groups = []
    modules = dict(model.named_modules())
    for name, module in modules.items():
        if not name or not selector(name):
            continue
        if isinstance(module, SplitMultiheadAttention):
            hd, projs, out = module.head_dim, ("q_proj", "k_proj", "v_proj"), f"{name}.out_proj"
            attrs = {name: "num_heads"}
        elif _is_bert_self_attention(module):
            parent = name.rpartition(".")[0]
            out = f"{parent}.output.dense" if parent else "output.dense"
            if not isinstance(modules.get(out), nn.Linear):
                continue
            hd, projs, attrs = module.attention_head_size, ("query", "key", "value"), {name: "num_attention_heads"}
        else:
            continue
        members = [Member(f"{name}.{p}", "out", 0, hd) for p in projs] + [Member(out, "in", 0, hd)]
        groups.append(Group(modules[f"{name}.{projs[0]}"].out_features // hd, members, f"{name} heads", heads={
            n: [a] for n, a in attrs.items()
        }))  # fmt: skip
    return groups


def head_attrs(model: nn.Module, group: Group, kept: int) -> dict[str, dict[str, int]]:
    """Attribute updates after keeping ``kept`` heads of ``group``."""
    result = {}
    for name, attrs in group.heads.items():
        module = model.get_submodule(name)
        values = {a: kept for a in attrs}
        if hasattr(module, "all_head_size"):
            values["all_head_size"] = kept * module.attention_head_size
        result[name] = values
    return result


def ffn_groups(model: nn.Module, selector: Selector) -> list[Group]:
    """BERT-style FFN neurons: ``intermediate.dense`` outputs with ``output.dense`` inputs."""
    groups = []
    modules = dict(model.named_modules())
    for name in modules:
        prefix = f"{name}." if name else ""
        up, down = modules.get(f"{prefix}intermediate.dense"), modules.get(f"{prefix}output.dense")
        if isinstance(up, nn.Linear) and isinstance(down, nn.Linear) and selector(f"{prefix}intermediate.dense"):
            members = [Member(f"{prefix}intermediate.dense", "out"), Member(f"{prefix}output.dense", "in")]
            groups.append(Group(up.out_features, members, f"{prefix}intermediate.dense"))
    return groups
