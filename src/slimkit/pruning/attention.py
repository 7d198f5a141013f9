"""Attention heads as groups, found by structure (no tracing, so transformers models work).

An attention module is one holding query/key/value projections (separate Linears named
``q_proj``/``query``/``q``/``q_lin``..., or one packed ``c_attn``/``qkv`` Linear laid out
``[Q | K | V]``), an output projection (a child ``o_proj``/``out_proj``/``o``/``out_lin``/
``c_proj``/``proj``, or BERT's sibling ``output.dense``) and the width of one head in an
attribute (``head_dim``, ``attention_head_size``, ``key_value_proj_dim``). Heads are then
``q.out_features // head_dim``; key/value heads ``k.out_features // head_dim`` (grouped-query
attention: each key/value head with the query heads that read it is one unit, so RoPE
dimensions stay paired and every layer keeps ``heads / kv_heads`` query heads per group).
A per-head position bias (T5's ``relative_attention_bias``) is computed once and shared by
every layer of the stack, so those layers lose the same heads.

``nn.MultiheadAttention`` is first converted to `SplitMultiheadAttention` (same math,
separate projections) because its packed ``in_proj_weight`` must stay ``embed_dim`` wide.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from slimkit.core.walk import Selector, replace_module
from slimkit.pruning.groups import Group, Member


class SplitMultiheadAttention(nn.Module):
    """``nn.MultiheadAttention`` with separate projections, so heads can be removed.

    Returns ``(output, None)``: attention weights are not materialized. Its packed-projection
    attributes are ``None`` so ``nn.TransformerEncoderLayer`` takes its ordinary (not fused)
    path with it.

    Args:
        embed_dim: model width (input and output).
        num_heads: heads kept.
        head_dim: width of each head.
        batch_first: inputs are ``(batch, seq, feature)``.
        dropout: attention dropout in training.
        kdim: key input width.
        vdim: value input width.
    """

    in_proj_weight = None
    in_proj_bias = None
    _qkv_same_embed_dim = False

    def __init__(
        self, embed_dim: int, num_heads: int, head_dim: int, batch_first: bool = False, dropout: float = 0.0,
        kdim: int | None = None, vdim: int | None = None,
    ):  # fmt: skip
        super().__init__()
        inner = num_heads * head_dim
        self.num_heads, self.head_dim, self.batch_first, self.dropout = num_heads, head_dim, batch_first, dropout
        self.scaling = head_dim**-0.5  # fixed: stays the original's when head widths are pruned
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
        return new.to(mha.out_proj.weight.device).train(mha.training)

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
            is_causal=is_causal and mask is None, scale=self.scaling,
        )  # fmt: skip
        out = self.out_proj(out.transpose(1, 2).flatten(2))
        return (out if self.batch_first else out.transpose(0, 1)), None


def convert_mha(model: nn.Module, names: list[str]) -> None:
    """Replace the named ``nn.MultiheadAttention`` modules by `SplitMultiheadAttention`.

    ``nn.TransformerEncoder`` stacks holding one stop using nested tensors (their fused path
    needs the packed projection).
    """
    for name in names:
        replace_module(model, name, SplitMultiheadAttention.from_mha(model.get_submodule(name)))
    for module in model.modules():
        if getattr(module, "use_nested_tensor", False) and any(
            isinstance(m, SplitMultiheadAttention) for m in module.modules()
        ):
            module.use_nested_tensor = False


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


Q_NAMES = ("q_proj", "query", "q", "q_lin", "to_q")
K_NAMES = ("k_proj", "key", "k", "k_lin", "to_k")
V_NAMES = ("v_proj", "value", "v", "v_lin", "to_v")
QKV_NAMES = ("c_attn", "qkv", "qkv_proj")
"""Packed projections laid out ``[Q | K | V]`` along their outputs."""
O_NAMES = ("o_proj", "out_proj", "o", "out_lin", "c_proj", "proj", "to_out", "dense")
HEAD_ATTRS = ("num_heads", "num_attention_heads", "n_heads", "n_head")
KV_HEAD_ATTRS = ("num_key_value_heads", "num_kv_heads", "n_kv_heads")
HEAD_DIM_ATTRS = ("head_dim", "attention_head_size", "key_value_proj_dim", "head_size")
WIDTH_ATTRS = ("all_head_size", "inner_dim", "split_size")
"""Attributes holding ``heads * head_dim`` (the width of the projections)."""


@dataclass(frozen=True)
class AttentionSite:
    """One attention module, as the projections its heads live in.

    Attributes:
        name: the attention module.
        qkv: ``(module, offset)`` of the query, key and value projections' outputs.
        out: the output projection (its inputs are the heads).
        heads: query heads.
        kv_heads: key/value heads (``heads`` without grouped-query attention).
        head_dim: width of one head.
        bias: a per-head position-bias table (Embedding with one column per head), if any.
    """

    name: str
    qkv: tuple[tuple[str, int], ...]
    out: str
    heads: int
    kv_heads: int
    head_dim: int
    bias: str | None = None

    @property
    def per_group(self) -> int:
        """Query heads per key/value head."""
        return self.heads // self.kv_heads

    def members(self) -> list[Member]:
        """The group's slices: one channel is a key/value head with its query heads."""
        rep, hd = self.per_group, self.head_dim
        (q, q_off), (k, k_off), (v, v_off) = self.qkv
        members = [Member(q, "out", q_off, hd * rep), Member(k, "out", k_off, hd), Member(v, "out", v_off, hd)]
        members.append(Member(self.out, "in", 0, hd * rep))
        if self.bias:
            members.append(Member(self.bias, "out", 0, rep))
        return list(dict.fromkeys(members))

    def width_members(self) -> list[Member]:
        """The slices of head-width channel ``j``: entry ``j`` of every query, key and value head
        and the output projection's input column ``j`` of every head."""
        hd = self.head_dim
        (q, q_off), (k, k_off), (v, v_off) = self.qkv
        members = [Member(q, "out", q_off + h * hd) for h in range(self.heads)]
        members += [Member(m, "out", off + g * hd) for m, off in ((k, k_off), (v, v_off)) for g in range(self.kv_heads)]
        members += [Member(self.out, "in", h * hd) for h in range(self.heads)]
        return members

    def width_attrs(self, module: nn.Module) -> list[str]:
        """The module's attributes holding the head width (value = kept) or ``heads`` times it."""
        values = vars(module)
        found = [a for a in HEAD_DIM_ATTRS if values.get(a) == self.head_dim]
        return found + [f"{a}*{self.heads}" for a in WIDTH_ATTRS if values.get(a) == self.heads * self.head_dim]

    def attrs(self, module: nn.Module) -> list[str]:
        """The module's attributes to update, as ``"name*factor"`` (value = kept groups * factor)."""
        rep, values = self.per_group, vars(module)
        found = [f"{a}*{rep}" for a in HEAD_ATTRS if values.get(a) == self.heads]
        found += [f"{a}*{rep * self.head_dim}" for a in WIDTH_ATTRS if values.get(a) == self.heads * self.head_dim]
        found += [a for a in KV_HEAD_ATTRS if values.get(a) == self.kv_heads]
        return found


def _linear(modules: dict[str, nn.Module], name: str) -> nn.Linear | None:
    module = modules.get(name)
    return module if isinstance(module, nn.Linear) else None


def linear_child(modules: dict[str, nn.Module], prefix: str, names: tuple[str, ...]) -> str | None:
    """The first ``prefix + name`` of ``names`` that is an ``nn.Linear``."""
    return next((f"{prefix}{n}" for n in names if _linear(modules, f"{prefix}{n}") is not None), None)


def _projections(modules: dict[str, nn.Module], name: str) -> tuple[tuple[tuple[str, int], ...], int] | None:
    """``(((q, offset), (k, offset), (v, offset)), query width)`` of the module, or None."""
    prefix = f"{name}." if name else ""
    q, k, v = (linear_child(modules, prefix, names) for names in (Q_NAMES, K_NAMES, V_NAMES))
    if q and k and v:
        return ((q, 0), (k, 0), (v, 0)), modules[q].out_features
    packed = linear_child(modules, prefix, QKV_NAMES)
    if packed and modules[packed].out_features % 3 == 0:
        width = modules[packed].out_features // 3
        return ((packed, 0), (packed, width), (packed, 2 * width)), width
    return None


def _output(modules: dict[str, nn.Module], name: str, width: int) -> str | None:
    """The output projection: a child (``o_proj``...) or BERT's sibling ``output.dense``."""
    parent = name.rpartition(".")[0]
    candidates = [f"{name}.{n}" if name else n for n in O_NAMES]
    candidates.append(f"{parent}.output.dense" if parent else "output.dense")
    return next((c for c in candidates if (lin := _linear(modules, c)) is not None and lin.in_features == width), None)


def _head_bias(module: nn.Module, name: str, heads: int) -> str | None:
    for child_name, child in module.named_children():
        if isinstance(child, nn.Embedding) and child.embedding_dim == heads and "bias" in child_name:
            return f"{name}.{child_name}" if name else child_name
    return None


def _site(modules: dict[str, nn.Module], name: str) -> AttentionSite | str | None:
    """The attention site at ``name``; a reason string when it cannot be pruned; None if none."""
    found = _projections(modules, name)
    if found is None:
        return None
    qkv, width = found
    module, values = modules[name], vars(modules[name])
    head_dim = next((values[a] for a in HEAD_DIM_ATTRS if isinstance(values.get(a), int)), None)
    declared = next((values[a] for a in HEAD_ATTRS if isinstance(values.get(a), int)), None)
    out = _output(modules, name, width)
    if head_dim is None:
        if declared is None:
            return None  # projections without heads: not an attention module
        return (
            f"{type(module).__name__} keeps no head width ({'/'.join(HEAD_DIM_ATTRS)}): its forward derives it "
            "from the input width, which removing heads would change; prune it with 'neurons' or 'depth'"
        )
    if out is None or width % head_dim:
        return f"{type(module).__name__}: no output projection of width {width} (o_proj, out_proj, output.dense...)"
    heads = width // head_dim
    kv_width = modules[qkv[1][0]].out_features if qkv[1][1] == 0 and qkv[1][0] != qkv[0][0] else width
    kv_heads = kv_width // head_dim
    if declared not in (None, heads) or kv_heads == 0 or heads % kv_heads:
        return f"{type(module).__name__}: {heads} query heads of width {head_dim} do not match its head counts"
    return AttentionSite(name, qkv, out, heads, kv_heads, head_dim, _head_bias(module, name, heads))


def find_attention(model: nn.Module, selector: Selector) -> tuple[list[AttentionSite], dict[str, str]]:
    """Attention sites of the selected modules, and those found but not prunable (with why)."""
    modules = dict(model.named_modules())
    sites, skipped = [], {}
    for name in modules:
        if name and not selector(name):
            continue
        site = _site(modules, name)
        if isinstance(site, str):
            skipped[name] = site
        elif site is not None:
            sites.append(site)
    return sites, skipped


def _stack_key(name: str) -> str:
    """The module name with block indices wildcarded: one key per attention of a layer stack."""
    return re.sub(r"(^|\.)\d+(?=\.|$)", r"\1*", name)


def head_groups(model: nn.Module, sites: list[AttentionSite]) -> list[Group]:
    """One group per attention site; sites of a stack sharing a per-head position bias form one group."""
    modules = dict(model.named_modules())
    shared = {_stack_key(s.name) for s in sites if s.bias}
    grouped: dict[str, list[AttentionSite]] = {}
    for site in sites:
        key = _stack_key(site.name)
        grouped.setdefault(key if key in shared else site.name, []).append(site)
    groups = []
    for label, members in grouped.items():
        first = members[0]
        if any((s.kv_heads, s.per_group) != (first.kv_heads, first.per_group) for s in members):
            continue  # differently shaped layers cannot share a bias; never seen in practice
        groups.append(
            Group(
                first.kv_heads,
                [m for s in members for m in s.members()],
                f"{label} heads",
                heads={s.name: s.attrs(modules[s.name]) for s in members},
            )
        )
    return groups


def _rotary(model: nn.Module) -> bool:
    """Whether the model applies rotary position embeddings (which pair dimensions of a head)."""
    return any("rotary" in type(m).__name__.lower() for m in model.modules())


def width_groups(model: nn.Module, sites: list[AttentionSite]) -> tuple[list[Group], dict[str, str]]:
    """One group per attention site over the width of its heads (every head keeps the same
    dimensions' count), and the sites left whole with why.

    Only attention modules whose softmax scale is a stored attribute (``scaling``: transformers'
    attention, `SplitMultiheadAttention`) qualify: one that derives it from the head width
    would change its scores; rotary embeddings rotate pairs of dimensions, so those models'
    heads keep their width.
    """
    modules = dict(model.named_modules())
    groups, skipped = [], {}
    rotary = _rotary(model)
    for site in sites:
        module = modules[site.name]
        if rotary:
            skipped[f"{site.name} head width"] = "rotary position embeddings pair the dimensions of a head"
        elif not isinstance(getattr(module, "scaling", None), float):
            skipped[f"{site.name} head width"] = f"{type(module).__name__} derives its softmax scale from the width"
        else:
            heads = {site.name: site.width_attrs(module)}
            groups.append(Group(site.head_dim, site.width_members(), f"{site.name} head width", heads=heads))
    return groups, skipped


def head_attrs(model: nn.Module, group: Group, kept: int) -> dict[str, dict[str, int]]:
    """Attribute updates after keeping ``kept`` channels of ``group`` (``"attr*factor"`` entries)."""
    result = {}
    for name, attrs in group.heads.items():
        values = {}
        for attr in attrs:
            key, _, factor = attr.partition("*")
            values[key] = kept * int(factor or 1)
        result[name] = values
    return result
