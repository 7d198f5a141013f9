"""``slimkit recipes list|show``: people read the YAML, scripts read --json."""

import json

import yaml

from slimkit.pipeline import list_recipes, show_recipe


def test_list_json_names_every_bundled_recipe(run_cli):
    code, out, _ = run_cli("recipes", "list", "--json")
    assert code in (0, None)
    listed = json.loads(out)
    assert [r["name"] for r in listed] == list_recipes() and all(r["description"] for r in listed)


def test_show_json_is_the_parsed_recipe_of_the_yaml(run_cli):
    code, out, _ = run_cli("recipes", "show", "prune-distill-int8", "--json")
    assert code in (0, None)
    parsed = json.loads(out)
    written = yaml.safe_load(show_recipe("prune-distill-int8"))
    assert parsed["model"] == written["model"] and [list(s)[0] for s in written["stages"]] == [
        s["kind"] for s in parsed["stages"]
    ]


def test_show_of_an_unknown_recipe_is_exit_2(run_cli):
    code, _, err = run_cli("recipes", "show", "nope", "--json")
    assert code == 2 and "Traceback" not in err
