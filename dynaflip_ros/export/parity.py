"""The export parity gate: do an exported graph and PyTorch compute the same embeddings?

The same inputs go through PyTorch (fp32, CPU) and the candidate (ONNX Runtime's
CPUExecutionProvider with the deployed graph optimisations, or a TensorRT engine from
`export/cli.py`): random N(0, 1) normalised tensors at `parity_batch_sizes`, and synthetic
camera-like uint8 images through `encoder.preprocess.preprocess` (the deployed preprocessing,
resize included). Per case it reports max |diff|, max relative diff and the minimum per-sample
cosine similarity (`artifact.ParityCase`); `check_parity` raises ExportParityError above the
`configs.export.ParityTolerance`. Inputs are float32 (B, 3, h, w), embeddings float (B, D).
Single-threaded; `num_threads` / `intra_op_num_threads` set the libraries' CPU threads.
Reference: ONNX Runtime Python API, https://onnxruntime.ai/docs/api/python/api_summary.html.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from dynaflip_ros.configs.export import ExportConfig, ParityTolerance
from dynaflip_ros.encoder.manifest import EncoderManifest
from dynaflip_ros.encoder.preprocess import preprocess
from dynaflip_ros.errors import UserError
from dynaflip_ros.export.artifact import INPUT_NAME, OUTPUT_NAME, ParityCase, ParitySummary

_DEFAULTS = ExportConfig()


class ExportParityError(RuntimeError, UserError):
    """An exported graph disagrees with PyTorch beyond tolerance. `.summary` holds the numbers."""

    def __init__(self, message: str, summary: ParitySummary | None = None):
        super().__init__(message)
        self.summary = summary


# ----------------------------------------------------------------------------- parity inputs
def synthetic_scene_images(n: int, image_hw: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Camera-like test images: uint8 (n, H, W, 3) RGB.

    A lit table-top gradient, a dark sink-like basin, a few coloured boxes and discs with soft
    shadows, and sensor noise: the statistics of the sim/real frames the encoder sees, without
    needing a dataset. Deterministic for a given seed.
    """
    import cv2

    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    h, w = image_hw
    rng = np.random.default_rng(seed)
    out = np.empty((n, h, w, 3), np.uint8)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)  # (H, W)
    for i in range(n):
        base = rng.uniform(90, 200, size=3).astype(np.float32)
        light = 0.75 + 0.35 * (xx / w) * rng.uniform(0.5, 1.0) + 0.15 * (yy / h)  # (H, W)
        img = base[None, None, :] * light[..., None]  # (H, W, 3)
        x0, y0 = int(rng.uniform(0.55, 0.7) * w), int(rng.uniform(0.45, 0.6) * h)
        cv2.rectangle(img, (x0, y0), (x0 + w // 4, y0 + h // 4), (55.0, 60.0, 65.0), -1)
        for _ in range(int(rng.integers(2, 6))):
            color = tuple(float(c) for c in rng.uniform(0, 255, size=3))
            cx, cy = int(rng.uniform(0.1, 0.9) * w), int(rng.uniform(0.15, 0.9) * h)
            r = int(rng.uniform(0.03, 0.08) * min(h, w))
            cv2.circle(img, (cx + r // 3, cy + r // 3), r, tuple(0.6 * c for c in base.tolist()), -1)
            if rng.random() < 0.5:
                cv2.circle(img, (cx, cy), r, color, -1)
            else:
                cv2.rectangle(img, (cx - r, cy - r), (cx + r, cy + r), color, -1)
        img = cv2.GaussianBlur(img, (0, 0), 1.0)
        img += rng.normal(0.0, 4.0, size=img.shape).astype(np.float32)
        out[i] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def parity_inputs(
    manifest: EncoderManifest,
    batch_sizes: Sequence[int] = _DEFAULTS.parity_batch_sizes,
    n_images: int = _DEFAULTS.n_parity_images,
    image_hw: tuple[int, int] = _DEFAULTS.parity_image_hw,
    seed: int = _DEFAULTS.seed,
    images: np.ndarray | None = None,
) -> list[tuple[str, np.ndarray]]:
    """The parity-gate inputs: list of (name, float32 (B, 3, h, w) normalised network input).

    Random N(0, 1) tensors at each batch size, then `images` (uint8 (B, H, W, 3); default:
    `synthetic_scene_images(n_images, image_hw, seed)`) through `encoder.preprocess.preprocess`.
    """
    h, w = manifest.input_hw
    rng = np.random.default_rng(seed)
    cases = [
        (f"random_normalised_b{b}", rng.standard_normal((b, 3, h, w)).astype(np.float32))  # (B, 3, h, w)
        for b in batch_sizes
    ]
    if images is None and n_images > 0:
        images = synthetic_scene_images(n_images, image_hw, seed)
    if images is not None and len(images) > 0:
        cases.append((f"images_{images.shape[1]}x{images.shape[2]}_preprocessed", preprocess(images, manifest)))
    return cases


# ----------------------------------------------------------------------------- parity numbers
def compare_embeddings(name: str, ref: np.ndarray, out: np.ndarray) -> ParityCase:
    """Numbers for one comparison of ref vs out, both float (B, D). Raises ValueError on shape."""
    ref = np.asarray(ref, np.float64)  # (B, D)
    out = np.asarray(out, np.float64)  # (B, D)
    if ref.shape != out.shape or ref.ndim != 2:
        raise ValueError(f"{name}: reference {ref.shape} and candidate {out.shape} must both be (B, D)")
    diff = np.abs(ref - out)  # (B, D)
    if not np.isfinite(out).all():
        max_abs = float("inf")
    else:
        max_abs = float(diff.max())
    scale = float(np.abs(ref).max())
    denom = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)  # (B,)
    cos = np.where(denom > 0, (ref * out).sum(axis=1) / np.maximum(denom, 1e-300), 0.0)  # (B,)
    if not np.isfinite(out).all():
        cos = np.full_like(cos, -1.0)
    return ParityCase(
        name=name,
        batch=int(ref.shape[0]),
        max_abs_diff=max_abs,
        max_rel_diff=max_abs / scale if scale > 0 else max_abs,
        mean_abs_diff=float(diff.mean()) if np.isfinite(max_abs) else float("inf"),
        min_cosine=float(cos.min()),
    )


def summarise_parity(
    cases: list[ParityCase], tolerance: ParityTolerance, reference: str, candidate: str
) -> ParitySummary:
    """Aggregate cases (worst over all) and apply the tolerance; never raises."""
    max_abs = max(c.max_abs_diff for c in cases)
    max_rel = max(c.max_rel_diff for c in cases)
    min_cos = min(c.min_cosine for c in cases)
    failures = []
    for c in cases:
        if tolerance.max_abs_diff is not None and not c.max_abs_diff <= tolerance.max_abs_diff:
            failures.append(f"{c.name}: max |diff| {c.max_abs_diff:.3g} > {tolerance.max_abs_diff:.3g}")
        if tolerance.max_rel_diff is not None and not c.max_rel_diff <= tolerance.max_rel_diff:
            failures.append(f"{c.name}: max relative diff {c.max_rel_diff:.3g} > {tolerance.max_rel_diff:.3g}")
        if not c.min_cosine >= tolerance.min_cosine:
            failures.append(f"{c.name}: min cosine {c.min_cosine:.6f} < {tolerance.min_cosine}")
    return ParitySummary(
        reference=reference,
        candidate=candidate,
        tolerance=asdict(tolerance),
        cases=cases,
        max_abs_diff=max_abs,
        max_rel_diff=max_rel,
        min_cosine=min_cos,
        passed=not failures,
        failures=failures,
    )


def check_parity(
    inputs: list[tuple[str, np.ndarray]],
    reference_outputs: list[np.ndarray],
    candidate_fn: Callable[[np.ndarray], np.ndarray],
    tolerance: ParityTolerance,
    reference: str = "pytorch",
    candidate: str = "onnxruntime",
    raise_on_failure: bool = True,
) -> ParitySummary:
    """Gate `candidate_fn` (x (B, 3, h, w) -> (B, D)) against precomputed reference outputs.

    inputs: (name, x float32 (B, 3, h, w)); reference_outputs: the reference (B, D) for each.
    Prints one line per case (max |diff|, max relative diff, min cosine). Raises
    ExportParityError (with `.summary`) when a tolerance is exceeded and raise_on_failure.
    """
    if len(inputs) != len(reference_outputs) or not inputs:
        raise ValueError(f"need one reference output per input, got {len(reference_outputs)} for {len(inputs)}")
    cases = []
    for (name, x), ref in zip(inputs, reference_outputs):
        case = compare_embeddings(name, ref, candidate_fn(x))
        print(
            f"  parity {candidate} vs {reference} [{name}, B={case.batch}]: max|diff| {case.max_abs_diff:.3g}"
            f"  max rel {case.max_rel_diff:.3g}  min cosine {case.min_cosine:.7f}"
        )
        cases.append(case)
    summary = summarise_parity(cases, tolerance, reference, candidate)
    if not summary.passed and raise_on_failure:
        raise ExportParityError(
            f"{candidate} disagrees with {reference} beyond tolerance (re-export, or loosen the tolerance in the "
            "export config if the differences are acceptable): " + "; ".join(summary.failures), summary
        )
    return summary


# ----------------------------------------------------------------------------- runners
def torch_runner(module: Any, num_threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """x float32 (B, 3, h, w) -> float32 (B, D) through the PyTorch module (CPU, no grad)."""
    import torch

    if num_threads is not None:
        torch.set_num_threads(num_threads)

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(np.ascontiguousarray(x, np.float32))).float().numpy()  # (B, D)

    return run


def onnxruntime_runner(onnx_path: str | Path, intra_op_num_threads: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """x float32 (B, 3, h, w) -> float32 (B, D) through ONNX Runtime's CPUExecutionProvider.

    A static-batch (B = 1) graph runs row by row.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra_op_num_threads
    sess = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])
    static_batch = isinstance(sess.get_inputs()[0].shape[0], int)  # exported with B fixed to 1

    def run(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, np.float32)  # (B, 3, h, w)
        if static_batch:
            return np.concatenate([sess.run([OUTPUT_NAME], {INPUT_NAME: x[i : i + 1]})[0] for i in range(len(x))])
        return sess.run([OUTPUT_NAME], {INPUT_NAME: x})[0]  # (B, D)

    return run




def verify_onnx_parity(
    encoder_dir: str | Path,
    onnx_path: str | Path,
    tolerance: ParityTolerance = _DEFAULTS.onnx_tolerance,
    inputs: list[tuple[str, np.ndarray]] | None = None,
    num_threads: int | None = None,
) -> ParitySummary:
    """Re-run the parity gate on an existing ONNX file against the PyTorch encoder in encoder_dir.

    Raises ExportParityError above tolerance (e.g. a corrupted or mismatched ONNX).
    """
    module, manifest = load_eval_encoder(Path(encoder_dir))
    if inputs is None:
        inputs = parity_inputs(manifest)
    run_torch = torch_runner(module, num_threads)
    reference = [run_torch(x) for _, x in inputs]  # each (B, D)
    return check_parity(inputs, reference, onnxruntime_runner(onnx_path, num_threads or 0), tolerance)


def load_eval_encoder(encoder_dir: Path) -> tuple[Any, EncoderManifest]:
    """`encoder.model.load_image_encoder(encoder_dir)` in eval mode: (module float32 (B, 3, h, w)
    -> (B, D), manifest). Raises what the loader raises (EncoderArtifactError, OSError)."""
    from dynaflip_ros.encoder.model import load_image_encoder

    module, manifest = load_image_encoder(encoder_dir)
    return module.eval(), manifest
