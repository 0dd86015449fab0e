"""The RTDE worker process of `robot.ur_rtde_arm.URRtdeArm`: the only owner of the ur_rtde client.

ur_rtde's constructors can block forever (holding the GIL) on a peer that accepts TCP but never
speaks RTDE, and its interfaces are not thread-safe (docs/ur_rtde_protocol.md §1), so the node
process never imports it: `URRtdeArm.connect()` spawns `worker_main` in a child process
(multiprocessing "spawn") and talks to it over one duplex pipe plus one shared-memory block.

Process / thread ownership:
- worker main thread: the only user of `RTDEControlInterface` (`rtde_c`) and of the dashboard
  client; receives pipe messages and calls servoJ / servoStop / teachMode / re-arm, kicks the
  controller watchdog, and runs the stale-command stop.
- worker state thread ("rtde_state"): polls the `RTDEReceiveInterface` (`rtde_r`) getters at the
  RTDE rate and is the only writer of the seqlocked state slots of `SharedState` (the main
  thread reads `rtde_r` too, only while it re-arms). Counter / flag slots have one writer each.
- node process (URRtdeArm): reads `SharedState` (never blocks the writers) and sends messages.

Pipe messages (node -> worker), all tuples:
    ("servo", q: list[6] rad, dt_s: float s)   fire-and-forget servoJ target; re-converted and
                                                checked here (`robot.commands`), refused ones
                                                are counted and are no sign of life
    ("stop",)                                   servoStop
    ("request", req_id: int, what: str, arg)    what in {"rearm", "freedrive", "close"}; answered
                                                with ("reply", req_id, ok: bool, result | error text)
Worker -> node at start: ("ready", {"rate_hz", "pid"}) or ("error", text).

Timing rules: servo targets go out at once (the ServoLoop in the node owns the timing); the pipe
is polled every min(worker_stale_command_s / 4, half the controller-watchdog period, 10 ms);
no valid servo message for `worker_stale_command_s` while streaming -> servoStop; a dead parent
(pipe closed or ppid changed) -> servoStop, stopScript, disconnect. All times are
`time.monotonic()` seconds.
"""
from __future__ import annotations

import ctypes
import logging
import math
import os
import threading
import time
from typing import Any

import numpy as np

from dynaflip_ros.configs.robot import URRtdeConfig
from dynaflip_ros.robot.arm import ArmError
from dynaflip_ros.robot.commands import SafetyViolation, check_servo_period, joint_vector

# The worker logs under the arm module's name, as it did before the split (same log lines).
log = logging.getLogger("dynaflip_ros.robot.ur_rtde_arm")

# RTDE enumerations (docs/ur_rtde_protocol.md §4.1; UR client library datatypes.h).
RUNTIME_PLAYING = 2
SAFETY_MODE_NORMAL = 1
SAFETY_MODE_REDUCED = 2
SAFETY_MODE_NAMES = {
    1: "NORMAL", 2: "REDUCED", 3: "PROTECTIVE_STOP", 4: "RECOVERY", 5: "SAFEGUARD_STOP",
    6: "SYSTEM_EMERGENCY_STOP", 7: "ROBOT_EMERGENCY_STOP", 8: "VIOLATION", 9: "FAULT",
    10: "VALIDATE_JOINT_ID", 11: "UNDEFINED", 12: "AUTOMATIC_MODE_SAFEGUARD_STOP",
    13: "SYSTEM_THREE_POSITION_ENABLING_STOP",
}
ROBOT_MODE_RUNNING = 7
SAFETY_BIT_PROTECTIVE = 1 << 2
SAFETY_BIT_EMERGENCY = 1 << 7

# Shared-memory state layout (float64 slots).
STATE_SLOTS = {name: i for i, name in enumerate((
    "host_time_s", "controller_time_s", "speed_scaling", "robot_mode", "safety_mode",
    "safety_status_bits", "runtime_state", "robot_status_bits", "rtde_receive_connected",
    "rtde_control_connected", "streaming", "freedrive", "servo_sent", "servo_refused",
    "stale_stops", "watchdog_kicks", "state_errors", "servo_errors", "servo_call_max_ms", "stop_call_max_ms",
))}
Q_SLOT, QD_SLOT, TCP_SLOT, TARGET_Q_SLOT = (len(STATE_SLOTS) + 6 * k for k in range(4))
N_SLOTS = len(STATE_SLOTS) + 24

# Variables the receive interface asks for (docs/ur_rtde_protocol.md §2.3 names).
RECEIVE_VARIABLES = [
    "timestamp", "actual_q", "actual_qd", "actual_TCP_pose", "target_q", "robot_mode", "safety_mode",
    "safety_status_bits", "runtime_state", "robot_status_bits", "speed_scaling", "target_speed_fraction",
]


def is_stopped(safety_mode: int, safety_status_bits: int, runtime_state: int, robot_mode: int) -> bool:
    """True when the controller will not execute servo targets until someone intervenes:
    protective / emergency / safeguard stop, fault, violation (safety_mode not NORMAL or
    REDUCED), protective or emergency bits set, the control program not PLAYING, or the robot
    not in RUNNING mode (docs/ur_rtde_protocol.md §4.1, §4.4)."""
    return (safety_mode not in (SAFETY_MODE_NORMAL, SAFETY_MODE_REDUCED)
            or bool(safety_status_bits & (SAFETY_BIT_PROTECTIVE | SAFETY_BIT_EMERGENCY))
            or runtime_state != RUNTIME_PLAYING
            or robot_mode != ROBOT_MODE_RUNNING)


class SharedState:
    """float64 slots in shared memory. The RTDE state slots (`write`) are seqlock-protected and
    written by one thread only (the worker's state thread); counter / flag slots (`set`) are
    single aligned doubles, each with one writer, stored without the lock. Readers never block
    the writers, and the worker's servo thread never waits for the state thread (no priority
    inversion)."""

    def __init__(self, ctx: Any) -> None:
        self.seq = ctx.Value(ctypes.c_uint64, 0, lock=False)
        self.data = ctx.Array(ctypes.c_double, N_SLOTS, lock=False)
        self._last_good: np.ndarray | None = None  # per reader process

    def write(self, updates: dict[int, float] | None = None, vectors: dict[int, Any] | None = None) -> None:
        self.seq.value += 1  # odd: write in progress
        for i, v in (updates or {}).items():
            self.data[i] = v
        for i, vec in (vectors or {}).items():
            self.data[i:i + len(vec)] = list(vec)
        self.seq.value += 1

    def set(self, **kv: float) -> None:
        for k, v in kv.items():
            self.data[STATE_SLOTS[k]] = float(v)

    def bump(self, name: str) -> None:
        """Count one event in counter slot `name` (its only writer)."""
        self.data[STATE_SLOTS[name]] += 1.0

    def raise_to(self, name: str, value: float) -> None:
        """Keep the maximum of `value` in slot `name` (its only writer)."""
        if value > self.data[STATE_SLOTS[name]]:
            self.data[STATE_SLOTS[name]] = float(value)

    def read(self, timeout_s: float = 0.1) -> np.ndarray:
        """A consistent copy of all slots. While a write is in progress (the writer may be
        preempted mid-update) it spins briefly, then returns the last consistent copy it read
        (its host_time_s tells the caller how old it is) rather than blocking the servo loop;
        without any earlier copy it retries up to timeout_s. Raises ArmError after that."""
        deadline = time.monotonic() + timeout_s
        n = 0
        while True:
            s1 = self.seq.value
            if s1 % 2 == 0:
                snap = np.frombuffer(self.data, dtype=np.float64).copy()
                if self.seq.value == s1:
                    self._last_good = snap
                    return snap
            n += 1
            if n >= 200:
                if self._last_good is not None:
                    return self._last_good.copy()
                if time.monotonic() > deadline:
                    raise ArmError("could not read a consistent RTDE state snapshot (writer stuck mid-update)")
                time.sleep(0.0002)


def worker_main(cfg: dict, conn, shared: SharedState, parent_pid: int) -> None:  # pragma: no cover - runs in a child
    """Entry point of the RTDE worker process (see the module docstring)."""
    import signal

    import rtde_control
    import rtde_receive
    from dashboard_client import DashboardClient

    # Ctrl-C in a terminal reaches the whole process group: the node decides when the worker
    # stops (a "close" request, or the pipe closing when the node dies), never a stray SIGINT.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    config = URRtdeConfig(**cfg)
    host, rate_hz = config.robot_ip, config.controller_rate_hz
    publish = shared.set  # counters and flags: one writer per slot, no lock

    try:
        rtde_r = rtde_receive.RTDEReceiveInterface(host, rate_hz, RECEIVE_VARIABLES, False, False, config.rt_priority)
        flags = rtde_control.RTDEControlInterface.Flags.FLAG_UPLOAD_SCRIPT
        rtde_c = rtde_control.RTDEControlInterface(host, rate_hz, flags, 50002, config.rt_priority)
        dash = DashboardClient(host)
        dash.connect(2000)
        if config.controller_watchdog_hz > 0:
            if not rtde_c.setWatchdog(config.controller_watchdog_hz):
                raise RuntimeError("RTDEControlInterface.setWatchdog failed")
    except Exception as e:  # noqa: BLE001 - reported to the parent, which raises ArmError
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    stop_event = threading.Event()
    stopped_flag = threading.Event()  # the controller is stopped (protective stop etc.)

    def state_loop() -> None:
        period = 1.0 / rate_hz
        t_next = time.monotonic()
        prev_ts, seen_host_s = None, 0.0
        while not stop_event.is_set():
            try:
                # ur_rtde's getters keep returning the last package when the stream stops, so a
                # sample counts as new only when the controller's timestamp advanced.
                ts = rtde_r.getTimestamp()
                if ts != prev_ts:
                    prev_ts, seen_host_s = ts, time.monotonic()
                sm, bits = rtde_r.getSafetyMode(), rtde_r.getSafetyStatusBits()
                rs, rm = rtde_r.getRuntimeState(), rtde_r.getRobotMode()
                if is_stopped(sm, bits, rs, rm) or time.monotonic() - seen_host_s > config.state_timeout_s:
                    stopped_flag.set()  # stopped, or blind (no fresh RTDE data): do not stream
                else:
                    stopped_flag.clear()
                # The only writer of the seqlocked state slots (getters run before the write).
                shared.write(
                    {STATE_SLOTS["host_time_s"]: seen_host_s, STATE_SLOTS["controller_time_s"]: ts,
                     STATE_SLOTS["speed_scaling"]: rtde_r.getSpeedScalingCombined(), STATE_SLOTS["robot_mode"]: rm,
                     STATE_SLOTS["safety_mode"]: sm, STATE_SLOTS["safety_status_bits"]: bits, STATE_SLOTS["runtime_state"]: rs,
                     STATE_SLOTS["robot_status_bits"]: rtde_r.getRobotStatus(),
                     STATE_SLOTS["rtde_receive_connected"]: float(rtde_r.isConnected())},
                    {Q_SLOT: rtde_r.getActualQ(), QD_SLOT: rtde_r.getActualQd(), TCP_SLOT: rtde_r.getActualTCPPose(),
                     TARGET_Q_SLOT: rtde_r.getTargetQ()})
            except Exception:  # noqa: BLE001 - counted; the parent sees the state age grow
                shared.bump("state_errors")
            t_next += period
            delay = t_next - time.monotonic()
            if delay > 0:
                stop_event.wait(delay)
            else:
                t_next = time.monotonic()

    if config.rt_priority > 0:  # before the state thread starts: it inherits the policy
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(config.rt_priority))
        except (PermissionError, OSError) as e:
            log.warning("RTDE worker: SCHED_FIFO %d refused (%s); running with normal priority", config.rt_priority, e)
    threading.Thread(target=state_loop, name="rtde_state", daemon=True).start()
    conn.send(("ready", {"rate_hz": rate_hz, "pid": os.getpid()}))

    streaming = False
    freedrive = False
    last_msg_s = time.monotonic()
    last_write_s = time.monotonic()
    kick_period_s = 0.5 / config.controller_watchdog_hz if config.controller_watchdog_hz > 0 else math.inf
    poll_s = min(config.worker_stale_command_s / 4.0, kick_period_s, 0.01)

    def servo_stop() -> None:
        nonlocal streaming, last_write_s
        if streaming:
            t_call = time.monotonic()
            try:
                rtde_c.servoStop(10.0)
            except Exception:  # noqa: BLE001
                shared.bump("servo_errors")
            last_write_s = time.monotonic()
            shared.raise_to("stop_call_max_ms", (last_write_s - t_call) * 1e3)
        streaming = False

    def rearm() -> str:
        """Clear a protective stop and restart the control script; returns a status text."""
        sm, bits = rtde_r.getSafetyMode(), rtde_r.getSafetyStatusBits()
        if bits & SAFETY_BIT_EMERGENCY or sm in (6, 7):
            raise RuntimeError("emergency stop active: release the e-stop button, then power on and release the "
                               "brakes on the pendant; re-arm afterwards")
        deadline = time.monotonic() + config.command_timeout_s
        if sm == 3 or bits & SAFETY_BIT_PROTECTIVE:
            # A real controller refuses the unlock for 5 s after the stop: retry until the deadline.
            while True:
                try:
                    reply = dash.unlockProtectiveStop()
                except Exception as e:  # noqa: BLE001 - ur_rtde raises on an unexpected reply
                    reply = str(e)
                time.sleep(0.1)
                if not (rtde_r.getSafetyStatusBits() & SAFETY_BIT_PROTECTIVE):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"protective stop not released within {config.command_timeout_s} s "
                                       f"(dashboard: {reply!r}); a real controller needs 5 s after the stop")
        sm = rtde_r.getSafetyMode()
        if sm not in (SAFETY_MODE_NORMAL, SAFETY_MODE_REDUCED):
            raise RuntimeError(f"safety mode is {SAFETY_MODE_NAMES.get(sm, sm)}: resolve it on the pendant first")
        if rtde_r.getRuntimeState() != RUNTIME_PLAYING or not rtde_c.isProgramRunning():
            if not rtde_c.isConnected():
                rtde_c.reconnect()
            rtde_c.reuploadScript()
            while rtde_r.getRuntimeState() != RUNTIME_PLAYING:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"control script not running {config.command_timeout_s} s after re-upload")
                time.sleep(0.02)
            if config.controller_watchdog_hz > 0 and not rtde_c.setWatchdog(config.controller_watchdog_hz):
                raise RuntimeError("setWatchdog failed after the re-upload")
        time.sleep(2.0 / rate_hz)  # let the state thread publish the cleared state
        return "re-armed"

    def stop_if_stale(now: float) -> None:
        """servoStop when no valid command arrived for worker_stale_command_s (node frozen)."""
        if streaming and now - last_msg_s > config.worker_stale_command_s:
            servo_stop()
            shared.bump("stale_stops")
            publish(streaming=0.0)

    def parent_alive() -> bool:
        return os.getppid() == parent_pid

    try:
        while True:
            try:
                has_msg = conn.poll(poll_s)
            except (EOFError, OSError):
                break
            now = time.monotonic()
            if not has_msg:
                if not parent_alive():
                    break
                publish(rtde_control_connected=float(rtde_c.isConnected()))  # rtde_c: this thread only
                stop_if_stale(now)
                if now - last_write_s > kick_period_s and not streaming and not stopped_flag.is_set():
                    try:
                        rtde_c.kickWatchdog()
                        shared.bump("watchdog_kicks")
                    except Exception:  # noqa: BLE001
                        shared.bump("servo_errors")
                    last_write_s = now
                continue
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                break
            kind = msg[0]
            if kind == "servo":
                try:  # defence in depth: the same conversion as SafeArm / URRtdeArm.servo_joint
                    q, dt_s = joint_vector(msg[1]), check_servo_period(msg[2])
                except (SafetyViolation, IndexError) as e:
                    # Refused, and not a sign of life: garbage must not hold off the stale stop.
                    log.error("RTDE worker: servo message refused: %s", e)
                    shared.bump("servo_refused")
                    stop_if_stale(now)
                    continue
            last_msg_s = now
            if kind == "servo":
                if stopped_flag.is_set() or freedrive:
                    streaming = False  # the controller stopped the arm; never resume without a re-arm
                    shared.bump("servo_refused")
                    publish(streaming=0.0)
                    continue
                t_call = time.monotonic()
                try:
                    ok = rtde_c.servoJ(q.tolist(), 0.0, 0.0, dt_s, config.servo_lookahead_s, config.servo_gain)
                except Exception:  # noqa: BLE001
                    ok = False
                shared.raise_to("servo_call_max_ms", (time.monotonic() - t_call) * 1e3)
                last_write_s = now
                if ok:
                    streaming = True
                    shared.bump("servo_sent")
                else:
                    shared.bump("servo_errors")
                publish(streaming=float(streaming))
            elif kind == "stop":
                servo_stop()
                publish(streaming=0.0)
            elif kind == "request":
                _, req_id, what, arg = msg
                try:
                    if what == "rearm":
                        servo_stop()
                        result: Any = rearm()
                    elif what == "freedrive":
                        servo_stop()
                        ok = rtde_c.teachMode() if arg else rtde_c.endTeachMode()
                        if not ok:
                            raise RuntimeError(f"{'teachMode' if arg else 'endTeachMode'} returned False "
                                               "(program not running or a stop is active)")
                        freedrive = bool(arg)
                        publish(freedrive=float(freedrive))
                        result = freedrive
                    elif what == "close":
                        servo_stop()
                        conn.send(("reply", req_id, True, "closing"))
                        break
                    else:
                        raise ValueError(f"unknown request {what!r}")
                    conn.send(("reply", req_id, True, result))
                except Exception as e:  # noqa: BLE001 - reported to the caller
                    conn.send(("reply", req_id, False, f"{type(e).__name__}: {e}"))
                last_write_s = time.monotonic()
    finally:
        stop_event.set()
        try:
            servo_stop()
            rtde_c.stopScript()
        except Exception:  # noqa: BLE001
            pass
        for closer in (rtde_c.disconnect, rtde_r.disconnect, dash.disconnect):
            try:
                closer()
            except Exception:  # noqa: BLE001
                pass
