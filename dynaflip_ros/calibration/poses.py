"""Calibration poses: damped-least-squares IK on the UR DH model and diverse joint-space samples.

`generate_joint_poses` draws N joint configurations around a start configuration (per-joint
uniform perturbations, larger on the wrists for rotation diversity), keeps those inside the
joint limits and the TCP workspace box of `SafetyConfig` (same FK as `SafeArm`), requires every
new pose to differ in flange orientation from all kept ones by `min_rotation_deg`, and orders them
greedily so consecutive moves are short. Sources: docs/hardware.md §1.2 (DH), Tsai & Lenz 1989 (hand-eye
needs rotations about non-parallel axes; larger inter-pose rotations reduce error).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from dynaflip_ros.calibration.transforms import (
    invert,
    rotation_angle_deg,
)
from dynaflip_ros.configs.safety import SafetyConfig
from dynaflip_ros.robot.kinematics import DHParams, forward_kinematics, inverse_kinematics

# Default per-joint perturbation half-ranges (rad): shoulder/elbow small (keeps the board in
# view and in the workspace), wrists larger (orientation diversity).
DEFAULT_PERTURBATION_RAD: tuple[float, ...] = (0.10, 0.10, 0.10, 0.30, 0.30, 0.45)


def solve_ik(t_target: np.ndarray, q_init: np.ndarray, dh: DHParams, tool: np.ndarray | None = None,
             max_iters: int = 300, tol_m: float = 1e-6, tol_rad: float = 1e-6) -> np.ndarray:
    """Joints (6,) rad whose flange (or TCP with `tool` (4, 4)) reaches `t_target` (4, 4) in `base`,
    from `q_init` (`robot.kinematics.inverse_kinematics`, damped least squares).
    Raises ValueError if it does not converge."""
    res = inverse_kinematics(np.asarray(t_target, dtype=float), np.asarray(q_init, dtype=float), dh, tool,
                             max_iterations=max_iters, tol_position_m=tol_m, tol_rotation_rad=tol_rad)
    if not res.converged:
        raise ValueError(f"IK did not converge: residual {res.position_error_m * 1000:.2f} mm, "
                         f"{np.degrees(res.rotation_error_rad):.3f} deg")
    return res.q


def look_at_rotation(z_axis: np.ndarray, up_hint: tuple[float, float, float] = (0.0, 0.0, 1.0)) -> np.ndarray:
    """(3, 3) rotation whose z column is `z_axis` (normalised) and whose x column is horizontal-ish
    (perpendicular to z and `up_hint`)."""
    z = np.asarray(z_axis, dtype=float)
    z = z / np.linalg.norm(z)
    x = np.cross(up_hint, z)
    if np.linalg.norm(x) < 1e-6:
        x = np.cross([1.0, 0.0, 0.0], z)
    x /= np.linalg.norm(x)
    return np.stack([x, np.cross(z, x), z], axis=1)


def generate_joint_poses(
    q_start: np.ndarray,
    n: int,
    safety: SafetyConfig,
    seed: int = 0,
    perturbation_rad: tuple[float, ...] = DEFAULT_PERTURBATION_RAD,
    min_rotation_deg: float = 6.0,
    accept: Callable[[np.ndarray], bool] | None = None,
    max_draws: int = 5000,
) -> np.ndarray:
    """(n, 6) joint configurations (rad) around `q_start` for calibration views.

    Args:
        q_start: (6,) start joints (the board visible from there).
        n: number of poses (>= 3).
        safety: limits and workspace box (the same checks SafeArm applies).
        seed: RNG seed (deterministic).
        perturbation_rad: per-joint half-range of the uniform perturbation.
        min_rotation_deg: each pose's flange orientation differs from every other by at least this.
        accept: optional extra predicate on q (e.g. "board predicted inside the image").
        max_draws: give up after this many samples.
    Raises ValueError (bad arguments, or fewer than n poses found: widen the perturbation,
    lower min_rotation_deg or move the start pose away from the workspace limits).
    """
    q_start = np.asarray(q_start, dtype=float)
    if q_start.shape != (6,) or not np.all(np.isfinite(q_start)):
        raise ValueError(f"q_start must be finite (6,), got {q_start!r}")
    if n < 3:
        raise ValueError(f"n must be >= 3, got {n}")
    pert = np.asarray(perturbation_rad, dtype=float)
    if pert.shape != (6,) or np.any(pert < 0):
        raise ValueError("perturbation_rad must be 6 non-negative values")
    rng = np.random.default_rng(seed)
    lo, hi = safety.joint_lower_rad, safety.joint_upper_rad
    wmin, wmax = np.array(safety.workspace_min_m), np.array(safety.workspace_max_m)
    tool = safety.tool_transform
    kept_q: list[np.ndarray] = []
    kept_r: list[np.ndarray] = []
    for _ in range(max_draws):
        if len(kept_q) == n:
            break
        q = q_start + rng.uniform(-1.0, 1.0, 6) * pert
        if np.any(q < lo) or np.any(q > hi):
            continue
        t_tcp = forward_kinematics(q, safety.dh, tool)
        p = t_tcp[:3, 3]
        if np.any(p < wmin) or np.any(p > wmax):
            continue
        r = t_tcp[:3, :3]
        if any(rotation_angle_deg(rk.T @ r) < min_rotation_deg for rk in kept_r):
            continue
        if accept is not None and not accept(q):
            continue
        kept_q.append(q)
        kept_r.append(r)
    if len(kept_q) < n:
        raise ValueError(f"found only {len(kept_q)} of {n} poses within limits/workspace with "
                         f">= {min_rotation_deg} deg rotation diversity after {max_draws} draws")
    # Greedy nearest-neighbour order from the start (short moves).
    order, rest, cur = [], list(range(n)), q_start
    while rest:
        j = min(rest, key=lambda i: float(np.max(np.abs(kept_q[i] - cur))))
        order.append(j)
        rest.remove(j)
        cur = kept_q[j]
    return np.asarray([kept_q[i] for i in order])


def relative_rotation_deg(t_a: np.ndarray, t_b: np.ndarray) -> float:
    """Rotation angle (deg) between the orientations of two (4, 4) poses."""
    return rotation_angle_deg((invert(t_a) @ t_b)[:3, :3])
