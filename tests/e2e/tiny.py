"""A tiny model and data for the end-to-end kill matrix (seconds per run)."""

import torch

from slimkit.core.data import DataSplits, TensorData
from slimkit.models.testing import ResidualNet


def model() -> torch.nn.Module:
    """A seeded small residual CNN."""
    torch.manual_seed(0)
    return ResidualNet().eval()


def data() -> DataSplits:
    """Disjoint train/calibration/test splits labelled by the model itself."""
    net = model()
    x = torch.randn(192, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = net(x).argmax(1)
    part = [TensorData(x[i : i + 64], y[i : i + 64], batch_size=32) for i in (0, 64, 128)]
    return DataSplits(train=part[0], calibration=part[1], test=part[2], metric="accuracy")
