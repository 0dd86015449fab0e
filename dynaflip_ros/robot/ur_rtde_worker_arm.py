"""`WorkerArm`: the UR arm as the RTDE worker process sees it, the only user of `RTDEControlInterface`.

Inside the worker (`robot.ur_rtde_worker`) two threads may command the controller: the worker's
main thread (servo messages from the node in the direct layout, the stale-command stop,
controller-watchdog kicks, re-arm and freedrive requests) and, when the servo loop runs in the
worker (`ServoCore`), the servo thread. ur_rtde's interfaces are not thread-safe
(docs/ur_rtde_protocol.md §1), so every `rtde_c` call goes through this class under
`_rtde_lock`. That lock is a leaf: nothing else is taken while it is held, and it is held for
one ur_rtde call at a time (a servoJ takes well under a millisecond; a re-arm takes it call by
call, never across its waits). The counter / flag slots this class writes (servo_sent,
servo_refused, servo_errors, stale_stops, watchdog_kicks, streaming, freedrive, the call
maxima) are written under the same lock, so each has one writer at a time.

State comes from the shared-memory slots the worker's state thread writes (`SharedState`), so
`state()` never waits for the controller. Implements `robot.arm.Arm` (+ `speed_scaling`,
`rearm`, `set_freedrive`) for `SafeArm` in the worker.

Timing rules (all `time.monotonic()` seconds): `streaming` is True from the first accepted
servoJ until a servoStop; `stop_if_stale(now)` sends servoStop when streaming and no servoJ was
written for `worker_stale_command_s` (the node froze in the direct layout; the servo thread
stalled in the worker layout); `kick_if_idle(now)` kicks the controller's RTDE watchdog when
nothing was written for half its period and the arm is not streaming.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

import numpy as np

from dynaflip_ros.configs.robot import URRtdeConfig
from dynaflip_ros.robot.arm import ArmError, ArmState
from dynaflip_ros.robot.commands import check_servo_period, joint_vector
from dynaflip_ros.robot.gripper import command_gripper
from dynaflip_ros.robot.ur_rtde_state import (
    RUNTIME_PLAYING, SAFETY_BIT_EMERGENCY, SAFETY_BIT_PROTECTIVE, SAFETY_MODE_NAMES, SAFETY_MODE_NORMAL,
    SAFETY_MODE_REDUCED,
)

log = logging.getLogger("dynaflip_ros.robot.ur_rtde_arm")


class WorkerArm:
    """The controller behind one lock, for the threads of the RTDE worker process.

    Args:
        config: the connection's `URRtdeConfig`.
        rtde_c, rtde_r, dash: the worker's ur_rtde control / receive interfaces and dashboard
            client (rtde_r is only read here while re-arming).
        read_state: `read_state(gripper_command) -> ArmState`: the latest state from shared
            memory (raises ArmError when stale).
        stopped: `stopped() -> bool`: True while the controller will not execute servo targets
            (the state thread's flag).
        counters: `bump(name)` / `raise_to(name, value)` / `set(**flags)` of the shared slots.
        gripper: the worker's `robot.gripper.Gripper` or None.
    """

    def __init__(self, config: URRtdeConfig, rtde_c: Any, rtde_r: Any, dash: Any, read_state,
                 stopped, counters, gripper=None) -> None:
        self.config = config
        self._c, self._r, self._dash = rtde_c, rtde_r, dash
        self._read_state = read_state
        self._stopped = stopped
        self._counters = counters
        self.gripper = gripper
        self._rtde_lock = threading.Lock()  # leaf; every rtde_c call (module docstring)
        self.streaming = False
        self.freedrive = False
        self.last_write_s = time.monotonic()
        self._gripper_cmd: float | None = None
        rate = config.controller_watchdog_hz
        self._kick_period_s = 0.5 / rate if rate > 0 else math.inf

    # ------------------------------------------------------------------ Arm
    def connect(self) -> None:
        """Nothing to do: the worker connected before building this."""

    def disconnect(self) -> None:
        """servoStop (the worker closes the connections itself)."""
        self.stop()

    def state(self) -> ArmState:
        """The latest RTDE sample (`ur_rtde_state.arm_state_from_slots`). Raises ArmError when stale."""
        return self._read_state(self._gripper_cmd)

    @property
    def speed_scaling(self) -> float:
        """Speed slider x speed scaling (0..1); 0.0 if the state is unreadable (freezes the timeline)."""
        try:
            return float(self._read_state(None).extra["speed_scaling"])
        except ArmError:
            return 0.0

    def servo_joint(self, q: np.ndarray, dt_s: float) -> None:
        """servoJ(q (6,) rad, t = dt_s) with the configured lookahead / gain. Refused (counted in
        servo_refused, nothing sent) while the controller is stopped or in freedrive; a failed
        call is counted in servo_errors. Raises SafetyViolation on a malformed target."""
        q, dt_s = joint_vector(q), check_servo_period(dt_s)
        with self._rtde_lock:
            if self._stopped() or self.freedrive:
                self.streaming = False  # the controller stopped the arm; never resume without a re-arm
                self._counters.bump("servo_refused")
                self._counters.set(streaming=0.0)
                return
            t_call = time.monotonic()
            try:
                ok = self._c.servoJ(q.tolist(), 0.0, 0.0, dt_s, self.config.servo_lookahead_s, self.config.servo_gain)
            except Exception:  # noqa: BLE001 - counted; the controller watchdog is the backstop
                ok = False
            now = time.monotonic()
            self._counters.raise_to("servo_call_max_ms", (now - t_call) * 1e3)
            self.last_write_s = now
            self.streaming = self.streaming or ok
            self._counters.bump("servo_sent" if ok else "servo_errors")
            self._counters.set(streaming=float(self.streaming))

    def set_gripper(self, closed_fraction: float) -> None:
        """Gripper closure 0..1 (non-blocking); without a gripper the command is only recorded.
        Raises ArmError after a gripper failure."""
        if self.gripper is not None:
            command_gripper(self.gripper, closed_fraction)
        self._gripper_cmd = float(closed_fraction)

    def stop(self) -> None:
        """servoStop when streaming (decelerates the arm); counted errors never raise."""
        with self._rtde_lock:
            if self.streaming:
                t_call = time.monotonic()
                try:
                    self._c.servoStop(10.0)
                except Exception:  # noqa: BLE001
                    self._counters.bump("servo_errors")
                self.last_write_s = time.monotonic()
                self._counters.raise_to("stop_call_max_ms", (self.last_write_s - t_call) * 1e3)
            self.streaming = False
            self._counters.set(streaming=0.0)

    # ------------------------------------------------------------------ worker duties
    def stop_if_stale(self, now_s: float) -> bool:
        """servoStop when streaming and no servoJ was written for worker_stale_command_s; True if stopped."""
        if self.streaming and now_s - self.last_write_s > self.config.worker_stale_command_s:
            self.stop()
            with self._rtde_lock:
                self._counters.bump("stale_stops")
            return True
        return False

    def kick_if_idle(self, now_s: float) -> None:
        """Kick the controller's RTDE watchdog when idle (not streaming, not stopped) for half its period."""
        with self._rtde_lock:
            if now_s - self.last_write_s > self._kick_period_s and not self.streaming and not self._stopped():
                try:
                    self._c.kickWatchdog()
                    self._counters.bump("watchdog_kicks")
                except Exception:  # noqa: BLE001
                    self._counters.bump("servo_errors")
                self.last_write_s = now_s

    def control_connected(self) -> bool:
        with self._rtde_lock:
            return bool(self._c.isConnected())

    def set_freedrive(self, enabled: bool) -> bool:
        """UR teach mode on / off (servo targets are refused while on). Raises RuntimeError if refused."""
        self.stop()
        with self._rtde_lock:
            ok = self._c.teachMode() if enabled else self._c.endTeachMode()
            if not ok:
                raise RuntimeError(f"{'teachMode' if enabled else 'endTeachMode'} returned False "
                                   "(program not running or a stop is active)")
            self.freedrive = bool(enabled)
            self._counters.set(freedrive=float(self.freedrive))
        return self.freedrive

    def rearm(self) -> str:
        """Clear a protective stop (dashboard `unlock protective stop`, retried: a real controller
        refuses it for 5 s after the stop) and restart the control script if it stopped; returns
        a status text. Raises RuntimeError with what to do (emergency stop, another safety mode,
        no recovery within command_timeout_s)."""
        self.stop()
        cfg, r = self.config, self._r
        sm, bits = r.getSafetyMode(), r.getSafetyStatusBits()
        if bits & SAFETY_BIT_EMERGENCY or sm in (6, 7):
            raise RuntimeError("emergency stop active: release the e-stop button, then power on and release the "
                               "brakes on the pendant; re-arm afterwards")
        deadline = time.monotonic() + cfg.command_timeout_s
        if sm == 3 or bits & SAFETY_BIT_PROTECTIVE:
            while True:
                try:
                    reply = self._dash.unlockProtectiveStop()
                except Exception as e:  # noqa: BLE001 - ur_rtde raises on an unexpected reply
                    reply = str(e)
                time.sleep(0.1)
                if not (r.getSafetyStatusBits() & SAFETY_BIT_PROTECTIVE):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"protective stop not released within {cfg.command_timeout_s} s "
                                       f"(dashboard: {reply!r}); a real controller needs 5 s after the stop")
        sm = r.getSafetyMode()
        if sm not in (SAFETY_MODE_NORMAL, SAFETY_MODE_REDUCED):
            raise RuntimeError(f"safety mode is {SAFETY_MODE_NAMES.get(sm, sm)}: resolve it on the pendant first")
        with self._rtde_lock:
            running = self._c.isProgramRunning()
        if r.getRuntimeState() != RUNTIME_PLAYING or not running:
            with self._rtde_lock:
                if not self._c.isConnected():
                    self._c.reconnect()
                self._c.reuploadScript()
            while r.getRuntimeState() != RUNTIME_PLAYING:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"control script not running {cfg.command_timeout_s} s after re-upload")
                time.sleep(0.02)
            if cfg.controller_watchdog_hz > 0:
                with self._rtde_lock:
                    ok = self._c.setWatchdog(cfg.controller_watchdog_hz)
                if not ok:
                    raise RuntimeError("setWatchdog failed after the re-upload")
        time.sleep(2.0 / cfg.controller_rate_hz)  # let the state thread publish the cleared state
        self.last_write_s = time.monotonic()
        return "re-armed"

    def close(self) -> None:
        """servoStop and stop the control script (errors ignored: the worker is exiting)."""
        try:
            self.stop()
            with self._rtde_lock:
                self._c.stopScript()
        except Exception:  # noqa: BLE001
            pass
        if self.gripper is not None:
            self.gripper.close()
