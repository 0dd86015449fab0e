"""The JSON manifest that travels with every encoder artifact (safetensors, ONNX, TensorRT).

It fixes preprocessing (input size, mean/std), the embedding dimension, and the sha256 of the
weights file, so a policy can refuse an encoder it was not trained on (docs/architecture.md "Artifacts").
Also the error every loader raises for a bad artifact file (`EncoderArtifactError`, re-exported
by `export.artifact`) and the integrity check that tells a damaged / truncated weights file from
an intact file of another encoder. Standard library only; pure functions, safe from any thread.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dynaflip_ros.errors import UserError

MANIFEST_VERSION = 1
_SAFETENSORS_MAX_HEADER_BYTES = 100 << 20  # the safetensors library's own limit on the JSON header


class EncoderArtifactError(ValueError, UserError):
    """An encoder directory is incomplete or inconsistent (weights, ONNX and manifest disagree)."""


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_bytes), b""):
            h.update(chunk)
    return h.hexdigest()


def safetensors_damage(path: str | Path) -> str | None:
    """Why a .safetensors file is not structurally intact, or None when it is.

    Checks the layout of the format (https://github.com/huggingface/safetensors#format): an
    8-byte little-endian header length N, N bytes of JSON, then the byte buffer, whose size must
    equal the largest `data_offsets` end in the header. A truncated or cut-off copy fails it; an
    intact file with other weights (or a flipped data byte) passes it.
    """
    path = Path(path)
    size = path.stat().st_size
    if size < 8:
        return f"{size} bytes, shorter than the 8-byte header length"
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if n > _SAFETENSORS_MAX_HEADER_BYTES or 8 + n > size:
            return f"{size} bytes, but the header claims {n} header bytes"
        try:
            header = json.loads(f.read(n))
            ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
        except (UnicodeDecodeError, ValueError, TypeError, KeyError, IndexError, AttributeError):
            return "its header is not valid safetensors JSON"
    expected = 8 + n + max(ends, default=0)
    if expected != size:
        return f"{size} bytes, but its header describes {expected}"
    return None


def check_recorded_sha256(path: str | Path, recorded: str, recorded_in: str) -> str:
    """sha256 of `path`; raises EncoderArtifactError when the file is damaged or truncated.

    recorded: the sha256 that `recorded_in` (e.g. "manifest.weights_sha256") holds for the file.
    When the digest differs and the file is a .safetensors whose layout is broken, raises
    "<path>: damaged or truncated (<why>; ...); re-export it or copy it again"; otherwise returns
    the digest, and the caller says what a differing intact file means (another encoder, a mixed
    checkpoint).
    """
    path = Path(path)
    actual = sha256_file(path)
    if actual != recorded and path.suffix == ".safetensors":
        damage = safetensors_damage(path)
        if damage is not None:
            raise EncoderArtifactError(
                f"{path}: damaged or truncated ({damage}; sha256 {actual[:12]}… != {recorded_in} "
                f"{recorded[:12]}…); re-export it or copy it again"
            )
    return actual


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
        """Load a manifest. Raises EncoderArtifactError (a ValueError) on unreadable JSON, a
        missing key or an unknown version."""
        try:
            d = json.loads(Path(path).read_text())
        except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
            raise EncoderArtifactError(f"{path}: unreadable manifest (damaged or truncated? re-export it): {e}") from e
        if not isinstance(d, dict):
            raise EncoderArtifactError(f"{path}: malformed encoder manifest (not a JSON object)")
        if d.get("version") != MANIFEST_VERSION:
            raise EncoderArtifactError(f"{path}: manifest version {d.get('version')} != {MANIFEST_VERSION}")
        try:
            d["input_hw"] = tuple(d["input_hw"])
            d["mean"] = tuple(d["mean"])
            d["std"] = tuple(d["std"])
            return cls(**d)
        except (KeyError, TypeError) as e:
            raise EncoderArtifactError(f"{path}: malformed encoder manifest: {e}") from e


@dataclass(frozen=True)
class TokenLayout:
    """Where the patch tokens sit in an encoder's run-time output (`configs.encoder.
    EncoderModelConfig.output_tokens`): output (B, embedding_dim + h*w*channels) = [f(o_t) (D,),
    tokens (h, w, channels) flattened row-major]."""

    embedding_dim: int
    grid: tuple[int, int]
    channels: int

    @property
    def token_dim(self) -> int:
        return self.grid[0] * self.grid[1] * self.channels


def token_layout(manifest: "EncoderManifest | dict") -> TokenLayout | None:
    """The TokenLayout of an encoder manifest (object or `asdict` form), None when its output
    holds no tokens (output_tokens off, an artifact older than the option, or features that are
    not an image encoder's, e.g. `eval.privileged`). Raises EncoderArtifactError when the
    manifest's model config is malformed or disagrees with its embedding_dim."""
    d = asdict(manifest) if isinstance(manifest, EncoderManifest) else dict(manifest)
    model = (d.get("config") or {}).get("model")
    if not isinstance(model, dict) or not model.get("output_tokens", False):
        return None
    from dynaflip_ros.configs.encoder import EncoderModelConfig
    from dynaflip_ros.configs.io import from_dict

    try:
        cfg = from_dict(EncoderModelConfig, model, "manifest config.model")
    except (TypeError, ValueError) as e:
        raise EncoderArtifactError(f"malformed encoder manifest model config: {e}") from e
    if cfg.output_dim != int(d.get("embedding_dim", -1)):
        raise EncoderArtifactError(f"encoder manifest embedding_dim {d.get('embedding_dim')} != {cfg.output_dim} "
                                   f"(embedding {cfg.embedding_dim} + tokens {cfg.token_grid} x {cfg.token_channels})")
    return TokenLayout(int(cfg.embedding_dim), tuple(cfg.token_grid), int(cfg.token_channels))
