"""The encoder's image preprocessing: uint8 camera frames -> its normalised float32 input.

One implementation for every consumer: the deployment backends (`inference/*_backend.py`, via
`inference.base.preprocess`), the export parity gate (`export/parity.py`) and the tests that pin
it equal to the training transform. Pure NumPy (+ OpenCV for the resize); no state, thread-safe.
Resize: OpenCV `cv2.resize(..., interpolation=cv2.INTER_AREA)`
(https://docs.opencv.org/4.x/da/d54/group__imgproc__transform.html).
"""
from __future__ import annotations

import numpy as np

from dynaflip_ros.encoder.manifest import EncoderManifest


def preprocess(images: np.ndarray, manifest: EncoderManifest) -> np.ndarray:
    """uint8 (B, H, W, 3) RGB -> float32 (B, 3, h, w) normalised network input.

    Resizes with OpenCV INTER_AREA to manifest.input_hw when the size differs, scales to [0, 1],
    subtracts mean and divides by std. Raises ValueError on a wrong dtype or shape.
    """
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 (B, H, W, 3) RGB, got {images.dtype} {images.shape}")
    h, w = manifest.input_hw
    if images.shape[1:3] != (h, w):
        import cv2

        images = np.stack([cv2.resize(im, (w, h), interpolation=cv2.INTER_AREA) for im in images])
    x = images.astype(np.float32) / 255.0  # (B, h, w, 3)
    x = (x - np.asarray(manifest.mean, np.float32)) / np.asarray(manifest.std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))  # (B, 3, h, w)
