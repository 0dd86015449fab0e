"""Rigid-transform helpers for calibration (numpy; 4x4 homogeneous matrices, metres, radians).

Naming: `T_a_b` is the pose of frame b in frame a (maps points from b to a: p_a = T_a_b @ p_b).
Quaternions are (w, x, y, z) like `robot.kinematics.rotation_to_quat_wxyz`; UR poses are
(x, y, z, rx, ry, rz) with a rotation vector (what the pendant / RTDE `actual_TCP_pose` report,
docs/hardware.md). Rotation conversions go through `scipy.spatial.transform.Rotation`
(scalar_first=True for w, x, y, z). Pure functions; safe from any thread.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from dynaflip_ros.robot.kinematics import (  # noqa: F401 - re-exported for the calibration modules
    matrix_to_rotvec,
    rotation_to_quat_wxyz,
    rotvec_to_matrix,
    transform_from_ur_pose,
)


def make_transform(r: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(3, 3) rotation + (3,) translation (m) -> (4, 4) transform."""
    out = np.eye(4)
    out[:3, :3] = np.asarray(r, dtype=float).reshape(3, 3)
    out[:3, 3] = np.asarray(t, dtype=float).reshape(3)
    return out


def invert(t: np.ndarray) -> np.ndarray:
    """Inverse of a (4, 4) rigid transform."""
    r = t[:3, :3]
    out = np.eye(4)
    out[:3, :3] = r.T
    out[:3, 3] = -r.T @ t[:3, 3]
    return out


def check_transform(t: np.ndarray, name: str = "transform", tol: float = 1e-6) -> np.ndarray:
    """Return `t` as a float (4, 4) array; ValueError unless it is a finite rigid transform."""
    a = np.asarray(t, dtype=float)
    if a.shape != (4, 4) or not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be a finite (4, 4) matrix, got shape {a.shape}")
    if not np.allclose(a[3], [0, 0, 0, 1], atol=tol):
        raise ValueError(f"{name}: last row must be [0, 0, 0, 1], got {a[3]}")
    r = a[:3, :3]
    if not np.allclose(r.T @ r, np.eye(3), atol=max(tol, 1e-6)) or np.linalg.det(r) < 0:
        raise ValueError(f"{name}: upper-left 3x3 is not a rotation matrix")
    return a


def rotation_angle_deg(r: np.ndarray) -> float:
    """Angle (deg, 0..180) of a rotation matrix ((3, 3), or the upper-left block of a (4, 4)):
    `Rotation.from_matrix(r).magnitude()` (r orthonormal to rounding)."""
    m = np.asarray(r, dtype=float)[:3, :3]
    return float(np.degrees(Rotation.from_matrix(m, assume_valid=True).magnitude()))


def transform_error(t_a: np.ndarray, t_b: np.ndarray) -> tuple[float, float]:
    """(rotation deg, translation mm) between two (4, 4) poses of the same frame."""
    d = invert(t_a) @ t_b
    return rotation_angle_deg(d[:3, :3]), float(np.linalg.norm(t_a[:3, 3] - t_b[:3, 3]) * 1000.0)


def quat_wxyz_to_matrix(q: np.ndarray) -> np.ndarray:
    """(4,) quaternion w, x, y, z (normalised here) -> (3, 3) rotation (`Rotation.from_quat`,
    scalar_first=True). ValueError on a wrong shape, a non-finite or a zero-norm quaternion."""
    q = np.asarray(q, dtype=float)
    n = np.linalg.norm(q)
    if q.shape != (4,) or not np.isfinite(n) or n < 1e-12:
        raise ValueError(f"quaternion must be a finite non-zero (4,), got {q!r}")
    return Rotation.from_quat(q / n, scalar_first=True).as_matrix()


def transform_from_pose7(pose: np.ndarray) -> np.ndarray:
    """(7,) x, y, z (m), qw, qx, qy, qz (`ArmState.tcp_pose`) -> (4, 4)."""
    p = np.asarray(pose, dtype=float)
    if p.shape != (7,):
        raise ValueError(f"pose must be (7,) x y z qw qx qy qz, got shape {p.shape}")
    return make_transform(quat_wxyz_to_matrix(p[3:]), p[:3])


def pose7_from_transform(t: np.ndarray) -> np.ndarray:
    """(4, 4) -> (7,) x, y, z (m), qw, qx, qy, qz (w >= 0)."""
    return np.concatenate([t[:3, 3], rotation_to_quat_wxyz(t[:3, :3])])


def mean_transform(ts: np.ndarray) -> np.ndarray:
    """Mean of (N, 4, 4) poses: arithmetic mean translation, chordal L2 mean rotation
    (`Rotation.mean`; Hartley et al. 2013, "Rotation averaging", §5.1). ValueError unless the
    input is (N, 4, 4) with N >= 1."""
    ts = np.asarray(ts, dtype=float)
    if ts.ndim != 3 or ts.shape[1:] != (4, 4) or len(ts) == 0:
        raise ValueError(f"expected (N, 4, 4) transforms, got {ts.shape}")
    r = Rotation.from_matrix(ts[:, :3, :3]).mean().as_matrix()
    return make_transform(r, ts[:, :3, 3].mean(axis=0))


def transform_to_dict(t: np.ndarray, parent: str, child: str, ndigits: int = 9) -> dict:
    """YAML block of a pose: parent/child frames, translation_m, rotation_quat_wxyz, (4, 4) matrix."""
    return {
        "parent_frame": parent,
        "child_frame": child,
        "translation_m": [round(float(v), ndigits) for v in t[:3, 3]],
        "rotation_quat_wxyz": [round(float(v), ndigits) for v in rotation_to_quat_wxyz(t[:3, :3])],
        "matrix": [[round(float(v), ndigits) for v in row] for row in t],
    }


def transform_from_dict(d: dict, name: str = "transform") -> np.ndarray:
    """Inverse of `transform_to_dict` (reads `matrix`). Raises KeyError / ValueError."""
    return check_transform(np.asarray(d["matrix"], dtype=float), name, tol=1e-6)
