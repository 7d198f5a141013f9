"""``channels`` 0.5 on transformers models beside Torch-Pruning, at the sizes of issue 17.

    PYTHONPATH=src .venv/bin/python benchmarks/pruning_transformers.py

Random-init models (hidden 256, 4 layers, 4 heads, FFN 1024; 32 x 32 images in 4 x 4 patches,
2 x 16 tokens), the classifier kept whole by both tools. slimkit: `sk.prune(model, "channels",
ratio=0.5)` (residual width, FFN neurons, head widths). Torch-Pruning: `MetaPruner` with L1
magnitude importance at ratio 0.5, told each attention's head count (its documented recipe
for transformers). MACs by torch's flop counter (`slimkit.measure.count_macs`)
on the same inputs, as ratios to the unpruned model; "runs" is a forward of the pruned model.
"""

from __future__ import annotations

import warnings

import torch
import transformers
from rich.console import Console
from rich.table import Table
from torch import nn

import slimkit as sk
from slimkit.measure import count_macs

console = Console(width=120)
SIZES = {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 1024}


def vit() -> tuple[nn.Module, dict]:
    config = transformers.ViTConfig(**SIZES, image_size=32, patch_size=4, num_labels=10)
    return transformers.ViTForImageClassification(config).eval(), {"pixel_values": torch.randn(2, 3, 32, 32)}


def bert() -> tuple[nn.Module, dict]:
    config = transformers.BertConfig(**SIZES, vocab_size=1000, num_labels=3)
    ids = torch.randint(0, 1000, (2, 16), generator=torch.Generator().manual_seed(0))
    return transformers.BertForSequenceClassification(config).eval(), {"input_ids": ids}


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


PROJECTIONS = {"q_proj": ("q_proj", "k_proj", "v_proj"), "query": ("query", "key", "value")}
"""Query/key/value projection names of the attention modules here (ViT, BERT)."""


def torch_pruning(model: nn.Module, inputs: dict) -> nn.Module:
    """Torch-Pruning's MetaPruner on ``model`` (in place), each attention's head count declared."""
    import torch_pruning as tp

    heads = {}
    for module in model.modules():
        count = getattr(module, "num_attention_heads", None)
        for query, trio in PROJECTIONS.items():
            if count and isinstance(getattr(module, query, None), nn.Linear):
                heads.update({getattr(module, name): count for name in trio})
    pruner = tp.pruner.MetaPruner(
        model, inputs, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=0.5,
        ignored_layers=[model.classifier], num_heads=heads,
    )  # fmt: skip
    pruner.step()
    return model


def main() -> None:
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    table = Table(title="channels 0.5 at the issue's sizes: MACs / params after, as ratios")
    for column in ("model", "slimkit MACs", "slimkit params", "Torch-Pruning MACs", "Torch-Pruning params", "TP runs"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, build in (("ViTForImageClassification", vit), ("BertForSequenceClassification", bert)):
        model, inputs = build()
        macs, params = count_macs(model, inputs).total, _params(model)
        ours = sk.prune(model, "channels", ratio=0.5, example_inputs=inputs)
        row = [name, f"{count_macs(ours, inputs).total / macs:.3f}", f"{_params(ours) / params:.3f}"]
        try:
            theirs = torch_pruning(build()[0], inputs)
            with torch.no_grad():
                theirs(**inputs)
            row += [f"{count_macs(theirs, inputs).total / macs:.3f}", f"{_params(theirs) / params:.3f}", "yes"]
        except Exception as exc:  # noqa: BLE001 -- a peer's failure is a finding for the table
            row += ["-", "-", f"no: {type(exc).__name__}"]
        table.add_row(*row)
    console.print(table)


if __name__ == "__main__":
    main()
