"""Test helper: a text encoder stand-in for `policies.language` (no model load): a fixed unit
384-vector per string, drawn from the string's sha256; records every `embed` call."""
from __future__ import annotations

import hashlib

import numpy as np


class FakeText:
    """name / dim / weights_sha256 like the real text encoder; embed(texts) -> float32 (n, 384)."""

    name, dim = "fake-text", 384

    def __init__(self, sha: str = "e" * 64):
        self.weights_sha256 = sha
        self.calls: list[list[str]] = []

    def embed(self, texts):
        self.calls.append(list(texts))
        out = [np.random.default_rng(int(hashlib.sha256(t.encode()).hexdigest()[:8], 16)).normal(size=384) for t in texts]
        return np.asarray([v / np.linalg.norm(v) for v in out], np.float32)
