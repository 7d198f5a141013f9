"""Writing a search's results: ``front.json``, ``front/NN.yaml`` recipes and ``pareto.png``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from slimkit.search.study import FrontPoint, SearchResult

UNITS = {"latency": "latency at batch 1 (ms)", "size": "artifact size (bytes)", "drop": "metric drop"}


def write_results(result: SearchResult, folder: Path) -> list[Path]:
    """Write the result into ``folder`` (which must exist) and return the files written."""
    written = [folder / "front.json"]
    written[0].write_text(json.dumps(result.to_dict(), indent=2, default=str))
    recipes = folder / "front"
    recipes.mkdir()
    for i, point in enumerate(result.front):
        path = recipes / recipe_name(i, point)
        path.write_text(yaml.safe_dump(point.recipe, sort_keys=False))
        written.append(path)
    written.append(pareto_plot(result, folder / "pareto.png"))
    return written


def recipe_name(index: int, point: FrontPoint) -> str:
    """The file name of front point ``index``'s recipe under ``front/``."""
    return f"{index:02d}-trial{point.trial}.yaml"


def pareto_plot(result: SearchResult, path: Path) -> Path:
    """`pareto_figure` saved as a PNG at ``path``."""
    pareto_figure(result).savefig(path, dpi=100)
    return path


def pareto_figure(result: SearchResult) -> Any:
    """Scatter every measured trial on the first two objectives (calibration split), the front
    marked, and the original model; with one objective, that objective per trial."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    x_name, y_name = result.objectives[:2] if len(result.objectives) > 1 else ("trial", result.objectives[0])
    measured = [t for t in result.trials if t.selection is not None]
    front = {p.trial for p in result.front}

    def coords(records: list) -> tuple[list[float], list[float]]:
        xs = [t.number if x_name == "trial" else t.selection.value(x_name) for t in records]
        return xs, [t.selection.value(y_name) for t in records]

    figure = Figure(figsize=(6, 4.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.scatter(*coords([t for t in measured if t.number not in front]), c="0.6", label="trials")
    axes.scatter(*coords([t for t in measured if t.number in front]), c="tab:red", label="Pareto front")
    if x_name != "trial":
        axes.scatter([result.original.value(x_name)], [result.original.value(y_name)], marker="*", s=150, c="k",
                     label="original")  # fmt: skip

    def label(name: str) -> str:
        return f"{UNITS[name]}, {result.latency}" if name == "latency" else UNITS.get(name, name)

    axes.set_xlabel(label(x_name))
    axes.set_ylabel(label(y_name))
    axes.set_title("search: trials on the calibration split")
    axes.legend()
    figure.tight_layout()
    return figure
