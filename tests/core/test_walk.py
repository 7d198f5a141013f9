import pytest
from torch import nn

from slimkit.core.errors import InvalidConfigError
from slimkit.core.walk import Selector, check_matches, replace_module, select_modules


def _model() -> nn.Module:
    return nn.Sequential(
        nn.ModuleDict({"attention": nn.Linear(4, 4), "ffn": nn.Linear(4, 4)}),
        nn.ModuleDict({"attention": nn.Linear(4, 4), "ffn": nn.Linear(4, 4)}),
    )


def test_include_exclude_globs():
    names = [n for n, _ in select_modules(_model(), Selector.of("*.attention"), nn.Linear)]
    assert names == ["0.attention", "1.attention"]
    names = [n for n, _ in select_modules(_model(), Selector.of(None, ["0.*"]), nn.Linear)]
    assert names == ["1.attention", "1.ffn"]
    assert Selector.of(["*.ffn", "0.attention"], "1.*")("0.attention")
    assert not Selector.of(["*.ffn", "0.attention"], "1.*")("1.ffn")


def test_bad_patterns_are_rejected():
    with pytest.raises(InvalidConfigError, match="glob patterns"):
        Selector.of([1, 2])  # type: ignore[list-item]


def test_check_matches_reports_typo_with_examples():
    with pytest.raises(
        InvalidConfigError, match=r"'\*.atention' matches no module; module names look like: 0, 0.attention"
    ):
        check_matches(_model(), Selector.of("*.atention"))
    check_matches(_model(), Selector.of("*.attention"))


def test_replace_module_nested_and_top_level():
    model = _model()
    new = nn.Identity()
    replace_module(model, "1.ffn", new)
    assert model[1]["ffn"] is new
    replace_module(model, "0", new)
    assert model[0] is new
