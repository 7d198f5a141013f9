"""Tiny random-init transformers for the pruning zoo test: one factory per family.

Each factory builds the smallest model that keeps its family's structure (width 64, three
layers, four heads; Llama/Qwen2 with two key/value heads) and is callable without
arguments, so ``sk.save(model, dir, source="transformer_zoo:NAME")`` can rebuild it.
This folder must be on ``sys.path`` (the test puts it there). torchvision comes through
`torchvision_shim`; slimkit itself never imports it.
"""

from __future__ import annotations

import torch
from torch import nn

WIDTH, LAYERS, HEADS, FFN, VOCAB = 64, 3, 4, 128, 100


def _transformers():
    import transformers

    return transformers


def _torchvision():
    from torchvision_shim import import_torchvision

    return import_torchvision()


def gpt2() -> nn.Module:
    t = _transformers()
    config = t.GPT2Config(n_embd=WIDTH, n_layer=LAYERS, n_head=HEADS, n_inner=FFN, vocab_size=VOCAB, n_positions=32)
    return t.GPT2LMHeadModel(config)


def _decoder(config_class: str, model_class: str) -> nn.Module:
    t = _transformers()
    config = getattr(t, config_class)(
        hidden_size=WIDTH, num_hidden_layers=LAYERS, num_attention_heads=HEADS, num_key_value_heads=2,
        intermediate_size=FFN, vocab_size=VOCAB, max_position_embeddings=32,
    )  # fmt: skip
    return getattr(t, model_class)(config)


def llama() -> nn.Module:
    return _decoder("LlamaConfig", "LlamaForCausalLM")


def qwen2() -> nn.Module:
    return _decoder("Qwen2Config", "Qwen2ForCausalLM")


def t5_encoder() -> nn.Module:
    t = _transformers()
    config = t.T5Config(
        d_model=WIDTH, d_kv=WIDTH // HEADS, d_ff=FFN, num_layers=LAYERS, num_heads=HEADS, vocab_size=VOCAB
    )
    return t.T5EncoderModel(config)


def distilbert() -> nn.Module:
    t = _transformers()
    config = t.DistilBertConfig(
        dim=WIDTH, n_layers=LAYERS, n_heads=HEADS, hidden_dim=FFN, vocab_size=VOCAB, max_position_embeddings=32
    )
    return t.DistilBertModel(config)


def _bert_like(config_class: str, model_class: str, **extra: int) -> nn.Module:
    t = _transformers()
    config = getattr(t, config_class)(
        hidden_size=WIDTH, num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=FFN,
        vocab_size=VOCAB, max_position_embeddings=40, **extra,
    )  # fmt: skip
    return getattr(t, model_class)(config)


def bert() -> nn.Module:
    return _bert_like("BertConfig", "BertModel")


def roberta() -> nn.Module:
    return _bert_like("RobertaConfig", "RobertaModel")


def mobilebert() -> nn.Module:
    return _bert_like(
        "MobileBertConfig", "MobileBertModel", embedding_size=32, intra_bottleneck_size=32, true_hidden_size=32,
        num_feedforward_networks=2,
    )  # fmt: skip


def hf_vit() -> nn.Module:
    t = _transformers()
    config = t.ViTConfig(
        hidden_size=WIDTH, num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=FFN,
        image_size=32, patch_size=8, num_labels=10,
    )  # fmt: skip
    return t.ViTForImageClassification(config)


def wav2vec2() -> nn.Module:
    t = _transformers()
    config = t.Wav2Vec2Config(
        hidden_size=WIDTH, num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=FFN,
        vocab_size=VOCAB, conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3), num_feat_extract_layers=2,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
    )  # fmt: skip
    return t.Wav2Vec2Model(config)


def torch_encoder() -> nn.Module:
    layer = nn.TransformerEncoderLayer(WIDTH, HEADS, FFN, dropout=0.0, batch_first=True)
    return nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)


def tv_vit() -> nn.Module:
    vit = _torchvision().models.VisionTransformer
    return vit(image_size=32, patch_size=8, num_layers=LAYERS, num_heads=HEADS, hidden_dim=WIDTH, mlp_dim=FFN)


def tv_swin() -> nn.Module:
    swin = _torchvision().models.swin_transformer.SwinTransformer
    return swin(patch_size=[4, 4], embed_dim=32, depths=[2, 3], num_heads=[2, 4], window_size=[4, 4], num_classes=10)


def _tokens(batch: int = 2, length: int = 8) -> dict[str, torch.Tensor]:
    ids = torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(1))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _image() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def inputs(family: str) -> dict[str, torch.Tensor] | tuple[torch.Tensor, ...]:
    """Example inputs of ``family`` (keyword inputs for transformers models)."""
    if family in ("hf_vit",):
        return {"pixel_values": _image()}
    if family in ("tv_vit", "tv_swin"):
        return (_image(),)
    if family == "wav2vec2":
        return {"input_values": torch.randn(2, 400, generator=torch.Generator().manual_seed(1))}
    if family == "torch_encoder":
        return (torch.randn(2, 8, WIDTH, generator=torch.Generator().manual_seed(1)),)
    return _tokens()


FAMILIES = (
    "gpt2", "llama", "qwen2", "t5_encoder", "distilbert", "bert", "roberta", "mobilebert", "hf_vit", "wav2vec2",
    "torch_encoder", "tv_vit", "tv_swin",
)  # fmt: skip
TORCHVISION = ("tv_vit", "tv_swin")
