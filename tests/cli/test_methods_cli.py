"""``slimkit methods``: methods and their options, generated from the configs' field docs."""

import json

import pytest

from slimkit.core.registry import get_method, methods


def test_every_verb_and_method_is_listed(run_cli):
    code, out, _ = run_cli("methods", "--json")
    assert code in (0, None)
    listed = json.loads(out)
    for verb in ("quantize", "prune", "decompose", "accelerate", "distill"):
        assert set(listed[verb]) == set(methods(verb))
    assert listed["quantize"]["gptq"].startswith("Packed low-bit weights rounded by GPTQ")


def test_a_methods_options_are_its_config_fields_with_their_docstrings(run_cli):
    code, out, _ = run_cli("methods", "quantize", "weight-only", "--json")
    assert code in (0, None)
    fields = {f["name"]: f for f in json.loads(out)}
    config = get_method("quantize", "weight-only").config
    assert set(fields) == set(config.model_fields)
    assert fields["granularity"]["default"] == '"group:128"'
    assert fields["bits"]["meaning"] == config.model_fields["bits"].description.strip()


def test_the_table_shows_every_option(run_cli):
    code, out, _ = run_cli("methods", "prune", "channels")
    assert code in (0, None)
    for name in ("ratio", "importance", "round_to", "recalibrate_batches"):
        assert name in out


@pytest.mark.parametrize("args", [("nope",), ("quantize", "nope")])
def test_unknown_names_are_one_line_errors(run_cli, args):
    code, _, err = run_cli("methods", *args)
    assert code == 2
    assert "valid" in err and "Traceback" not in err
