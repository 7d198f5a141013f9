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


DEAD = 4  # head dimensions zeroed in every head, so removing them changes nothing


def _hf_vit():
    import transformers

    torch.manual_seed(0)
    config = transformers.ViTConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, image_size=16,
        patch_size=8, num_channels=3, num_labels=5,
    )  # fmt: skip
    return transformers.ViTForImageClassification(config).eval()


def _dead_head_dims(attention, head_dim: int, heads: int) -> None:
    """Zero the first DEAD dimensions of every head in q, k, v and the output's input columns."""
    rows = torch.cat([torch.arange(h * head_dim, h * head_dim + DEAD) for h in range(heads)])
    with torch.no_grad():
        for proj in (attention.q_proj, attention.k_proj, attention.v_proj):
            proj.weight[rows] = 0
            proj.bias[rows] = 0
        attention.o_proj.weight[:, rows] = 0


def test_head_widths_are_pruned_with_the_original_softmax_scale():
    model = _hf_vit()
    for layer in model.vit.layers:
        _dead_head_dims(layer.attention, 16, 4)
    x = torch.randn(2, 3, 16, 16)
    attention_only = ["*.attention", "*.attention.*"]  # the residual width and FFNs stay
    pruned = sk.prune(model, "channels", ratio=DEAD / 16, example_inputs=(x,), include=attention_only)
    for layer in pruned.vit.layers:
        attention = layer.attention
        assert attention.head_dim == 16 - DEAD and attention.q_proj.out_features == 4 * (16 - DEAD)
        assert attention.o_proj.in_features == 4 * (16 - DEAD) and attention.scaling == 16**-0.5
    with torch.no_grad():
        torch.testing.assert_close(pruned(x).logits, model(x).logits, rtol=1e-5, atol=1e-5)
    widths = [k for k in sk.explain(pruned).details["pruned"] if k.endswith("head width")]
    assert len(widths) == 2


def test_split_multihead_attention_keeps_its_scale_when_heads_narrow():
    from slimkit.pruning.attention import SplitMultiheadAttention

    torch.manual_seed(0)
    mha = nn.MultiheadAttention(32, 4, batch_first=True).eval()
    split = SplitMultiheadAttention.from_mha(mha).eval()
    x = torch.randn(2, 6, 32)
    with torch.no_grad():
        torch.testing.assert_close(split(x, x, x)[0], mha(x, x, x)[0], rtol=1e-5, atol=1e-5)
    assert split.scaling == 8**-0.5


def test_rotary_models_keep_their_head_width():
    import transformers

    config = transformers.LlamaConfig(
        hidden_size=64, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
        vocab_size=50, max_position_embeddings=16,
    )  # fmt: skip
    model = transformers.LlamaForCausalLM(config).eval()
    ids = torch.randint(0, 50, (2, 8))
    pruned = sk.prune(model, "channels", ratio=0.5, example_inputs={"input_ids": ids})
    assert pruned.model.layers[0].self_attn.head_dim == 16
    assert "rotary" in sk.explain(pruned).skipped["model.layers.0.self_attn head width"]
