"""The hand-written rotation formulas the code used before scipy.spatial.transform.Rotation
(issue 9), kept once as the reference the pinning tests compare the library against."""
from __future__ import annotations

import numpy as np


def old_matrix_to_rotvec(r: np.ndarray) -> np.ndarray:
    """The replaced log map (3, 3) -> (3,) rad."""
    r = np.asarray(r, dtype=float)
    cos_a = float(np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0))
    angle = float(np.arccos(cos_a))
    w = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]])
    if angle < 1e-9:
        return 0.5 * w
    if np.pi - angle < 1e-6:
        b = (r + np.eye(3)) / 2.0
        axis = b[:, int(np.argmax(np.diag(b)))]
        axis = axis / np.linalg.norm(axis)
        return axis * angle
    return w * (angle / (2.0 * np.sin(angle)))


def old_rotvec_to_matrix(w: np.ndarray) -> np.ndarray:
    """The replaced Rodrigues formula (3,) rad -> (3, 3)."""
    w = np.asarray(w, dtype=float).reshape(3)
    angle = float(np.linalg.norm(w))
    if angle < 1e-12:
        return np.eye(3)
    k = w / angle
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + np.sin(angle) * kx + (1.0 - np.cos(angle)) * (kx @ kx)
