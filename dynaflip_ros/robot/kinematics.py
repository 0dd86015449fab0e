"""UR3 forward kinematics from the published standard DH parameters (UR convention).

Source: Universal Robots, "DH parameters for calculations of kinematics and dynamics";
../shared/notes/HARDWARE.md §1.2 (CB3 and e-Series tables). Frames: the UR `base` frame (what the
pendant and RTDE report), `tool0`/flange with Z out of the flange. Check value (CB3, q = 0):
flange at (a2 + a3, -(d4 + d6), d1 - d5) = (-0.4569, -0.1943, 0.0666) m.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DHParams:
    """Standard (distal) DH table: a (m), d (m), alpha (rad); theta offsets are 0 for UR arms."""

    a: tuple[float, ...]
    d: tuple[float, ...]
    alpha: tuple[float, ...]


UR3_CB3_DH = DHParams(
    a=(0.0, -0.24365, -0.21325, 0.0, 0.0, 0.0),
    d=(0.1519, 0.0, 0.0, 0.11235, 0.08535, 0.0819),
    alpha=(np.pi / 2, 0.0, 0.0, np.pi / 2, -np.pi / 2, 0.0),
)
UR3E_DH = DHParams(
    a=(0.0, -0.24355, -0.2132, 0.0, 0.0, 0.0),
    d=(0.15185, 0.0, 0.0, 0.13105, 0.08535, 0.0921),
    alpha=(np.pi / 2, 0.0, 0.0, np.pi / 2, -np.pi / 2, 0.0),
)

# Datasheet limits (HARDWARE.md §1.1, §1.4): ±360° on every joint; elbow limited to ±180° as in
# ur_description (the shoulder blocks it beyond); speeds 180 °/s (base, shoulder, elbow) and
# 360 °/s (wrists).
UR3_JOINT_LIMITS_RAD = np.array(
    [[-2 * np.pi, 2 * np.pi]] * 2 + [[-np.pi, np.pi]] + [[-2 * np.pi, 2 * np.pi]] * 3
)
UR3_MAX_JOINT_SPEED_RAD_S = np.array([np.pi, np.pi, np.pi, 2 * np.pi, 2 * np.pi, 2 * np.pi])


def dh_transform(a: float, d: float, alpha: float, theta: float) -> np.ndarray:
    """(4, 4) standard DH link transform Rz(theta) Tz(d) Tx(a) Rx(alpha)."""
    ct, st, ca, sa = np.cos(theta), np.sin(theta), np.cos(alpha), np.sin(alpha)
    return np.array(
        [
            [ct, -st * ca, st * sa, a * ct],
            [st, ct * ca, -ct * sa, a * st],
            [0.0, sa, ca, d],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )


def forward_kinematics(
    q: np.ndarray, dh: DHParams = UR3_CB3_DH, tool: np.ndarray | None = None
) -> np.ndarray:
    """Flange (or TCP, with `tool` a (4, 4) flange->TCP transform) pose in the UR base frame.

    q: (6,) joint positions, rad. Returns a (4, 4) homogeneous transform (metres).
    Raises ValueError on a wrong shape or a non-finite q.
    """
    q = np.asarray(q, dtype=float)
    if q.shape != (6,) or not np.all(np.isfinite(q)):
        raise ValueError(f"q must be finite (6,), got {q!r}")
    t = np.eye(4)
    for i in range(6):
        t = t @ dh_transform(dh.a[i], dh.d[i], dh.alpha[i], q[i])
    if tool is not None:
        t = t @ tool
    return t


def rotation_to_quat_wxyz(r: np.ndarray) -> np.ndarray:
    """(3, 3) rotation matrix -> (4,) unit quaternion w, x, y, z (w >= 0)."""
    m = np.asarray(r, dtype=float)
    tr = np.trace(m)
    if tr > 0:
        s = np.sqrt(tr + 1.0) * 2
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2
        q = [(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
    elif m[1, 1] > m[2, 2]:
        s = np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2
        q = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s]
    else:
        s = np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2
        q = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s]
    q = np.asarray(q)
    q /= np.linalg.norm(q)
    return q if q[0] >= 0 else -q


def pose_from_transform(t: np.ndarray) -> np.ndarray:
    """(4, 4) transform -> (7,) x, y, z (m), qw, qx, qy, qz."""
    return np.concatenate([t[:3, 3], rotation_to_quat_wxyz(t[:3, :3])])
