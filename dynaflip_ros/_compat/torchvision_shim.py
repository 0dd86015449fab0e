"""Make `import torchvision` work with the CPU torch 2.13.0 wheel the development machines use.

torchvision 0.28.0 is the only build matching torch 2.13 and it is a CUDA build: with the CPU
torch its compiled ops fail to load and `import torchvision` raises
"operator torchvision::nms does not exist", which also breaks timm, transformers,
sentence-transformers and lerobot. `apply()` first tries the real compiled ops and only registers
the missing schemas if loading fails (a shim that always defines `nms` aborts wherever the real
ops load). With it, models and transforms work; `torchvision.ops.nms` and jpeg decode do not.
Call it before anything imports torchvision; it is a no-op when torchvision is already imported.
"""
from __future__ import annotations

import glob
import importlib.machinery
import os
import sys

_LIB = None


def apply() -> bool:
    """Register the missing torchvision op schemas if needed; True when the shim was applied."""
    global _LIB
    if "torchvision" in sys.modules or _LIB is not None:
        return False
    # PathFinder, not importlib.util.find_spec: the latter would run the meta-path hook of
    # torchvision_hook.py, which calls apply() again from inside this call.
    spec = importlib.machinery.PathFinder.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return False
    import torch

    for so in glob.glob(os.path.join(os.path.dirname(spec.origin), "_C*.so")):
        try:
            torch.ops.load_library(so)
            return False  # real ops available: do nothing
        except OSError:
            pass
    lib = torch.library.Library("torchvision", "DEF")
    for op in ("nms", "qnms"):
        lib.define(op + "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIB = lib  # keep the library object alive
    return True
