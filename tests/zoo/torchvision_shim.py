"""Import torchvision's pure-Python model zoo beside a CPU-only torch.

The registry's torchvision wheel is a CUDA build: with the CPU build of torch its compiled
operators do not load and ``import torchvision`` fails with "operator torchvision::nms does
not exist". Classification and segmentation models never call those operators, so the test
set-up declares their schemas (no kernels) before the import. Calling one of them raises
torch's "no kernel" error. Only tests use this; slimkit itself never imports torchvision.

torchvision is not installed into the environment itself: transformers would find it there
and fail to import (it imports torchvision when it is installed). `make test` puts it in
``.venv/zoo`` (``pip install --no-deps --target``), which only this module adds to the path;
``SLIMKIT_ZOO_PATH`` names another folder.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

import torch

_SIZES = "SymInt pooled_height, SymInt pooled_width"
_GRID = "SymInt batch_size, SymInt channels, SymInt height, SymInt width"
_CONV = (
    "SymInt stride_h, SymInt stride_w, SymInt pad_h, SymInt pad_w, SymInt dilation_h, SymInt dilation_w, "
    "SymInt groups, SymInt offset_groups, bool use_mask"
)
SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    f"roi_align(Tensor input, Tensor rois, float spatial_scale, {_SIZES}, int sampling_ratio, bool aligned) -> Tensor",
    f"qroi_align(Tensor input, Tensor rois, float spatial_scale, {_SIZES}, int sampling_ratio, bool aligned) -> Tensor",
    f"_roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, {_SIZES}, {_GRID}, int sampling_ratio, "
    "bool aligned) -> Tensor",
    f"ps_roi_align(Tensor input, Tensor rois, float spatial_scale, {_SIZES}, int sampling_ratio) -> (Tensor, Tensor)",
    f"_ps_roi_align_backward(Tensor grad, Tensor rois, Tensor channel_mapping, float spatial_scale, {_SIZES}, "
    f"int sampling_ratio, {_GRID}) -> Tensor",
    f"roi_pool(Tensor input, Tensor rois, float spatial_scale, {_SIZES}) -> (Tensor, Tensor)",
    f"_roi_pool_backward(Tensor grad, Tensor rois, Tensor argmax, float spatial_scale, {_SIZES}, {_GRID}) -> Tensor",
    f"ps_roi_pool(Tensor input, Tensor rois, float spatial_scale, {_SIZES}) -> (Tensor, Tensor)",
    f"_ps_roi_pool_backward(Tensor grad, Tensor rois, Tensor channel_mapping, float spatial_scale, {_SIZES}, "
    f"{_GRID}) -> Tensor",
    f"deform_conv2d(Tensor input, Tensor weight, Tensor offset, Tensor mask, Tensor bias, {_CONV}) -> Tensor",
    f"_deform_conv2d_backward(Tensor grad, Tensor input, Tensor weight, Tensor offset, Tensor mask, Tensor bias, "
    f"{_CONV}) -> (Tensor, Tensor, Tensor, Tensor, Tensor)",
)
_LIBRARY: torch.library.Library | None = None


ZOO_PATH = Path(os.environ.get("SLIMKIT_ZOO_PATH", Path(__file__).resolve().parents[2] / ".venv" / "zoo"))


def import_torchvision() -> ModuleType:
    """``torchvision``, importable on a CPU-only torch (see the module doc).

    Raises:
        ModuleNotFoundError: when torchvision is in neither the environment nor ``ZOO_PATH``.
    """
    global _LIBRARY
    if str(ZOO_PATH) not in sys.path and ZOO_PATH.is_dir():
        sys.path.append(str(ZOO_PATH))
    try:
        return importlib.import_module("torchvision")
    except (RuntimeError, OSError):
        pass
    if _LIBRARY is None:
        _LIBRARY = torch.library.Library("torchvision", "DEF")  # noqa: TOR901 (schemas only, for tests)
        for schema in SCHEMAS:
            _LIBRARY.define(schema)
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    return importlib.import_module("torchvision")
