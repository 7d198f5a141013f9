"""transformers models exported to ONNX: every output compared, batch and sequence axes dynamic."""

import onnxruntime  # noqa: F401 (required: make test installs every extra)
import pytest
import torch
import transformers

import slimkit as sk

pytestmark = pytest.mark.slow  # integration: exports through onnxruntime/torch.export (make test)


def _ids(batch: int, seq: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 100, (batch, seq), generator=torch.Generator().manual_seed(seed))


def _gpt2() -> transformers.GPT2LMHeadModel:
    """A tiny GPT-2 (2 layers, width 64, 32 positions) with seeded random weights."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_embd=64, n_layer=2, n_head=4, vocab_size=100, n_positions=32, bos_token_id=0, eos_token_id=0
    )
    return transformers.GPT2LMHeadModel(config).eval()


def test_bert_returns_all_outputs_and_takes_keyword_inputs(tmp_path):
    torch.manual_seed(0)
    config = transformers.BertConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, vocab_size=100
    )
    model = transformers.BertModel(config).eval()
    ids = _ids(2, 12)
    path = sk.export(model, tmp_path / "bert.onnx", example_inputs={"input_ids": ids, "attention_mask": ids * 0 + 1})
    runtime = sk.runtime.load(path)
    x = _ids(3, 7, seed=1)
    hidden, pooled = runtime.run(input_ids=x, attention_mask=torch.ones_like(x))
    with torch.no_grad():
        ref = model(input_ids=x, attention_mask=torch.ones_like(x))
    torch.testing.assert_close(hidden, ref.last_hidden_state, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(pooled, ref.pooler_output, rtol=1e-4, atol=1e-4)


def test_gpt2_exports_without_its_cache_at_any_batch_and_length(tmp_path):
    model = _gpt2()  # use_cache=True: returns a cache object
    path = sk.export(model, tmp_path / "gpt2.onnx", example_inputs=(_ids(2, 12),))
    runtime = sk.runtime.load(path)
    for batch, seq in [(1, 5), (3, 20)]:
        x = _ids(batch, seq, seed=seq)
        with torch.no_grad():
            torch.testing.assert_close(runtime.run(x), model(x).logits, rtol=1e-4, atol=1e-4)
    # keyword inputs only, as tokenizers give them: bound to the model's own parameter names
    ids = _ids(2, 12)
    named = sk.export(model, tmp_path / "named.onnx", example_inputs={"input_ids": ids, "attention_mask": ids > -1})
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=ids > -1).logits
    torch.testing.assert_close(sk.runtime.load(named).run(input_ids=ids, attention_mask=ids > -1), expected)


def test_gpt2_runs_in_executorch_at_any_batch_and_length_up_to_its_positions(tmp_path):
    # the batch stays dynamic past the edge verifier (its split is exported as slices), and the
    # sequence is bounded by n_positions so ExecuTorch plans memory for the largest input
    model = _gpt2()
    ids = _ids(2, 12)
    path = sk.export(model, tmp_path / "gpt2.pte", example_inputs={"input_ids": ids, "attention_mask": ids * 0 + 1})
    runtime = sk.runtime.load(path)
    for batch, seq in [(1, 5), (3, 20), (2, 32)]:
        x = _ids(batch, seq, seed=seq)
        with torch.no_grad():
            expected = model(input_ids=x, attention_mask=torch.ones_like(x)).logits
        torch.testing.assert_close(runtime.run(input_ids=x, attention_mask=torch.ones_like(x)), expected,
                                   rtol=1e-4, atol=1e-4)  # fmt: skip


def test_split_as_slices_keeps_the_graph_equal():
    from slimkit.core.data import batch_from_inputs
    from slimkit.runtime.pte_export import split_as_slices
    from slimkit.runtime.tracing import trace

    class Split(torch.nn.Module):
        def forward(self, x):
            a, b, c = x.split(4, dim=-1)
            d, e = x.split([3, 9], dim=2)
            return a * 2 + c - b, d.sum(-1) + e.mean(-1)

    x = torch.randn(2, 5, 12)
    program = split_as_slices(trace(Split(), batch_from_inputs((x,))))
    assert not [n for n in program.graph.nodes if "split" in str(n.target)]
    y = torch.randn(3, 5, 12)
    for got, want in zip(program.module()(y), Split()(y), strict=True):
        torch.testing.assert_close(got, want)


def test_gpt2_pte_at_deployment_bounds_plans_less_memory_and_refuses_longer_inputs(tmp_path):
    from slimkit.core.errors import DataError, InvalidConfigError
    from slimkit.runtime.pte_export import planned_memory

    model = _gpt2()
    ids = _ids(2, 12)
    inputs = {"input_ids": ids, "attention_mask": ids * 0 + 1}
    default = sk.export(model, tmp_path / "default.pte", example_inputs=inputs)
    bounded = sk.export(model, tmp_path / "bounded.pte", example_inputs=inputs, max_batch=1, max_sequence=16)
    # planned for batch 1 x 16 tokens instead of 1024 x 32: at least 1000x less
    assert 0 < planned_memory(bounded) * 1000 < planned_memory(default)
    runtime = sk.runtime.load(bounded)
    assert runtime.max_batch == 1
    x = _ids(3, 16, seed=3)  # three samples run one by one
    with torch.no_grad():
        expected = model(input_ids=x, attention_mask=torch.ones_like(x)).logits
    torch.testing.assert_close(runtime.run(input_ids=x, attention_mask=torch.ones_like(x)), expected,
                               rtol=1e-4, atol=1e-4)  # fmt: skip
    longer = _ids(1, 17)
    with pytest.raises(DataError, match="at most 16"):
        runtime.run(input_ids=longer, attention_mask=torch.ones_like(longer))
    with pytest.raises(InvalidConfigError, match="longer than max_sequence=8"):
        sk.export(model, tmp_path / "short.pte", example_inputs=inputs, max_sequence=8)
    with pytest.raises(InvalidConfigError, match="max_batch must be"):
        sk.export(model, tmp_path / "zero.pte", example_inputs=inputs, max_batch=0)
    assert not (tmp_path / "short.pte").exists() and not (tmp_path / "zero.pte").exists()
