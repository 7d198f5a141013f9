import copy
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from slimkit.core.data import TensorData
from slimkit.core.errors import DataError, InvalidConfigError
from slimkit.measure import accuracy, cosine_similarity, evaluate, sqnr_db
from slimkit.models.testing import ZOO

TIGHT = 1e-9  # float64 reductions on both sides


def np_cosines(ref: np.ndarray, out: np.ndarray) -> np.ndarray:
    ref, out = ref.reshape(len(ref), -1), out.reshape(len(out), -1)
    return (ref * out).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1))


def np_sqnr(ref: np.ndarray, out: np.ndarray) -> float:
    return 10 * np.log10((ref**2).sum() / ((ref - out) ** 2).sum())


def test_accuracy_matches_numpy():
    logits, targets = torch.randn(200, 7), torch.randint(0, 7, (200,))
    expected = np.mean(logits.numpy().argmax(1) == targets.numpy())
    assert accuracy(logits, targets) == pytest.approx(expected, abs=TIGHT)


def test_accuracy_per_token_and_one_hot_targets():
    logits, targets = torch.randn(4, 9, 5), torch.randint(0, 5, (4, 9))
    expected = np.mean(logits.numpy().argmax(-1) == targets.numpy())
    assert accuracy(logits, targets) == pytest.approx(expected, abs=TIGHT)
    one_hot = nn.functional.one_hot(targets, 5).float()
    assert accuracy(logits, one_hot) == pytest.approx(expected, abs=TIGHT)


def test_accuracy_rejects_mismatched_targets():
    with pytest.raises(DataError, match="do not fit logits"):
        accuracy(torch.randn(4, 3), torch.zeros(5, dtype=torch.long))


def test_cosine_and_sqnr_match_float64_numpy():
    ref = torch.randn(16, 3, 4)
    out = ref + 0.1 * torch.randn(16, 3, 4)
    r64, o64 = ref.double().numpy(), out.double().numpy()
    assert cosine_similarity(ref, out) == pytest.approx(np_cosines(r64, o64).mean(), abs=TIGHT)
    assert sqnr_db(ref, out) == pytest.approx(np_sqnr(r64, o64), abs=TIGHT)


def test_identical_and_degenerate_inputs():
    x = torch.randn(5, 8)
    assert sqnr_db(x, x) == math.inf
    assert sqnr_db(torch.zeros(3), torch.ones(3)) == -math.inf
    assert cosine_similarity(x, x) == pytest.approx(1.0, abs=TIGHT)
    zeros = torch.zeros(2, 4)
    assert cosine_similarity(zeros, zeros) == 1.0  # identical all-zero samples
    assert cosine_similarity(zeros, torch.ones(2, 4)) == 0.0
    with pytest.raises(DataError, match="do not match"):
        sqnr_db(torch.zeros(2, 3), torch.zeros(3, 2))


@st.composite
def signal_and_noise(draw):
    n = draw(st.integers(2, 6))
    d = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=gen, dtype=torch.float64), torch.randn(n, d, generator=gen, dtype=torch.float64)


@settings(max_examples=50, deadline=None)
@given(pair=signal_and_noise(), scale=st.floats(1e-3, 1e3))
def test_sqnr_drops_20db_per_decade_of_noise(pair, scale):
    x, noise = pair
    base = sqnr_db(x, x + noise)
    assert sqnr_db(x, x + scale * noise) == pytest.approx(base - 20 * math.log10(scale), abs=1e-9)
    assert sqnr_db(scale * x, scale * (x + noise)) == pytest.approx(base, abs=1e-9)


@settings(max_examples=50, deadline=None)
@given(pair=signal_and_noise(), a=st.floats(1e-3, 1e3), b=st.floats(1e-3, 1e3))
def test_cosine_is_invariant_to_positive_scaling(pair, a, b):
    x, y = pair
    assert cosine_similarity(a * x, b * y) == pytest.approx(cosine_similarity(x, y), abs=1e-9)
    assert -1 - 1e-12 <= cosine_similarity(x, y) <= 1 + 1e-12


def classification_data(samples=7, batch_size=3):
    model = ZOO["residual"]()
    x = torch.randn(samples, 3, 16, 16)
    y = torch.randint(0, 10, (samples,))
    return model, TensorData(x, y, batch_size=batch_size)


def test_evaluate_accuracy_over_uneven_batches():
    model, data = classification_data(samples=7, batch_size=3)
    with torch.no_grad():
        expected = np.mean(model(data.x).argmax(1).numpy() == data.y.numpy())
    assert evaluate(model, data, "accuracy") == {"accuracy": pytest.approx(expected, abs=TIGHT)}
    first = data.take(3)
    with torch.no_grad():
        expected_first = np.mean(model(first.x).argmax(1).numpy() == first.y.numpy())
    assert evaluate(model, data, "accuracy", limit=1) == {"accuracy": pytest.approx(expected_first, abs=TIGHT)}


def test_evaluate_accuracy_on_mapping_batches_with_labels():
    model = ZOO["embedding"]()
    tokens, labels = torch.randint(0, 100, (6, 6)), torch.randint(0, 5, (6,))
    data = [{"tokens": tokens[:4], "labels": labels[:4]}, {"tokens": tokens[4:], "labels": labels[4:]}]
    with torch.no_grad():
        expected = np.mean(model(tokens).argmax(1).numpy() == labels.numpy())
    assert evaluate(model, data, "accuracy")["accuracy"] == pytest.approx(expected, abs=TIGHT)


def test_evaluate_accuracy_needs_targets():
    model, data = classification_data()
    with pytest.raises(DataError, match="'accuracy' needs targets"):
        evaluate(model, [data.x], "accuracy")


def perturbed(model: nn.Module, scale: float) -> nn.Module:
    copy_ = copy.deepcopy(model)
    with torch.no_grad():
        for p in copy_.parameters():
            p.add_(scale * torch.randn_like(p))
    return copy_


def test_evaluate_fidelity_aggregates_over_samples_not_batches():
    reference, data = classification_data(samples=7, batch_size=6)  # batches of 6 and 1
    model = perturbed(reference, 0.05)
    with torch.no_grad():
        ref, out = reference(data.x).double().numpy(), model(data.x).double().numpy()
    result = evaluate(model, data, "fidelity", reference=reference)
    assert set(result) == {"cosine", "sqnr_db"}
    assert result["cosine"] == pytest.approx(np_cosines(ref, out).mean(), abs=1e-6)
    assert result["sqnr_db"] == pytest.approx(np_sqnr(ref, out), abs=1e-6)
    per_batch_cosine = np.mean([np_cosines(ref[:6], out[:6]).mean(), np_cosines(ref[6:], out[6:]).mean()])
    per_batch_sqnr = np.mean([np_sqnr(ref[:6], out[:6]), np_sqnr(ref[6:], out[6:])])
    assert abs(per_batch_cosine - result["cosine"]) > 1e-6 or abs(per_batch_sqnr - result["sqnr_db"]) > 1e-6


def test_evaluate_runs_in_eval_mode_and_restores_flags():
    model = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.9), nn.Linear(8, 3)).train()
    data = TensorData(torch.randn(10, 8), batch_size=4)
    result = evaluate(model, data, "fidelity", reference=model)
    assert result == {"cosine": pytest.approx(1.0, abs=TIGHT), "sqnr_db": math.inf}  # dropout was off
    assert model.training and all(m.training for m in model.modules())


def test_evaluate_fidelity_needs_a_reference():
    model, data = classification_data()
    with pytest.raises(InvalidConfigError, match="reference"):
        evaluate(model, data, "fidelity")


def test_evaluate_rejects_unknown_metric():
    model, data = classification_data()
    with pytest.raises(InvalidConfigError, match="'f1'.*valid: accuracy, fidelity, or package.module:function"):
        evaluate(model, data, "f1")


def cross_entropy(outputs, targets):
    """Lower is better; called once on the whole split."""
    return float(nn.functional.cross_entropy(outputs, targets))


cross_entropy.higher_is_better = False


def test_user_metric_sees_the_whole_split_at_once():
    model, data = classification_data()
    calls = []

    def top1(outputs, targets):
        calls.append((outputs.shape, targets.shape))
        return float((outputs.argmax(-1) == targets).double().mean())

    result = evaluate(model, data, top1)
    assert result == {"top1": pytest.approx(evaluate(model, data, "accuracy")["accuracy"], abs=TIGHT)}
    n = len(data.y)
    assert len(calls) == 1 and calls[0][0][0] == n and calls[0][1] == (n,)


def test_lower_is_better_metric_resolves_and_matches_torch():
    from slimkit.measure.metrics import Metric, resolve_metric

    model, data = classification_data()
    metric = resolve_metric(cross_entropy)
    assert metric == Metric("cross_entropy", cross_entropy, higher_is_better=False)
    xs, ys = data.x, data.y
    with torch.no_grad():
        expected = float(nn.functional.cross_entropy(model.eval()(xs), ys))
    assert evaluate(model, data, metric)["cross_entropy"] == pytest.approx(expected, rel=1e-6)
    # the spec form and an explicit direction
    spec = resolve_metric(f"{__name__}:cross_entropy")
    assert spec.fn is cross_entropy and not spec.higher_is_better
    assert resolve_metric(cross_entropy, higher_is_better=True).higher_is_better
    assert resolve_metric(lambda o, t: 0.0).name == "metric"
    assert resolve_metric(None) == Metric("accuracy") and resolve_metric("fidelity").key == "cosine"


def test_bad_user_metrics_are_one_clear_error():
    from slimkit.measure.metrics import resolve_metric

    model, data = classification_data()
    with pytest.raises(InvalidConfigError, match="cannot import module 'no_such_module'"):
        resolve_metric("no_such_module:fn")
    with pytest.raises(InvalidConfigError, match="cannot be reversed"):
        resolve_metric("accuracy", higher_is_better=False)
    with pytest.raises(DataError, match="must return a number"):
        evaluate(model, data, lambda o, t: "high")
    with pytest.raises(DataError, match="failed on the model's outputs: ZeroDivisionError"):
        evaluate(model, data, lambda o, t: 1 / 0)


def test_model_bugs_propagate_and_data_mismatches_become_data_errors():
    class Buggy(nn.Module):
        def forward(self, x):
            raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")

    with pytest.raises(RuntimeError, match="out of memory"):
        evaluate(Buggy(), [(torch.ones(2, 3), torch.zeros(2, dtype=torch.long))], "accuracy")
    with pytest.raises(DataError, match="forward failed"):
        evaluate(nn.Linear(4, 2), [(torch.ones(2, 3), torch.zeros(2, dtype=torch.long))], "accuracy")
