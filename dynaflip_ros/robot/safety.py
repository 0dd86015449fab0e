"""`SafeArm`: the safety layer every arm command goes through (DESIGN.md, "Safety model").

The arm driver owns safety, not the policy. `SafeArm` wraps any `robot.arm.Arm` (MuJoCo or
ur_rtde) and itself implements `Arm`. Per joint command (servoJ-style target `q`, 6 rad):

1. invalid input (wrong shape, NaN/inf, bad dt_s)      -> reject (SafetyViolation, reason "invalid"/"non_finite")
2. any joint outside `SafetyConfig.joint_limits_rad`   -> reject ("joint_limit")
3. TCP of the target outside the workspace box (FK)   -> reject ("workspace")
4. step from the last commanded target faster than the joint speed limit -> the step is scaled
   down (rate limit, direction kept) and counted in `stats.rate_limited`
5. TCP of the rate-limited target outside the box      -> reject ("workspace")

A rejected command raises `SafetyViolation` and nothing reaches the arm. The watchdog
(`check_watchdog`, called every servo tick) stops the arm when no command was accepted within
`watchdog_timeout_s`. After any stop (watchdog, `stop()`, protective stop) the next command is
rate-limited from the *measured* pose (re-anchoring), so motion never resumes with a jump.
A protective/emergency stop reported by the arm halts `SafeArm`: commands are rejected
("halted") until `rearm()`.

Thread-safe: one lock serialises commands, watchdog checks and stops.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from dynaflip_ros.configs.safety import SafetyConfig
from dynaflip_ros.robot.arm import N_JOINTS, Arm, ArmError, ArmNotConnectedError, ArmState
from dynaflip_ros.robot.kinematics import forward_kinematics

log = logging.getLogger(__name__)


class SafetyViolation(ArmError):
    """A command was refused by `SafeArm`; nothing reached the arm.

    Attributes:
        reason: short machine-readable cause, one of "invalid", "non_finite", "joint_limit",
            "workspace", "gripper", "halted".
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"[{reason}] {message}")
        self.reason = reason


@dataclass
class SafetyStats:
    """Counters of `SafeArm` (monotonic; read a snapshot with `SafeArm.stats`).

    commands: joint commands received; accepted: joint commands forwarded to the arm;
    rejected_invalid: wrong shape / bad dt_s; rejected_nan: NaN or inf; rejected_joint_limit;
    rejected_workspace; rejected_halted: commands while halted by a protective stop;
    rate_limited: accepted commands whose step was clamped to the speed limit;
    gripper_commands: gripper commands forwarded; rejected_gripper; watchdog_stops;
    protective_stops: protective/emergency stops seen; stops: explicit stop() calls;
    reanchors: times the last commanded target was reset to the measured pose.
    """

    commands: int = 0
    accepted: int = 0
    rejected_invalid: int = 0
    rejected_nan: int = 0
    rejected_joint_limit: int = 0
    rejected_workspace: int = 0
    rejected_halted: int = 0
    rate_limited: int = 0
    gripper_commands: int = 0
    rejected_gripper: int = 0
    watchdog_stops: int = 0
    protective_stops: int = 0
    stops: int = 0
    reanchors: int = 0

    @property
    def rejected(self) -> int:
        """All rejected joint commands."""
        return (
            self.rejected_invalid
            + self.rejected_nan
            + self.rejected_joint_limit
            + self.rejected_workspace
            + self.rejected_halted
        )


class SafeArm:
    """Wraps an `Arm` and enforces `SafetyConfig` on every command (implements `Arm`).

    Args:
        arm: the arm to protect (e.g. `robot.sim_arm.SimArm`, a ur_rtde arm).
        config: limits (`configs.safety.SafetyConfig`).
        clock: monotonic time source in seconds for the watchdog. Use `time.monotonic` for a real
            arm; in a lock-step simulation pass the simulation clock (e.g. `lambda: env.sim_time_s`).

    Usage:
        safe = SafeArm(arm, SafetyConfig()); safe.connect()
        safe.servo_joint(q, 0.008)   # every servo tick; raises SafetyViolation when refused
        safe.check_watchdog()        # every servo tick
    """

    def __init__(
        self, arm: Arm, config: SafetyConfig | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not isinstance(arm, Arm):
            raise TypeError(f"arm must implement robot.arm.Arm, got {type(arm).__name__}")
        self._arm = arm
        self.config = config if config is not None else SafetyConfig()
        self._clock = clock
        self._lock = threading.RLock()
        self._stats = SafetyStats()
        self._lower = self.config.joint_lower_rad  # (6,)
        self._upper = self.config.joint_upper_rad  # (6,)
        self._speed = self.config.joint_speed_limit_rad_s  # (6,)
        self._wmin = np.array(self.config.workspace_min_m)  # (3,)
        self._wmax = np.array(self.config.workspace_max_m)  # (3,)
        self._tool = self.config.tool_transform  # (4, 4)
        self._dh = self.config.dh
        self._connected = False
        self._last_q: np.ndarray | None = None  # (6,) last target forwarded (or measured anchor)
        self._need_anchor = True  # next command re-reads the measured pose
        self._last_accept_s: float | None = None  # clock time of the last accepted joint command
        self._streaming = False  # a command was accepted since the last stop
        self._halted = False
        self._halt_reason = ""
        self._last_gripper: float | None = None  # last gripper command forwarded

    # ------------------------------------------------------------------ properties
    @property
    def arm(self) -> Arm:
        """The wrapped arm. Do not command it directly."""
        return self._arm

    @property
    def stats(self) -> SafetyStats:
        """Snapshot (copy) of the counters."""
        with self._lock:
            return dataclasses.replace(self._stats)

    @property
    def last_commanded_q(self) -> np.ndarray | None:
        """(6,) last joint target forwarded to the arm (or the measured anchor), rad; None before connect."""
        with self._lock:
            return None if self._last_q is None else self._last_q.copy()

    @property
    def last_gripper_command(self) -> float | None:
        """Last gripper command forwarded to the arm (0 open .. 1 closed); None if none yet."""
        with self._lock:
            return self._last_gripper

    @property
    def halted(self) -> bool:
        """True after a protective/emergency stop until `rearm()` succeeds."""
        return self._halted

    @property
    def halt_reason(self) -> str:
        return self._halt_reason

    # ------------------------------------------------------------------ checks (pure)
    def tcp_position(self, q: np.ndarray) -> np.ndarray:
        """(3,) TCP position in the UR base frame, metres, for joints q (6,) rad."""
        return forward_kinematics(q, self._dh, self._tool)[:3, 3]

    def in_workspace(self, q: np.ndarray) -> bool:
        """Whether the TCP of joints q (6,) lies inside the workspace box."""
        p = self.tcp_position(q)
        return bool(np.all(p >= self._wmin) and np.all(p <= self._wmax))

    def within_joint_limits(self, q: np.ndarray) -> bool:
        """Whether every joint of q (6,) lies inside the configured limits."""
        q = np.asarray(q, dtype=float)
        return bool(np.all(q >= self._lower) and np.all(q <= self._upper))

    # ------------------------------------------------------------------ Arm protocol
    def connect(self) -> None:
        """Connect the arm, read the measured state and anchor the rate limiter to it.

        Raises ArmError from the arm, or SafetyViolation("invalid") if the measured q is not
        a finite (6,) vector. A protective stop already active halts SafeArm.
        """
        with self._lock:
            self._arm.connect()
            self._connected = True
            st = self._reanchor_locked()
            self._streaming = False
            self._last_accept_s = None
            if st.protective_stop:
                self._enter_halt_locked("protective stop active at connect")

    def state(self) -> ArmState:
        """The arm's measured state (pass-through)."""
        return self._arm.state()

    def servo_joint(self, q: np.ndarray, dt_s: float) -> np.ndarray:
        """Check and forward one joint target (servoJ).

        Args:
            q: (6,) joint target, rad, UR joint order.
            dt_s: servo period, seconds (0.008 on CB3); finite and > 0.
        Returns:
            (6,) the target actually forwarded (rate-limited if the step was too fast).
        Raises:
            SafetyViolation: invalid/non-finite input, joint limit, workspace, or halted; the
                arm received nothing.
            ArmNotConnectedError: before connect().
        """
        with self._lock:
            if not self._connected:
                raise ArmNotConnectedError("SafeArm.servo_joint before connect()")
            self._stats.commands += 1
            if self._halted:
                self._stats.rejected_halted += 1
                raise SafetyViolation(
                    "halted", f"arm halted ({self._halt_reason}); clear the stop and call rearm()"
                )
            try:
                q_arr = np.asarray(q, dtype=float)
            except (TypeError, ValueError) as e:
                self._stats.rejected_invalid += 1
                raise SafetyViolation("invalid", f"joint target is not numeric: {e}") from e
            if q_arr.shape != (N_JOINTS,):
                self._stats.rejected_invalid += 1
                raise SafetyViolation("invalid", f"joint target must have shape (6,), got {q_arr.shape}")
            try:
                dt = float(dt_s)
            except (TypeError, ValueError) as e:
                self._stats.rejected_invalid += 1
                raise SafetyViolation("invalid", f"dt_s must be a number, got {dt_s!r}") from e
            if not np.isfinite(dt) or dt <= 0.0:
                self._stats.rejected_invalid += 1
                raise SafetyViolation("invalid", f"dt_s must be finite and > 0, got {dt_s!r}")
            if not np.all(np.isfinite(q_arr)):
                self._stats.rejected_nan += 1
                raise SafetyViolation("non_finite", f"joint target contains NaN/inf: {q_arr}")
            if not self.within_joint_limits(q_arr):
                self._stats.rejected_joint_limit += 1
                bad = np.nonzero((q_arr < self._lower) | (q_arr > self._upper))[0]
                raise SafetyViolation(
                    "joint_limit",
                    f"joints {bad.tolist()} outside limits: q={np.round(q_arr[bad], 4).tolist()} rad, "
                    f"limits={[self.config.joint_limits_rad[j] for j in bad]}",
                )
            self._reject_outside_workspace(q_arr, "target")
            # Anchor: after a stop (or a stale stream) the step is measured from the measured pose.
            now_s = self._clock()
            stale = self._last_accept_s is not None and now_s - self._last_accept_s > self.config.watchdog_timeout_s
            if self._need_anchor or self._last_q is None or stale:
                self._reanchor_locked()
            # Rate limit: scale the whole step so every joint stays within speed * dt.
            step = q_arr - self._last_q  # (6,)
            max_step = self._speed * min(dt, self.config.max_command_dt_s)  # (6,)
            ratio = float(np.max(np.abs(step) / max_step))
            q_out = q_arr
            if ratio > 1.0:
                if not self.within_joint_limits(self._last_q):
                    # The intermediate point would leave the limits: refuse instead of jumping.
                    self._stats.rejected_joint_limit += 1
                    raise SafetyViolation(
                        "joint_limit",
                        f"measured pose {np.round(self._last_q, 4).tolist()} rad is outside the configured "
                        "joint limits; jog the arm inside them before streaming",
                    )
                q_out = self._last_q + step / ratio
                # Clip rounding noise: the step never exceeds max_step, q never leaves the limits
                # (both ends are inside the convex box, so this moves q_out by ~1e-16 at most).
                q_out = np.clip(q_out, self._last_q - max_step, self._last_q + max_step)
                q_out = np.clip(q_out, self._lower, self._upper)
                self._reject_outside_workspace(q_out, "rate-limited target")
                self._stats.rate_limited += 1
            self._arm.servo_joint(q_out.copy(), dt)
            self._last_q = q_out.copy()
            self._last_accept_s = now_s
            self._streaming = True
            self._stats.accepted += 1
            return q_out.copy()

    def set_gripper(self, closed_fraction: float) -> None:
        """Forward a gripper command in `gripper_range` (0 open .. 1 closed).

        Raises SafetyViolation("gripper") for a non-numeric, non-finite or out-of-range value,
        SafetyViolation("halted") while halted; the arm receives nothing then.
        """
        with self._lock:
            if not self._connected:
                raise ArmNotConnectedError("SafeArm.set_gripper before connect()")
            if self._halted:
                self._stats.rejected_gripper += 1
                raise SafetyViolation("halted", f"arm halted ({self._halt_reason}); call rearm()")
            try:
                g = float(closed_fraction)
            except (TypeError, ValueError) as e:
                self._stats.rejected_gripper += 1
                raise SafetyViolation("gripper", f"gripper command must be a number, got {closed_fraction!r}") from e
            lo, hi = self.config.gripper_range
            if not np.isfinite(g) or not lo <= g <= hi:
                self._stats.rejected_gripper += 1
                raise SafetyViolation("gripper", f"gripper command must be finite in [{lo}, {hi}], got {closed_fraction!r}")
            self._arm.set_gripper(g)
            self._last_gripper = g
            self._stats.gripper_commands += 1

    def stop(self) -> None:
        """Stop streaming (servoStop); the next command is rate-limited from the measured pose."""
        with self._lock:
            self._stats.stops += 1
            self._stop_locked()

    def disconnect(self) -> None:
        """Stop and disconnect the arm; idempotent."""
        with self._lock:
            self._connected = False
            self._streaming = False
            self._need_anchor = True
            self._arm.disconnect()

    # ------------------------------------------------------------------ watchdog / stops
    def check_watchdog(self) -> bool:
        """Stop the arm if no joint command was accepted within `watchdog_timeout_s`.

        Call every servo tick. Stops once per stream: returns True only on the call that
        stopped the arm, False otherwise (also when idle or already stopped).
        """
        with self._lock:
            if not self._connected or not self._streaming or self._last_accept_s is None:
                return False
            age_s = self._clock() - self._last_accept_s
            if age_s <= self.config.watchdog_timeout_s:
                return False
            log.warning(
                "watchdog: no command for %.3f s (> %.3f s), stopping the arm",
                age_s,
                self.config.watchdog_timeout_s,
            )
            self._stats.watchdog_stops += 1
            self._stop_locked()
            return True

    def check_protective_stop(self) -> bool:
        """Read the measured state; on a protective/emergency stop halt SafeArm.

        Halting stops streaming and rejects every command until `rearm()`. Returns True only
        on the call that entered the halt.
        """
        with self._lock:
            if not self._connected or self._halted:
                return False
            st = self._arm.state()
            if not st.protective_stop:
                return False
            self._enter_halt_locked("protective stop reported by the arm")
            return True

    def rearm(self) -> None:
        """Leave the halted state after the stop was cleared on the controller.

        Re-anchors to the measured pose. Raises SafetyViolation("halted") if the arm still
        reports a protective stop.
        """
        with self._lock:
            if not self._connected:
                raise ArmNotConnectedError("SafeArm.rearm before connect()")
            st = self._arm.state()
            if st.protective_stop:
                raise SafetyViolation("halted", "the arm still reports a protective stop; clear it on the controller first")
            self._halted = False
            self._halt_reason = ""
            self._reanchor_locked()
            log.info("SafeArm re-armed at q=%s", np.round(self._last_q, 4).tolist())

    # ------------------------------------------------------------------ internals
    def _reject_outside_workspace(self, q: np.ndarray, what: str) -> None:
        p = self.tcp_position(q)
        if np.all(p >= self._wmin) and np.all(p <= self._wmax):
            return
        self._stats.rejected_workspace += 1
        raise SafetyViolation(
            "workspace",
            f"{what} TCP {np.round(p, 4).tolist()} m outside workspace box "
            f"{list(self.config.workspace_min_m)}..{list(self.config.workspace_max_m)} m (UR base frame)",
        )

    def _reanchor_locked(self) -> ArmState:
        st = self._arm.state()
        q = np.asarray(st.q, dtype=float)
        if q.shape != (N_JOINTS,) or not np.all(np.isfinite(q)):
            raise SafetyViolation("invalid", f"measured joint state must be finite (6,), got {q!r}")
        self._last_q = q.copy()
        self._need_anchor = False
        self._stats.reanchors += 1
        return st

    def _stop_locked(self) -> None:
        self._streaming = False
        self._need_anchor = True
        self._last_accept_s = None
        self._arm.stop()

    def _enter_halt_locked(self, reason: str) -> None:
        log.error("SafeArm halted: %s; commands are refused until rearm()", reason)
        self._halted = True
        self._halt_reason = reason
        self._stats.protective_stops += 1
        self._stop_locked()
