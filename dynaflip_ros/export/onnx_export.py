"""Export the DynaFLIP image encoder to ONNX and gate the file on parity with PyTorch.

Only the image encoder f(o_t) runs at deployment (paper: the language and flow encoders are
training-time only), so the export takes `encoder.model.load_image_encoder(dir)` — float32
(B, 3, h, w) normalised -> (B, D) — and writes `<out>/encoder.onnx` with input "images"
(B, 3, h, w) and output "embedding" (B, D), B symbolic when `dynamic_batch`.

Exporter: torch.onnx's dynamo (torch.export-based) exporter with `external_data=False`, so the
weights stay inside the one .onnx file (the dynamo exporter otherwise writes x.onnx.data;
docs/environment.md). Why dynamo: it is the default and maintained exporter since torch 2.9; the
legacy TorchScript exporter still works in torch 2.13 but warns it "will be removed". Both gave
max |diff| <= 5e-6 vs PyTorch on EfficientNet-Lite0 / ResNet-18 here (docs/environment.md: <= 3.3e-6);
`exporter="torchscript"` remains as a fallback for modules torch.export cannot trace.
Reference: https://pytorch.org/docs/stable/onnx_export.html (torch.onnx.export, dynamo=True,
dynamic_shapes, external_data).

Parity gate (`export/parity.py`, `check_parity`): the same inputs go through PyTorch (fp32, CPU)
and ONNX Runtime; ExportParityError above tolerance. Nothing is installed into `out_dir`
unless every gate passes (a rejected ONNX is kept as
`encoder.onnx.rejected` with `export_report.json.rejected` for diagnosis).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import io
import json
import os
import platform
import shutil
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dynaflip_ros.configs.export import ExportConfig, ParityTolerance
from dynaflip_ros.encoder.manifest import EncoderManifest, sha256_file
from dynaflip_ros.export.artifact import (
    INPUT_NAME,
    MANIFEST_FILENAME,
    META_EMBEDDING_DIM,
    META_INPUT_HW,
    META_PRECISION,
    META_WEIGHTS_SHA256,
    ONNX_FILENAME,
    ONNX_FP16_FILENAME,
    OUTPUT_NAME,
    REJECTED_SUFFIX,
    REPORT_FILENAME,
    WEIGHTS_FILENAME,
    EncoderArtifactError,
    ExportReport,
    load_manifest,
    verify_weights_sha256,
)
# The parity gate lives in export/parity.py; its public names stay importable from here.
from dynaflip_ros.export.parity import (  # noqa: F401 - re-exported
    ExportParityError,
    check_parity,
    compare_embeddings,
    load_eval_encoder,
    onnxruntime_runner,
    parity_inputs,
    summarise_parity,
    synthetic_scene_images,
    torch_runner,
    verify_onnx_parity,
)

_DEFAULTS = ExportConfig()
# Largest batch the symbolic dimension admits (torch.export needs a finite range).
MAX_EXPORT_BATCH = 4096


# ----------------------------------------------------------------------------- export
def fp16_io_wrapper(module: Any) -> Any:
    """A copy of `module` computing in fp16, with fp32 input (B, 3, h, w) and output (B, D).

    Exported as encoder_fp16.onnx: a strongly typed fp16 graph for TensorRT 11, which removed
    BuilderFlag.FP16 (TensorRT 10.x -> 11.x migration guide, "Strongly Typed Networks").
    """
    import copy

    import torch

    class Fp16Encoder(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module):
            super().__init__()
            self.inner = copy.deepcopy(inner).half().eval()

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return self.inner(images.half()).float()  # (B, 3, h, w) fp32 -> (B, D) fp32

    return Fp16Encoder(module).eval()


def _torch_export(
    module: Any,
    path: Path,
    input_hw: tuple[int, int],
    opset: int,
    dynamic_batch: bool,
    exporter: str,
) -> None:
    """torch.onnx.export to one self-contained file (weights inside, no external data)."""
    import torch

    h, w = input_hw
    # Batch 2 as the example: torch.export specialises a dimension traced at size 1.
    example = (torch.zeros(2 if dynamic_batch else 1, 3, h, w),)  # (B, 3, h, w)
    kwargs: dict[str, Any] = dict(
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        opset_version=opset,
        external_data=False,
        verbose=False,
    )
    if exporter == "dynamo":
        kwargs["dynamo"] = True
        if dynamic_batch:
            kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch", min=1, max=MAX_EXPORT_BATCH)},)
    else:
        kwargs["dynamo"] = False
        if dynamic_batch:
            kwargs["dynamic_axes"] = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
    log = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(log):
        # Known, harmless deprecation noise from torch 2.13 internals and the legacy exporter.
        warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=r".*feature will be removed.*")
        # Shape checks in forward() become trace-time constants: fine, the input shape is fixed.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        with torch.inference_mode(False), torch.no_grad():
            torch.onnx.export(module, example, str(path), **kwargs)
    if not path.is_file():
        raise RuntimeError(f"torch.onnx.export wrote nothing at {path}:\n{log.getvalue()[-2000:]}")
    stray = [p.name for p in path.parent.iterdir() if p.name.startswith(path.name + ".")]
    if stray:
        raise RuntimeError(f"exporter wrote external data {stray}; expected one self-contained {path.name}")


def _finalise_onnx(path: Path, manifest: EncoderManifest, precision: str, dynamic_batch: bool) -> list[Any]:
    """Check the graph, stamp dynaflip.* metadata, and return the input shape (dims or names)."""
    import onnx

    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    inputs = [i.name for i in model.graph.input]
    outputs = [o.name for o in model.graph.output]
    if inputs != [INPUT_NAME] or outputs != [OUTPUT_NAME]:
        raise RuntimeError(f"{path}: expected input {[INPUT_NAME]} / output {[OUTPUT_NAME]}, got {inputs} / {outputs}")
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    h, w = manifest.input_hw
    if dims[1:] != [3, h, w] or (isinstance(dims[0], int) == dynamic_batch):
        raise RuntimeError(f"{path}: unexpected input shape {dims} (dynamic_batch={dynamic_batch}, input_hw={h}x{w})")
    meta = {
        META_WEIGHTS_SHA256: manifest.weights_sha256,
        META_EMBEDDING_DIM: str(manifest.embedding_dim),
        META_INPUT_HW: json.dumps([h, w]),
        META_PRECISION: precision,
        "dynaflip.architecture": manifest.architecture,
    }
    del model.metadata_props[:]
    for k, v in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    model.producer_name = "dynaflip_ros"
    onnx.save_model(model, str(path), save_as_external_data=False)
    return dims


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch

    return {
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def export_onnx(
    encoder_dir: str | Path,
    out_dir: str | Path,
    *,
    opset: int = _DEFAULTS.opset,
    dynamic_batch: bool = _DEFAULTS.dynamic_batch,
    tolerance: ParityTolerance = _DEFAULTS.onnx_tolerance,
    exporter: str = _DEFAULTS.exporter,
    fp16: bool = False,
    fp16_tolerance: ParityTolerance = _DEFAULTS.fp16_tolerance,
    parity_batch_sizes: Sequence[int] = _DEFAULTS.parity_batch_sizes,
    n_parity_images: int = _DEFAULTS.n_parity_images,
    parity_image_hw: tuple[int, int] = _DEFAULTS.parity_image_hw,
    parity_images: np.ndarray | None = None,
    seed: int = _DEFAULTS.seed,
    num_threads: int | None = None,
    show_progress: bool = True,
) -> ExportReport:
    """Export `<encoder_dir>` to `<out_dir>/encoder.onnx` and gate it on parity with PyTorch.

    encoder_dir: an encoder artifact (image_encoder.safetensors + manifest.json), loaded with
        `encoder.model.load_image_encoder` -> module float32 (B, 3, h, w) -> (B, D).
    out_dir: made self-contained on success: encoder.onnx (+ encoder_fp16.onnx when fp16),
        manifest.json, image_encoder.safetensors, export_report.json. May equal encoder_dir.
    opset / dynamic_batch / exporter: see `configs.export.ExportConfig`.
    tolerance / fp16_tolerance: parity gates for encoder.onnx / encoder_fp16.onnx.
    parity_images: optional uint8 (B, H, W, 3) real frames for the gate (default: synthetic).
    num_threads: torch and ONNX Runtime CPU threads (None: library defaults).

    Returns the ExportReport also written to export_report.json. Raises ExportParityError
    when a gate fails (out_dir then keeps its previous contents, plus encoder.onnx.rejected and
    export_report.json.rejected), EncoderArtifactError on an inconsistent encoder_dir, and
    ValueError on bad arguments.
    """
    from tqdm import tqdm

    encoder_dir, out_dir = Path(encoder_dir), Path(out_dir)
    # The dataclass validates opset and exporter (single source of truth for their ranges).
    ExportConfig(opset=opset, exporter=exporter, onnx_tolerance=tolerance, fp16_tolerance=fp16_tolerance)
    manifest_file = load_manifest(encoder_dir)
    if not verify_weights_sha256(encoder_dir, manifest_file):
        raise EncoderArtifactError(f"{encoder_dir / WEIGHTS_FILENAME} not found: nothing to export")

    t0 = time.monotonic()
    steps = ["load", "export fp32", "parity fp32"] + (["export fp16", "parity fp16"] if fp16 else []) + ["install"]
    bar = tqdm(total=len(steps), desc="dynaflip export", unit="step", disable=not show_progress)

    def step(name: str) -> None:
        bar.set_postfix_str(name)

    step("load")
    module, manifest = load_eval_encoder(encoder_dir)
    if manifest.weights_sha256 != manifest_file.weights_sha256:
        raise EncoderArtifactError(f"{encoder_dir}: loader manifest and manifest.json disagree on weights_sha256")
    run_torch = torch_runner(module, num_threads)
    inputs = parity_inputs(manifest, parity_batch_sizes, n_parity_images, parity_image_hw, seed, parity_images)
    bar.update()

    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export_", dir=out_dir))
    try:
        step("export fp32")
        onnx_tmp = staging / ONNX_FILENAME
        _torch_export(module, onnx_tmp, manifest.input_hw, opset, dynamic_batch, exporter)
        input_shape = _finalise_onnx(onnx_tmp, manifest, "fp32", dynamic_batch)
        bar.update()

        step("parity fp32")
        print(f"parity gate: {ONNX_FILENAME} (ONNX Runtime CPU) vs PyTorch fp32")
        reference = [run_torch(x) for _, x in inputs]  # each (B, D)
        for (name, x), ref in zip(inputs, reference):
            if ref.shape != (x.shape[0], manifest.embedding_dim):
                raise EncoderArtifactError(
                    f"PyTorch output {ref.shape} on {name} != (B, embedding_dim={manifest.embedding_dim})"
                )
        summary = check_parity(
            inputs, reference, onnxruntime_runner(onnx_tmp, num_threads or 0), tolerance, raise_on_failure=False
        )
        bar.update()

        summary16, onnx16_tmp = None, None
        if summary.passed and fp16:
            step("export fp16")
            onnx16_tmp = staging / ONNX_FP16_FILENAME
            _torch_export(fp16_io_wrapper(module), onnx16_tmp, manifest.input_hw, opset, dynamic_batch, exporter)
            _finalise_onnx(onnx16_tmp, manifest, "fp16", dynamic_batch)
            bar.update()
            step("parity fp16")
            print(f"parity gate: {ONNX_FP16_FILENAME} (ONNX Runtime CPU) vs PyTorch fp32")
            summary16 = check_parity(
                inputs,
                reference,
                onnxruntime_runner(onnx16_tmp, num_threads or 0),
                fp16_tolerance,
                candidate="onnxruntime-fp16",
                raise_on_failure=False,
            )
            bar.update()

        report = ExportReport(
            passed=summary.passed and (summary16 is None or summary16.passed),
            out_dir=str(out_dir.resolve()),
            onnx_file=ONNX_FILENAME,
            onnx_sha256=sha256_file(onnx_tmp),
            onnx_bytes=onnx_tmp.stat().st_size,
            opset=opset,
            exporter=exporter,
            dynamic_batch=dynamic_batch,
            input_name=INPUT_NAME,
            output_name=OUTPUT_NAME,
            input_shape=input_shape,
            embedding_dim=manifest.embedding_dim,
            weights_sha256=manifest.weights_sha256,
            architecture=manifest.architecture,
            versions=_versions(),
            parity=summary,
            export_s=round(time.monotonic() - t0, 3),
            onnx_fp16_file=ONNX_FP16_FILENAME if onnx16_tmp is not None else None,
            onnx_fp16_sha256=sha256_file(onnx16_tmp) if onnx16_tmp is not None else None,
            parity_fp16=summary16,
            created_utc=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        )
        step("install")
        if not report.passed:
            failures = summary.failures + (summary16.failures if summary16 is not None else [])
            os.replace(onnx_tmp, out_dir / (ONNX_FILENAME + REJECTED_SUFFIX))
            if onnx16_tmp is not None:
                os.replace(onnx16_tmp, out_dir / (ONNX_FP16_FILENAME + REJECTED_SUFFIX))
            report.to_json(out_dir / (REPORT_FILENAME + REJECTED_SUFFIX))
            if summary.passed:  # only the fp16 graph failed
                hint = " (fp16 graph only: export with --precision fp32, or loosen fp16_tolerance)"
            else:
                hint = (" (fp32 graph: try the other --exporter or another --opset, or loosen --tolerance / "
                        "--min-cosine if the differences are acceptable)")
            raise ExportParityError(
                "ONNX parity gate FAILED (nothing installed; see "
                f"{out_dir / (REPORT_FILENAME + REJECTED_SUFFIX)}){hint}: " + "; ".join(failures),
                summary if not summary.passed else summary16,
            )
        _install(encoder_dir, out_dir, staging, report)
        bar.update()
    finally:
        bar.close()
        shutil.rmtree(staging, ignore_errors=True)
    print(
        f"wrote {out_dir / ONNX_FILENAME} (sha256 {report.onnx_sha256[:12]}…, {report.onnx_bytes / 1e6:.1f} MB); "
        f"parity max|diff| {summary.max_abs_diff:.3g}, min cosine {summary.min_cosine:.7f}"
    )
    return report


def _install(encoder_dir: Path, out_dir: Path, staging: Path, report: ExportReport) -> None:
    """Move the checked files into out_dir and copy manifest + weights (self-contained dir)."""
    same_dir = encoder_dir.resolve() == out_dir.resolve()
    if not same_dir:
        for name in (WEIGHTS_FILENAME, MANIFEST_FILENAME):
            shutil.copy2(encoder_dir / name, staging / (name + ".copy"))
    names = [ONNX_FILENAME] + ([ONNX_FP16_FILENAME] if report.onnx_fp16_file else [])
    report.to_json(staging / REPORT_FILENAME)
    # Remove what a previous export left that this one does not replace.
    if not report.onnx_fp16_file and (out_dir / ONNX_FP16_FILENAME).exists():
        (out_dir / ONNX_FP16_FILENAME).unlink()
    for name in names + [REPORT_FILENAME]:
        os.replace(staging / name, out_dir / name)
    if not same_dir:
        for name in (WEIGHTS_FILENAME, MANIFEST_FILENAME):
            os.replace(staging / (name + ".copy"), out_dir / name)
    for stale in (ONNX_FILENAME, ONNX_FP16_FILENAME, REPORT_FILENAME):
        p = out_dir / (stale + REJECTED_SUFFIX)
        if p.exists():
            p.unlink()
