"""Config classes of the pruning methods (``sk.pruning.Channels(ratio=0.5)``, ...)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from slimkit.core.config import Config

ImportanceName = Literal["l1", "l2", "random", "bn-scale", "taylor"]
Scope = Literal["layer", "global"]


class _Structured(Config):
    ratio: float = Field(0.5, ge=0.0, lt=1.0, description="fraction of channels removed, in [0, 1)")
    importance: ImportanceName = Field(
        "l1",
        description="how channels are ranked: l1/l2 weight norm, bn-scale (|gamma| of the next BatchNorm), "
        "taylor (|w x grad|, needs data), random",
    )
    scope: Scope = Field("layer", description="'layer': the ratio in every group; 'global': one threshold")
    round_to: int = Field(1, ge=1, description="kept channels are a multiple of this (and at least this)")
    groups: list[list[str]] | None = Field(
        None, description="explicit groups, e.g. [['fc1:out', 'fc2:in']], instead of tracing the model"
    )
    seed: int = Field(0, description="seed of the random importance")


class Channels(_Structured):
    """Remove conv channels / linear features along the dependency graph."""

    method = "channels"


class Neurons(_Structured):
    """Remove hidden neurons of MLPs / transformer FFNs (Linear -> activation -> Linear)."""

    method = "neurons"


class Heads(_Structured):
    """Remove attention heads (``nn.MultiheadAttention``, transformers' BERT attention)."""

    method = "heads"
    ratio: float = Field(0.25, ge=0.0, lt=1.0, description="fraction of heads removed, in [0, 1)")


class Depth(Config):
    """Remove whole blocks of repeated block lists (transformer layers), keeping the first and last."""

    method = "depth"
    ratio: float = Field(0.5, ge=0.0, lt=1.0, description="fraction of the blocks of each block list removed")


class Unstructured(Config):
    """Zero the smallest weights of Conv/Linear layers; stored sparse when permanent."""

    method = "unstructured"
    sparsity: float = Field(0.5, ge=0.0, lt=1.0, description="fraction of weights zeroed, in [0, 1)")
    scope: Scope = Field("layer", description="'layer': the sparsity in every layer; 'global': one threshold")
    importance: Literal["l1", "random"] = Field("l1", description="smallest |w| first, or random")
    permanent: bool = Field(True, description="store sparse now; False keeps trainable masks (parametrize)")
    seed: int = Field(0, description="seed of the random importance")


class NM(Config):
    """N:M semi-structured sparsity: N non-zeros in every M consecutive input weights."""

    method = "nm"
    n: int = Field(2, ge=1, description="non-zeros kept in each group")
    m: int = Field(4, ge=2, description="group length along the input dimension")
    permanent: bool = Field(True, description="store the pruned weights now; False keeps trainable masks")

    @model_validator(mode="after")
    def _n_below_m(self) -> NM:
        if self.n >= self.m:
            raise ValueError(f"n must be smaller than m (got {self.n}:{self.m})")
        return self


class Gradual(Config):
    """Zhu & Gupta's gradual magnitude pruning with fine-tuning between steps."""

    method = "gradual"
    sparsity: float = Field(0.9, ge=0.0, lt=1.0, description="final sparsity s_f")
    initial_sparsity: float = Field(0.0, ge=0.0, lt=1.0, description="s_i")
    steps: int = Field(5, ge=1, description="pruning steps n")
    epochs_per_step: int = Field(1, ge=1, description="fine-tuning epochs between steps (delta t)")
    final_epochs: int = Field(2, ge=0, description="fine-tuning epochs after the last step")
    scope: Scope = Field("global", description="'global': one threshold over all layers; 'layer': per layer")
    distill: bool = Field(False, description="fine-tune by distilling from the unpruned model")
    lr: float = Field(1e-3, gt=0, description="fine-tuning learning rate")
    permanent: bool = Field(True, description="store sparse at the end; False keeps trainable masks")
    seed: int = Field(0, description="seed of the fine-tuning")

    @model_validator(mode="after")
    def _ordered(self) -> Gradual:
        if self.initial_sparsity > self.sparsity:
            raise ValueError("initial_sparsity must not exceed sparsity")
        return self
