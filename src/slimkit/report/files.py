"""The report files of a compress run: ``report.json``, ``report.md``, ``report.html``.

Both human-readable reports render the same `report_sections`; only the layout differs
(the HTML adds the figures as embedded PNGs, the Markdown names them).
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import TYPE_CHECKING

from rich import box
from rich.table import Table as RichTable

from slimkit.report.blocks import Code, Facts, Figure, Note, Section, Table
from slimkit.report.entries import COLUMNS, main_metric, stage_caption, stage_columns, stage_rows
from slimkit.report.sections import environment, report_sections

if TYPE_CHECKING:
    from slimkit.pipeline.compress import CompressResult

__all__ = ["COLUMNS", "render_html", "render_markdown", "stage_columns", "stage_rows", "stage_table", "write_reports"]

TITLE = "slimkit compression report"


def stage_table(result: CompressResult) -> RichTable:
    """The terminal stage table of `slimkit compress`: fits 80 columns without cutting a figure
    (numbers never wrap; a long stage name wraps inside its column)."""
    metric = main_metric(result)
    table = RichTable(
        title="slimkit compress",
        caption=stage_caption(result),
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
        title_justify="left",
        caption_justify="left",
    )
    for col in stage_columns(result):
        table.add_column(
            col,
            justify="left" if col == "stage" else "right",
            no_wrap=col != "stage",
            overflow="fold",
            max_width=None if col in ("stage", metric) else 10,
        )
    for row in stage_rows(result):
        table.add_row(*row)
    return table


# ---- Markdown --------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_block(block: object) -> list[str]:
    if isinstance(block, Note):
        return [f"> **Warning:** {block.text}" if block.kind == "warning" else block.text, ""]
    if isinstance(block, Facts):
        return [f"- **{key}:** {value}" for key, value in block.pairs] + [""]
    if isinstance(block, Table):
        lines = ["| " + " | ".join(_md_cell(c) for c in block.columns) + " |"]
        lines.append("|" + "|".join("---:" if a == "r" else "---" for a in block.align) + "|")
        for row in block.rows:
            cells = [f"`{c}`" if i in block.mono and c != "-" else _md_cell(c) for i, c in enumerate(row)]
            lines.append("| " + " | ".join(cells) + " |")
        return lines + ([""] + [f"*{block.caption}*"] if block.caption else []) + [""]
    if isinstance(block, Code):
        return [f"```{block.language}", block.text, "```", ""]
    if isinstance(block, Figure):
        return [f"- **{block.title}** (in report.html); data: {block.data}"]
    raise TypeError(f"unknown report block {type(block).__name__}")


def render_markdown(sections: list[Section], title: str = TITLE) -> str:
    """The sections as Markdown (figures are named; their images are in ``report.html``)."""
    lines = [f"# {title}", ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        for block in section.blocks:
            lines += _md_block(block)
        if lines[-1] != "":
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


# ---- HTML ------------------------------------------------------------------------------

CSS = """
:root{--ink:#1f2328;--muted:#656d76;--line:#d0d7de;--warn:#9a3412;--warnbg:#fff4ed;--link:#0b5cad}
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:var(--ink);
 margin:0 auto;padding:24px 32px 48px;max-width:1240px;line-height:1.45;font-size:15px}
h1{font-size:26px;margin:0 0 6px}
h2{font-size:19px;margin:30px 0 10px;padding-bottom:4px;border-bottom:1px solid var(--line)}
nav{font-size:13px;color:var(--muted);margin-bottom:12px}
nav a{color:var(--link);text-decoration:none;margin-right:12px}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:4px 18px;margin:8px 0 12px}
dl.facts dt{color:var(--muted)} dl.facts dd{margin:0;font-weight:600}
p.note{margin:6px 0;padding:6px 10px;border-left:4px solid var(--line);background:#f6f8fa}
p.note.warning{border-color:var(--warn);background:var(--warnbg);color:var(--warn)}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border-bottom:1px solid var(--line);padding:4px 10px;white-space:nowrap}
th{background:#f6f8fa;text-align:left;font-weight:600}
td.r,th.r{text-align:right;font-variant-numeric:tabular-nums}
td.mono{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12px;white-space:normal;word-break:break-all}
tr.discarded td{color:#8a8f98;background:repeating-linear-gradient(135deg,#fff,#fff 6px,#f4f4f4 6px,#f4f4f4 12px)}
tr.final td{background:#eef5ff;font-weight:600}
tr.not-run td{color:#a0a4aa;font-style:italic}
caption{caption-side:bottom;text-align:left;color:var(--muted);font-size:12px;padding-top:6px;white-space:normal}
pre{background:#f6f8fa;border:1px solid var(--line);padding:10px 14px;font-size:13px;overflow-x:auto}
.figures{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:18px;align-items:start}
figure{margin:0;border:1px solid var(--line);border-radius:6px;padding:8px;background:#fff}
figure.wide{grid-column:1/-1}
figure img{width:100%;height:auto;display:block}
figcaption{font-size:13px;margin-top:4px} figcaption .data{color:var(--muted)}
"""


def _html_table(block: Table) -> str:
    head = "".join(
        f'<th class="{"r" if a == "r" else "l"}">{html.escape(c)}</th>'
        for c, a in zip(block.columns, block.align, strict=True)
    )
    rows = []
    for index, row in enumerate(block.rows):
        cls = block.row_classes[index] if index < len(block.row_classes) else ""
        cells = "".join(
            f'<td class="{"r" if a == "r" else "l"}{" mono" if i in block.mono else ""}">{html.escape(c)}</td>'
            for i, (c, a) in enumerate(zip(row, block.align, strict=True))
        )
        rows.append(f'<tr class="{cls}">{cells}</tr>' if cls else f"<tr>{cells}</tr>")
    caption = f"<caption>{html.escape(block.caption)}</caption>" if block.caption else ""
    table = f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    return f'<div class="scroll">{table}</div>'


def _html_figure(block: Figure) -> str:
    data = base64.b64encode(block.render()).decode()
    return (
        f'<figure class="{"wide" if block.wide else ""}" data-figure="{block.key}">'
        f'<img alt="{html.escape(block.title)}" src="data:image/png;base64,{data}">'
        f'<figcaption><b>{html.escape(block.title)}</b> <span class="data">data: {html.escape(block.data)}</span>'
        "</figcaption></figure>"
    )


def _html_block(block: object) -> str:
    if isinstance(block, Note):
        return f'<p class="note {block.kind}">{html.escape(block.text)}</p>'
    if isinstance(block, Facts):
        items = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in block.pairs)
        return f'<dl class="facts">{items}</dl>'
    if isinstance(block, Table):
        return _html_table(block)
    if isinstance(block, Code):
        return f'<pre><code class="language-{block.language}">{html.escape(block.text)}</code></pre>'
    if isinstance(block, Figure):
        return _html_figure(block)
    raise TypeError(f"unknown report block {type(block).__name__}")


def render_html(sections: list[Section], title: str = TITLE) -> str:
    """The sections as one self-contained HTML page (figures embedded, nothing fetched)."""
    nav = "".join(f'<a href="#{s.key}">{html.escape(s.title)}</a>' for s in sections)
    parts = []
    for s in sections:
        figures = [b for b in s.blocks if isinstance(b, Figure)]
        others = "".join(_html_block(b) for b in s.blocks if not isinstance(b, Figure))
        grid = f'<div class="figures">{"".join(_html_block(f) for f in figures)}</div>' if figures else ""
        parts.append(f'<section id="{s.key}"><h2>{html.escape(s.title)}</h2>{others}{grid}</section>')
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><nav>{nav}</nav>{''.join(parts)}</body></html>\n"
    )


def write_reports(result: CompressResult, folder: Path) -> None:
    """Write ``report.json``, ``report.md`` and a self-contained ``report.html`` into ``folder``.

    The JSON is the result's own record plus an ``environment`` entry (versions, threads).
    """
    folder = Path(folder)
    sections = report_sections(result, folder)
    record = result.to_dict()
    record.setdefault("environment", environment(result))
    (folder / "report.json").write_text(json.dumps(record, indent=2, default=str))
    (folder / "report.md").write_text(render_markdown(sections))
    (folder / "report.html").write_text(render_html(sections))
