import pytest
import torch
from torch import nn

from slimkit.core.data import Batch
from slimkit.measure import peak_memory, tensor_bytes
from slimkit.models.testing import ZOO

# The CPU measurement sees every tensor allocated through PyTorch's allocator; kernels may
# add a little scratch space of their own. Allowed: the exact live-set peak, up to 5% more.
TOLERANCE = 0.05
FP32 = 4


def mlp(inplace: bool) -> nn.Module:
    return nn.Sequential(
        nn.Linear(256, 1024), nn.ReLU(inplace=inplace), nn.Linear(1024, 512), nn.Linear(512, 10)
    ).eval()


def assert_peak(model: nn.Module, batch: Batch, activations: int) -> None:
    weights = tensor_bytes(model)
    assert weights == sum(p.numel() * FP32 for p in model.parameters())
    peak = peak_memory(model, batch)
    assert weights + activations <= peak <= weights + activations * (1 + TOLERANCE)


def test_peak_is_weights_plus_largest_live_activations():
    x = torch.randn(64, 256)
    # Linear1's output (64x1024) and ReLU's output (64x1024) are alive together; everything
    # later is smaller (64x1024 + 64x512, then 64x512 + 64x10). The input is not counted.
    assert_peak(mlp(inplace=False), Batch(args=(x,)), 2 * 64 * 1024 * FP32)


def test_inplace_activation_lowers_the_peak():
    x = torch.randn(64, 256)
    # ReLU reuses Linear1's output; the peak is then 64x1024 + 64x512 during Linear2.
    assert_peak(mlp(inplace=True), Batch(args=(x,)), (64 * 1024 + 64 * 512) * FP32)


def test_freed_temporaries_still_count():
    class Temporary(nn.Module):
        def forward(self, x):
            return (x.repeat(16, 1) * 2).sum(0)  # 16x copy, then its doubled copy, then (128,)

    x = torch.randn(32, 128)
    big = 16 * 32 * 128 * FP32
    peak = peak_memory(Temporary(), Batch(args=(x,)))
    assert 2 * big <= peak <= 2 * big * (1 + TOLERANCE)


def test_no_allocation_means_only_weights():
    assert peak_memory(nn.Identity(), Batch(args=(torch.randn(100, 100),))) == 0
    layer = nn.Linear(3, 3)
    assert peak_memory(nn.Sequential(layer, nn.Identity()), Batch(args=(torch.randn(1, 3),))) >= tensor_bytes(layer)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_models_count_at_least_weights_and_output(name):
    model = ZOO[name]()
    batch = Batch(args=model.example_inputs())
    with torch.no_grad():
        output = model(*batch.args)
    peak = peak_memory(model, batch)
    assert peak >= tensor_bytes(model) + output.numel() * output.element_size()
    assert peak == peak_memory(model, batch)  # deterministic
