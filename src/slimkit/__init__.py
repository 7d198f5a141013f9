"""slimkit: make trained PyTorch models small and fast, and measure it on the real runtime.

``import slimkit`` loads torch and the core only; technique packages, runtimes and
optional dependencies load when first used.
"""

from __future__ import annotations

__version__ = "0.1.0"

from slimkit import models  # noqa: E402,F401  # installs the example catalog `example:` specs resolve through
from slimkit.core.config import Config
from slimkit.core.data import DataSplits, TensorData
from slimkit.core.errors import (
    DataError,
    InvalidConfigError,
    MissingExtraError,
    SlimkitError,
    UnsafeFileError,
    UnsupportedModelError,
)
from slimkit.core.io import save
from slimkit.core.outcome import Outcome, explain
from slimkit.core.record import get_record
from slimkit.core.specs import load_data
from slimkit.core.specs import load_model as load
from slimkit.measure.profile import Comparison, Profile, compare

# Verbs and packages that load on first use, so `import slimkit` stays light (no runtime module).
_LAZY = {
    "profile": "slimkit.profiling",
    "quantize": "slimkit.quantization",
    "prune": "slimkit.pruning",
    "distill": "slimkit.distillation",
    "decompose": "slimkit.decomposition",
    "accelerate": "slimkit.conv",
    "export": "slimkit.runtime",
    "compress": "slimkit.pipeline",
    "quantization": "slimkit.quantization",
    "pruning": "slimkit.pruning",
    "distillation": "slimkit.distillation",
    "decomposition": "slimkit.decomposition",
    "conv": "slimkit.conv",
    "runtime": "slimkit.runtime",
    "pipeline": "slimkit.pipeline",
    "search": "slimkit.search",
    "sensitivity": "slimkit.search",
}


def __getattr__(name: str) -> object:
    import importlib

    package = _LAZY.get(name)
    try:
        module = importlib.import_module(package or "")
    except (ValueError, ModuleNotFoundError) as exc:
        if isinstance(exc, ModuleNotFoundError) and exc.name != package:
            raise
        raise AttributeError(f"module 'slimkit' has no attribute {name!r}") from None
    return module if package.rpartition(".")[2] == name else getattr(module, name)


__all__ = [
    "Comparison",
    "Config",
    "DataError",
    "DataSplits",
    "InvalidConfigError",
    "MissingExtraError",
    "Outcome",
    "Profile",
    "SlimkitError",
    "TensorData",
    "UnsafeFileError",
    "UnsupportedModelError",
    "compare",
    "explain",
    "get_record",
    "load",
    "load_data",
    "profile",
    "save",
]
