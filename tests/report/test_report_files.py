import json
import shutil
import subprocess

import numpy as np
import torch
from matplotlib.image import imread

import slimkit as sk
from slimkit.models.testing import ZOO
from slimkit.pipeline.compress import CompressResult, StageResult
from slimkit.report.files import write_reports
from slimkit.report.layers import layer_infos

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
    "--window-size=1300,2200",
]


def _result():
    model = ZOO["residual"]()
    data = [(torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,)))]
    half = sk.quantize(model, "fp16")
    before = sk.profile(model, data=data, budget_s=0.02)
    after = sk.profile(half, data=data, budget_s=0.02)
    return CompressResult(half, before, [StageResult("quantize:fp16", after, 0.1)], original_model=model)


def test_reports_are_written_and_consistent(tmp_path):
    result = _result()
    write_reports(result, tmp_path)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["stages"][0]["profile"]["size_bytes"] == result.final.size_bytes
    markdown = (tmp_path / "report.md").read_text()
    assert "| quantize:fp16 |" in markdown and "## Layers" in markdown
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 6  # size, latency, metric, metric-vs-size, layers, histograms
    assert "http" not in html.replace("http-equiv", "")  # self-contained: nothing fetched


def test_layer_infos_report_bits_and_sparsity():
    model = ZOO["residual"]()
    with torch.no_grad():
        model.head.weight[:, :8] = 0
    infos = {i.name: i for i in layer_infos(model)}
    assert infos["head"].sparsity == 0.5 and infos["head"].bits == 32
    half = {i.name: i for i in layer_infos(sk.quantize(model, "fp16"))}
    assert half["head"].bits == 16


def test_html_renders_in_headless_chromium(tmp_path):
    write_reports(_result(), tmp_path)
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "chromium is needed for this test: `make test` installs it (apt-get install chromium)"
    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        [
            browser,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            (tmp_path / "report.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    console_errors = [
        line for line in proc.stderr.splitlines() if "CONSOLE" in line and ("Error" in line or "Uncaught" in line)
    ]
    assert console_errors == []
    pixels = imread(shot)[..., :3]
    # the plots' bar colour (#3b7dd8) and histogram/line colour (#d8593b) are on screen
    for rgb in ((0x3B, 0x7D, 0xD8), (0xD8, 0x59, 0x3B)):
        close = np.abs(pixels * 255 - np.array(rgb)).max(axis=-1) < 12
        assert close.sum() > 500, f"colour {rgb} barely visible: the plots did not render"
