"""Importing transformers: offline, quiet, and with a clear message when missing."""

from __future__ import annotations

import logging
import os
from types import ModuleType

from slimkit.core.errors import require

# Libraries transformers may pull in that log import-time warnings irrelevant to the user.
_NOISY_LOGGERS = ("torchao", "torch.utils._pytree")


def import_transformers(extra: str = "examples") -> ModuleType:
    """Import transformers with the hub switched off (nothing downloads at run time)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    return require("transformers", extra)
