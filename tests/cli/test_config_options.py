"""``-o key=value``: every config field of a method is reachable from the command line."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

import slimkit as sk
from slimkit.cli.common import merge_options, parse_options
from slimkit.core.errors import InvalidConfigError

MODEL = "slimkit.models.testing:ResidualNet"


def test_values_are_read_as_json_else_kept_as_text():
    parsed = parse_options(["ratio=0.5", "round_to=8", "permanent=false", 'groups=[["a:out"]]', "importance=l2"])
    assert parsed == {"ratio": 0.5, "round_to": 8, "permanent": False, "groups": [["a:out"]], "importance": "l2"}


@given(st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True), st.integers(-(10**6), 10**6))
def test_integers_round_trip(key, value):
    assert parse_options([f"{key}={value}"]) == {key: value}


@pytest.mark.parametrize("item", ["ratio", "=0.5", "two words=1", "1x=2"])
def test_malformed_items_are_refused(item):
    with pytest.raises(InvalidConfigError, match="key=value"):
        parse_options([item])


def test_a_dotted_key_sets_a_field_of_a_nested_config():
    parsed = parse_options(["finetune.epochs=3", "finetune.distill=true", "rank=2"])
    assert parsed == {"finetune": {"epochs": 3, "distill": True}, "rank": 2}
    assert merge_options({"finetune": {"epochs": 3}}, parse_options(["finetune.lr=0.01"])) == {
        "finetune": {"epochs": 3, "lr": 0.01}
    }
    with pytest.raises(InvalidConfigError, match="finetune is given both as a value"):
        parse_options(["finetune=1", "finetune.epochs=3"])
    with pytest.raises(InvalidConfigError, match="epochs given both"):
        merge_options({"finetune": {"epochs": 3}}, {"finetune": {"epochs": 4}})


def test_a_flag_and_an_option_must_agree():
    assert merge_options({"ratio": 0.5}, {"ratio": 0.5, "round_to": 2}) == {"ratio": 0.5, "round_to": 2}
    with pytest.raises(InvalidConfigError, match="ratio given both"):
        merge_options({"ratio": 0.5}, {"ratio": 0.3})


def test_prune_takes_a_field_without_a_dedicated_flag(run_cli, tmp_path):
    code, out, _ = run_cli("prune", MODEL, "--ratio", "0.5", "-o", "scope=global", "-o", "round_to=2",
        "--out", str(tmp_path / "o"), "--json",
    )  # fmt: skip
    assert code in (0, None)
    document = json.loads(out)
    assert document["verb"] == "prune" and document["changed"]
    config = sk.get_record(sk.load(tmp_path / "o")).transforms[-1].config
    assert config["scope"] == "global" and config["round_to"] == 2


def test_unknown_field_is_one_line_exit_2(run_cli, tmp_path):
    code, _, err = run_cli("prune", MODEL, "-o", "ratoi=0.5", "--out", str(tmp_path / "o"))
    assert code == 2 and "ratoi" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()
