"""Random-init vision models for the ``channels`` pruning zoo test: one factory per model.

Every factory is callable without arguments, so ``sk.save(model, dir, source="cnn_zoo:NAME")``
can rebuild it. torchvision comes through `torchvision_shim` (this folder must be on
``sys.path``; the test puts it there); slimkit itself never imports it. `BatchNormAct2d`
mirrors the BatchNorm-with-activation layers of common vision libraries (timm's).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

SIZE = 64
"""Input height and width of the CNNs (ViT and Swin take their own small configs)."""


def _torchvision():
    from torchvision_shim import import_torchvision

    return import_torchvision()


def _classifier(name: str, **kwargs) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        return getattr(_torchvision().models, name)(**kwargs)

    build.__name__ = name
    return build


resnet18 = _classifier("resnet18")
resnet50 = _classifier("resnet50")
mobilenet_v2 = _classifier("mobilenet_v2")
squeezenet1_1 = _classifier("squeezenet1_1")
densenet121 = _classifier("densenet121")
googlenet = _classifier("googlenet", aux_logits=False, init_weights=True)
mnasnet0_5 = _classifier("mnasnet0_5")
resnext50_32x4d = _classifier("resnext50_32x4d")
regnet_x_400mf = _classifier("regnet_x_400mf")
convnext_tiny = _classifier("convnext_tiny")
mobilenet_v3_small = _classifier("mobilenet_v3_small")
efficientnet_b0 = _classifier("efficientnet_b0")
shufflenet_v2_x1_0 = _classifier("shufflenet_v2_x1_0")


def deeplabv3_mobilenet_v3_large() -> nn.Module:
    segmentation = _torchvision().models.segmentation
    return segmentation.deeplabv3_mobilenet_v3_large(weights_backbone=None, aux_loss=False)


def vit() -> nn.Module:
    """torchvision's ViT at 32x32 (patch 8, 3 layers, width 64)."""
    vit = _torchvision().models.VisionTransformer
    return vit(image_size=32, patch_size=8, num_layers=3, num_heads=4, hidden_dim=64, mlp_dim=128)


def swin() -> nn.Module:
    """torchvision's Swin at 32x32 (two stages, window 4, width 32)."""
    swin = _torchvision().models.swin_transformer.SwinTransformer
    return swin(patch_size=[4, 4], embed_dim=32, depths=[2, 2], num_heads=[2, 4], window_size=[4, 4], num_classes=10)


class BatchNormAct2d(nn.BatchNorm2d):
    """BatchNorm then an activation in one layer, as timm's ``BatchNormAct2d``."""

    def __init__(self, num_features: int, act: type[nn.Module] = nn.ReLU):
        super().__init__(num_features)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch._assert(x.ndim == 4, "expected a 4-D input")
        use_batch = self.training or self.running_mean is None
        x = F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, use_batch, self.momentum, self.eps
        )
        return self.act(x)


class BNActNet(nn.Module):
    """A small residual CNN whose every conv is followed by a `BatchNormAct2d`."""

    def __init__(self, width: int = 32, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1, bias=False), BatchNormAct2d(width))
        self.body = nn.Sequential(
            nn.Conv2d(width, 2 * width, 3, 1, 1, bias=False), BatchNormAct2d(2 * width, nn.SiLU),
            nn.Conv2d(2 * width, width, 1, bias=False), BatchNormAct2d(width, nn.Identity),
        )  # fmt: skip
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.body(x))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def bnact_net() -> nn.Module:
    return BNActNet()


def torch_pruning(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Torch-Pruning's MetaPruner, L1, ratio 0.5, the last conv/linear layer ignored (in place)."""
    import torch_pruning as tp

    classifier = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1]
    importance = tp.importance.MagnitudeImportance(p=1)
    tp.pruner.MetaPruner(model, x, importance=importance, pruning_ratio=0.5, ignored_layers=[classifier]).step()
    return model


def image(size: int = SIZE) -> torch.Tensor:
    """A fixed random ``1x3xSIZExSIZE`` image."""
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
