"""Config classes of the pruning methods (``sk.pruning.Channels(ratio=0.5)``, ...)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, PlainSerializer, model_validator

from slimkit.core.config import Config
from slimkit.pruning.importance import check_importance, importance_name
from slimkit.training.config import Finetune

ImportanceSpec = Annotated[Any, AfterValidator(check_importance), PlainSerializer(importance_name, return_type=str)]
"""A registered importance name (l1, l2, random, bn-scale, taylor, activation, or `register_importance`'s) or
an `Importance` object; recorded by name."""
Scope = Literal["layer", "global"]


class _Structured(Config):
    ratio: float = Field(0.5, ge=0.0, lt=1.0)
    """fraction of channels removed, in [0, 1)"""
    importance: ImportanceSpec = "l1"
    """how channels are ranked: l1/l2 weight norm, bn-scale (|gamma| of the next BatchNorm),
    taylor (|w x grad|, needs data), activation (each channel's measured contribution to the
    layers reading it, needs data; the best start on transformers), random, a name added with
    register_importance, or an Importance object (group, modules) -> scores"""
    scope: Scope = "layer"
    """'layer': the ratio in every group; 'global': one threshold"""
    round_to: int = Field(1, ge=1)
    """kept channels are a multiple of this (and at least this)"""
    groups: list[list[str]] | None = None
    """explicit groups, e.g. [['fc1:out', 'fc2:in']], instead of tracing the model"""
    seed: int = 0
    """seed of the random importance"""
    recalibrate_batches: int = Field(32, ge=0)
    """after the cut, re-estimate every BatchNorm's running statistics on up to this many
    batches of ``data`` (BN adaptation; 0: keep the sliced statistics; no data: nothing runs)"""


class Channels(_Structured):
    """Remove conv channels / linear features along the dependency graph."""

    method = "channels"


class Neurons(_Structured):
    """Remove hidden neurons of MLPs / transformer FFNs (Linear -> activation -> Linear)."""

    method = "neurons"


class Heads(_Structured):
    """Remove attention heads (``nn.MultiheadAttention``, transformers' attention modules).

    Under grouped-query attention a unit is a key/value head with the query heads reading it.
    """

    method = "heads"
    ratio: float = Field(0.25, ge=0.0, lt=1.0)
    """fraction of heads removed, in [0, 1); rounded down to whole heads (key/value groups), but
    up to one when it is at least half of one (0.25 of 2 groups removes 1, with a warning)"""


class Depth(Config):
    """Remove whole blocks of repeated block lists (transformer layers), keeping the first and last."""

    method = "depth"
    ratio: float = Field(0.5, ge=0.0, lt=1.0)
    """fraction of the blocks of each block list removed"""


class Unstructured(Config):
    """Zero the smallest weights of Conv/Linear layers; stored sparse when permanent."""

    method = "unstructured"
    renamed = {"sparsity": "ratio"}
    ratio: float = Field(0.5, ge=0.0, lt=1.0)
    """fraction of weights zeroed, in [0, 1) (sparsity before 0.2)"""
    scope: Scope = "layer"
    """'layer': the ratio in every layer; 'global': one threshold"""
    importance: Literal["l1", "random"] = "l1"
    """smallest |w| first, or random"""
    permanent: bool = True
    """store sparse now; False keeps trainable masks (parametrize)"""
    seed: int = 0
    """seed of the random importance"""


class NM(Config):
    """N:M semi-structured sparsity: N non-zeros in every M consecutive input weights."""

    method = "nm"
    n: int = Field(2, ge=1)
    """non-zeros kept in each group"""
    m: int = Field(4, ge=2)
    """group length along the input dimension"""
    permanent: bool = True
    """store the pruned weights now; False keeps trainable masks"""

    @model_validator(mode="after")
    def _n_below_m(self) -> NM:
        if self.n >= self.m:
            raise ValueError(f"n must be smaller than m (got {self.n}:{self.m})")
        return self


class Gradual(Config):
    """Zhu & Gupta's gradual magnitude pruning with fine-tuning between steps."""

    method = "gradual"
    renamed = {
        "sparsity": "ratio",
        "initial_sparsity": "initial_ratio",
        "epochs_per_step": "finetune.epochs",
        "lr": "finetune.lr",
        "distill": "finetune.distill",
    }
    ratio: float = Field(0.9, ge=0.0, lt=1.0)
    """final fraction of weights zeroed s_f (sparsity before 0.2)"""
    initial_ratio: float = Field(0.0, ge=0.0, lt=1.0)
    """s_i (initial_sparsity before 0.2)"""
    steps: int = Field(5, ge=1)
    """pruning steps n"""
    finetune: Finetune = Finetune(epochs=1)
    """fine-tuning between steps: epochs (delta t, at least 1), lr, distill from the unpruned
    model (epochs_per_step, lr, distill before 0.2)"""
    final_epochs: int = Field(2, ge=0)
    """fine-tuning epochs after the last step"""
    scope: Scope = "global"
    """'global': one threshold over all layers; 'layer': per layer"""
    permanent: bool = True
    """store sparse at the end; False keeps trainable masks"""
    seed: int = 0
    """seed of the fine-tuning"""

    @model_validator(mode="after")
    def _ordered(self) -> Gradual:
        if self.initial_ratio > self.ratio:
            raise ValueError("initial_ratio must not exceed ratio")
        if self.finetune.epochs < 1:
            raise ValueError("finetune.epochs must be at least 1: gradual pruning fine-tunes between steps")
        return self
