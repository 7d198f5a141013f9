import inspect

import pytest

from slimkit.core.errors import InvalidConfigError
from slimkit.pipeline import list_recipes, load_recipe, parse_recipe, show_recipe
from slimkit.pipeline.recipe import Recipe


def test_bundled_recipes_parse():
    assert {"edge-int8", "prune-distill-int8", "tiny-int4", "transformer-int8"} <= set(list_recipes())
    for name in list_recipes():
        recipe = load_recipe(name)
        assert isinstance(recipe, Recipe) and recipe.stages
        assert show_recipe(name).startswith("# ")


def test_stage_labels_and_options():
    recipe = parse_recipe({"stages": [{"finetune": {"epochs": 2}}], "export": ["onnx"]})
    stage = recipe.stages[0]
    assert stage.kind == "finetune" and stage.method is None and stage.label == "finetune"
    assert recipe.export == ["onnx"] and recipe.target.runtime == "torch"


def test_export_entries_carry_format_options():
    recipe = parse_recipe({"export": ["onnx", {"pte": {"max_batch": 1, "max_sequence": 64}}]})
    assert recipe.export == ["onnx", "pte"]
    assert recipe.options_for("pte") == {"max_batch": 1, "max_sequence": 64} and recipe.options_for("onnx") == {}
    again = parse_recipe(recipe.model_dump(mode="json"))  # the normalized form reads back the same
    assert again.export == recipe.export and again.export_options == recipe.export_options


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"stages": [{"squash": {}}]}, r"stages\[0\]: unknown stage 'squash'; valid stages: prune, quantize"),
        (
            {"stages": [{"finetune": {"epochs": 0}}]},
            r"stages\[0\].finetune.epochs: Input should be greater than or equal to 1",
        ),
        (
            {"stages": [{"finetune": {"epoch": 2}}]},
            r"stages\[0\].finetune.epoch: unknown option \(valid options: epochs, lr, distill\)",
        ),
        ({"stages": [{"prune": {}, "quantize": {}}]}, "one key"),
        ({"export": ["zip"]}, r"export\[0\]: Input should be 'onnx', 'pte', 'tflite' or 'pt2'"),
        ({"target": {"runtime": "tensorrt"}}, r"target.runtime: Input should be 'torch', 'onnxruntime'"),
        ({"target": {"max_metric_drop": -1}}, r"target.max_metric_drop: Input should be greater than or equal to 0"),
        ({"stagez": []}, r"stagez: Extra inputs are not permitted"),
        (
            {"export": [{"onnx": {"max_batch": 1}}]},
            r"export_options.onnx: unknown \['max_batch'\]; valid: \['opset', 'accuracy_level'\]",
        ),
    ],
)
def test_recipe_errors_name_the_field(raw, message):
    with pytest.raises(InvalidConfigError, match=message):
        parse_recipe(raw)


def test_recipe_file_errors(tmp_path):
    with pytest.raises(
        InvalidConfigError, match="neither a .yaml file nor a bundled recipe; bundled recipes: edge-int8"
    ):
        load_recipe("nope")
    with pytest.raises(InvalidConfigError, match="does not exist"):
        load_recipe(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages: [unclosed")
    with pytest.raises(InvalidConfigError, match="not valid YAML"):
        load_recipe(bad)
    bad.write_text("- just a list")
    with pytest.raises(InvalidConfigError, match="must be a YAML mapping"):
        load_recipe(bad)


@pytest.mark.slow
def test_recipe_reference_is_current():
    """Generated in a fresh process: methods other tests register must not leak into it."""
    import subprocess
    import sys
    from pathlib import Path

    docs = Path(__file__).parents[2] / "docs" / "recipes.md"
    fresh = subprocess.run(
        [sys.executable, "-m", "slimkit.pipeline.schema"], capture_output=True, text=True, check=True
    ).stdout
    assert docs.read_text() == fresh, "regenerate: python -m slimkit.pipeline.schema > docs/recipes.md"


def test_recipe_reference_says_what_every_option_means():
    from slimkit.pipeline.schema import recipe_reference

    rows = [line for line in recipe_reference().splitlines() if line.startswith("| `")]
    assert len(rows) > 50
    unexplained = [row.split("|")[1].strip() for row in rows if row.endswith("|  |")]
    assert not unexplained, f"options without a meaning: {unexplained}"


def test_config_fields_are_documented_one_way():
    """Every option's meaning is the attribute docstring under its field (pydantic reads it into
    the JSON schema); no config class keeps a Google ``Attributes:`` section a parser would need."""
    from slimkit.core.registry import methods
    from slimkit.pipeline.recipe import Recipe, Target

    verbs = ("quantize", "prune", "decompose", "accelerate", "distill")
    configs = {m.config for verb in verbs for m in methods(verb).values()}
    ours = [k for c in (*configs, Recipe, Target) for k in c.__mro__ if k.__module__.startswith("slimkit")]
    sections = sorted({k.__name__ for k in ours if "Attributes:" in (k.__doc__ or "")})
    assert not sections, f"config classes documenting fields in an Attributes: section: {sections}"
    inline = sorted(k.__name__ for k in set(ours) if "description=" in inspect.getsource(k))
    assert not inline, f"config classes describing fields with Field(description=...): {inline}"
    schema = Target.model_json_schema()["properties"]
    assert "p50 latency" in schema["max_latency_ms"]["description"]


@pytest.mark.parametrize(
    ("method", "formats", "runtime"),
    [
        ("int8-static", ["tflite"], "torch"),
        ("int8-dynamic", [], "executorch"),
        ("int8-dynamic", ["pte"], "onnxruntime"),
    ],
)
def test_a_quantization_the_export_cannot_carry_is_refused_before_any_stage(method, formats, runtime):
    raw = {"stages": [{"quantize": {"method": method}}], "export": formats, "target": {"runtime": runtime}}
    with pytest.raises(InvalidConfigError, match=rf"stages\[0\]\.quantize: .* cannot express slimkit's {method}"):
        parse_recipe(raw)


def test_relative_paths_in_a_recipe_are_read_from_the_recipes_folder(tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / "bert").mkdir(parents=True)
    (project / "data.npz").write_bytes(b"")
    (project / "recipe.yaml").write_text("model: hf:bert\ndata: data.npz\nstages: []\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    recipe = load_recipe(project / "recipe.yaml")
    assert recipe.model == f"hf:{project / 'bert'}" and recipe.data == str(project / "data.npz")


def test_specs_that_are_not_paths_in_the_recipes_folder_stay_as_written(tmp_path):
    (tmp_path / "recipe.yaml").write_text("model: example:digits-cnn\ndata: mypkg.data:load\nstages: []\n")
    recipe = load_recipe(tmp_path / "recipe.yaml")
    assert (recipe.model, recipe.data) == ("example:digits-cnn", "mypkg.data:load")
    (tmp_path / "other.yaml").write_text("model: missing.pt\nstages: []\n")
    assert load_recipe(tmp_path / "other.yaml").model == "missing.pt"  # resolved (and refused) where it is used
