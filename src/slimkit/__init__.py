"""slimkit: make trained PyTorch models small and fast, and measure it on the real runtime.

``import slimkit`` loads torch and the core only; technique packages, runtimes and
optional dependencies load when first used.
"""

from __future__ import annotations

__version__ = "0.1.0"

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
from slimkit.core.record import get_record
from slimkit.core.specs import load_data
from slimkit.core.specs import load_model as load
from slimkit.measure.profile import Comparison, Profile, compare, profile

__all__ = [
    "Comparison",
    "Config",
    "DataError",
    "DataSplits",
    "InvalidConfigError",
    "MissingExtraError",
    "Profile",
    "SlimkitError",
    "TensorData",
    "UnsafeFileError",
    "UnsupportedModelError",
    "compare",
    "get_record",
    "load",
    "load_data",
    "profile",
    "save",
]
