import pytest
import torch
from torch import nn


class SvdHead(nn.Module):
    """A layer whose op (singular values) no deployment format can express."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return torch.linalg.svdvals(self.fc(x))


class NeedsSvd(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = SvdHead()

    def forward(self, x):
        return self.body(x)

    def example_inputs(self):
        return (torch.randn(2, 4, 4),)


@pytest.fixture
def svd_model():
    return NeedsSvd().eval()
