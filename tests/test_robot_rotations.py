"""Rotation conversions (robot.kinematics, calibration.transforms) go through
scipy.spatial.transform.Rotation; these tests pin them to the hand-written formulas they
replaced (kept below as reference oracles, verbatim) on a fixed grid: random rotations, tiny
angles, angles near and at pi, quarter turns about every axis.
"""
from __future__ import annotations

import numpy as np
import pytest

from dynaflip_ros.calibration import transforms as tf
from dynaflip_ros.robot import kinematics as kin
from rotation_reference import old_matrix_to_rotvec, old_rotvec_to_matrix


# ----------------------------------------------------------------------------- the old formulas
def old_rotation_to_quat_wxyz(r):
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






def old_rotvec_to_quat_wxyz(w):
    w = np.asarray(w, dtype=float).reshape(3)
    angle = float(np.linalg.norm(w))
    if angle < 1e-12:
        return np.array([1.0, 0.0, 0.0, 0.0])
    return np.concatenate([[np.cos(angle / 2.0)], w / angle * np.sin(angle / 2.0)])


def old_quat_wxyz_to_matrix(q):
    q = np.asarray(q, dtype=float)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def old_rotation_angle_deg(r):
    c = (np.trace(np.asarray(r)[:3, :3]) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


# ----------------------------------------------------------------------------- the grid
def _grid_rotvecs() -> list[np.ndarray]:
    rng = np.random.default_rng(20261203)
    axes = [np.eye(3)[i] for i in range(3)] + [-np.eye(3)[i] for i in range(3)]
    axes += [v / np.linalg.norm(v) for v in (np.array([1.0, 1.0, 0.0]), np.array([1.0, -1.0, 1.0]),
                                           np.array([0.0, -2.0, 1.0]), np.array([-3.0, 1.0, 2.0]))]
    out = [np.zeros(3)]
    for a in axes:
        for angle in (1e-13, 1e-10, 1e-7, 1e-4, 0.3, np.pi / 2, 2.0, np.pi - 1e-3, np.pi - 1e-7):
            out.append(a * angle)
    for _ in range(400):
        a = rng.normal(size=3)
        out.append(a / np.linalg.norm(a) * rng.uniform(0.0, np.pi))
    return out


ROTVECS = _grid_rotvecs()
MATRICES = [old_rotvec_to_matrix(w) for w in ROTVECS]


def _rotation_gap_rad(r_a: np.ndarray, r_b: np.ndarray) -> float:
    """Angle of r_a r_b^T (rad), from the skew part (accurate for small gaps)."""
    d = r_a @ r_b.T
    return float(np.linalg.norm([d[2, 1] - d[1, 2], d[0, 2] - d[2, 0], d[1, 0] - d[0, 1]]) / 2.0)


def test_rotvec_to_matrix_matches_rodrigues():
    # Identical to rounding; below |w| = 1e-12 the old code returned the identity exactly, the new
    # one I + [w]x (more accurate, at most |w| away).
    for w, m in zip(ROTVECS, MATRICES):
        np.testing.assert_allclose(kin.rotvec_to_matrix(w), m, rtol=0, atol=max(1e-15, float(np.linalg.norm(w))))


def test_matrix_to_rotvec_matches_the_old_formula():
    for w, m in zip(ROTVECS, MATRICES):
        new, old = kin.matrix_to_rotvec(m), old_matrix_to_rotvec(m)
        np.testing.assert_allclose(new, w, rtol=0, atol=1e-12)  # the generating vector (|w| < pi)
        angle = np.linalg.norm(w)
        if 1e-3 <= angle <= np.pi - 1e-2:
            # Well conditioned: both agree to rounding.
            np.testing.assert_allclose(new, old, rtol=0, atol=1e-11)
        else:
            # Near 0 and pi the old arccos formula lost digits (and within 1e-6 rad of pi could
            # flip the axis): both still describe the same rotation to 1e-6 rad.
            assert _rotation_gap_rad(old_rotvec_to_matrix(new), old_rotvec_to_matrix(old)) <= 1e-6


def test_rotation_to_quat_wxyz_matches_the_old_formula():
    for m in MATRICES:
        np.testing.assert_allclose(kin.rotation_to_quat_wxyz(m), old_rotation_to_quat_wxyz(m), rtol=0, atol=1e-12)
        assert kin.rotation_to_quat_wxyz(m)[0] >= 0


def test_rotvec_to_quat_wxyz_matches_the_old_formula():
    for w in ROTVECS + [np.array([0.0, 0.0, 4.0]), np.array([-5.0, 2.0, 1.0])]:  # > pi: w < 0 kept
        # Below |w| = 1e-12 the old code returned (1, 0, 0, 0) exactly; the new one (1, w / 2).
        np.testing.assert_allclose(kin.rotvec_to_quat_wxyz(w), old_rotvec_to_quat_wxyz(w), rtol=0,
                                   atol=max(1e-15, float(np.linalg.norm(w))))


def test_quat_wxyz_to_matrix_matches_the_old_formula():
    rng = np.random.default_rng(7)
    quats = [old_rotation_to_quat_wxyz(m) for m in MATRICES] + [rng.normal(size=4) * 3 for _ in range(100)]
    for q in quats:
        np.testing.assert_allclose(tf.quat_wxyz_to_matrix(q), old_quat_wxyz_to_matrix(q), rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="quaternion must be a finite non-zero"):
        tf.quat_wxyz_to_matrix(np.zeros(4))


def test_rotation_angle_deg_matches_the_old_formula():
    for w, m in zip(ROTVECS, MATRICES):
        new = tf.rotation_angle_deg(m)
        assert abs(new - np.degrees(np.linalg.norm(w))) <= 1e-10
        # arccos of the trace loses up to ~sqrt(eps) rad near 0 and pi; elsewhere both agree to rounding.
        angle = np.linalg.norm(w)
        tol = 1e-9 if 1e-3 <= angle <= np.pi - 1e-2 else 1e-6
        assert abs(new - old_rotation_angle_deg(m)) <= tol
    assert tf.rotation_angle_deg(np.eye(4)) == 0.0  # (4, 4) input: the rotation block is used


def old_mean_rotation(ts):
    u, _, vt = np.linalg.svd(ts[:, :3, :3].sum(axis=0))
    r = u @ vt
    if np.linalg.det(r) < 0:
        u[:, -1] *= -1
        r = u @ vt
    return r


def test_mean_transform_matches_the_svd_chordal_mean():
    rng = np.random.default_rng(3)
    for k in range(100):
        n = int(rng.integers(1, 20))
        base = old_rotvec_to_matrix(rng.normal(size=3))
        ts = np.tile(np.eye(4), (n, 1, 1))
        for i in range(n):
            ts[i, :3, :3] = base @ old_rotvec_to_matrix(rng.normal(0.0, [1e-3, 0.05, 0.5][k % 3], 3))
        ts[:, :3, 3] = rng.normal(size=(n, 3))
        mean = tf.mean_transform(ts)
        np.testing.assert_allclose(mean[:3, :3], old_mean_rotation(ts), rtol=0, atol=1e-13)
        np.testing.assert_allclose(mean[:3, 3], ts[:, :3, 3].mean(axis=0), rtol=0, atol=0)


def test_check_values():
    # q = 0 flange of the CB3 (kinematics module docstring) and fixed conversions.
    t = kin.forward_kinematics(np.zeros(6))
    np.testing.assert_allclose(t[:3, 3], [-0.4569, -0.1943, 0.0666], atol=1e-4)
    np.testing.assert_allclose(kin.rotvec_to_quat_wxyz([0.0, 0.0, np.pi / 2]),
                               [np.cos(np.pi / 4), 0.0, 0.0, np.sin(np.pi / 4)], atol=1e-15)
    np.testing.assert_allclose(kin.matrix_to_rotvec(np.diag([1.0, -1.0, -1.0])), [np.pi, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(kin.pose_from_transform(np.eye(4)), [0, 0, 0, 1, 0, 0, 0], atol=0)
