"""GPTQ's units: to keep peak memory low on large models its layers are calibrated one *unit*
at a time (a transformer block, or a lone layer outside the blocks): the model runs on the
calibration data only until that unit has produced its output (`calibrate`'s ``stop_at``), so
no activations of later layers are kept and only one unit's Hessians are held.
"""

from __future__ import annotations

from torch import nn


def block_units(model: nn.Module, names: list[str]) -> list[tuple[str, list[str]]]:
    """Group layer ``names`` into units: one per child of the model's main block list.

    The block list is the `nn.ModuleList` holding the most of ``names`` (``encoder.layer``
    in BERT). Layers outside it form single-layer units. Units follow module order.

    Returns:
        ``[(unit_module_name, [layer names]), ...]``.
    """
    best, best_count = None, 0
    for lname, module in model.named_modules():
        if isinstance(module, nn.ModuleList):
            count = sum(1 for n in names if n.startswith(lname + "."))
            if count > best_count:
                best, best_count = lname, count
    units: dict[str, list[str]] = {}
    for name in names:
        unit = name
        if best is not None and name.startswith(best + "."):
            unit = best + "." + name[len(best) + 1 :].split(".")[0]
        units.setdefault(unit, []).append(name)
    order = {n: i for i, (n, _) in enumerate(model.named_modules())}
    return sorted(units.items(), key=lambda item: order[item[0]])
