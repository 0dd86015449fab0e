"""UR3 forward kinematics from the published standard DH parameters (UR convention).

Source: Universal Robots, "DH parameters for calculations of kinematics and dynamics"
(universal-robots.com articles; CB3 and e-Series tables). Frames: the UR `base` frame (what the
pendant and RTDE report), `tool0`/flange with Z out of the flange. Check value (CB3, q = 0):
flange at (a2 + a3, -(d4 + d6), d1 - d5) = (-0.4569, -0.1943, 0.0666) m.
Rotation conversions (quaternions w, x, y, z; UR rotation vectors) go through
`scipy.spatial.transform.Rotation` (scalar_first=True for the w, x, y, z order).
Pure functions, no state; safe from any thread.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

# The DH tables and datasheet limits live in configs (the config defaults need them); re-exported here.
from dynaflip_ros.configs.ur3 import (  # noqa: F401
    UR3_CB3_DH,
    UR3_JOINT_LIMITS_RAD,
    UR3_MAX_JOINT_SPEED_RAD_S,
    UR3E_DH,
    DHParams,
)


def dh_transform(a: float, d: float, alpha: float, theta) -> np.ndarray:
    """(..., 4, 4) standard DH link transform Rz(theta) Tz(d) Tx(a) Rx(alpha); theta a scalar
    ((4, 4)) or an array (...,) of joint angles, rad."""
    theta = np.asarray(theta, dtype=float)
    ct, st, ca, sa = np.cos(theta), np.sin(theta), np.cos(alpha), np.sin(alpha)
    t = np.zeros((*theta.shape, 4, 4))
    t[..., 0, 0], t[..., 0, 1], t[..., 0, 2], t[..., 0, 3] = ct, -st * ca, st * sa, a * ct
    t[..., 1, 0], t[..., 1, 1], t[..., 1, 2], t[..., 1, 3] = st, ct * ca, -ct * sa, a * st
    t[..., 2, 1], t[..., 2, 2], t[..., 2, 3] = sa, ca, d
    t[..., 3, 3] = 1.0
    return t


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


def forward_kinematics_batch(
    q: np.ndarray, dh: DHParams = UR3_CB3_DH, tool: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """`forward_kinematics` of many joint vectors at once: q (..., 6) rad -> TCP positions
    (..., 3) m and rotations (..., 3, 3), UR base frame (same DH chain, vectorised over the
    leading axes; no input checks: training-time conversions of whole datasets)."""
    q = np.asarray(q, np.float64)
    lead = q.shape[:-1]
    t = np.broadcast_to(np.eye(4), (*lead, 4, 4)).copy()
    for i in range(6):
        t = t @ dh_transform(dh.a[i], dh.d[i], dh.alpha[i], q[..., i])  # (..., 4, 4)
    if tool is not None:
        t = t @ tool
    return t[..., :3, 3], t[..., :3, :3]


def rotation_to_quat_wxyz(r: np.ndarray) -> np.ndarray:
    """(3, 3) rotation matrix -> (4,) unit quaternion w, x, y, z (w >= 0).

    `scipy.spatial.transform.Rotation.from_matrix` (assume_valid: r must be orthonormal to
    rounding, as forward kinematics and MuJoCo produce;
    https://docs.scipy.org/doc/scipy/reference/generated/scipy.spatial.transform.Rotation.from_matrix.html).
    """
    q = Rotation.from_matrix(np.asarray(r, dtype=float), assume_valid=True).as_quat(scalar_first=True)
    return q if q[0] >= 0 else -q


def pose_from_transform(t: np.ndarray) -> np.ndarray:
    """(4, 4) transform -> (7,) x, y, z (m), qw, qx, qy, qz."""
    return np.concatenate([t[:3, 3], rotation_to_quat_wxyz(t[:3, :3])])


# ----------------------------------------------------------------------------- inverse kinematics
# Added for teleoperation (teleop/twist.py): damped-least-squares IK on the same DH model.


def geometric_jacobian(q: np.ndarray, dh: DHParams = UR3_CB3_DH, tool: np.ndarray | None = None) -> np.ndarray:
    """(6, 6) geometric Jacobian of the flange (or TCP with `tool`) in the UR base frame.

    Rows 0..2: linear velocity (m/s per rad/s), rows 3..5: angular velocity (rad/s per rad/s);
    column i is joint i (UR order). Standard DH: joint i rotates about z_{i-1} through o_{i-1}
    (Siciliano et al., "Robotics: Modelling, Planning and Control", §3.1.3).
    Raises ValueError on a wrong shape or a non-finite q.
    """
    q = np.asarray(q, dtype=float)
    if q.shape != (6,) or not np.all(np.isfinite(q)):
        raise ValueError(f"q must be finite (6,), got {q!r}")
    frames = [np.eye(4)]
    t = np.eye(4)
    for i in range(6):
        t = t @ dh_transform(dh.a[i], dh.d[i], dh.alpha[i], q[i])
        frames.append(t)
    end = t @ tool if tool is not None else t
    p_end = end[:3, 3]
    jac = np.zeros((6, 6))
    for i in range(6):
        z = frames[i][:3, 2]
        o = frames[i][:3, 3]
        jac[:3, i] = np.cross(z, p_end - o)
        jac[3:, i] = z
    return jac


def matrix_to_rotvec(r: np.ndarray) -> np.ndarray:
    """(3, 3) rotation -> (3,) rotation vector (axis * angle, rad, angle in [0, pi]): the
    orientation part of a UR pose (x, y, z, rx, ry, rz). `Rotation.from_matrix(r).as_rotvec()`
    (assume_valid: r orthonormal to rounding)."""
    return Rotation.from_matrix(np.asarray(r, dtype=float), assume_valid=True).as_rotvec()


def rotvec_to_matrix(w: np.ndarray) -> np.ndarray:
    """(3, 3) rotation exp([w]x) of a rotation vector w (3,) rad (`Rotation.from_rotvec`)."""
    return Rotation.from_rotvec(np.asarray(w, dtype=float).reshape(3)).as_matrix()


def rotvec_to_quat_wxyz(w: np.ndarray) -> np.ndarray:
    """UR rotation vector (3,) rad -> unit quaternion (4,) w, x, y, z = (cos(|w|/2), w/|w| sin(|w|/2))
    (`Rotation.from_rotvec`; w < 0 for |w| > pi, as the formula gives)."""
    return Rotation.from_rotvec(np.asarray(w, dtype=float).reshape(3)).as_quat(scalar_first=True)


def transform_from_ur_pose(pose: np.ndarray) -> np.ndarray:
    """UR pose (6,) x, y, z (m), rx, ry, rz (rotation vector, rad) -> (4, 4) transform.
    Raises ValueError for a shape other than (6,)."""
    p = np.asarray(pose, dtype=float)
    if p.shape != (6,):
        raise ValueError(f"UR pose must be (6,), got shape {p.shape}")
    t = np.eye(4)
    t[:3, :3] = rotvec_to_matrix(p[3:])
    t[:3, 3] = p[:3]
    return t


def ur_pose_from_transform(t: np.ndarray) -> np.ndarray:
    """(4, 4) transform -> UR pose (6,) x, y, z (m), rx, ry, rz (rotation vector, rad)."""
    t = np.asarray(t, dtype=float)
    return np.concatenate([t[:3, 3], matrix_to_rotvec(t[:3, :3])])


def rotation_error_vector(r_target: np.ndarray, r_current: np.ndarray) -> np.ndarray:
    """(3,) rotation vector (axis * angle, rad, base frame) taking r_current to r_target:
    log(R_target R_current^T), angle in [0, pi]. The orientation error of IK."""
    return matrix_to_rotvec(np.asarray(r_target, dtype=float) @ np.asarray(r_current, dtype=float).T)


_DLS_EPS = 0.04  # smallest singular value of J below which IK damps its steps


@dataclass(frozen=True)
class IKResult:
    """Outcome of `inverse_kinematics`.

    q: (6,) joint solution, rad (the last iterate when not converged); converged: both errors
    within tolerance; position_error_m / rotation_error_rad: residual errors of FK(q) against
    the target; iterations: iterations run.
    """

    q: np.ndarray
    converged: bool
    position_error_m: float
    rotation_error_rad: float
    iterations: int


def inverse_kinematics(
    target: np.ndarray,
    q_seed: np.ndarray,
    dh: DHParams = UR3_CB3_DH,
    tool: np.ndarray | None = None,
    joint_limits_rad: np.ndarray | None = None,
    max_iterations: int = 100,
    tol_position_m: float = 1e-4,
    tol_rotation_rad: float = 1e-3,
    damping: float = 0.01,
    max_step_rad: float = 0.3,
) -> IKResult:
    """Damped-least-squares IK: joints whose flange/TCP pose (FK with `tool`) reaches `target`.

    Iterates dq = J^T (J J^T + lambda^2 I)^-1 e from `q_seed` (the current joints: teleop
    targets are a few mm away, so 1-3 iterations suffice and the solution stays on the seed's
    branch), e = (position error m, rotation-vector error rad) in the base frame. Steps are
    clipped to `max_step_rad` per joint and q to `joint_limits_rad`. Damping lambda (Wampler
    1986; Buss, "Introduction to Inverse Kinematics with Jacobian Transpose, Pseudoinverse and
    Damped Least Squares methods", 2004) is switched on only near singularities (smallest
    singular value of J below 0.04, lambda up to `damping`), where it keeps steps bounded; a
    target that stays out of reach ends with converged False instead of a jump.

    Args:
        target: (4, 4) homogeneous target pose in the UR base frame, metres.
        q_seed: (6,) starting joints, rad.
        joint_limits_rad: (6, 2) lower/upper limits (default `UR3_JOINT_LIMITS_RAD`).
        tol_position_m / tol_rotation_rad: convergence tolerances.
    Returns an `IKResult`. Raises ValueError on wrong shapes, non-finite input or bad options.
    """
    target = np.asarray(target, dtype=float)
    if target.shape != (4, 4) or not np.all(np.isfinite(target)):
        raise ValueError(f"target must be a finite (4, 4) transform, got shape {target.shape}")
    q = np.asarray(q_seed, dtype=float).copy()
    if q.shape != (6,) or not np.all(np.isfinite(q)):
        raise ValueError(f"q_seed must be finite (6,), got {q_seed!r}")
    limits = UR3_JOINT_LIMITS_RAD if joint_limits_rad is None else np.asarray(joint_limits_rad, dtype=float)
    if limits.shape != (6, 2):
        raise ValueError(f"joint_limits_rad must have shape (6, 2), got {limits.shape}")
    if not (isinstance(max_iterations, int) and max_iterations >= 1):
        raise ValueError(f"max_iterations must be an int >= 1, got {max_iterations!r}")
    if not (damping >= 0 and max_step_rad > 0 and tol_position_m > 0 and tol_rotation_rad > 0):
        raise ValueError("damping must be >= 0; max_step_rad and tolerances > 0")
    p_t, r_t = target[:3, 3], target[:3, :3]
    q = np.clip(q, limits[:, 0], limits[:, 1])
    it = 0
    for it in range(1, max_iterations + 1):
        t = forward_kinematics(q, dh, tool)
        e = np.concatenate([p_t - t[:3, 3], rotation_error_vector(r_t, t[:3, :3])])
        if np.linalg.norm(e[:3]) <= tol_position_m and np.linalg.norm(e[3:]) <= tol_rotation_rad:
            it -= 1
            break
        jac = geometric_jacobian(q, dh, tool)
        # Damping only near a singularity (Maciejewski & Klein 1988 / Nakamura's rule): lambda^2 =
        # damping^2 (1 - (sigma_min / eps)^2) when the smallest singular value sigma_min < eps.
        sigma_min = float(np.linalg.svd(jac, compute_uv=False)[-1])
        lam2 = damping**2 * (1.0 - (sigma_min / _DLS_EPS) ** 2) if sigma_min < _DLS_EPS else 0.0
        dq = jac.T @ np.linalg.solve(jac @ jac.T + (lam2 + 1e-12) * np.eye(6), e)
        peak = float(np.max(np.abs(dq)))
        if peak > max_step_rad:
            dq *= max_step_rad / peak
        q = np.clip(q + dq, limits[:, 0], limits[:, 1])
    t = forward_kinematics(q, dh, tool)
    pos_err = float(np.linalg.norm(p_t - t[:3, 3]))
    rot_err = float(np.linalg.norm(rotation_error_vector(r_t, t[:3, :3])))
    return IKResult(
        q=q,
        converged=pos_err <= tol_position_m and rot_err <= tol_rotation_rad,
        position_error_m=pos_err,
        rotation_error_rad=rot_err,
        iterations=it,
    )
