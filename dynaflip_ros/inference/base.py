"""One encoder interface for every backend (torch, ONNX Runtime, TensorRT) + shared preprocessing.

`preprocess` lives in `encoder/preprocess.py` (the export parity gate uses it too, and export
must not import inference); it is re-exported here for the backends and existing callers.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from dynaflip_ros.encoder.manifest import EncoderManifest
from dynaflip_ros.encoder.preprocess import preprocess

__all__ = ["EncoderBackend", "preprocess"]


@runtime_checkable
class EncoderBackend(Protocol):
    """embed(uint8 (B, H, W, 3)) -> float32 (B, D); `manifest` says D and the sha256."""

    manifest: EncoderManifest

    def embed(self, images: np.ndarray) -> np.ndarray: ...
