"""PyTorch (eager) implementation of `inference.base.EncoderBackend`: the reference backend.

Loads image_encoder.safetensors through `encoder.model.load_image_encoder` and runs it without
autograd. Slowest of the three on CPU (benchmarks/bench_encoder_backends.py) but needs no export;
`inference.factory` uses it last.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dynaflip_ros.encoder.manifest import EncoderManifest
from dynaflip_ros.export.artifact import (
    WEIGHTS_FILENAME,
    BackendUnavailableError,
    EncoderArtifactError,
    check_embedding_shape,
    load_manifest,
    verify_weights_sha256,
)
from dynaflip_ros.inference.base import preprocess


class TorchEncoderBackend:
    """embed(uint8 (B, H, W, 3) RGB) -> float32 (B, D) with the PyTorch module.

    encoder_dir: manifest.json + image_encoder.safetensors. device: torch device string
    ("cpu", "cuda:0"). num_threads: torch intra-op CPU threads (None: leave torch's setting).
    Raises BackendUnavailableError without torch, EncoderArtifactError when the weights' sha256 differs from the manifest or the
    module's output is not (B, manifest.embedding_dim).
    """

    name = "torch"

    def __init__(self, encoder_dir: str | Path, device: str = "cpu", num_threads: int | None = None):
        try:
            import torch
        except ImportError as e:
            raise BackendUnavailableError(f"torch is not installed ({e})") from e

        from dynaflip_ros.encoder.model import load_image_encoder

        self.encoder_dir = Path(encoder_dir)
        manifest = load_manifest(self.encoder_dir)
        if not verify_weights_sha256(self.encoder_dir, manifest):
            raise EncoderArtifactError(f"{self.encoder_dir / WEIGHTS_FILENAME} not found: the torch backend needs it")
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        module, loaded = load_image_encoder(self.encoder_dir)
        if loaded.weights_sha256 != manifest.weights_sha256 or loaded.embedding_dim != manifest.embedding_dim:
            raise EncoderArtifactError(f"{self.encoder_dir}: loader manifest disagrees with manifest.json")
        self.manifest: EncoderManifest = manifest
        self.device = torch.device(device)
        self._torch = torch
        self._module = module.to(self.device).eval()
        h, w = manifest.input_hw
        check_embedding_shape(self.embed_preprocessed(np.zeros((1, 3, h, w), np.float32)), 1, manifest, str(self.encoder_dir))

    def embed_preprocessed(self, x: np.ndarray) -> np.ndarray:
        """float32 (B, 3, h, w) normalised -> float32 (B, D)."""
        with self._torch.inference_mode():
            xt = self._torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(self.device)  # (B, 3, h, w)
            return self._module(xt).float().cpu().numpy()  # (B, D)

    def embed(self, images: np.ndarray) -> np.ndarray:
        """uint8 (B, H, W, 3) RGB -> float32 (B, D). Raises ValueError on a wrong dtype/shape."""
        return self.embed_preprocessed(preprocess(images, self.manifest))
