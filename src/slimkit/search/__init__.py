"""Adaptive compression: per-layer sensitivity, budgeted allocation, multi-objective search.

``sk.sensitivity(model, data)`` measures what each per-layer setting costs and saves;
`allocate` picks one setting per layer to meet a budget and checks it on measured figures;
`fallback` quantizes a whole model and keeps in float the fewest layers that meet a budget;
``sk.search(model, data=..., target=..., constraints=...)`` searches whole recipes on the
target runtime, or with ``latency_table=`` on latency a `LatencyTable` measured on another
device predicts (`measure_table`, `predict_latency`). This package is callable: ``sk.search(...)`` is `search`.
"""

import sys
import types
from typing import Any

from slimkit.search.accuracy_aware import Fallback, fallback
from slimkit.search.allocate import Allocation, allocate, plan
from slimkit.search.cache import Cache
from slimkit.search.candidates import CandidateConfig, Setting, apply_settings
from slimkit.search.latency_table import LatencyTable, Prediction, measure_table, predict_latency
from slimkit.search.sensitivity import Row, SensitivityTable, sensitivity
from slimkit.search.space import SearchSpace
from slimkit.search.study import FrontPoint, Measured, SearchResult, TrialRecord, search


class _CallableModule(types.ModuleType):
    """``slimkit.search`` is both this package and, called, the `search` function."""

    def __call__(self, *args: Any, **kwargs: Any) -> SearchResult:
        return search(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

__all__ = [
    "Allocation",
    "Cache",
    "CandidateConfig",
    "Fallback",
    "FrontPoint",
    "LatencyTable",
    "Measured",
    "Prediction",
    "Row",
    "SearchResult",
    "SearchSpace",
    "SensitivityTable",
    "Setting",
    "TrialRecord",
    "allocate",
    "apply_settings",
    "fallback",
    "measure_table",
    "plan",
    "predict_latency",
    "search",
    "sensitivity",
]
