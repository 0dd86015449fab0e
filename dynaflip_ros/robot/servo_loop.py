"""The fixed-rate servo loop: interpolated action chunk -> SafeArm (docs/timing.md).

Each tick samples the `ActionChunkInterpolator`, forwards the joint target (servoJ) and gripper
command through `SafeArm`, and runs the watchdog / protective-stop checks. The loop runs at the
controller rate (125 Hz on a CB3, 500 Hz on an e-Series; docs/hardware.md §1.6), either

- synchronously: the caller calls `tick(now_s)` (the lock-step simulation runner does this), or
- in its own daemon thread: `start()` / `stop()`, scheduled on absolute deadlines
  `t0 + k / rate_hz` of a monotonic clock (no drift), with period / jitter / overrun statistics.

A refused command (SafetyViolation) is counted and logged once per reason and the arm holds
(nothing is forwarded). In the thread, other exceptions from the arm never kill the loop; they
are counted and logged, and after `max_consecutive_errors` in a row the arm is stopped.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

import numpy as np

from dynaflip_ros.robot.interpolation import ActionChunkInterpolator
from dynaflip_ros.robot.safety import SafeArm, SafetyViolation

log = logging.getLogger(__name__)

# Number of recent periods kept for the jitter percentiles (16 s at 125 Hz).
_STATS_WINDOW = 2000


@dataclass
class ServoLoopStats:
    """Counters and timing of a `ServoLoop` (snapshot via `ServoLoop.stats`).

    ticks: ticks run; commands_sent: joint targets forwarded; holds: ticks with nothing to follow;
    expired_chunks: chunks dropped because they got too old to execute (`expired`);
    safety_rejections: ticks whose target SafeArm refused (by reason in `rejections_by_reason`);
    errors: other exceptions (thread mode); watchdog_stops / protective_stops seen by the loop;
    overruns: deadlines missed by more than one period (those ticks are skipped, not bunched);
    period_mean_s / period_std_s: measured tick-to-tick period over the recent window;
    jitter_p99_s / jitter_max_s: 99th percentile / max of |tick start - deadline| over the window;
    tick_duration_mean_s / tick_duration_max_s: time spent inside tick().
    """

    ticks: int = 0
    commands_sent: int = 0
    holds: int = 0
    expired_chunks: int = 0
    safety_rejections: int = 0
    rejections_by_reason: dict = dataclasses.field(default_factory=dict)
    errors: int = 0
    watchdog_stops: int = 0
    protective_stops: int = 0
    overruns: int = 0
    period_mean_s: float = float("nan")
    period_std_s: float = float("nan")
    jitter_p99_s: float = float("nan")
    jitter_max_s: float = float("nan")
    tick_duration_mean_s: float = float("nan")
    tick_duration_max_s: float = float("nan")


class ServoLoop:
    """Streams interpolated targets to a `SafeArm` at `rate_hz`.

    Args:
        safe_arm: the connected `SafeArm` (never a bare Arm).
        interpolator: the `ActionChunkInterpolator` (n_dims 7: 6 joints + gripper) that the
            policy side feeds with `add_chunk`.
        rate_hz: loop rate (125.0 for CB3, 500.0 for e-Series).
        clock: monotonic seconds; the same clock as the chunk timestamps.
        dt_s: servo time passed to servo_joint; default 1 / rate_hz.
        on_tick: optional callback `on_tick(now_s, target)` after every tick; target is the
            (7,) sampled target or None (hold). Exceptions from it are logged, not raised, in
            thread mode.
        max_consecutive_errors: arm exceptions in a row (thread mode) before the arm is stopped.
        gripper_deadband: a gripper command is forwarded only when it differs from the last one
            sent by more than this (avoids flooding a socket gripper at the servo rate).
        check_protective_stop: read the arm state each tick and halt on a protective stop.
        speed_scaling: optional callable returning the controller's speed scaling 0..1 (speed
            slider x safety scaling, `URRtdeArm.speed_scaling`). The action-chunk timeline is
            then followed in *trajectory time*, which advances at that rate: with the slider at
            50 % the chunk is executed at half speed, at 0 % the target freezes, and when the
            slider comes back the arm continues from where it is instead of jumping to where the
            wall clock says it should be. Map chunk times with `to_trajectory_time()`.
        end_hold_s: when the chunk runs out, keep sending its last target for this long (s)
            before going quiet (after which the watchdog stops the arm): an arm that lags its
            targets (UR servoj's lookahead filter) then settles on the chunk's final waypoint
            instead of being stopped short of it. 0 for the simulated arm.
        expired: optional `expired(now_s) -> bool`: True when the chunk being followed is too
            old to execute (its observation older than a time-to-live, `ArmDriver`); the loop
            then drops the chunk's remaining actions, re-anchors the interpolator at the last
            target (the next chunk starts from there) and holds that target (within `end_hold_s`).
        command_lead_s: sample the chunk this far ahead of now (s, >= 0): compensates the delay
            of the controller's servo filter (servoj's lookahead_time makes a UR lag its targets
            by roughly that much), so the arm reaches each action near its time stamp. 0 for
            the simulated arm (no filter); measure it with benchmarks/bench_rtde_tracking.py.
    """

    def __init__(
        self,
        safe_arm: SafeArm,
        interpolator: ActionChunkInterpolator,
        rate_hz: float = 125.0,
        clock: Callable[[], float] = time.monotonic,
        dt_s: float | None = None,
        on_tick: Callable[[float, np.ndarray | None], None] | None = None,
        max_consecutive_errors: int = 5,
        gripper_deadband: float = 1e-3,
        check_protective_stop: bool = True,
        speed_scaling: Callable[[], float] | None = None,
        command_lead_s: float = 0.0,
        end_hold_s: float = 0.0,
        expired: Callable[[float], bool] | None = None,
    ) -> None:
        if not isinstance(safe_arm, SafeArm):
            raise TypeError(f"safe_arm must be a robot.safety.SafeArm, got {type(safe_arm).__name__}")
        if not isinstance(interpolator, ActionChunkInterpolator):
            raise TypeError(f"interpolator must be an ActionChunkInterpolator, got {type(interpolator).__name__}")
        if interpolator.n_dims != 7:
            raise ValueError(f"interpolator.n_dims must be 7 (6 joints + gripper), got {interpolator.n_dims}")
        rate_hz = float(rate_hz)
        if not np.isfinite(rate_hz) or not 1.0 <= rate_hz <= 2000.0:
            raise ValueError(f"rate_hz must be in [1, 2000], got {rate_hz!r}")
        if dt_s is not None and (not np.isfinite(dt_s) or dt_s <= 0):
            raise ValueError(f"dt_s must be finite and > 0, got {dt_s!r}")
        if not isinstance(max_consecutive_errors, int) or max_consecutive_errors < 1:
            raise ValueError(f"max_consecutive_errors must be an int >= 1, got {max_consecutive_errors!r}")
        if not np.isfinite(gripper_deadband) or gripper_deadband < 0:
            raise ValueError(f"gripper_deadband must be finite and >= 0, got {gripper_deadband!r}")
        self.safe = safe_arm
        self.interp = interpolator
        self.rate_hz = rate_hz
        self.period_s = 1.0 / rate_hz
        self.dt_s = float(dt_s) if dt_s is not None else self.period_s
        self._clock = clock
        self.on_tick = on_tick
        self.max_consecutive_errors = max_consecutive_errors
        self.gripper_deadband = float(gripper_deadband)
        self.check_protective_stop = bool(check_protective_stop)
        self.speed_scaling = speed_scaling
        if not (math.isfinite(command_lead_s) and 0.0 <= command_lead_s <= 0.5):
            raise ValueError(f"command_lead_s must be in [0, 0.5] s, got {command_lead_s!r}")
        self.command_lead_s = float(command_lead_s)
        if not (math.isfinite(end_hold_s) and 0.0 <= end_hold_s <= 1.0):
            raise ValueError(f"end_hold_s must be in [0, 1] s, got {end_hold_s!r}")
        self.end_hold_s = float(end_hold_s)
        self.expired = expired
        self._held_target: np.ndarray | None = None  # last sampled target and when (loop clock)
        self._held_since_s = 0.0
        self._traj_lag_s = 0.0  # loop clock - trajectory clock (grows while speed scaling < 1)
        self._last_tick_now: float | None = None
        self._last_scale = 1.0
        self._lock = threading.Lock()  # guards stats
        self._tick_lock = threading.Lock()  # one tick at a time (thread vs. synchronous rearm)
        self._stats = ServoLoopStats()
        self._logged_reasons: set[str] = set()
        self._last_gripper: float | None = None
        self._periods: deque[float] = deque(maxlen=_STATS_WINDOW)
        self._jitters: deque[float] = deque(maxlen=_STATS_WINDOW)
        self._durations: deque[float] = deque(maxlen=_STATS_WINDOW)
        self._thread: threading.Thread | None = None
        self._stop_event = threading.Event()
        self._consecutive_errors = 0

    # ------------------------------------------------------------------ one iteration
    def tick(self, now_s: float | None = None) -> np.ndarray | None:
        """One servo iteration at time now_s (default: the loop's clock).

        protective-stop check -> sample the interpolator -> SafeArm.servo_joint(target[:6], dt_s)
        and set_gripper(target[6]) (a SafetyViolation is counted, logged once per reason, and the
        arm holds) -> watchdog. After a watchdog/protective stop the interpolator is re-anchored
        to the measured pose.

        Returns the (7,) joint target actually forwarded (after rate limiting) + the gripper
        command in force (NaN if none was ever accepted), or None when no joint target was
        forwarded (hold or refused). Exceptions other than SafetyViolation
        (arm failures) propagate.
        """
        now = self._clock() if now_s is None else float(now_s)
        sent = self._timed_tick(now)
        if self.on_tick is not None:
            self.on_tick(now, sent)
        return sent

    def _timed_tick(self, now: float) -> np.ndarray | None:
        t_start = time.perf_counter()
        with self._tick_lock:
            sent = self._tick_locked(now)
        duration = time.perf_counter() - t_start
        with self._lock:
            self._stats.ticks += 1
            self._durations.append(duration)
        return sent

    def to_trajectory_time(self, t_s):
        """Loop-clock time(s) -> trajectory time (what the interpolator is sampled at). Equal to
        the input unless `speed_scaling` slowed the timeline down. Works on floats and arrays."""
        return t_s - self._traj_lag_s

    @property
    def trajectory_lag_s(self) -> float:
        """How far the trajectory timeline is behind the loop clock (speed scaling < 1), s."""
        return self._traj_lag_s

    def _advance_trajectory_clock(self, now: float) -> float:
        if self.speed_scaling is not None and self._last_tick_now is not None:
            try:
                scale = float(self.speed_scaling())
            except Exception:  # noqa: BLE001 - unreadable scaling: freeze the timeline (safe side)
                scale = 0.0
            scale = min(max(scale, 0.0), 1.0) if math.isfinite(scale) else 0.0
            self._last_scale = scale
            self._traj_lag_s += (1.0 - scale) * max(0.0, now - self._last_tick_now)
        self._last_tick_now = now
        return now - self._traj_lag_s

    def _tick_locked(self, now: float) -> np.ndarray | None:
        # Protective stop first, so no command is sent to an arm that has just stopped.
        if self.check_protective_stop and self.safe.check_protective_stop():
            with self._lock:
                self._stats.protective_stops += 1
            self._reanchor_interp()
        t_traj = self._advance_trajectory_clock(now)
        if self.expired is not None and self.expired(now):
            if self._held_target is not None:
                self.interp.reset(self._held_target)  # the next chunk starts from the held target
            target = None  # too old to execute: hold the last target (below)
            with self._lock:
                self._stats.expired_chunks += 1
        else:
            target = self.interp.sample(t_traj + self.command_lead_s)
        if target is not None:
            self._held_target, self._held_since_s = target, now
        elif self._held_target is not None and now - self._held_since_s <= self.end_hold_s:
            target = self._held_target  # let a lagging arm settle on the final waypoint
        sent = None
        if target is None:
            with self._lock:
                self._stats.holds += 1
        else:
            try:
                q_sent = self.safe.servo_joint(target[:6], self.dt_s)  # (6,)
            except SafetyViolation as e:
                self._record_rejection(e)
            else:
                with self._lock:
                    self._stats.commands_sent += 1
                g = float(target[6])
                if self._last_gripper is None or abs(g - self._last_gripper) > self.gripper_deadband:
                    try:
                        self.safe.set_gripper(g)
                        self._last_gripper = g
                    except SafetyViolation as e:
                        self._record_rejection(e)
                        g = self._last_gripper if self._last_gripper is not None else float("nan")
                else:
                    g = self._last_gripper
                sent = np.concatenate([q_sent, [g]])  # (7,)
        if self.safe.check_watchdog():
            with self._lock:
                self._stats.watchdog_stops += 1
            self._reanchor_interp()
        return sent

    def reanchor(self) -> None:
        """Drop queued actions and anchor the interpolator at the measured joints + the gripper
        command in force (after the arm was moved outside the loop, e.g. a sim reset). SafeArm
        re-anchors its rate limiter itself after a stop."""
        with self._tick_lock:
            self._reanchor_interp()

    def rearm(self) -> None:
        """After a protective stop was cleared: `SafeArm.rearm()` and re-anchor the interpolator."""
        with self._tick_lock:
            self.safe.rearm()
            self._reanchor_interp()

    # ------------------------------------------------------------------ thread mode
    def start(self, rt_priority: int = 0) -> None:
        """Run `tick` at rate_hz in a daemon thread. Raises RuntimeError if already running.

        rt_priority > 0 asks for SCHED_FIFO at that priority for the loop thread (Linux; needs
        CAP_SYS_NICE or an rtprio ulimit, see docker/compose.yaml); refused -> a warning and
        normal scheduling."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("ServoLoop already running")
        if not isinstance(rt_priority, int) or not 0 <= rt_priority <= 99:
            raise ValueError(f"rt_priority must be an int in [0, 99], got {rt_priority!r}")
        self._rt_priority = rt_priority
        self._stop_event.clear()
        self._thread = threading.Thread(target=self._run, name="servo_loop", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 1.0, stop_arm: bool = True) -> None:
        """Stop the thread (join up to timeout_s) and, by default, stop the arm (servoStop)."""
        self._stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.error("servo loop thread did not stop within %.2f s", timeout_s)
            self._thread = None
        if stop_arm:
            try:
                self.safe.stop()
            except Exception:  # noqa: BLE001 - stopping must not raise on a dead connection
                log.exception("SafeArm.stop() failed while stopping the servo loop")

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def stats(self) -> ServoLoopStats:
        """Snapshot of counters and timing statistics over the recent window."""
        with self._lock:
            s = dataclasses.replace(self._stats, rejections_by_reason=dict(self._stats.rejections_by_reason))
            periods = np.array(self._periods)
            jitters = np.array(self._jitters)
            durations = np.array(self._durations)
        if periods.size:
            s.period_mean_s = float(periods.mean())
            s.period_std_s = float(periods.std())
        if jitters.size:
            s.jitter_p99_s = float(np.percentile(jitters, 99))
            s.jitter_max_s = float(jitters.max())
        if durations.size:
            s.tick_duration_mean_s = float(durations.mean())
            s.tick_duration_max_s = float(durations.max())
        return s

    def _run(self) -> None:
        if getattr(self, "_rt_priority", 0) > 0:
            import os

            try:  # pid 0 = the calling thread on Linux
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(self._rt_priority))
            except (AttributeError, OSError) as e:
                log.warning("servo loop: SCHED_FIFO %d refused (%s); normal scheduling", self._rt_priority, e)
        period = self.period_s
        t0 = self._clock()
        k = 0
        prev_start: float | None = None
        while not self._stop_event.is_set():
            deadline = t0 + k * period
            delay = deadline - self._clock()
            if delay > 0 and self._stop_event.wait(delay):
                break
            start = self._clock()
            lateness = start - deadline
            if lateness > period:
                # Missed at least one whole period: skip the missed deadlines rather than bunching.
                skipped = int(lateness // period)
                with self._lock:
                    self._stats.overruns += skipped
                k += skipped
                deadline = t0 + k * period
                lateness = start - deadline
            with self._lock:
                self._jitters.append(abs(lateness))
                if prev_start is not None:
                    self._periods.append(start - prev_start)
            prev_start = start
            try:
                sent = self._timed_tick(start)
                self._consecutive_errors = 0
            except Exception as e:  # noqa: BLE001 - the loop must survive arm failures
                self._on_error(e)
            else:
                if self.on_tick is not None:
                    try:
                        self.on_tick(start, sent)
                    except Exception:  # noqa: BLE001 - a callback must not stop the servo loop
                        log.exception("servo loop on_tick callback failed")
            k += 1

    def _on_error(self, e: Exception) -> None:
        self._consecutive_errors += 1
        with self._lock:
            self._stats.errors += 1
            n_errors = self._stats.errors
        if n_errors <= 10 or n_errors % 1000 == 0:
            log.error("servo tick failed (%d so far): %s: %s", n_errors, type(e).__name__, e)
        if self._consecutive_errors == self.max_consecutive_errors:
            log.error("%d consecutive servo errors: stopping the arm", self._consecutive_errors)
            try:
                self.safe.stop()
                self._reanchor_interp()
            except Exception:  # noqa: BLE001
                log.exception("stopping the arm after repeated errors failed")

    # ------------------------------------------------------------------ internals
    def _record_rejection(self, e: SafetyViolation) -> None:
        with self._lock:
            self._stats.safety_rejections += 1
            by = self._stats.rejections_by_reason
            by[e.reason] = by.get(e.reason, 0) + 1
            first = e.reason not in self._logged_reasons
            self._logged_reasons.add(e.reason)
        if first:
            log.warning("servo target refused, holding (logged once per reason): %s", e)

    def _reanchor_interp(self) -> None:
        """Drop queued actions and anchor the interpolator at the measured joints + the gripper
        command in force (not the measured closure: a gripper holding an object reads < 1, and
        anchoring there would open it on the next segment)."""
        st = self.safe.state()
        # The arm's own report of the command in force wins (a sim reset reopens the gripper);
        # else the last command we sent; else the measured closure.
        g = st.extra.get("gripper_command", self.safe.last_gripper_command)
        if g is None:
            g = float(np.clip(st.gripper, 0.0, 1.0)) if np.isfinite(st.gripper) else 0.0
        self.interp.reset(np.concatenate([np.asarray(st.q, dtype=float), [g]]))
        self._last_gripper = None
        self._held_target = None
