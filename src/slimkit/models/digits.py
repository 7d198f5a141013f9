"""The ``digits-cnn`` example: a small residual CNN on scikit-learn's handwritten digits.

The data are the 1,797 real 8x8 digits of `sklearn.datasets.load_digits`, scaled to
[0, 1], normalized and upsampled to 1x32x32. Trained weights ship in the package;
``python -m slimkit.models.digits`` retrains the model and rewrites them.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from slimkit.core.atomic import write_file
from slimkit.core.data import DataSplits, TensorData
from slimkit.core.errors import InvalidConfigError, SlimkitError, require

PIXEL_MEAN = 0.3053
PIXEL_STD = 0.3760
IMAGE_SIZE = 32
NUM_CLASSES = 10
SPLIT_SEED = 0
TEST_SIZE = 450
CALIBRATION_SIZE = 200
WEIGHTS_FILE = "digits_cnn.safetensors"


# ----------------------------------------------------------------------------- data


def _digits_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as normalized float32 ``[N, 1, 32, 32]`` images and int64 labels."""
    bunch = require("sklearn.datasets", "examples").load_digits()
    pixels = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    pixels = (pixels - PIXEL_MEAN) / PIXEL_STD
    images = F.interpolate(pixels, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    return images.contiguous(), torch.as_tensor(bunch.target, dtype=torch.int64)


def digits_data(batch_size: int = 64) -> DataSplits:
    """The ``digits`` dataset: disjoint train / calibration / test splits.

    The split is a fixed permutation (seed 0): 450 test samples, 200 calibration samples
    and the remaining 1,147 for training, in a fixed shuffled order.

    Args:
        batch_size: samples per batch in every split.

    Returns:
        `DataSplits` of `TensorData` (x float32 ``[N, 1, 32, 32]``, y int64), metric ``"accuracy"``.
    """
    x, y = _digits_tensors()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(SPLIT_SEED))
    test, calibration, train = torch.split(
        order, [TEST_SIZE, CALIBRATION_SIZE, len(order) - TEST_SIZE - CALIBRATION_SIZE]
    )
    return DataSplits(
        train=TensorData(x[train], y[train], batch_size),
        calibration=TensorData(x[calibration], y[calibration], batch_size),
        test=TensorData(x[test], y[test], batch_size),
        metric="accuracy",
    )


# ----------------------------------------------------------------------------- model


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
    )


class ResidualBlock(nn.Module):
    """conv-bn-relu-conv-bn plus an identity (or 1x1 conv-bn projection) shortcut, then relu.

    Args:
        cin: input channels.
        cout: output channels.
        stride: stride of the first conv (and of the projection).
    """

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = _conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = self.shortcut(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + identity
        return self.relu2(out)


class DigitsCNN(nn.Module):
    """Small residual CNN for 1x32x32 digits (about 200k parameters).

    A conv-bn-relu stem, then stages of residual blocks; each stage starts with a
    stride-2 block, then global average pooling and a linear classifier.

    Args:
        num_classes: number of output classes.
        widths: output channels of the stem and of each stage.
        depths: residual blocks per stage.
    """

    def __init__(
        self,
        num_classes: int = NUM_CLASSES,
        widths: Sequence[int] = (24, 32, 64, 96),
        depths: Sequence[int] = (2, 1, 1),
    ):
        super().__init__()
        if len(widths) != len(depths) + 1:
            raise InvalidConfigError(f"widths needs one entry per stage plus the stem, got {widths} for {depths}")
        self.stem = nn.Sequential(_conv_bn(1, widths[0], 3), nn.ReLU())
        stages = []
        for cin, cout, depth in zip(widths[:-1], widths[1:], depths, strict=True):
            blocks = [ResidualBlock(cin, cout, stride=2)]
            blocks += [ResidualBlock(cout, cout) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.stages(self.stem(x)))))


def example_inputs() -> tuple[torch.Tensor]:
    """One seeded random batch-1 input for ``digits-cnn``."""
    return (torch.randn(1, 1, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0)),)


# ----------------------------------------------------------------------------- weights


def weights_path() -> Path:
    """Where the shipped ``digits-cnn`` weights live inside the package."""
    return Path(str(files("slimkit.models") / "weights" / WEIGHTS_FILE))


def load_digits_cnn(pretrained: bool = True) -> DigitsCNN:
    """Build ``digits-cnn`` in eval mode, with the shipped trained weights when ``pretrained``.

    Raises:
        SlimkitError: when the weights file is missing from the package.
    """
    model = DigitsCNN()
    if pretrained:
        from safetensors.torch import load_file

        path = weights_path()
        if not path.is_file():
            raise SlimkitError(
                f"the digits-cnn weights are missing ({path}); create them with: python -m slimkit.models.digits"
            )
        model.load_state_dict(load_file(str(path)))
    return model.eval()


def save_weights(model: nn.Module, path: str | Path) -> Path:
    """Write ``model``'s state dict to a safetensors file, atomically."""
    from safetensors.torch import save

    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    return write_file(path, lambda staged: staged.write_bytes(save(tensors)))


# ----------------------------------------------------------------------------- training


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random small rotation, scale and shift of a batch of images."""
    n = len(x)
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(10)
    scale = 1 + (torch.rand(n, generator=generator) * 2 - 1) * 0.1
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * (2 / IMAGE_SIZE * 2)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="border", align_corners=False)


@torch.no_grad()
def evaluate(model: nn.Module, data: TensorData) -> float:
    """Top-1 accuracy of ``model`` on labelled ``data`` (puts ``model`` in eval mode)."""
    model.eval()
    correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in data)
    return correct / len(data.x)


def train_digits(epochs: int = 20, seed: int = 0, batch_size: int = 64, lr: float = 4e-3) -> DigitsCNN:
    """Train ``digits-cnn`` from scratch on the train split, deterministically.

    AdamW with a one-cycle learning rate, label smoothing and random affine augmentation.

    Args:
        epochs: passes over the 1,147 training samples.
        seed: seeds initialization, shuffling and augmentation.
        batch_size: training batch size.
        lr: peak learning rate.

    Returns:
        The trained model in eval mode.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    train = digits_data().train
    model = DigitsCNN()
    steps = -(-len(train.x) // batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(train.x), generator=generator)
        for idx in order.split(batch_size):
            loss = loss_fn(model(_augment(train.x[idx], generator)), train.y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()


def main(argv: Sequence[str] | None = None) -> None:
    """Train ``digits-cnn`` and write its weights (into the package by default)."""
    parser = argparse.ArgumentParser(prog="python -m slimkit.models.digits", description=main.__doc__)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=weights_path())
    args = parser.parse_args(argv)
    start = time.perf_counter()
    model = train_digits(epochs=args.epochs, seed=args.seed)
    seconds = time.perf_counter() - start
    accuracy = evaluate(model, digits_data().test)
    path = save_weights(model, args.out)
    params = sum(p.numel() for p in model.parameters())
    print(f"digits-cnn: {params} parameters, trained in {seconds:.1f} s, test accuracy {accuracy:.4f} -> {path}")


if __name__ == "__main__":
    main()
