"""Small architectures covering the constructs compression must handle, for tests.

Every model has ``example_inputs()`` returning a batch of 2 and is built from a fixed
seed by its factory in `ZOO`, so tests are reproducible.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def _conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    )


def _image_inputs(channels: int = 3, size: int = 16) -> tuple[torch.Tensor, ...]:
    return (torch.randn(2, channels, size, size, generator=torch.Generator().manual_seed(0)),)


class ResidualNet(nn.Module):
    """Conv stem, one residual block (identity add), a strided projection block, classifier."""

    def __init__(self, width: int = 8, classes: int = 10):
        super().__init__()
        self.stem = _conv_bn(3, width)
        self.block = nn.Sequential(_conv_bn(width, width), nn.Conv2d(width, width, 3, 1, 1), nn.BatchNorm2d(width))
        self.down = nn.Sequential(_conv_bn(width, 2 * width, stride=2), nn.Conv2d(2 * width, 2 * width, 3, 1, 1))
        self.shortcut = nn.Conv2d(width, 2 * width, 1, 2)
        self.head = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.block(x))
        x = torch.relu(self.down(x) + self.shortcut(x))
        return self.head(x.mean((2, 3)))

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        return _image_inputs()


class InvertedResidual(nn.Module):
    """MobileNetV2-style block: 1x1 expand, 3x3 depthwise, 1x1 project, residual add."""

    def __init__(self, channels: int = 8, expand: int = 4, classes: int = 10):
        super().__init__()
        hidden = channels * expand
        self.stem = _conv_bn(3, channels)
        self.expand = _conv_bn(channels, hidden, k=1)
        self.depthwise = _conv_bn(hidden, hidden, k=3, groups=hidden)
        self.project = nn.Sequential(nn.Conv2d(hidden, channels, 1, bias=False), nn.BatchNorm2d(channels))
        self.head = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.project(self.depthwise(self.expand(x)))
        return self.head(x.mean((2, 3)))

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        return _image_inputs()


class ConcatNet(nn.Module):
    """DenseNet-style: each layer's output is concatenated to its input."""

    def __init__(self, width: int = 8, growth: int = 4, classes: int = 10):
        super().__init__()
        self.stem = _conv_bn(3, width)
        self.layer1 = _conv_bn(width, growth)
        self.layer2 = _conv_bn(width + growth, growth)
        self.transition = nn.Conv2d(width + 2 * growth, width, 1)
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.cat([x, self.layer1(x)], dim=1)
        x = torch.cat([x, self.layer2(x)], dim=1)
        return self.head(self.transition(x).mean((2, 3)))

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        return _image_inputs()


class GroupedConvNet(nn.Module):
    """ResNeXt-style block: 1x1 reduce, grouped 3x3, 1x1 expand, residual add."""

    def __init__(self, width: int = 16, groups: int = 4, classes: int = 10):
        super().__init__()
        self.stem = _conv_bn(3, width)
        self.reduce = _conv_bn(width, width, k=1)
        self.grouped = _conv_bn(width, width, k=3, groups=groups)
        self.expand = nn.Sequential(nn.Conv2d(width, width, 1, bias=False), nn.BatchNorm2d(width))
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.expand(self.grouped(self.reduce(x))))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        return _image_inputs()


class TinyAttention(nn.Module):
    """BERT-style encoder layer with explicit q/k/v/out projections and an FFN."""

    def __init__(self, dim: int = 32, heads: int = 4, ffn: int = 64, seq: int = 8, classes: int = 10):
        super().__init__()
        self.heads, self.seq = heads, seq
        self.embed = nn.Linear(dim, dim)
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn), nn.GELU(), nn.Linear(ffn, dim))
        self.head = nn.Linear(dim, classes)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        attn = torch.softmax(q @ k.transpose(-2, -1) / (q.shape[-1] ** 0.5), dim=-1)
        ctx = (attn @ v).transpose(1, 2).reshape(x.shape)
        x = self.norm1(x + self.out(ctx))
        x = self.norm2(x + self.ffn(x))
        return self.head(x.mean(1))

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        dim = self.embed.in_features
        return (torch.randn(2, self.seq, dim, generator=torch.Generator().manual_seed(0)),)


class MHANet(nn.Module):
    """Encoder block built on ``nn.MultiheadAttention`` (ViT-style token input)."""

    def __init__(self, dim: int = 32, heads: int = 4, seq: int = 8, classes: int = 10):
        super().__init__()
        self.seq = seq
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x + self.attn(x, x, x, need_weights=False)[0])
        return self.head(x.mean(1))

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        dim = self.head.in_features
        return (torch.randn(2, self.seq, dim, generator=torch.Generator().manual_seed(0)),)


class LSTMNet(nn.Module):
    """A one-layer LSTM over a sequence, classifying from the last hidden state."""

    def __init__(self, features: int = 8, hidden: int = 16, seq: int = 10, classes: int = 4):
        super().__init__()
        self.seq = seq
        self.lstm = nn.LSTM(features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1])

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        return (torch.randn(2, self.seq, self.lstm.input_size, generator=torch.Generator().manual_seed(0)),)


class EmbeddingMLP(nn.Module):
    """Token embedding, mean pooling over the sequence, two-layer MLP."""

    def __init__(self, vocab: int = 100, dim: int = 16, hidden: int = 32, seq: int = 6, classes: int = 5):
        super().__init__()
        self.seq = seq
        self.embedding = nn.Embedding(vocab, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, classes))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.embedding(tokens).mean(1))

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        vocab = self.embedding.num_embeddings
        return (torch.randint(0, vocab, (2, self.seq), generator=torch.Generator().manual_seed(0)),)


def _seeded(cls: type[nn.Module]) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        torch.manual_seed(0)
        return cls().eval()

    build.__name__ = cls.__name__
    return build


ZOO: dict[str, Callable[[], nn.Module]] = {
    "residual": _seeded(ResidualNet),
    "inverted-residual": _seeded(InvertedResidual),
    "concat": _seeded(ConcatNet),
    "grouped": _seeded(GroupedConvNet),
    "attention": _seeded(TinyAttention),
    "mha": _seeded(MHANet),
    "lstm": _seeded(LSTMNet),
    "embedding": _seeded(EmbeddingMLP),
}
"""Name -> factory of an eval-mode model with a fixed seed."""
