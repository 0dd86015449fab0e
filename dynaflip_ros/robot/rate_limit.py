"""`JointRateLimiter`: the anchor of the joint speed limit and the per-time step bound.

The speed limit is a bound on how far a joint target may move from the pose the arm is
actually heading for. That pose (the **anchor**) is

- the previous target forwarded to the arm, while a stream of commands is live; or
- the **measured** pose, read from the arm on the first command after anything that may have
  moved the arm outside the safety layer or broken the stream: `connect()`, `rearm()`, a stop
  (explicit, watchdog, protective), a stream gone stale, a disconnect. The owner calls
  `invalidate()` then, and `anchor_at()` with the measured pose before the next command.

Per-time bound (docs/safety.md, "Speed"): a target may step at most

    joint_speed_limit_rad_s * min(dt_s, max_command_dt_s, now_s - last_command_s)

per joint from the anchor, where `now_s - last_command_s` is the time actually elapsed since
the last forwarded command on a monotonic clock (`robot.monotonic_clock.MonotonicClock`). The
caller's declared servo period `dt_s` can only make the bound stricter: two commands at the
same instant get a zero step for the second, and declaring dt 0.1 s while calling at 125 Hz buys
8 ms of motion per call, not 100 ms. Over any window the commanded motion is therefore at most
speed x elapsed time. The elapsed term survives stops and re-anchoring, so stop / command
interleavings cannot add up to a faster motion either.

Too fast a step is scaled down along its direction (the whole 6-vector, so the path is kept).
Not thread-safe: `SafeArm` owns it and calls it under its lock.
"""
from __future__ import annotations

import math

import numpy as np


class JointRateLimiter:
    """Anchor + elapsed-time-based step bound for (6,) joint targets.

    Args:
        speed_limit_rad_s: (6,) joint speed limits, rad/s (> 0).
        max_command_dt_s: the longest servo period the bound ever uses, s.
    """

    def __init__(self, speed_limit_rad_s: np.ndarray, max_command_dt_s: float) -> None:
        speed = np.asarray(speed_limit_rad_s, dtype=float)
        if speed.shape != (6,) or not np.all(np.isfinite(speed)) or np.any(speed <= 0):
            raise ValueError(f"speed_limit_rad_s must be 6 finite values > 0, got {speed_limit_rad_s!r}")
        if not (math.isfinite(max_command_dt_s) and max_command_dt_s > 0):
            raise ValueError(f"max_command_dt_s must be finite and > 0, got {max_command_dt_s!r}")
        self._speed = speed
        self._max_dt_s = float(max_command_dt_s)
        self._anchor: np.ndarray | None = None  # (6,) rad; None: read the measured pose first
        self._last_command_s: float | None = None  # clock time of the last forwarded command

    @property
    def needs_anchor(self) -> bool:
        """True when the next command must first be anchored at the measured pose."""
        return self._anchor is None

    @property
    def anchor(self) -> np.ndarray | None:
        """(6,) the pose the next step is measured from, rad (copy); None until anchored."""
        return None if self._anchor is None else self._anchor.copy()

    @property
    def last_command_s(self) -> float | None:
        """Clock time of the last forwarded command, s; None before the first."""
        return self._last_command_s

    def invalidate(self) -> None:
        """The arm may have moved outside the layer: the next step is measured from the
        measured pose (`anchor_at`)."""
        self._anchor = None

    def anchor_at(self, q_measured: np.ndarray) -> None:
        """Anchor at the measured joints (6,) rad (already validated finite by the caller)."""
        self._anchor = np.array(q_measured, dtype=float).reshape(6)

    def max_step(self, dt_s: float, now_s: float) -> np.ndarray:
        """(6,) the largest allowed |step| per joint, rad, for a command at now_s declaring dt_s."""
        horizon_s = min(dt_s, self._max_dt_s)
        if self._last_command_s is not None:
            horizon_s = min(horizon_s, max(0.0, now_s - self._last_command_s))
        return self._speed * horizon_s

    def limit(self, q: np.ndarray, dt_s: float, now_s: float) -> tuple[np.ndarray, bool]:
        """The target to forward for the requested q (6,) rad: q itself, or the step from the
        anchor scaled down (direction kept) to `max_step`. Returns (q_out (6,), clamped).
        Raises RuntimeError when not anchored (the owner must call `anchor_at` first)."""
        if self._anchor is None:
            raise RuntimeError("JointRateLimiter.limit before anchor_at()")
        step = np.asarray(q, dtype=float) - self._anchor  # (6,)
        bound = self.max_step(dt_s, now_s)  # (6,)
        over = np.abs(step) > bound
        if not np.any(over):
            return np.array(q, dtype=float), False
        # Largest scale s in [0, 1] with |s * step| <= bound on every joint.
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # unused lanes of np.where
            scale = float(np.min(np.where(over, bound / np.abs(step), 1.0)))
        q_out = self._anchor + step * scale
        # Rounding noise must never exceed the bound.
        return np.clip(q_out, self._anchor - bound, self._anchor + bound), True

    def commit(self, q_sent: np.ndarray, now_s: float) -> None:
        """Record the target that reached the arm at now_s: it is the next anchor."""
        self._anchor = np.array(q_sent, dtype=float).reshape(6)
        self._last_command_s = float(now_s)
