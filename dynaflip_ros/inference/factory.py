"""Pick an encoder backend for an exported encoder directory.

`load_encoder_backend(dir, backend="auto")` tries TensorRT, then ONNX Runtime (encoder.onnx),
then PyTorch, and logs which one it chose and why each earlier one was skipped. Only "this
backend cannot run here" (BackendUnavailableError: package, GPU or file missing) falls through;
an inconsistent artifact (EncoderArtifactError: sha256 / embedding-dim mismatch) or a failed
TensorRT build is raised, never hidden behind a slower backend.

Backends are imported lazily, so choosing "onnxruntime" never imports torch.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from dynaflip_ros.export.artifact import BackendUnavailableError, load_manifest
from dynaflip_ros.inference.base import EncoderBackend

log = logging.getLogger(__name__)

BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch")
AUTO_ORDER = ("tensorrt", "onnxruntime", "torch")


def _construct(name: str, encoder_dir: Path, options: dict[str, Any]) -> EncoderBackend:
    if name == "tensorrt":
        from dynaflip_ros.inference.tensorrt_backend import TensorRTEncoderBackend

        return TensorRTEncoderBackend(encoder_dir, **options)
    if name == "onnxruntime":
        from dynaflip_ros.inference.onnxruntime_backend import OnnxRuntimeEncoderBackend

        return OnnxRuntimeEncoderBackend(encoder_dir, **options)
    if name == "torch":
        try:
            from dynaflip_ros.inference.torch_backend import TorchEncoderBackend
        except ImportError as e:
            raise BackendUnavailableError(f"torch backend cannot be imported ({e})") from e
        return TorchEncoderBackend(encoder_dir, **options)
    raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")


def load_encoder_backend(
    encoder_dir: str | Path,
    backend: str = "auto",
    tensorrt_options: dict[str, Any] | None = None,
    onnxruntime_options: dict[str, Any] | None = None,
    torch_options: dict[str, Any] | None = None,
) -> EncoderBackend:
    """An EncoderBackend for encoder_dir: embed(uint8 (B, H, W, 3)) -> float32 (B, D).

    backend: "auto" (tensorrt -> onnxruntime -> torch, first that is available here),
        "tensorrt", "onnxruntime" or "torch" (that one or an error).
    *_options: keyword arguments of TensorRTEncoderBackend / OnnxRuntimeEncoderBackend /
        TorchEncoderBackend (e.g. {"precision": "fp32"}, {"intra_op_num_threads": 2}).
    The returned object has `.name` and `.manifest`; with "auto" also `.fallback_reasons`
    (backend -> why it was skipped). Raises ValueError on an unknown backend,
    BackendUnavailableError when the requested (or, for auto, every) backend cannot run,
    EncoderArtifactError on an inconsistent directory.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    encoder_dir = Path(encoder_dir)
    load_manifest(encoder_dir)  # fail early and plainly on a wrong directory
    options = {"tensorrt": tensorrt_options or {}, "onnxruntime": onnxruntime_options or {}, "torch": torch_options or {}}
    if backend != "auto":
        enc = _construct(backend, encoder_dir, options[backend])
        log.info("encoder backend: %s (requested) for %s", backend, encoder_dir)
        return enc
    reasons: dict[str, str] = {}
    for name in AUTO_ORDER:
        try:
            enc = _construct(name, encoder_dir, options[name])
        except (BackendUnavailableError, FileNotFoundError) as e:
            reasons[name] = str(e)
            log.warning("encoder backend %s unavailable: %s", name, e)
            continue
        enc.fallback_reasons = reasons  # type: ignore[attr-defined]
        skipped = "; ".join(f"{k}: {v}" for k, v in reasons.items())
        log.info("encoder backend: %s for %s%s", name, encoder_dir, f" (skipped {skipped})" if skipped else "")
        return enc
    raise BackendUnavailableError(
        f"no encoder backend can run {encoder_dir}: " + "; ".join(f"{k}: {v}" for k, v in reasons.items())
    )
