"""Layout of an exported encoder directory and the checks every inference backend runs on it.

An exported encoder directory (written by `export.onnx_export.export_onnx`) holds:

    manifest.json               EncoderManifest (input size, mean/std, embedding_dim, weights_sha256)
    image_encoder.safetensors   the PyTorch weights (torch backend; identity of the encoder)
    encoder.onnx                fp32 graph, input "images" float32 (B, 3, h, w) normalised,
                                output "embedding" float32 (B, D); single file, no external data
    encoder_fp16.onnx           optional: fp16 weights/compute, fp32 input/output (TensorRT fp16)
    export_report.json          ExportReport: sha256s, parity numbers, versions

Every ONNX file carries metadata_props `dynaflip.weights_sha256`, `dynaflip.embedding_dim`,
`dynaflip.input_hw` and `dynaflip.precision`, so a backend can refuse an ONNX exported from
other weights than the manifest names (docs/architecture.md "Artifacts": version skew).

`EncoderArtifactError` is defined in `encoder.manifest` (the encoder loader raises it too) and
imported from here by the backends and the CLIs. Light module: imports only the standard library
(the ONNX Runtime backend must start without torch).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dynaflip_ros.encoder.manifest import EncoderArtifactError, EncoderManifest, check_recorded_sha256
from dynaflip_ros.errors import UserError

MANIFEST_FILENAME = "manifest.json"
WEIGHTS_FILENAME = "image_encoder.safetensors"
ONNX_FILENAME = "encoder.onnx"
ONNX_FP16_FILENAME = "encoder_fp16.onnx"
REPORT_FILENAME = "export_report.json"
REJECTED_SUFFIX = ".rejected"

INPUT_NAME = "images"
OUTPUT_NAME = "embedding"

META_WEIGHTS_SHA256 = "dynaflip.weights_sha256"
META_EMBEDDING_DIM = "dynaflip.embedding_dim"
META_INPUT_HW = "dynaflip.input_hw"
META_PRECISION = "dynaflip.precision"


class BackendUnavailableError(RuntimeError, UserError):
    """A backend cannot run on this machine (package, GPU or artifact file missing).

    `inference.factory.load_encoder_backend(backend="auto")` falls back to the next backend on
    this error only; every other error (e.g. EncoderArtifactError) propagates.
    """


def load_manifest(encoder_dir: str | Path) -> EncoderManifest:
    """Read `<encoder_dir>/manifest.json`. Raises EncoderArtifactError when missing or malformed."""
    path = Path(encoder_dir) / MANIFEST_FILENAME
    if not path.is_file():
        raise EncoderArtifactError(f"{path} not found: not an encoder directory")
    try:
        return EncoderManifest.from_json(path)
    except ValueError as e:
        raise EncoderArtifactError(str(e)) from e


def verify_weights_sha256(encoder_dir: str | Path, manifest: EncoderManifest) -> bool:
    """Check sha256(image_encoder.safetensors) == manifest.weights_sha256 when the file exists.

    Returns True when checked, False when the weights file is absent (ONNX-only deployment).
    Raises EncoderArtifactError on a mismatch: "damaged or truncated" when the file's safetensors
    layout is broken, "... come from different encoders" when it is an intact file of other weights.
    """
    path = Path(encoder_dir) / WEIGHTS_FILENAME
    if not path.is_file():
        return False
    actual = check_recorded_sha256(path, manifest.weights_sha256, "manifest.weights_sha256")
    if actual != manifest.weights_sha256:
        raise EncoderArtifactError(
            f"{path}: sha256 {actual[:12]}… does not match manifest.weights_sha256 "
            f"{manifest.weights_sha256[:12]}…: weights and manifest come from different encoders"
        )
    return True


def verify_onnx_metadata(onnx_path: str | Path, metadata: dict[str, str], manifest: EncoderManifest) -> None:
    """Check an ONNX file's dynaflip.* metadata_props against the manifest.

    metadata: the model's metadata_props as a dict (onnx `metadata_props` or ONNX Runtime
    `get_modelmeta().custom_metadata_map`). Raises EncoderArtifactError when a key is missing
    or disagrees with the manifest (weights sha256, embedding dim, input size).
    """
    missing = [k for k in (META_WEIGHTS_SHA256, META_EMBEDDING_DIM, META_INPUT_HW) if k not in metadata]
    if missing:
        raise EncoderArtifactError(
            f"{onnx_path}: metadata {missing} missing; it was not written by `dynaflip export` "
            "(re-export it)"
        )
    if metadata[META_WEIGHTS_SHA256] != manifest.weights_sha256:
        raise EncoderArtifactError(
            f"{onnx_path}: exported from weights {metadata[META_WEIGHTS_SHA256][:12]}…, but the "
            f"manifest names {manifest.weights_sha256[:12]}…: re-export the encoder"
        )
    if int(metadata[META_EMBEDDING_DIM]) != manifest.embedding_dim:
        raise EncoderArtifactError(
            f"{onnx_path}: embedding_dim {metadata[META_EMBEDDING_DIM]} != manifest {manifest.embedding_dim}"
        )
    hw = tuple(int(v) for v in json.loads(metadata[META_INPUT_HW]))
    if hw != tuple(manifest.input_hw):
        raise EncoderArtifactError(f"{onnx_path}: input_hw {hw} != manifest {tuple(manifest.input_hw)}")


def check_embedding_shape(out: Any, batch: int, manifest: EncoderManifest, where: str) -> None:
    """Raise EncoderArtifactError unless `out` has shape (batch, manifest.embedding_dim)."""
    shape = tuple(getattr(out, "shape", ()))
    if shape != (batch, manifest.embedding_dim):
        raise EncoderArtifactError(
            f"{where}: output shape {shape} != (B={batch}, D={manifest.embedding_dim}) from the manifest"
        )


@dataclass
class ParityCase:
    """One parity comparison: `name` input set at batch size `batch` (numbers over the batch)."""

    name: str
    batch: int
    max_abs_diff: float
    max_rel_diff: float
    mean_abs_diff: float
    min_cosine: float


@dataclass
class ParitySummary:
    """All parity cases of one candidate vs its reference, the tolerance, and the verdict."""

    reference: str
    candidate: str
    tolerance: dict[str, Any]
    cases: list[ParityCase]
    max_abs_diff: float
    max_rel_diff: float
    min_cosine: float
    passed: bool
    failures: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ParitySummary":
        d = dict(d)
        d["cases"] = [ParityCase(**c) for c in d["cases"]]
        return cls(**d)


@dataclass
class ExportReport:
    """What `export_onnx` wrote and measured (export_report.json).

    onnx_sha256 / onnx_fp16_sha256: sha256 of encoder.onnx / encoder_fp16.onnx (None when not
    written); weights_sha256: sha256 of image_encoder.safetensors (= manifest.weights_sha256);
    parity / parity_fp16: ParitySummary of each ONNX vs PyTorch; tensorrt: filled in by the
    CLI when an engine was built (cache key, engine path, build time, engine parity).
    """

    passed: bool
    out_dir: str
    onnx_file: str
    onnx_sha256: str
    onnx_bytes: int
    opset: int
    exporter: str
    dynamic_batch: bool
    input_name: str
    output_name: str
    input_shape: list[Any]
    embedding_dim: int
    weights_sha256: str
    architecture: str
    versions: dict[str, str]
    parity: ParitySummary
    export_s: float
    onnx_fp16_file: str | None = None
    onnx_fp16_sha256: str | None = None
    parity_fp16: ParitySummary | None = None
    tensorrt: dict[str, Any] | None = None
    created_utc: str = ""

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_json(cls, path: str | Path) -> "ExportReport":
        """Load export_report.json. Raises EncoderArtifactError when missing or malformed."""
        try:
            d = json.loads(Path(path).read_text())
            d["parity"] = ParitySummary.from_dict(d["parity"])
            if d.get("parity_fp16") is not None:
                d["parity_fp16"] = ParitySummary.from_dict(d["parity_fp16"])
            return cls(**d)
        except (OSError, KeyError, TypeError, ValueError) as e:
            raise EncoderArtifactError(f"{path}: unreadable export report: {e}") from e
