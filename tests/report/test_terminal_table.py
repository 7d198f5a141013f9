import dataclasses

from rich.console import Console

from slimkit.report.files import COLUMNS, stage_columns, stage_rows, stage_table


def _render(table, width=80):
    console = Console(width=width, record=True, force_terminal=False, color_system=None)
    console.print(table)
    return console.export_text().splitlines()


def test_stage_table_fits_80_columns_without_cutting_a_figure(compress_result):
    rows = stage_rows(compress_result)
    assert all(len(row) == len(COLUMNS) for row in rows)
    assert stage_columns(compress_result)[2] == "size KiB" and stage_columns(compress_result)[-1] == "accuracy"
    lines = _render(stage_table(compress_result))
    assert max(map(len, lines)) <= 80
    for row in rows:  # each row on one line, every figure whole
        assert any(all(cell in line for cell in row) for line in lines), row
    assert [row[0] for row in rows] == ["", "1", "2", "3", "4 ✗"]
    assert any("discarded" in line for line in lines) and any("test split" in line for line in lines)


def test_long_stage_names_wrap_but_figures_stay_whole(compress_result):
    stages = [dataclasses.replace(s, name=f"{s.name}-with-a-very-long-method-name") for s in compress_result.stages]
    result = dataclasses.replace(compress_result, stages=stages)
    lines = _render(stage_table(result))
    assert max(map(len, lines)) <= 80
    for row in stage_rows(result):
        assert any(all(cell in line for cell in row[2:]) for line in lines), row
