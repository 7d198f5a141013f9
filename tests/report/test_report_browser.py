"""report.html as a person sees it: rendered by headless Chromium, screenshot checked."""

import re
import shutil
import subprocess

import numpy as np
import pytest
from matplotlib.image import imread

from slimkit.report import plots
from slimkit.report.files import write_reports

WIDTH, HEIGHT = 1280, 2000
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--enable-logging=stderr",
    "--v=0",
    f"--window-size={WIDTH},{HEIGHT}",
]


def _browser():
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("chromium is not installed: `make chromium` (apt-get install chromium) enables this test")
    return found


def _colour_pixels(pixels, hex_colour, tolerance=14):
    rgb = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
    return np.abs(pixels * 255 - rgb).max(axis=-1) < tolerance


@pytest.mark.slow
def test_report_html_reads_well_in_headless_chromium(compress_result, tmp_path):
    browser = _browser()
    folder = tmp_path / "out"
    folder.mkdir()
    write_reports(compress_result, folder)
    page = (folder / "report.html").read_text()
    sections = re.findall(r'<section id="(\w+)"><h2>([^<]+)</h2>', page)
    assert [key for key, _ in sections] == [
        "summary",
        "stages",
        "figures",
        "data",
        "training",
        "layers",
        "files",
        "recipe",
        "environment",
    ]
    assert len(re.findall(r'<figure class="[a-z]*" data-figure="\w+"><img', page)) == 6
    shot = tmp_path / "report.png"
    proc = subprocess.run(
        [
            browser,
            *FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            (folder / "report.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    console = [
        line for line in proc.stderr.splitlines() if "CONSOLE" in line and ("Error" in line or "Uncaught" in line)
    ]
    assert console == []
    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (HEIGHT, WIDTH)
    ink = (pixels < 0.85).any(axis=-1)
    assert ink.mean() > 0.03 and pixels.std() > 0.1, "the page is (almost) blank"
    # the text column fills the page's width: no layout collapsed into a narrow strip
    columns = np.flatnonzero(ink.any(axis=0))
    assert columns[0] < 80 and columns[-1] > WIDTH - 200
    # the figures are on screen: the size/latency bars (blue) and the metric dots (orange), side by side
    blue, orange = _colour_pixels(pixels, plots.BLUE), _colour_pixels(pixels, plots.ORANGE)
    assert blue.sum() > 2000 and orange.sum() > 300, "the plots did not render"
    blue_cols = np.flatnonzero(blue.any(axis=0))
    assert blue_cols[0] < WIDTH / 2 < blue_cols[-1], "size and latency charts should sit in two columns"
    # the first screen shows the summary, the stage table and the first plots, top to bottom
    blue_rows = np.flatnonzero(blue.any(axis=1))
    assert 300 < blue_rows[0] < HEIGHT - 200
