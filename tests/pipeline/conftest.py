"""Fixtures shared by the pipeline tests."""

import json

import pytest


@pytest.fixture
def quick_reports(monkeypatch):
    """For tests about files and budgets, not figures: plain reports, short latency timing."""
    import functools

    import slimkit.pipeline.target as target
    import slimkit.report.files as files

    def reports(result, folder):
        (folder / "report.json").write_text(json.dumps(result.to_dict(), default=str))
        for name in ("report.md", "report.html"):
            (folder / name).write_text("")

    monkeypatch.setattr(files, "write_reports", reports)
    monkeypatch.setattr(target, "profile", functools.partial(target.profile, budget_s=0.02))
