"""`SafeArm`: the safety layer every arm command goes through (docs/safety.md).

The arm driver owns safety, not the policy. `SafeArm` wraps any `robot.arm.Arm` (MuJoCo or
ur_rtde) and itself implements `Arm`. Per joint command (servoJ-style target `q`, 6 rad):

1. input converted by `robot.commands` (real numbers only, shape (6,), finite; dt_s a real
   number in [min_command_dt_s, max_command_dt_s])   -> else reject ("invalid"/"non_finite")
2. any joint outside `SafetyConfig.joint_limits_rad`   -> reject ("joint_limit")
3. TCP of the target outside the workspace box (FK)   -> reject ("workspace")
4. step from the anchor faster than the joint speed limit over the time actually elapsed
   (`robot.rate_limit.JointRateLimiter`: speed x min(dt_s, max_command_dt_s, elapsed)) -> the
   step is scaled down (direction kept) and counted in `stats.rate_limited`
5. TCP of the rate-limited target outside the box      -> reject ("workspace")

A rejected command raises `SafetyViolation` and nothing reaches the arm; no other exception
type escapes for bad input. The anchor is the previous forwarded target while the stream is
live, and the *measured* pose, read on the first command after `connect()`, `rearm()`, any stop
(watchdog, `stop()`, protective stop), a stale stream (no command for longer than the watchdog
timeout) or a disconnect, so motion never resumes with a jump, even when the arm was moved
outside this layer (freedrive, pendant, another client) in between.

Arming is all-or-nothing: `connect()` either succeeds (state readable and finite) or leaves
SafeArm disconnected; `rearm()` either succeeds or leaves it halted. A protective/emergency
stop reported by the arm (also one already active at connect) halts `SafeArm`: commands are
rejected ("halted") until a successful `rearm()`.

Time: the watchdog (`check_watchdog`, every servo tick) and the speed limit read an injected
clock through `robot.monotonic_clock.MonotonicClock`, which re-bases a clock that steps back
(elapsed time never runs backwards) and refuses a non-finite reading (reason "clock").

Thread-safe: one lock (`SafeArm._lock`, an RLock, taken last: SafeArm calls into the arm while
holding it, never the other way round) serialises commands, watchdog checks and stops.
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
from dynaflip_ros.robot.arm import Arm, ArmNotConnectedError, ArmState
from dynaflip_ros.robot.commands import SafetyViolation, check_servo_period, joint_vector, real_scalar
from dynaflip_ros.robot.kinematics import forward_kinematics
from dynaflip_ros.robot.monotonic_clock import MonotonicClock
from dynaflip_ros.robot.rate_limit import JointRateLimiter

__all__ = ["SafeArm", "SafetyStats", "SafetyViolation"]

log = logging.getLogger(__name__)


@dataclass
class SafetyStats:
    """Counters of `SafeArm` (monotonic; read a snapshot with `SafeArm.stats`).

    commands: joint commands received; accepted: joint commands forwarded to the arm;
    rejected_invalid: wrong type / shape / bad dt_s; rejected_nan: NaN or inf;
    rejected_joint_limit; rejected_workspace; rejected_halted: commands while halted by a
    protective stop; rejected_clock: commands refused because the clock gave no usable reading;
    rate_limited: accepted commands whose step was clamped to the speed limit;
    gripper_commands: gripper commands forwarded; rejected_gripper; watchdog_stops;
    protective_stops: protective/emergency stops seen; stops: explicit stop() calls;
    reanchors: times the anchor was set to the measured pose; clock_steps_back: times the
    injected clock stepped back (re-based).
    """

    commands: int = 0
    accepted: int = 0
    rejected_invalid: int = 0
    rejected_nan: int = 0
    rejected_joint_limit: int = 0
    rejected_workspace: int = 0
    rejected_halted: int = 0
    rejected_clock: int = 0
    rate_limited: int = 0
    gripper_commands: int = 0
    rejected_gripper: int = 0
    watchdog_stops: int = 0
    protective_stops: int = 0
    stops: int = 0
    reanchors: int = 0
    clock_steps_back: int = 0

    @property
    def rejected(self) -> int:
        """All rejected joint commands."""
        return (
            self.rejected_invalid
            + self.rejected_nan
            + self.rejected_joint_limit
            + self.rejected_workspace
            + self.rejected_halted
            + self.rejected_clock
        )


def _measured_q(st: ArmState) -> np.ndarray:
    """(6,) the measured joints of a state reading, rad; SafetyViolation("invalid") unless finite (6,)."""
    return joint_vector(st.q, "measured joint state", non_finite_reason="invalid")


# SafetyViolation.reason -> the SafetyStats counter of a refused joint command.
_REJECT_COUNTER = {
    "invalid": "rejected_invalid",
    "non_finite": "rejected_nan",
    "joint_limit": "rejected_joint_limit",
    "workspace": "rejected_workspace",
    "halted": "rejected_halted",
    "clock": "rejected_clock",
}


class SafeArm:
    """Wraps an `Arm` and enforces `SafetyConfig` on every command (implements `Arm`).

    Args:
        arm: the arm to protect (e.g. `sim.arm.SimArm`, `robot.ur_rtde_arm.URRtdeArm`).
        config: limits (`configs.safety.SafetyConfig`).
        clock: time source in seconds for the watchdog and the per-time speed limit. Use
            `time.monotonic` for a real arm; in a lock-step simulation pass the simulation clock
            (e.g. `lambda: env.sim_time_s`). A clock that steps back is re-based
            (`robot.monotonic_clock`), never trusted.

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
        self._clock = MonotonicClock(clock)
        self._lock = threading.RLock()  # see the module docstring for the lock order
        self._stats = SafetyStats()
        self._lower = self.config.joint_lower_rad  # (6,)
        self._upper = self.config.joint_upper_rad  # (6,)
        self._wmin = np.array(self.config.workspace_min_m)  # (3,)
        self._wmax = np.array(self.config.workspace_max_m)  # (3,)
        self._tool = self.config.tool_transform  # (4, 4)
        self._dh = self.config.dh
        # The one owner of the anchor and of the elapsed-time step bound.
        self._limiter = JointRateLimiter(self.config.joint_speed_limit_rad_s, self.config.max_command_dt_s)
        self._connected = False
        self._streaming = False  # a command was forwarded since the last stop
        self._halted = False
        self._halt_reason = ""
        self._last_gripper: float | None = None  # last gripper command forwarded
        # Joint commands refused since the last forwarded one, and the last refusal's message:
        # the watchdog names them, since a stream that stops because every command is refused
        # (e.g. a policy driving below the workspace floor) looks like a silent one otherwise.
        self._refused_since_forward = 0
        self._last_refusal = ""

    # ------------------------------------------------------------------ properties
    @property
    def arm(self) -> Arm:
        """The wrapped arm. Do not command it directly."""
        return self._arm

    @property
    def stats(self) -> SafetyStats:
        """Snapshot (copy) of the counters."""
        with self._lock:
            return dataclasses.replace(self._stats, clock_steps_back=self._clock.steps_back)

    @property
    def last_commanded_q(self) -> np.ndarray | None:
        """(6,) the anchor of the next step, rad: the last target forwarded to the arm, or the
        measured pose read after a stop; None when the next command re-reads the measured pose
        (after connect, rearm, a stop or a disconnect)."""
        with self._lock:
            return self._limiter.anchor

    @property
    def last_gripper_command(self) -> float | None:
        """Last gripper command forwarded to the arm (0 open .. 1 closed); None if none yet."""
        with self._lock:
            return self._last_gripper

    @property
    def halted(self) -> bool:
        """True after a protective/emergency stop (or a failed re-arm) until `rearm()` succeeds."""
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
        """Connect the arm and check that its state reads finite. The first command is anchored
        at the pose measured when that command arrives, not at connect: the arm may be moved in
        between (freedrive, the pendant).

        All-or-nothing: on any failure SafeArm stays disconnected (commands raise
        ArmNotConnectedError). Raises ArmError from the arm, or SafetyViolation("invalid") if
        the measured q is not a finite (6,) vector. A protective stop already active halts
        SafeArm (latched until `rearm()`), also when the connect fails.
        """
        with self._lock:
            was_streaming = self._streaming
            self._connected = False
            self._streaming = False
            self._limiter.invalidate()
            try:
                self._arm.connect()
                st = self._arm.state()
                if st.protective_stop:
                    self._enter_halt_locked("protective stop active at connect")
                _measured_q(st)
            except BaseException:
                if was_streaming:
                    self._best_effort_stop_locked("connect failed")
                raise
            self._connected = True

    def state(self) -> ArmState:
        """The arm's measured state (pass-through)."""
        return self._arm.state()

    def servo_joint(self, q: np.ndarray, dt_s: float) -> np.ndarray:
        """Check and forward one joint target (servoJ).

        Args:
            q: (6,) joint target, rad, UR joint order (real numbers; see `robot.commands`).
            dt_s: declared servo period, seconds (0.008 on CB3), a real number in
                [min_command_dt_s, max_command_dt_s]. The speed limit uses the time actually
                elapsed since the last forwarded command when that is shorter.
        Returns:
            (6,) the target actually forwarded (rate-limited if the step was too fast).
        Raises:
            SafetyViolation: invalid/non-finite input, joint limit, workspace, halted, unusable
                clock, or an unreadable measured pose when re-anchoring; the arm received nothing.
            ArmNotConnectedError: before connect() / after a failed connect().
            ArmError: from the arm (state read or the command itself).
        """
        with self._lock:
            if not self._connected:
                raise ArmNotConnectedError("SafeArm.servo_joint before a successful connect()")
            self._stats.commands += 1
            try:
                q_out = self._servo_joint_locked(q, dt_s)
            except SafetyViolation as e:
                counter = _REJECT_COUNTER.get(e.reason, "rejected_invalid")
                setattr(self._stats, counter, getattr(self._stats, counter) + 1)
                self._refused_since_forward += 1
                self._last_refusal = str(e)
                raise
            self._refused_since_forward = 0
            return q_out

    def _servo_joint_locked(self, q: np.ndarray, dt_s: float) -> np.ndarray:
        if self._halted:
            raise SafetyViolation("halted", f"arm halted ({self._halt_reason}); clear the stop and call rearm()")
        cfg = self.config
        dt = check_servo_period(dt_s, cfg.min_command_dt_s, cfg.max_command_dt_s)
        q_arr = joint_vector(q)
        if not self.within_joint_limits(q_arr):
            bad = np.nonzero((q_arr < self._lower) | (q_arr > self._upper))[0]
            raise SafetyViolation(
                "joint_limit",
                f"joints {bad.tolist()} outside limits: q={np.round(q_arr[bad], 4).tolist()} rad, "
                f"limits={[cfg.joint_limits_rad[j] for j in bad]}",
            )
        self._reject_outside_workspace(q_arr, "target")
        now_s = self._clock()
        # A stream that went stale (no command for longer than the watchdog timeout) may have
        # been stopped by the arm itself or moved: measure the step from the measured pose.
        last_s = self._limiter.last_command_s
        if self._streaming and last_s is not None and now_s - last_s > cfg.watchdog_timeout_s:
            self._limiter.invalidate()
        anchored_now = self._limiter.needs_anchor
        if anchored_now:
            self._anchor_at_measured_locked()
        try:
            return self._limit_and_forward_locked(q_arr, dt, now_s)
        except BaseException:
            if anchored_now:  # a measured anchor serves only the command that read it
                self._limiter.invalidate()
            raise

    def _limit_and_forward_locked(self, q_arr: np.ndarray, dt: float, now_s: float) -> np.ndarray:
        q_out, clamped = self._limiter.limit(q_arr, dt, now_s)
        if clamped:
            anchor = self._limiter.anchor
            if not self.within_joint_limits(anchor):
                # The intermediate point would leave the limits: refuse instead of jumping.
                raise SafetyViolation(
                    "joint_limit",
                    f"measured pose {np.round(anchor, 4).tolist()} rad is outside the configured "
                    "joint limits; jog the arm inside them before streaming",
                )
            # Both ends lie inside the convex limit box; clip the ~1e-16 rounding noise.
            q_out = np.clip(q_out, self._lower, self._upper)
            self._reject_outside_workspace(q_out, "rate-limited target")
        self._arm.servo_joint(q_out.copy(), dt)
        self._limiter.commit(q_out, now_s)
        self._streaming = True
        self._stats.accepted += 1
        if clamped:
            self._stats.rate_limited += 1
        return q_out.copy()

    def set_gripper(self, closed_fraction: float) -> None:
        """Forward a gripper command in `gripper_range` (0 open .. 1 closed).

        Raises SafetyViolation("gripper") for a non-real, non-finite or out-of-range value,
        SafetyViolation("halted") while halted; the arm receives nothing then.
        """
        with self._lock:
            if not self._connected:
                raise ArmNotConnectedError("SafeArm.set_gripper before a successful connect()")
            if self._halted:
                self._stats.rejected_gripper += 1
                raise SafetyViolation("halted", f"arm halted ({self._halt_reason}); call rearm()")
            lo, hi = self.config.gripper_range
            try:
                g = real_scalar(closed_fraction, "gripper command", reason="gripper")
                if not lo <= g <= hi:  # NaN fails this too
                    raise SafetyViolation(
                        "gripper", f"gripper command must be finite in [{lo}, {hi}], got {closed_fraction!r:.40}")
            except SafetyViolation:
                self._stats.rejected_gripper += 1
                raise
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
            self._limiter.invalidate()
            self._arm.disconnect()

    # ------------------------------------------------------------------ watchdog / stops
    def check_watchdog(self) -> bool:
        """Stop the arm if no joint command was forwarded within `watchdog_timeout_s`.

        Call every servo tick. Fires exactly when the elapsed time (re-based clock) exceeds the
        timeout; an unusable clock reading stops a live stream at once (fail safe). Stops once
        per stream: returns True only on the call that stopped the arm, False otherwise (also
        when idle or already stopped). The warning it logs names the joint commands refused
        since the last forwarded one (count and the last refusal), when there were any: a stream
        whose every command is refused stops the same way as a silent one.
        """
        with self._lock:
            last_s = self._limiter.last_command_s
            if not self._connected or not self._streaming or last_s is None:
                return False
            try:
                age_s = self._clock() - last_s
            except SafetyViolation as e:
                log.error("watchdog: %s; stopping the arm", e)
            else:
                if age_s <= self.config.watchdog_timeout_s:
                    return False
                log.warning(
                    "watchdog: no command forwarded for %.3f s (> %.3f s)%s, stopping the arm",
                    age_s,
                    self.config.watchdog_timeout_s,
                    self._refusal_summary_locked(),
                )
            self._stats.watchdog_stops += 1
            self._stop_locked()
            return True

    def _refusal_summary_locked(self) -> str:
        """'; N command(s) refused since the last forwarded one, the last: [reason] ...' or ''."""
        if self._refused_since_forward == 0:
            return ""
        return f"; {self._refused_since_forward} command(s) refused since the last forwarded one, the last: {self._last_refusal}"

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

        All-or-nothing: checks first that the arm reports no protective stop and a finite
        measured pose, then un-halts; the next command is anchored at the pose measured then.
        On failure SafeArm is (or stays) halted and nothing reaches the arm until a successful
        re-arm. Raises ArmNotConnectedError before connect(), SafetyViolation("halted") if the
        arm still reports a protective stop, SafetyViolation("invalid") for a non-finite
        measured pose, ArmError when the state cannot be read.
        """
        with self._lock:
            if not self._connected:
                raise ArmNotConnectedError("SafeArm.rearm before a successful connect()")
            try:
                st = self._arm.state()
                if st.protective_stop:
                    raise SafetyViolation(
                        "halted", "the arm still reports a protective stop; clear it on the controller first")
                q = _measured_q(st)
            except BaseException as e:
                if not self._halted:
                    try:
                        self._enter_halt_locked(f"re-arm failed: {e}", protective=False)
                    except Exception:  # noqa: BLE001 - the halt is latched; raise the re-arm error
                        log.exception("SafeArm: stopping the arm after a failed re-arm failed")
                raise
            self._halted = False
            self._halt_reason = ""
            self._streaming = False
            self._limiter.invalidate()
            log.info("SafeArm re-armed at q=%s", np.round(q, 4).tolist())

    # ------------------------------------------------------------------ internals
    def _reject_outside_workspace(self, q: np.ndarray, what: str) -> None:
        p = self.tcp_position(q)
        if np.all(p >= self._wmin) and np.all(p <= self._wmax):
            return
        raise SafetyViolation(
            "workspace",
            f"{what} TCP {np.round(p, 4).tolist()} m outside workspace box "
            f"{list(self.config.workspace_min_m)}..{list(self.config.workspace_max_m)} m (UR base frame)",
        )

    def _anchor_at_measured_locked(self) -> None:
        """Anchor the rate limiter at the measured pose (the only place that reads it for that).
        A protective stop seen here halts. Raises SafetyViolation for a non-finite pose or a
        stop, ArmError when the state cannot be read; the anchor stays unset then."""
        st = self._arm.state()
        if st.protective_stop:
            self._enter_halt_locked("protective stop reported by the arm")
            raise SafetyViolation("halted", "the arm reports a protective stop; clear it and call rearm()")
        self._limiter.anchor_at(_measured_q(st))
        self._stats.reanchors += 1

    def _stop_locked(self) -> None:
        self._streaming = False
        self._limiter.invalidate()
        self._arm.stop()

    def _best_effort_stop_locked(self, why: str) -> None:
        try:
            self._stop_locked()
        except Exception:  # noqa: BLE001 - already failing; the original error is raised
            log.exception("SafeArm: stopping the arm after '%s' failed", why)

    def _enter_halt_locked(self, reason: str, protective: bool = True) -> None:
        """Latch the halt (flags first, so a failing stop cannot leave SafeArm armed), then stop."""
        log.error("SafeArm halted: %s; commands are refused until rearm()", reason)
        self._halted = True
        self._halt_reason = reason
        if protective:
            self._stats.protective_stops += 1
        self._stop_locked()
