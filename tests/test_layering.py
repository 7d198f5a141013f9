"""The import graph follows DESIGN.md's layers: a package imports only layers below it.

Every ``slimkit`` import in ``src/`` is read with `ast` (function-level imports included).
`KNOWN` lists today's exceptions, each with what removes it; the test fails on a new
exception *and* on a listed one that is gone, so the list only ever shrinks.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "slimkit"

LAYER = {
    "core": 0,
    "measure": 1,
    "training": 2,
    "models": 2,
    "quantization": 3,
    "pruning": 3,
    "distillation": 3,
    "decomposition": 3,
    "conv": 3,
    "runtime": 4,
    "profiling": 5,
    "pipeline": 6,
    "search": 6,
    "report": 7,
    "cli": 8,
}
TECHNIQUES = {name for name, rank in LAYER.items() if rank == 3}

KNOWN = {
    ("pipeline", "report"): "compress writes its report files; let the caller write them (issue 16)",
}


def _package(path: Path) -> str:
    parts = path.relative_to(SRC).parts
    return parts[0].removesuffix(".py")


def _imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        if node.module == "slimkit":
            return [alias.name for alias in node.names]
        if node.module.startswith("slimkit."):
            return [node.module.split(".")[1]]
    if isinstance(node, ast.Import):
        return [a.name.split(".")[1] for a in node.names if a.name.startswith("slimkit.")]
    if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module" and node.args:
        arg = node.args[0]
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value.startswith("slimkit."):
            return [arg.value.split(".")[1]]
    return []


def edges() -> set[tuple[str, str]]:
    """``(importer, imported)`` package pairs across `src/slimkit`."""
    found = set()
    for path in SRC.rglob("*.py"):
        here = _package(path)
        if here in ("__init__", "__main__"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            for target in _imported(node):
                if target != here and target in LAYER:
                    found.add((here, target))
    return found


def violations() -> set[tuple[str, str]]:
    """Edges that go up, sideways between techniques, or from runtime into a technique (techniques
    register their lowerings with runtime instead)."""
    return {(a, b) for a, b in edges() if a in LAYER and _against_layers(a, b)}


def _against_layers(importer: str, imported: str) -> bool:
    up = LAYER[imported] > LAYER[importer]
    sideways = LAYER[imported] == LAYER[importer] and {importer, imported} <= TECHNIQUES
    return up or sideways or (importer == "runtime" and imported in TECHNIQUES)


def test_no_new_layer_violation():
    new = violations() - set(KNOWN)
    assert not new, f"imports against the layers of DESIGN.md: {sorted(new)}"


def test_known_violations_are_still_real():
    gone = set(KNOWN) - violations()
    assert not gone, f"fixed, remove from KNOWN: {sorted(gone)}"


def test_import_slimkit_loads_no_optional_dependency():
    code = (
        "import sys, slimkit; "
        "print(','.join(m for m in ('onnx', 'onnxruntime', 'executorch', 'optuna', 'ray', 'transformers', "
        "'tensorly', 'matplotlib', 'slimkit.quantization', 'slimkit.pruning', 'slimkit.pipeline') "
        "if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == ""


def test_import_slimkit_loads_no_runtime_module():
    """Runtimes load on first use (`sk.profile`, `sk.export`, `sk.runtime`), not with the package."""
    code = "import sys, slimkit; print(','.join(m for m in sys.modules if m.startswith('slimkit.runtime')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == ""
