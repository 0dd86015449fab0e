"""The JSON manifest that travels with every encoder artifact (safetensors, ONNX, TensorRT).

It fixes preprocessing (input size, mean/std), the embedding dimension, and the sha256 of the
weights file, so a policy can refuse an encoder it was not trained on (docs/architecture.md "Artifacts").
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

MANIFEST_VERSION = 1


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_bytes), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class EncoderManifest:
    """Description of an image-encoder artifact.

    input_hw: (H, W) pixels the network takes; mean/std: per-channel RGB normalisation applied to
    images scaled to [0, 1]; embedding_dim: D of the (B, D) output; weights_sha256: sha256 of the
    safetensors file (the encoder's identity); config: the resolved training config.
    """

    input_hw: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    embedding_dim: int
    weights_sha256: str
    architecture: str
    config: dict = field(default_factory=dict)
    version: int = MANIFEST_VERSION

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_json(cls, path: str | Path) -> "EncoderManifest":
        """Load a manifest. Raises ValueError on a missing key or unknown version."""
        d = json.loads(Path(path).read_text())
        if d.get("version") != MANIFEST_VERSION:
            raise ValueError(f"{path}: manifest version {d.get('version')} != {MANIFEST_VERSION}")
        try:
            d["input_hw"] = tuple(d["input_hw"])
            d["mean"] = tuple(d["mean"])
            d["std"] = tuple(d["std"])
            return cls(**d)
        except (KeyError, TypeError) as e:
            raise ValueError(f"{path}: malformed encoder manifest: {e}") from e
