"""TensorRT implementation of `inference.base.EncoderBackend` (GPU machines only).

The engine comes from `export.tensorrt_engine.load_or_build_engine` (built from the exported ONNX
on first use, then cached by ONNX sha256 / TensorRT version / GPU / precision / shape). CUDA
buffers and the stream are torch.cuda tensors: a GPU image runs torch with CUDA anyway
(training, the torch fallback), so this adds no dependency (cuda-python/pycuda are not needed).
Execution uses the TensorRT >= 10 name-based API: set_input_shape, set_tensor_address,
execute_async_v3(stream) (TensorRT Python API, IExecutionContext).

Import-guarded: constructing the backend raises TensorRTUnavailableError (a
BackendUnavailableError) when tensorrt or a CUDA GPU is missing; importing this module is free.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from dynaflip_ros.encoder.manifest import EncoderManifest, sha256_file
from dynaflip_ros.export.artifact import (
    INPUT_NAME,
    ONNX_FILENAME,
    ONNX_FP16_FILENAME,
    OUTPUT_NAME,
    REPORT_FILENAME,
    EncoderArtifactError,
    ExportReport,
    check_embedding_shape,
    load_manifest,
    verify_weights_sha256,
)
from dynaflip_ros.export.tensorrt_engine import (
    EngineBuildResult,
    TensorRTBuildError,
    cuda_device_info,
    import_tensorrt,
    load_or_build_engine,
)
from dynaflip_ros.inference.base import preprocess


class TensorRTEncoderBackend:
    """embed(uint8 (B, H, W, 3) RGB) -> float32 (B, D) with a cached TensorRT engine.

    encoder_dir: an exported encoder dir (encoder.onnx, optional encoder_fp16.onnx, manifest).
    precision: "fp16" | "fp32" (see export.tensorrt_engine). min/opt/max_batch: the engine's
    batch profile; larger batches are split. cache_root: engine cache (None: default).
    device_index: CUDA device. Raises TensorRTUnavailableError (no tensorrt / GPU),
    FileNotFoundError (no ONNX), TensorRTBuildError, EncoderArtifactError (weights / ONNX /
    manifest disagree, or the engine's output is not (B, manifest.embedding_dim)).
    """

    name = "tensorrt"

    def __init__(
        self,
        encoder_dir: str | Path,
        precision: str = "fp16",
        min_batch: int = 1,
        opt_batch: int = 1,
        max_batch: int = 8,
        workspace_mib: int = 1024,
        cache_root: str | Path | None = None,
        device_index: int = 0,
        force_rebuild: bool = False,
    ):
        import_tensorrt()  # fail fast (TensorRTUnavailableError) before hashing anything
        cuda_device_info(device_index)
        self.encoder_dir = Path(encoder_dir)
        self.manifest: EncoderManifest = load_manifest(self.encoder_dir)
        verify_weights_sha256(self.encoder_dir, self.manifest)
        report_path = self.encoder_dir / REPORT_FILENAME
        report = ExportReport.from_json(report_path) if report_path.is_file() else None
        if report is not None:
            if report.weights_sha256 != self.manifest.weights_sha256:
                raise EncoderArtifactError(f"{report_path}: exported from other weights than the manifest names")
            if not report.dynamic_batch:
                min_batch = opt_batch = max_batch = 1
            # Only build from ONNX files that passed the parity gate (before spending a build).
            for name, vouched in ((ONNX_FILENAME, report.onnx_sha256), (ONNX_FP16_FILENAME, report.onnx_fp16_sha256)):
                path = self.encoder_dir / name
                if path.is_file() and sha256_file(path) != vouched:
                    raise EncoderArtifactError(f"{path} is not the file that passed the parity gate in {report_path}")
        h, w = self.manifest.input_hw
        engine, runtime, result = load_or_build_engine(
            self.encoder_dir, (3, h, w), precision, min_batch, opt_batch, max_batch, workspace_mib,
            cache_root, device_index, force_rebuild,
        )
        import tensorrt as trt
        import torch

        self._trt, self._torch = trt, torch
        self._runtime, self._engine = runtime, engine  # the runtime must outlive the engine
        self.build: EngineBuildResult = result
        self.precision = precision
        self.max_batch = max_batch
        self.device = torch.device(f"cuda:{device_index}")
        self._check_io(engine)
        self._context = engine.create_execution_context()
        if self._context is None:
            raise TensorRTBuildError(f"could not create an execution context for {result.outcome.engine_path}")
        self._stream = torch.cuda.Stream(device=self.device)
        self._lock = threading.Lock()  # an execution context is not thread-safe
        check_embedding_shape(self.embed_preprocessed(np.zeros((1, 3, h, w), np.float32)), 1, self.manifest,
                              result.outcome.engine_path)

    def _check_io(self, engine: Any) -> None:
        trt = self._trt
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        if sorted(names) != sorted([INPUT_NAME, OUTPUT_NAME]):
            raise EncoderArtifactError(f"engine I/O tensors {names} != [{INPUT_NAME!r}, {OUTPUT_NAME!r}]")
        if engine.get_tensor_mode(INPUT_NAME) != trt.TensorIOMode.INPUT:
            raise EncoderArtifactError(f"engine tensor {INPUT_NAME!r} is not an input")
        for name in names:
            if engine.get_tensor_dtype(name) != trt.DataType.FLOAT:
                raise EncoderArtifactError(f"engine tensor {name!r} is {engine.get_tensor_dtype(name)}, expected FLOAT")
        out_shape = tuple(engine.get_tensor_shape(OUTPUT_NAME))  # (-1 or B, D)
        dim = int(out_shape[len(out_shape) - 1])
        if dim != self.manifest.embedding_dim:
            raise EncoderArtifactError(f"engine embedding dim {dim} != manifest {self.manifest.embedding_dim}")

    def _run(self, x: np.ndarray) -> np.ndarray:
        """One engine call, x float32 (b, 3, h, w) with b <= max_batch -> (b, D)."""
        torch = self._torch
        b = x.shape[0]
        with torch.cuda.stream(self._stream):
            xt = torch.from_numpy(x).to(self.device, non_blocking=False)  # (b, 3, h, w)
            yt = torch.empty((b, self.manifest.embedding_dim), dtype=torch.float32, device=self.device)  # (b, D)
            if not self._context.set_input_shape(INPUT_NAME, tuple(xt.shape)):
                raise ValueError(f"input shape {tuple(xt.shape)} is outside the engine's profile (max batch {self.max_batch})")
            self._context.set_tensor_address(INPUT_NAME, xt.data_ptr())
            self._context.set_tensor_address(OUTPUT_NAME, yt.data_ptr())
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log)")
            self._stream.synchronize()
            return yt.cpu().numpy()

    def embed_preprocessed(self, x: np.ndarray) -> np.ndarray:
        """float32 (B, 3, h, w) normalised -> float32 (B, D); B above max_batch is split."""
        x = np.ascontiguousarray(x, np.float32)  # (B, 3, h, w)
        if x.ndim != 4 or x.shape[0] == 0:
            raise ValueError(f"expected float32 (B>=1, 3, h, w), got {x.shape}")
        with self._lock:
            return np.concatenate([self._run(x[i : i + self.max_batch]) for i in range(0, x.shape[0], self.max_batch)])

    def embed(self, images: np.ndarray) -> np.ndarray:
        """uint8 (B, H, W, 3) RGB -> float32 (B, D). Raises ValueError on a wrong dtype/shape."""
        return self.embed_preprocessed(preprocess(images, self.manifest))
