"""The recipe search space: which techniques, with which settings, in which order.

A trial samples a channel-pruning ratio, an SVD rank fraction and a quantization method
(with bits for weight-only), and the order of the structural stages; quantization always
comes last (the other verbs work on float layers). A choice of 0 / ``none`` skips a stage.
``mixed`` (per-layer weight-only bit widths, `slimkit.search.mixed`) samples a share of the
possible saving instead of bits; it is not combined with SVD, whose factors are not the
layers the plan was made for.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from slimkit.core.config import Bits, Config, Fraction
from slimkit.core.errors import InvalidConfigError

QUANTIZE_CHOICES = ("none", "int8-dynamic", "int8-static", "weight-only", "mixed")
DEFAULT_QUANTIZE = QUANTIZE_CHOICES[:4]
"""``mixed`` is asked for explicitly: it estimates a sensitivity table before the trials."""
ORDERS = ("prune-first", "decompose-first")


class SearchSpace(Config):
    """What `search` may choose from."""

    prune_ratios: tuple[Fraction, ...] = Field((0.0, 0.25, 0.5), min_length=1)
    """channel-pruning ratios (0: no pruning stage)."""
    svd_fractions: tuple[Fraction, ...] = Field((0.0, 0.5), min_length=1)
    """SVD rank as a fraction of the full rank (0: no decomposition stage)."""
    quantize: tuple[Literal[QUANTIZE_CHOICES], ...] = Field(DEFAULT_QUANTIZE, min_length=1)
    """quantization methods (``none``: float; ``mixed``: weight-only bits per layer from a
    sensitivity table, not in the default)."""
    bits: tuple[Bits, ...] = Field((4, 8), min_length=1)
    """weight-only bit widths (``mixed`` chooses among them per layer)."""
    low_bit_shares: tuple[Annotated[float, Field(ge=0, le=1)], ...] = Field((0.25, 0.5, 0.75), min_length=1)
    """``mixed`` only: how far each plan goes from every layer at the most bits (0) to every
    layer at the fewest (1), in bytes saved."""
    round_to: tuple[Annotated[int, Field(ge=1)], ...] = Field((8,), min_length=1)
    """pruned channel counts are rounded up to a multiple of one of these (int8 kernels
    vectorize over 8 or 16 channels, so 36 channels can run slower than 40); with several, each
    trial chooses."""

    @property
    def mixed(self) -> bool:
        """Whether trials may choose per-layer mixed precision."""
        return "mixed" in self.quantize


def sample_stages(trial: Any, space: SearchSpace, mixed: Any = None) -> list[dict[str, Any]]:
    """Recipe stages (``[{"prune": {...}}, ...]``) for one Optuna ``trial``.

    Args:
        trial: the Optuna trial.
        space: what it chooses from.
        mixed: the `slimkit.search.mixed.MixedPrecision` planner when ``space`` offers ``mixed``.
    """
    method = trial.suggest_categorical("quantize", list(space.quantize)) if space.mixed else None
    if method == "mixed" and mixed is None:
        raise InvalidConfigError("a search space with 'mixed' needs the mixed-precision planner")
    structural: dict[str, dict[str, Any]] = {}
    ratio = trial.suggest_categorical("prune_ratio", list(space.prune_ratios))
    if ratio > 0:
        multiple = (
            space.round_to[0]
            if len(space.round_to) == 1
            else trial.suggest_categorical("round_to", list(space.round_to))
        )
        structural["prune"] = {"method": "channels", "ratio": ratio, **({"round_to": multiple} if multiple > 1 else {})}
    fraction = trial.suggest_categorical("svd_fraction", list(space.svd_fractions)) if method != "mixed" else 0
    if fraction > 0:
        structural["decompose"] = {"method": "svd", "rank": fraction}
    order = trial.suggest_categorical("order", list(ORDERS))
    ordered = ("prune", "decompose") if order == "prune-first" else ("decompose", "prune")
    stages = [{verb: structural[verb]} for verb in ordered if verb in structural]
    if method is None:
        method = trial.suggest_categorical("quantize", list(space.quantize))
    if method == "mixed":
        stages += mixed.stages(trial.suggest_categorical("low_bit_share", list(space.low_bit_shares)))
    elif method == "weight-only":
        stages.append({"quantize": {"method": method, "bits": trial.suggest_categorical("bits", list(space.bits))}})
    elif method != "none":
        stages.append({"quantize": {"method": method}})
    return stages


def warm_starts(space: SearchSpace, limit: int) -> list[dict[str, Any]]:
    """Trial parameters tried first: each quantization alone (``mixed`` at each share), without
    structural stages.

    Pruning or decomposing a whole model without fine-tuning often breaks a tight metric
    budget; starting from quantization alone gives the front a feasible point early.
    """
    safe = {"prune_ratio": min(space.prune_ratios), "order": ORDERS[0]}
    unstructured = {**safe, "svd_fraction": min(space.svd_fractions)}
    options: dict[str, list[dict[str, Any]]] = {
        "weight-only": [{**unstructured, "bits": max(space.bits)}],
        "mixed": [{**safe, "low_bit_share": share} for share in space.low_bit_shares],  # no svd_fraction with mixed
    }
    starts = [
        {"quantize": method, **params}
        for method in space.quantize
        if method != "none"
        for params in options.get(method, [unstructured])
    ]
    return starts[:limit]
