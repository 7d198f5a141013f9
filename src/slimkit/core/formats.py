"""The one table of deployment formats: suffix, runtime, extra, exporter, runtime class.

Every list of formats or runtimes elsewhere (recipe fields, CLI choices, suffix maps, the
report's package versions) derives from `FORMATS`, so adding a runtime is one row here plus
its exporter and runtime modules. Implementations are named as ``"module:attribute"``
strings and imported on first use (`load_attribute`): ``import slimkit`` loads no runtime.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from slimkit.core.errors import InvalidConfigError


@dataclass(frozen=True)
class Format:
    """One file format slimkit writes and (for artifacts) runs.

    Attributes:
        name: the name recipes and the CLI use (``export: [onnx]``, ``--to onnx``).
        suffix: the file suffix, with its dot.
        runtime: the runtime that runs the file (``torch`` for ``.pt2``).
        extra: the pip extra that installs what it needs (``pip install 'slimkit[extra]'``).
        modules: the importable modules the exporter and runtime need.
        packages: the distributions whose versions a report lists.
        exporter: ``"module:function"`` writing the file, or None for ``.pt2`` (written by torch).
        runner: ``"module:Class"`` of the `slimkit.runtime.Runtime` that runs the file, or None
            when PyTorch runs it.
        refuses: slimkit quantize methods whose layers the format cannot express (export the
            float model with the exporter's own ``quantize=`` instead).
    """

    name: str
    suffix: str
    runtime: str
    extra: str | None
    modules: tuple[str, ...]
    packages: tuple[str, ...]
    exporter: str | None
    runner: str | None
    refuses: tuple[str, ...] = ()

    @property
    def is_artifact(self) -> bool:
        """Whether the file is a deployed artifact run by its own runtime (not by PyTorch)."""
        return self.runner is not None


FORMATS: tuple[Format, ...] = (
    Format(
        "onnx", ".onnx", "onnxruntime", "onnx", ("onnx", "onnxscript", "onnxruntime"), ("onnx", "onnxruntime"),
        "slimkit.runtime.onnx_export:export_onnx", "slimkit.runtime.onnx_runtime:OnnxRuntime",
    ),
    Format(
        "pte", ".pte", "executorch", "executorch", ("executorch.exir", "executorch.runtime"), ("executorch",),
        "slimkit.runtime.pte_export:export_pte", "slimkit.runtime.executorch_runtime:ExecuTorchRuntime",
        refuses=("int8-dynamic",),  # fbgemm's dynamic linear has no ExecuTorch kernel
    ),
    Format(
        "tflite", ".tflite", "tflite", "tflite", ("litert_torch", "ai_edge_litert.interpreter"),
        ("ai-edge-litert", "litert-torch"),
        "slimkit.runtime.tflite_export:export_tflite", "slimkit.runtime.tflite_runtime:TFLiteRuntime",
        refuses=("int8-dynamic", "int8-static"),  # LiteRT's converter lowers only its own pt2e quantization
    ),
    Format("pt2", ".pt2", "torch", None, (), (), None, None),
)

FORMAT_NAMES: tuple[str, ...] = tuple(f.name for f in FORMATS)
"""Names of every format (``onnx``, ``pte``, ``tflite``, ``pt2``)."""
SUFFIXES: tuple[str, ...] = tuple(f.suffix for f in FORMATS)
"""Suffixes `slimkit.export` writes."""
ARTIFACT_SUFFIXES: tuple[str, ...] = tuple(f.suffix for f in FORMATS if f.is_artifact)
"""Suffixes of deployed artifacts, run by their own runtime."""
RUNTIMES: tuple[str, ...] = ("torch", *(f.runtime for f in FORMATS if f.is_artifact))
"""Runtime names: ``torch`` for modules, slimkit folders and ``.pt2``, then one per artifact format."""


def by_suffix(suffix: str) -> Format:
    """The format of a file suffix (case-insensitive)."""
    for fmt in FORMATS:
        if fmt.suffix == suffix.lower():
            return fmt
    raise InvalidConfigError(f"cannot tell the format of {suffix!r}: use a suffix among {', '.join(SUFFIXES)}")


def by_name(name: str) -> Format:
    """The format called ``name`` (``onnx``, ``pte``, ...)."""
    for fmt in FORMATS:
        if fmt.name == name:
            return fmt
    raise InvalidConfigError(f"unknown format {name!r}; valid: {', '.join(FORMAT_NAMES)}")


def artifact_of(runtime: str) -> Format:
    """The artifact format a runtime runs (``onnxruntime`` -> ``.onnx``)."""
    for fmt in FORMATS:
        if fmt.is_artifact and fmt.runtime == runtime:
            return fmt
    raise InvalidConfigError(f"runtime {runtime!r} runs no artifact; valid: {', '.join(RUNTIMES[1:])}")


def load_attribute(reference: str) -> Any:
    """Import ``"module:attribute"`` (a reference of this table, never user input)."""
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)


def refusal(fmt: Format, quantize_methods: set[str] | list[str]) -> str | None:
    """Why ``fmt`` cannot carry a model quantized with these slimkit methods (None: it can)."""
    refused = sorted(set(quantize_methods) & set(fmt.refuses))
    if not refused:
        return None
    others = [f.suffix for f in FORMATS if f.is_artifact and not set(refused) & set(f.refuses)]
    own = "int8-dynamic" if refused[0] == "int8-dynamic" else "int8"
    return (
        f"{fmt.suffix} cannot express slimkit's {refused[0]} layers: export this model to {' or '.join(others)}, "
        f'or export the float model with quantize="{own}" (the runtime\'s own int8 path)'
    )
