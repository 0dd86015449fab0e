"""ONNX Runtime implementation of `inference.base.EncoderBackend` (runs encoder.onnx).

Does NOT import torch: the encoder node can run on a machine (or in a process) without it
(tests/test_inference_onnxruntime.py checks this in a fresh interpreter). ONNX Runtime API:
onnxruntime.InferenceSession(path, sess_options, providers), SessionOptions.intra_op_num_threads,
get_modelmeta().custom_metadata_map (https://onnxruntime.ai/docs/api/python/api_summary.html).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dynaflip_ros.encoder.manifest import EncoderManifest, sha256_file
from dynaflip_ros.export.artifact import (
    INPUT_NAME,
    ONNX_FILENAME,
    ONNX_FP16_FILENAME,
    OUTPUT_NAME,
    REPORT_FILENAME,
    BackendUnavailableError,
    EncoderArtifactError,
    ExportReport,
    check_embedding_shape,
    load_manifest,
    verify_onnx_metadata,
    verify_weights_sha256,
)
from dynaflip_ros.inference.base import preprocess

# Preferred order when providers=None; TensorRT's own EP is left out (engines are built and
# cached by export.tensorrt_engine instead).
_PREFERRED_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")


def _load_session(ort, onnx_path: Path, opts, providers: list[str]):
    """ort.InferenceSession(onnx_path); EncoderArtifactError when the file cannot be loaded.

    ONNX Runtime reports an unparsable or truncated model as InvalidProtobuf, Fail,
    RuntimeException or InvalidGraph (onnxruntime.capi.onnxruntime_pybind11_state).
    """
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    load_errors = tuple(getattr(state, n) for n in ("InvalidProtobuf", "Fail", "RuntimeException", "InvalidGraph")
                        if hasattr(state, n))
    try:
        return ort.InferenceSession(str(onnx_path), sess_options=opts, providers=providers)
    except load_errors as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise EncoderArtifactError(
            f"{onnx_path}: ONNX Runtime cannot load it ({type(e).__name__}: {first_line:.200}): the file is "
            "damaged or truncated; re-export it (dynaflip export)"
        ) from e


class OnnxRuntimeEncoderBackend:
    """embed(uint8 (B, H, W, 3) RGB) -> float32 (B, D) with ONNX Runtime.

    encoder_dir: manifest.json + encoder.onnx (+ export_report.json, image_encoder.safetensors
        when present: both are cross-checked).
    providers: ONNX Runtime execution providers; None -> CUDA if this onnxruntime build has it,
        then CPU.
    intra_op_num_threads: CPU threads per op (0: ONNX Runtime's default, one per core).
    precision: "fp32" runs encoder.onnx, "fp16" encoder_fp16.onnx (fp32 I/O either way).
    Raises BackendUnavailableError when onnxruntime or the ONNX file is missing, and
    EncoderArtifactError when the ONNX file is damaged or truncated (ONNX Runtime cannot load
    it), or the ONNX, its export report, the weights and the manifest disagree (sha256,
    embedding dim, input size).
    """

    name = "onnxruntime"

    def __init__(
        self,
        encoder_dir: str | Path,
        providers: Sequence[str] | None = None,
        intra_op_num_threads: int = 0,
        precision: str = "fp32",
    ):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise BackendUnavailableError(f"onnxruntime is not installed ({e})") from e
        if precision not in ("fp32", "fp16"):
            raise ValueError(f"precision must be 'fp32' or 'fp16', got {precision!r}")
        if not isinstance(intra_op_num_threads, int) or intra_op_num_threads < 0:
            raise ValueError(f"intra_op_num_threads must be an int >= 0, got {intra_op_num_threads!r}")
        self.encoder_dir = Path(encoder_dir)
        self.manifest: EncoderManifest = load_manifest(self.encoder_dir)
        self.onnx_path = self.encoder_dir / (ONNX_FILENAME if precision == "fp32" else ONNX_FP16_FILENAME)
        if not self.onnx_path.is_file():
            raise BackendUnavailableError(f"{self.onnx_path} not found: run `dynaflip export` first")
        verify_weights_sha256(self.encoder_dir, self.manifest)

        if providers is None:
            available = set(ort.get_available_providers())
            providers = [p for p in _PREFERRED_PROVIDERS if p in available]
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_num_threads
        self._session = _load_session(ort, self.onnx_path, opts, list(providers))
        self._check_report(precision)  # after loading: a damaged file is reported as damaged
        self.providers = self._session.get_providers()
        verify_onnx_metadata(self.onnx_path, dict(self._session.get_modelmeta().custom_metadata_map), self.manifest)
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if [i.name for i in inputs] != [INPUT_NAME] or [o.name for o in outputs] != [OUTPUT_NAME]:
            raise EncoderArtifactError(
                f"{self.onnx_path}: expected input {INPUT_NAME!r} / output {OUTPUT_NAME!r}, got "
                f"{[i.name for i in inputs]} / {[o.name for o in outputs]}"
            )
        batch_dim = inputs[0].shape[0]
        if isinstance(batch_dim, int) and batch_dim != 1:
            raise EncoderArtifactError(f"{self.onnx_path}: static batch {batch_dim}; export with a dynamic batch or B=1")
        self.static_batch = isinstance(batch_dim, int)  # True: exported with B fixed to 1
        h, w = self.manifest.input_hw
        check_embedding_shape(self.embed_preprocessed(np.zeros((1, 3, h, w), np.float32)), 1, self.manifest, str(self.onnx_path))

    def _check_report(self, precision: str) -> None:
        """When export_report.json is present, the ONNX must be the file it describes."""
        report_path = self.encoder_dir / REPORT_FILENAME
        if not report_path.is_file():
            return
        report = ExportReport.from_json(report_path)
        expected = report.onnx_sha256 if precision == "fp32" else report.onnx_fp16_sha256
        if report.weights_sha256 != self.manifest.weights_sha256:
            raise EncoderArtifactError(
                f"{report_path}: exported from weights {report.weights_sha256[:12]}…, manifest names "
                f"{self.manifest.weights_sha256[:12]}…"
            )
        actual = sha256_file(self.onnx_path)
        if expected != actual:
            raise EncoderArtifactError(
                f"{self.onnx_path}: sha256 {actual[:12]}… is not the file that passed the parity gate "
                f"({(expected or 'none')[:12]}… in {report_path}): re-export"
            )

    def embed_preprocessed(self, x: np.ndarray) -> np.ndarray:
        """float32 (B, 3, h, w) normalised -> float32 (B, D). A static-batch (B=1) ONNX runs row by row."""
        x = np.ascontiguousarray(x, np.float32)  # (B, 3, h, w)
        if self.static_batch and x.shape[0] != 1:
            return np.concatenate([self._session.run([OUTPUT_NAME], {INPUT_NAME: x[i : i + 1]})[0] for i in range(x.shape[0])])
        return self._session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]  # (B, D)

    def embed(self, images: np.ndarray) -> np.ndarray:
        """uint8 (B, H, W, 3) RGB -> float32 (B, D). Raises ValueError on a wrong dtype/shape."""
        return self.embed_preprocessed(preprocess(images, self.manifest))
