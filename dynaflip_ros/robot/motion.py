"""Point-to-point joint moves streamed through `SafeArm` (calibration poses, homing, test setups).

`move_to_joints` plans a minimum-jerk (quintic, zero velocity and acceleration at both ends)
straight line in joint space from the measured joints to a goal, streams it as servoJ targets
through `robot.safety.SafeArm.servo_joint` at `rate_hz`, then holds the goal until the arm has
settled. Source of the profile: Flash & Hogan (1985), "The coordination of arm movements", the
minimum-jerk polynomial s(u) = 10u^3 - 15u^4 + 6u^5, whose peak speed is 15/8 of the mean speed.

Timing is injected so the same code drives the real UR3 (`clock=time.monotonic`,
`sleep=time.sleep`) and a lock-step MuJoCo simulation (`clock=lambda: env.sim_time_s`,
`sleep=env.step`: "sleeping" advances the physics by exactly that much simulated time).
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import numpy as np

from dynaflip_ros.robot.arm import N_JOINTS, ArmError, ArmState

log = logging.getLogger(__name__)

# Fraction of SafeArm's enforced joint speed limit the planned peak speed may use: the profile
# never triggers SafeArm's rate limiter (which would distort the trajectory), even with the jitter
# of a sleep-timed loop on the host.
SPEED_LIMIT_MARGIN = 0.9
# Largest joint step checked for the workspace box along the planned path (rad).
_PATH_CHECK_STEP_RAD = 0.02


def min_jerk(u: np.ndarray | float) -> np.ndarray | float:
    """Minimum-jerk progress s(u) = 10u^3 - 15u^4 + 6u^5 for u in [0, 1] (clipped outside).

    s(0) = 0, s(1) = 1, s' and s'' are 0 at both ends; peak s'(0.5) = 15/8 (Flash & Hogan 1985).
    """
    u = np.clip(u, 0.0, 1.0)
    return u * u * u * (10.0 + u * (-15.0 + 6.0 * u))


def plan_duration_s(q_start: np.ndarray, q_goal: np.ndarray, speed_limit_rad_s: np.ndarray | float,
                    min_duration_s: float = 0.0) -> float:
    """Duration of a min-jerk joint move whose peak joint speed stays within `speed_limit_rad_s`.

    Args:
        q_start, q_goal: (6,) joints, rad.
        speed_limit_rad_s: scalar or (6,) positive joint speed limits, rad/s.
        min_duration_s: lower bound on the result, s.
    Returns: T = max_j 15/8 * |q_goal_j - q_start_j| / v_j (s), at least `min_duration_s`.
    Raises ValueError on non-positive speeds or mismatched shapes.
    """
    dq = np.abs(np.asarray(q_goal, dtype=float) - np.asarray(q_start, dtype=float))
    v = np.broadcast_to(np.asarray(speed_limit_rad_s, dtype=float), dq.shape)
    if not np.all(np.isfinite(v)) or np.any(v <= 0):
        raise ValueError(f"speed limits must be finite and > 0, got {speed_limit_rad_s!r}")
    return float(max(np.max(1.875 * dq / v), min_duration_s))


def _as_joint_vector(q: np.ndarray, name: str) -> np.ndarray:
    try:
        arr = np.asarray(q, dtype=float)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be numeric (6,) rad, got {q!r}") from e
    if arr.shape != (N_JOINTS,) or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be a finite (6,) joint vector in rad, got {arr!r}")
    return arr


def move_to_joints(
    safe_arm,
    q_goal: np.ndarray,
    max_speed_rad_s: float = 0.5,
    rate_hz: float = 125.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], object] = time.sleep,
    timeout_s: float = 30.0,
    settle_tol_rad: float = 1e-3,
    settle_speed_rad_s: float = 0.01,
    stop_at_end: bool = True,
) -> ArmState:
    """Move the arm to `q_goal` along a min-jerk joint-space line and wait until it has settled.

    Plans from the *measured* joints, checks the whole path (joint limits and the TCP workspace
    box of `safe_arm.config`, sampled every 0.02 rad) before any command, then streams
    `q(t) = q0 + s(t / T) (q_goal - q0)` through `safe_arm.servo_joint(q, 1 / rate_hz)` once per
    period, and keeps streaming `q_goal` until every joint is within `settle_tol_rad` of the goal
    and slower than `settle_speed_rad_s`. Each tick also runs `safe_arm.check_protective_stop()`
    and `check_watchdog()`. The duration T follows from the largest joint distance: the peak
    speed 15/8 * |dq_j| / T stays below `max_speed_rad_s` and below 90 % of SafeArm's enforced
    per-joint limit (`SafetyConfig.joint_speed_limit_rad_s`), so SafeArm never has to clamp.

    Args:
        safe_arm: a connected `robot.safety.SafeArm` (never a bare Arm: the brief's safety rule).
        q_goal: (6,) goal joints, rad, UR joint order.
        max_speed_rad_s: peak joint speed cap, rad/s (> 0).
        rate_hz: servo stream rate, Hz (125 for CB3, up to 500 for e-Series; docs/hardware.md §1.6).
        clock: monotonic time source, s (`time.monotonic`; sim: `lambda: env.sim_time_s`).
        sleep: waits the given seconds (`time.sleep`; lock-step sim: `env.step`, which advances
            physics by that much simulated time).
        timeout_s: budget for the whole move (trajectory + settling), s; the planned duration
            must fit in it.
        settle_tol_rad: per-joint position tolerance to call the move done, rad.
        settle_speed_rad_s: per-joint speed below which the arm counts as at rest, rad/s.
        stop_at_end: call `safe_arm.stop()` (servoStop, hold) when done or on failure, so the
            watchdog does not have to; pass False to keep streaming with another loop at once.
    Returns:
        The final measured `ArmState` (settled at the goal).
    Raises:
        ValueError: bad q_goal / parameters, a goal or path outside the joint limits or the
            workspace box, or a planned duration longer than `timeout_s` (nothing moved).
        ArmError: protective stop during the move, a refused command (`SafetyViolation`), or
            the arm not settling within `timeout_s`.
    """
    q_goal = _as_joint_vector(q_goal, "q_goal")
    for name, v in (("max_speed_rad_s", max_speed_rad_s), ("rate_hz", rate_hz), ("timeout_s", timeout_s),
                    ("settle_tol_rad", settle_tol_rad), ("settle_speed_rad_s", settle_speed_rad_s)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be finite and > 0, got {v!r}")
    if safe_arm.halted:
        raise ArmError(f"arm halted ({safe_arm.halt_reason}); clear the stop and call rearm() first")
    period_s = 1.0 / float(rate_hz)
    st0 = safe_arm.state()
    q0 = _as_joint_vector(st0.q, "measured q")
    if not safe_arm.within_joint_limits(q_goal):
        raise ValueError(f"q_goal {np.round(q_goal, 4).tolist()} rad is outside the joint limits "
                         f"{list(safe_arm.config.joint_limits_rad)}")
    # The straight joint-space path: every sample must be inside the joint limits and the box.
    n_check = max(2, int(np.ceil(np.max(np.abs(q_goal - q0)) / _PATH_CHECK_STEP_RAD)) + 1)
    for u in np.linspace(0.0, 1.0, n_check)[1:]:
        q = q0 + u * (q_goal - q0)
        if not safe_arm.within_joint_limits(q) or not safe_arm.in_workspace(q):
            p = safe_arm.tcp_position(q)
            raise ValueError(
                f"path to q_goal leaves the joint limits or the workspace box at {u:.0%} of the way "
                f"(TCP {np.round(p, 3).tolist()} m, box {list(safe_arm.config.workspace_min_m)}.."
                f"{list(safe_arm.config.workspace_max_m)}); choose an intermediate waypoint")
    speed = np.minimum(float(max_speed_rad_s), SPEED_LIMIT_MARGIN * safe_arm.config.joint_speed_limit_rad_s)
    duration_s = plan_duration_s(q0, q_goal, speed, min_duration_s=2 * period_s)
    if duration_s >= timeout_s:
        raise ValueError(f"planned move takes {duration_s:.2f} s >= timeout_s={timeout_s} s; "
                         "raise timeout_s or max_speed_rad_s")
    log.info("move_to_joints: %.3f rad max joint distance in %.2f s", float(np.max(np.abs(q_goal - q0))),
             duration_s)
    t0 = clock()
    deadline = t0 + timeout_s
    k = 0
    try:
        while True:
            now = clock()
            elapsed = now - t0
            q_cmd = q0 + min_jerk(elapsed / duration_s) * (q_goal - q0)
            safe_arm.servo_joint(q_cmd, period_s)
            if safe_arm.check_protective_stop():
                raise ArmError("protective stop during move_to_joints; clear it and call rearm()")
            st = safe_arm.state()
            if elapsed >= duration_s:
                err = np.abs(np.asarray(st.q) - q_goal)
                if np.all(err <= settle_tol_rad) and np.all(np.abs(st.dq) <= settle_speed_rad_s):
                    return st
            if now > deadline:
                err = np.abs(np.asarray(st.q) - q_goal)
                raise ArmError(
                    f"move_to_joints did not settle within timeout_s={timeout_s} s: max joint error "
                    f"{np.max(err):.4f} rad (tol {settle_tol_rad}), max speed "
                    f"{np.max(np.abs(st.dq)):.4f} rad/s; check speed scaling / obstructions")
            k += 1
            wait_s = t0 + k * period_s - clock()
            if wait_s > 0:
                sleep(wait_s)
            else:  # fell behind (host jitter): resynchronise the tick counter, do not burst
                k = math.ceil((clock() - t0) / period_s)
            safe_arm.check_watchdog()
    finally:
        if stop_at_end:
            try:
                safe_arm.stop()
            except ArmError as e:  # pragma: no cover - keep the original error visible
                log.error("stop after move_to_joints failed: %s", e)
