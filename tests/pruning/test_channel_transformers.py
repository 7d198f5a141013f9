"""``channels`` on a transformer's residual stream: a class token concatenated before the
patches, a position table added, the class token read with ``x[:, 0]``, and an RMSNorm whose
mean square reduces over the channels. Each pruned model is checked against the original
weights sliced by hand with the recorded kept indices (same function, float64)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import slimkit as sk

TOKENS, PATCH, WIDTH, FFN = 5, 12, 16, 32


class RMSNorm(nn.Module):
    """A norm written in Python, as Llama/T5 write theirs (a mean over the channel axis)."""

    def __init__(self, width: int):
        super().__init__()
        self.weight = nn.Parameter(torch.rand(width) + 0.5)

    def forward(self, x):
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


class TinyViT(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.patch = nn.Linear(PATCH, WIDTH)
        self.cls_token = nn.Parameter(torch.randn(1, 1, WIDTH))
        self.position = nn.Parameter(torch.randn(1, TOKENS + 1, WIDTH))
        self.norm = RMSNorm(WIDTH)
        self.fc1, self.fc2 = nn.Linear(WIDTH, FFN), nn.Linear(FFN, WIDTH)
        self.head = nn.Linear(WIDTH, 3)

    def forward(self, patches):
        x = self.patch(patches)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.position
        x = x + self.fc2(F.gelu(self.fc1(self.norm(x))))
        return self.head(x[:, 0])


def _by_hand(model: TinyViT, keeps: dict, patches: torch.Tensor) -> torch.Tensor:
    """The original function on the original weights, sliced with the recorded kept indices."""
    hidden = torch.tensor(keeps["patch"]["out"])
    ffn = torch.tensor(keeps["fc1"]["out"]) if "fc1" in keeps else torch.arange(FFN)
    p = {k: v.detach().double() for k, v in model.state_dict().items()}
    x = F.linear(patches.double(), p["patch.weight"][hidden], p["patch.bias"][hidden])
    x = torch.cat([p["cls_token"][..., hidden].expand(x.shape[0], -1, -1), x], dim=1) + p["position"][..., hidden]
    h = p["norm.weight"][hidden] * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
    h = F.gelu(F.linear(h, p["fc1.weight"][ffn][:, hidden], p["fc1.bias"][ffn]))
    x = x + F.linear(h, p["fc2.weight"][hidden][:, ffn], p["fc2.bias"][hidden])
    return F.linear(x[:, 0], p["head.weight"][:, hidden], p["head.bias"])


def test_the_residual_stream_of_a_vit_is_pruned_through_class_token_and_position_table():
    model, patches = TinyViT().eval(), torch.randn(2, TOKENS, PATCH)
    pruned = sk.prune(model, "channels", ratio=0.5, example_inputs=patches)
    assert pruned.cls_token.shape == (1, 1, WIDTH // 2) and pruned.position.shape == (1, TOKENS + 1, WIDTH // 2)
    assert pruned.norm.weight.shape == (WIDTH // 2,) and pruned.head.in_features == WIDTH // 2
    assert pruned.fc1.out_features == FFN // 2  # the FFN's own group
    keeps = sk.explain(pruned).details["keeps"]
    with torch.no_grad():
        got = pruned(patches).double()
    torch.testing.assert_close(got, _by_hand(model, keeps, patches), rtol=1e-5, atol=1e-5)


def test_an_indexed_channel_axis_still_blocks():
    class PicksChannels(TinyViT):
        def forward(self, patches):
            return self.head(self.patch(patches)[:, :, : WIDTH // 2].repeat(1, 1, 2).mean(1))

    model = PicksChannels().eval()
    pruned = sk.prune(model, "channels", ratio=0.5, example_inputs=torch.randn(2, TOKENS, PATCH))
    assert pruned.patch.out_features == WIDTH
    assert "indexed along the channel axis" in sk.explain(pruned).skipped["patch"]
