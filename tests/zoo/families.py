"""One entry point over both zoos for the technique tests and `benchmarks/coverage.py`: a
family's model with realistic activations, its example inputs, and its primary output.

This folder must be on ``sys.path`` (the callers put it there).
"""

from __future__ import annotations

import cnn_zoo
import torch
import transformer_zoo

CNNS = ("resnet18", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "convnext_tiny", "bnact_net")
TRANSFORMERS = tuple(f for f in transformer_zoo.FAMILIES if f != "torch_encoder")


def build(family: str) -> tuple[torch.nn.Module, object]:
    """The family's model (eval mode, seeded) and example inputs.

    CNNs get BatchNorm running statistics of real scale (three train-mode passes on random
    images), as a trained model has; zero-initialised weights (torchvision ViT's head) get
    small random values, so every output carries signal.
    """
    torch.manual_seed(0)
    if family in CNNS:
        model = getattr(cnn_zoo, family)().train()
        with torch.no_grad():
            for _ in range(3):
                model(torch.randn(8, 3, cnn_zoo.SIZE, cnn_zoo.SIZE))
        return model.eval(), (torch.randn(2, 3, cnn_zoo.SIZE, cnn_zoo.SIZE),)
    model = getattr(transformer_zoo, family)().eval()
    with torch.no_grad():
        for weight in (p for p in model.parameters() if p.dim() > 1 and not p.any()):
            weight.normal_(std=0.02)
    return model, transformer_zoo.inputs(family)


def output(model: torch.nn.Module, x: object) -> torch.Tensor:
    """The model's primary output tensor (logits, else the last hidden state)."""
    with torch.no_grad():
        out = model(**x) if isinstance(x, dict) else model(*x)
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, tuple):
        return out[0]
    return out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state
