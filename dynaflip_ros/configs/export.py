"""Parameters of `dynaflip export`: ONNX export, the parity gate, and the TensorRT engine build.

The encoder is exported to ONNX, checked numerically against PyTorch
(the parity gate), and turned into a TensorRT engine on the target GPU machine (built from the
ONNX and cached, never committed).

YAML: `config/export.yaml`, loaded with `configs.io.load_yaml(ExportConfig, path)`. Range,
int and choice checks go through `configs/validate.py` (ConfigError, a ValueError).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from dynaflip_ros.configs.validate import require_choice, require_int, require_range

EXPORTERS = ("dynamo", "torchscript")
TENSORRT_MODES = ("auto", "require", "off")
PRECISIONS = ("fp16", "fp32")


@dataclass(frozen=True)
class ParityTolerance:
    """Limits on the difference between a reference embedding and a candidate embedding.

    Attributes:
        max_abs_diff: largest allowed |ref - out| over all elements (embedding units), or None
            to skip this check.
        max_rel_diff: largest allowed max|ref - out| / max|ref| (scale-free; used for FP16,
            whose error grows with the embedding's magnitude), or None to skip this check.
        min_cosine: smallest allowed cosine similarity between a reference row and the
            candidate row (per sample, (D,) vectors).
    Raises ValueError when no check is enabled or a value is out of range.
    """

    max_abs_diff: float | None = 1e-4
    max_rel_diff: float | None = None
    min_cosine: float = 0.9999

    def __post_init__(self) -> None:
        for name in ("max_abs_diff", "max_rel_diff"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0 or None, got {v!r}")
        require_range("", "min_cosine", self.min_cosine, -1, 1, kind="")


@dataclass(frozen=True)
class ExportConfig:
    """How `dynaflip export` writes and checks the encoder artifacts.

    Attributes:
        opset: ONNX opset of the exported graph (18: supported by ONNX Runtime >= 1.14 and
            TensorRT >= 10).
        exporter: "dynamo" (torch.export-based, the default exporter since torch 2.9) or
            "torchscript" (the legacy exporter, deprecated in torch 2.13; a fallback for modules
            torch.export cannot trace).
        dynamic_batch: export with a symbolic batch dimension (B, 3, h, w); False fixes B = 1.
        onnx_tolerance: parity gate, PyTorch fp32 vs ONNX Runtime (CPU) on encoder.onnx.
        fp16_tolerance: parity gate, PyTorch fp32 vs ONNX Runtime on encoder_fp16.onnx.
        tensorrt_fp32_tolerance / tensorrt_fp16_tolerance: gate on the built TensorRT engine vs
            the ONNX Runtime fp32 output (TF32 is switched off for fp32 engines).
        parity_batch_sizes: batch sizes of the random normalised inputs (N(0, 1), (B, 3, h, w)).
        n_parity_images: number of synthetic camera-like uint8 images pushed through
            `encoder.preprocess.preprocess` (a resize from `parity_image_hw` included).
        parity_image_hw: (H, W) pixels of those images.
        seed: seed of the parity inputs.
        tensorrt: "auto" (build when TensorRT and a CUDA GPU are present, else ONNX only),
            "require" (fail without them), "off".
        precision: TensorRT engine precision. "fp16" also writes encoder_fp16.onnx (fp16
            weights and compute, fp32 input/output), which TensorRT 11 needs because it builds
            strongly typed networks only.
        trt_min_batch / trt_opt_batch / trt_max_batch: optimisation profile of the engine's
            batch dimension (ignored for a static-batch ONNX, which pins 1/1/1).
        trt_workspace_mib: TensorRT workspace memory pool limit, MiB.
        trt_cache_dir: engine cache root; "" means $DYNAFLIP_TRT_CACHE or
            ~/.cache/dynaflip_ros/tensorrt.
    """

    opset: int = 18
    exporter: str = "dynamo"
    dynamic_batch: bool = True
    onnx_tolerance: ParityTolerance = field(default_factory=ParityTolerance)
    fp16_tolerance: ParityTolerance = field(
        default_factory=lambda: ParityTolerance(max_abs_diff=None, max_rel_diff=2e-2, min_cosine=0.999)
    )
    tensorrt_fp32_tolerance: ParityTolerance = field(
        default_factory=lambda: ParityTolerance(max_abs_diff=1e-3, max_rel_diff=None, min_cosine=0.9999)
    )
    tensorrt_fp16_tolerance: ParityTolerance = field(
        default_factory=lambda: ParityTolerance(max_abs_diff=None, max_rel_diff=3e-2, min_cosine=0.999)
    )
    parity_batch_sizes: tuple[int, ...] = (1, 4)
    n_parity_images: int = 4
    parity_image_hw: tuple[int, int] = (480, 640)
    seed: int = 0
    tensorrt: str = "auto"
    precision: str = "fp16"
    trt_min_batch: int = 1
    trt_opt_batch: int = 1
    trt_max_batch: int = 8
    trt_workspace_mib: int = 1024
    trt_cache_dir: str = ""

    def __post_init__(self) -> None:
        require_int("", "opset", self.opset, 13, 23)
        require_choice("", "exporter", self.exporter, EXPORTERS)
        require_choice("", "tensorrt", self.tensorrt, TENSORRT_MODES)
        require_choice("", "precision", self.precision, PRECISIONS)
        for name in ("onnx_tolerance", "fp16_tolerance", "tensorrt_fp32_tolerance", "tensorrt_fp16_tolerance"):
            if not isinstance(getattr(self, name), ParityTolerance):
                raise ValueError(f"{name} must be a ParityTolerance, got {getattr(self, name)!r}")
        if not self.parity_batch_sizes or any(
            not isinstance(b, int) or b < 1 for b in self.parity_batch_sizes
        ):
            raise ValueError(f"parity_batch_sizes must be ints >= 1, got {self.parity_batch_sizes!r}")
        require_int("", "n_parity_images", self.n_parity_images, 0)
        if len(self.parity_image_hw) != 2 or any(not isinstance(v, int) or v < 8 for v in self.parity_image_hw):
            raise ValueError(f"parity_image_hw must be (H, W) ints >= 8, got {self.parity_image_hw!r}")
        if not (1 <= self.trt_min_batch <= self.trt_opt_batch <= self.trt_max_batch):
            raise ValueError(
                "need 1 <= trt_min_batch <= trt_opt_batch <= trt_max_batch, got "
                f"{self.trt_min_batch}/{self.trt_opt_batch}/{self.trt_max_batch}"
            )
        require_int("", "trt_workspace_mib", self.trt_workspace_mib, 16)
