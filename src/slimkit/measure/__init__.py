"""Measurements: parameters, MACs, latency, peak memory, quality metrics, sizes."""

from slimkit.measure.latency import Latency, fixed_threads, measure_latency
from slimkit.measure.macs import KINDS, MacCount, count_macs, register_mac_formula
from slimkit.measure.memory import peak_memory
from slimkit.measure.metrics import accuracy, cosine_similarity, evaluate, sqnr_db
from slimkit.measure.params import count_nonzero, count_params
from slimkit.measure.size import artifact_bytes, tensor_bytes

__all__ = [
    "KINDS",
    "Latency",
    "MacCount",
    "accuracy",
    "artifact_bytes",
    "count_macs",
    "count_nonzero",
    "count_params",
    "cosine_similarity",
    "evaluate",
    "fixed_threads",
    "measure_latency",
    "peak_memory",
    "register_mac_formula",
    "sqnr_db",
    "tensor_bytes",
]
