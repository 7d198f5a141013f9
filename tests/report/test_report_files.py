import json
import re
from html.parser import HTMLParser

import torch

import slimkit as sk
from slimkit.models.testing import ZOO
from slimkit.report.files import render_html, render_markdown, write_reports
from slimkit.report.layers import layer_infos
from slimkit.report.sections import report_sections

VOID = {"meta", "img", "br", "hr", "link", "input"}
SECTIONS = ["summary", "stages", "figures", "data", "training", "layers", "files", "recipe", "environment"]


class ReportPage(HTMLParser):
    """What a report.html shows: section ids and titles, tables (cell texts), code, figures, notes."""

    def __init__(self, text: str):
        super().__init__()
        self.ids, self.titles, self.tables, self.code, self.notes = [], [], [], [], []
        self.figures, self.captions, self.images, self.facts = [], [], [], []
        self._stack, self._text = [], []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.ids.append(attrs["id"])
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag == "figure":
            self.figures.append(attrs["data-figure"])
        elif tag == "img":
            self.images.append(attrs["src"])
        if tag in VOID:
            return
        self._stack.append((tag, attrs))
        self._text.append([])

    def handle_data(self, data):
        for chunk in self._text:
            chunk.append(data)

    def handle_endtag(self, tag):
        start, attrs = self._stack.pop()
        assert start == tag, f"<{start}> closed by </{tag}>"
        text = "".join(self._text.pop())
        if tag == "h2":
            self.titles.append(text)
        elif tag in ("td", "th"):
            self.tables[-1][-1].append(text)
        elif tag == "pre":
            self.code.append(text)
        elif tag == "figcaption":
            self.captions.append(text)
        elif tag == "p" and "note" in attrs.get("class", ""):
            self.notes.append(text)
        elif tag in ("dt", "dd"):
            self.facts.append(text)


def markdown_tables(text: str) -> list[list[list[str]]]:
    """Every pipe table of a Markdown text, as rows of cell texts (backticks dropped)."""
    tables, current = [], None
    for line in text.splitlines():
        if line.startswith("|"):
            if current is None:
                current = []
                tables.append(current)
            cells = [c.strip().strip("`").replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            if not all(re.fullmatch(r"-+:?", c) for c in cells):
                current.append(cells)
        else:
            current = None
    return tables


def test_html_and_markdown_say_the_same(compress_result, tmp_path):
    write_reports(compress_result, tmp_path)
    md = (tmp_path / "report.md").read_text()
    page = ReportPage((tmp_path / "report.html").read_text())
    assert page.ids == SECTIONS
    assert re.findall(r"^## (.+)$", md, flags=re.M) == page.titles
    assert markdown_tables(md) == page.tables  # every table, cell for cell
    assert re.findall(r"```yaml\n(.*?)\n```", md, flags=re.S) == page.code
    for key, value in zip(page.facts[::2], page.facts[1::2], strict=True):
        assert f"- **{key}:** {value}" in md
    for note in page.notes:
        assert note in md
    # the figures are images in HTML and named, with their data, in Markdown
    assert page.figures == ["size", "latency", "metric", "tradeoff", "layers", "weights"]
    assert all(src.startswith("data:image/png;base64,") for src in page.images)
    for caption in page.captions:
        title, data = caption.split(" data: ")
        assert f"- **{title}** (in report.html); data: {data}" in md
    assert "http" not in (tmp_path / "report.html").read_text().replace("http-equiv", "")  # nothing fetched


def test_report_carries_recipe_versions_threads_splits_and_notes(compress_result, tmp_path):
    write_reports(compress_result, tmp_path)
    page = ReportPage((tmp_path / "report.html").read_text())
    facts = dict(zip(page.facts[::2], page.facts[1::2], strict=True))
    assert facts["slimkit"] == sk.__version__ and facts["torch"] == torch.__version__
    assert facts["threads"].startswith("1 thread")
    assert facts["final model"] == "stage 3 (quantize:fp16)"
    assert facts["size"].count("KiB") == 2
    recipe = page.code[0]
    assert "- prune: {method: channels, ratio: 0.5}" in recipe and "max_metric_drop: 0.05" in recipe
    stages = page.tables[0]
    assert stages[0][:5] == ["#", "stage", "status", "runtime", "size (KiB)"]
    assert [row[2] for row in stages[1:]] == ["input", "kept", "kept", "final", "discarded", "not run"]
    data = dict(map(tuple, page.tables[1][1:]))
    assert data["metrics: accuracy"] == "test split"
    assert data["stage 3: quantize:fp16"].startswith("calibration split")
    assert "best epoch chosen on the calibration split" in data["stage 2: finetune"]
    training = dict(zip(page.tables[2][0], page.tables[2][1], strict=True))
    assert training["stage"] == "finetune" and training["epochs"] == "1" and training["data"] == "sha256:3f2a9c1d"
    layers = page.tables[3]
    assert [row[0] for row in layers[1:]] == [i.name for i in layer_infos(compress_result.model)]
    measured = page.tables[4]
    assert [row[2] for row in measured[1:]] == [f"stage-{i}/model.safetensors" for i in (1, 2, 3, 4)]
    assert measured[3][3] == compress_result.stages[2].sha256
    assert page.tables[5][1][:2] == ["model.pt2", "exported (pt2)"]
    assert any(n.startswith("Stopped after stage 4 (prune:channels): accuracy dropped") for n in page.notes)
    assert any(n.startswith("Target missed: size") for n in page.notes)
    assert any("Not run: stage 5 (quantize:int8-dynamic)" in n for n in page.notes)
    figure_data = [c.split(" data: ")[1] for c in page.captions]
    assert figure_data[2] == "test split" and "1 thread" in figure_data[1]
    record = json.loads((tmp_path / "report.json").read_text())
    assert record["environment"]["slimkit"] == sk.__version__
    assert record["stages"][2]["profile"]["size_bytes"] == compress_result.final.size_bytes


def test_a_result_without_newer_fields_still_reports(bare_result, tmp_path):
    write_reports(bare_result, tmp_path)
    page = ReportPage((tmp_path / "report.html").read_text())
    assert page.ids == [s for s in SECTIONS if s != "training"]
    assert "No files were exported." in page.notes and "No recipe was recorded." in page.notes
    assert [row[2] for row in page.tables[0][1:]] == ["input", "final"]
    assert page.figures == ["size", "latency", "metric", "tradeoff", "layers"]  # no original model: no histogram


def test_renderers_share_one_section_list(bare_result):
    sections = report_sections(bare_result)
    md, html = render_markdown(sections), render_html(sections)
    for section in sections:
        assert f"## {section.title}\n" in md and f'<section id="{section.key}"><h2>{section.title}</h2>' in html


def test_layer_infos_report_bits_and_sparsity():
    model = ZOO["residual"]()
    with torch.no_grad():
        model.head.weight[:, :8] = 0
    infos = {i.name: i for i in layer_infos(model)}
    assert infos["head"].sparsity == 0.5 and infos["head"].bits == 32
    half = {i.name: i for i in layer_infos(sk.quantize(model, "fp16"))}
    assert half["head"].bits == 16


def test_a_lower_is_better_user_metric_is_reported_with_its_direction(bare_result, tmp_path):
    import dataclasses

    def with_wer(profile, wer):
        return dataclasses.replace(profile, metrics={"wer": wer}, lower_is_better=["wer"])

    stage = dataclasses.replace(bare_result.stages[0], profile=with_wer(bare_result.stages[0].profile, 0.121))
    result = dataclasses.replace(bare_result, original=with_wer(bare_result.original, 0.118), stages=[stage])
    write_reports(result, tmp_path)
    page = ReportPage((tmp_path / "report.html").read_text())
    assert "wer ↓" in page.tables[0][0]
    facts = dict(zip(page.facts[::2], page.facts[1::2], strict=True))
    assert facts["wer, test split"] == "0.1180 → 0.1210 (+0.0030) (lower is better)"
    assert page.figures[2:4] == ["metric", "tradeoff"]
