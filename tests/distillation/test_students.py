"""Students built from the teacher: every other transformer layer (spread or strided), narrower CNNs."""

from __future__ import annotations

import importlib
import importlib.util
import itertools
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import slimkit as sk
from slimkit.core.errors import InvalidConfigError, UnsupportedModelError
from slimkit.distillation import layer_pairs, shrink
from slimkit.distillation.students import kept_layers
from slimkit.models.minilm import example_inputs


def test_kept_layers_spread_like_distilbert_or_by_stride() -> None:
    assert kept_layers(12, 0.5) == [0, 2, 4, 7, 9, 11]  # DistilBERT's pick from BERT-base
    assert kept_layers(6, 0.5) == [0, 3, 5]
    assert kept_layers(6, 0.5, "stride") == [0, 2, 4]
    assert kept_layers(12, 0.25, "stride") == [0, 4, 8]
    assert kept_layers(6, 1.0) == kept_layers(6, 1.0, "stride") == list(range(6))
    assert kept_layers(6, 0.1) == [0]


@given(st.integers(1, 48), st.floats(0.01, 1.0), st.sampled_from(["spread", "stride"]))
def test_kept_layers_are_distinct_sorted_and_start_at_zero(count: int, depth: float, spacing: str) -> None:
    kept = kept_layers(count, depth, spacing)  # type: ignore[arg-type]
    assert kept[0] == 0 and kept == sorted(set(kept)) and kept[-1] < count
    assert len(kept) == max(1, round(count * depth))
    if spacing == "spread" and len(kept) > 1:
        assert kept[-1] == count - 1  # the teacher's last layer is kept
        gaps = [b - a for a, b in itertools.pairwise(kept)]
        assert max(gaps) - min(gaps) <= 1  # evenly spread


@pytest.mark.slow
def test_shrink_minilm_keeps_layers_0_3_5_and_round_trips(tmp_path: Path) -> None:
    teacher = sk.load("example:minilm")
    student = shrink(teacher, depth=0.5)
    layers, t_layers = student.encoder.encoder.layer, teacher.encoder.encoder.layer
    assert len(layers) == 3 and student.encoder.config.num_hidden_layers == 3
    assert len(t_layers) == 6 and teacher.encoder.config.num_hidden_layers == 6
    for new, old in zip(layers, (t_layers[0], t_layers[3], t_layers[5]), strict=True):
        for (name, a), b in zip(new.state_dict().items(), old.state_dict().values(), strict=True):
            assert torch.equal(a, b), name
    stack = "encoder.encoder.layer"
    assert layer_pairs(student) == {f"{stack}.0": f"{stack}.2", f"{stack}.1": f"{stack}.4", f"{stack}.2": f"{stack}.5"}
    strided = shrink(teacher, depth=0.5, spacing="stride")
    assert torch.equal(strided.encoder.encoder.layer[1].output.dense.weight, t_layers[2].output.dense.weight)
    assert layer_pairs(strided) == {f"{stack}.0": f"{stack}.1", f"{stack}.1": f"{stack}.3", f"{stack}.2": f"{stack}.5"}
    sk.save(student, tmp_path / "s")
    loaded = sk.load(tmp_path / "s")
    x = example_inputs()
    with torch.no_grad():
        assert torch.equal(loaded(*x), student.eval()(*x))
    assert len(loaded.encoder.encoder.layer) == 3
    assert layer_pairs(loaded) == layer_pairs(student)


def test_depth_shrink_needs_a_transformer_and_some_fraction() -> None:
    cnn = sk.load("slimkit.models.testing:ResidualNet")
    with pytest.raises(UnsupportedModelError, match="transformers encoder"):
        shrink(cnn, depth=0.5)
    with pytest.raises(InvalidConfigError, match="depth=... .* or width"):
        shrink(cnn)
    with pytest.raises(InvalidConfigError, match="depth"):
        shrink(cnn, depth=1.5)
    with pytest.raises(InvalidConfigError, match="width must be in"):
        shrink(cnn, width=1.0)
    with pytest.raises(InvalidConfigError, match="spacing"):
        shrink(cnn, depth=0.5, spacing="random")  # type: ignore[arg-type]
    with pytest.raises(InvalidConfigError, match="shrink\\(teacher, depth"):
        layer_pairs(cnn)


def test_width_shrink_uses_structured_pruning() -> None:
    cnn = sk.load("slimkit.models.testing:ResidualNet")
    inputs = cnn.example_inputs()
    pruning = importlib.util.find_spec("slimkit.pruning")
    if pruning is not None and hasattr(importlib.import_module("slimkit.pruning"), "prune"):
        narrow = shrink(cnn, width=0.5, example_inputs=inputs)
        params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        assert params(narrow) < 0.6 * params(cnn)
        assert narrow(*inputs).shape == cnn(*inputs).shape
    else:
        with pytest.raises(UnsupportedModelError, match="structured pruning"):
            shrink(cnn, width=0.5, example_inputs=inputs)
