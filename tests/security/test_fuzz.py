"""Fuzzing ``slimkit.json`` and recipes: a mutation loads the identical model or raises a slimkit
error -- never another exception, never a hang (hypothesis deadlines), never a big allocation."""

from __future__ import annotations

import copy
import json
import resource
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import slimkit as sk
from slimkit.core.errors import SlimkitError
from slimkit.core.index import integrity_hash
from slimkit.pipeline.recipe import parse_recipe

FUZZ = settings(
    max_examples=120,
    deadline=10_000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, -1, 2, 3, 10**10, 10**12, -3]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["../../etc/passwd", "/etc/passwd", "os:abort", "sys:exit", "nope", "", "model.pt2"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


def _mutate(doc: Any, path: tuple, action: str, value: Any) -> Any:
    if not path:
        return value
    doc = copy.deepcopy(doc)
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if action == "delete":
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return doc


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    model = sk.load("slimkit.models.testing:ResidualNet")
    pruned = sk.prune(model, "channels", ratio=0.5, example_inputs=model.example_inputs())
    folder = sk.save(pruned, tmp / "pruned")
    x = model.example_inputs()[0]
    with torch.no_grad():
        expected = pruned(x)
    return folder, json.loads((folder / "slimkit.json").read_text()), x, expected


@FUZZ
@given(data=st.data())
def test_mutated_index_loads_identically_or_raises_a_slimkit_error(saved, tmp_path_factory, data):
    folder, index, x, expected = saved
    top = data.draw(st.sampled_from([None, *index]), label="field")  # every field equally, then a node in it
    paths = [p for p in _paths(index) if top is None and not p or p and p[0] == top]
    path = data.draw(st.sampled_from(paths), label="path")
    action = data.draw(st.sampled_from(["replace", "delete"]) if path else st.just("replace"), label="action")
    value = data.draw(VALUES, label="value")
    mutated = _mutate(index, path, action, value)
    if isinstance(mutated, dict) and data.draw(st.booleans(), label="rehash"):
        mutated["integrity"] = integrity_hash(mutated)  # as an attacker would
    work = Path(tmp_path_factory.mktemp("m"))
    target = work / "f"
    shutil.copytree(folder, target)
    (target / "slimkit.json").write_text(json.dumps(mutated))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        model = sk.load(target)
    except SlimkitError as exc:
        event(f"refused: {type(exc).__name__}")
    else:
        event("loaded")
        with torch.no_grad():
            torch.testing.assert_close(model(x), expected, rtol=0, atol=0)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 512, f"loading allocated {grown_mb:.0f} MB"
    shutil.rmtree(work, ignore_errors=True)


RECIPE = {
    "model": "example:digits-cnn",
    "data": "example:digits",
    "seed": 0,
    "stages": [
        {"prune": {"method": "channels", "ratio": 0.5, "include": ["layer*"]}},
        {"finetune": {"epochs": 1, "distill": {"method": "kd", "temperature": 4}}},
        {"quantize": {"method": "int8-static", "observer": "percentile"}},
    ],
    "export": ["onnx"],
    "target": {"runtime": "onnxruntime", "max_metric_drop": 0.01, "batch_sizes": [1, 8], "threads": 1},
}


@FUZZ
@given(data=st.data())
def test_mutated_recipe_validates_or_raises_a_slimkit_error(data):
    path = data.draw(st.sampled_from(_paths(RECIPE)), label="path")
    action = data.draw(st.sampled_from(["replace", "delete"]) if path else st.just("replace"), label="action")
    mutated = _mutate(RECIPE, path, action, data.draw(VALUES, label="value"))
    try:
        parse_recipe(mutated)
    except SlimkitError:
        pass
