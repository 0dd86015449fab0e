"""The real UR3 over RTDE (ur_rtde 1.6.5) behind the `Arm` interface of the sim arm.

Process layout (why): ur_rtde's constructors block forever, holding the GIL, on a peer that
accepts TCP but never speaks RTDE (ENVIRONMENT.md; docs/ur_rtde_protocol.md §1), and its interfaces are not
thread-safe. So the ur_rtde client lives in a **worker process** that owns it alone:

    node process                                   RTDE worker process (spawned)
    ServoLoop thread (125 / 500 Hz)                main thread: commands -> rtde_c.servoJ(...),
      -> SafeArm -> URRtdeArm.servo_joint  --pipe->   servoStop, teachMode, re-arm; stale-command
    URRtdeArm.state()  <-- shared memory (seqlock) --  watchdog; controller watchdog kicks
                                                   state thread: rtde_r getters at the RTDE rate

- `connect()` first probes the peer with plain sockets and a timeout (RTDE protocol-version
  request on 30004, dashboard greeting on 29999), then starts the worker and waits at most
  `connect_timeout_s` for it to report ready; a worker that hangs is killed. Nothing in the node
  process can freeze on a bad peer.
- Servo targets are fire-and-forget messages; the worker sends each one at once with
  `servoJ(q, 0, 0, t=dt_s, lookahead_time, gain)` (UR Script Manual `servoj`; ur_rtde API), so the
  timing is the ServoLoop's (absolute-deadline scheduling at the controller rate).
- Safety in depth: SafeArm in the node (limits, NaN, watchdog); the worker stops the arm
  (`servoStop`) when no command arrives for `worker_stale_command_s` (node frozen) and when the
  node process dies; the controller's own RTDE watchdog (`setWatchdog`) stops the program if
  the worker itself stops talking.
- Protective / emergency stop, safeguard stop and a stopped control program (pendant stop,
  controller watchdog) are reported as `ArmState.protective_stop`; the worker refuses to stream
  until `rearm()` (dashboard `unlock protective stop`, re-upload of the control script), after
  which SafeArm re-anchors at the measured pose (no jump).
- Speed slider / speed scaling: `ArmState.extra["speed_scaling"]` (target_speed_fraction x
  speed_scaling, `getSpeedScalingCombined`); the ServoLoop advances the action-chunk timeline at
  that rate so the arm never falls behind its targets and never catches up with a jump.
"""
from __future__ import annotations

import ctypes
import logging
import math
import multiprocessing as mp
import os
import socket
import struct
import threading
import time
from dataclasses import asdict
from typing import Any

import numpy as np

from dynaflip_ros.configs.robot import URRtdeConfig
from dynaflip_ros.robot.arm import ArmError, ArmNotConnectedError, ArmState
from dynaflip_ros.robot.commands import SafetyViolation, check_servo_period, joint_vector
from dynaflip_ros.robot.gripper import Gripper, GripperError, RobotiqURCapGripper
from dynaflip_ros.robot.kinematics import rotvec_to_quat_wxyz

log = logging.getLogger(__name__)

RTDE_PORT = 30004
DASHBOARD_PORT = 29999

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
_F = {name: i for i, name in enumerate((
    "host_time_s", "controller_time_s", "speed_scaling", "robot_mode", "safety_mode",
    "safety_status_bits", "runtime_state", "robot_status_bits", "rtde_receive_connected",
    "rtde_control_connected", "streaming", "freedrive", "servo_sent", "servo_refused",
    "stale_stops", "watchdog_kicks", "state_errors", "servo_errors", "servo_call_max_ms", "stop_call_max_ms",
))}
_Q, _QD, _TCP, _TQ = (len(_F) + 6 * k for k in range(4))
_N_SLOTS = len(_F) + 24

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


# ---------------------------------------------------------------------------- probing
def probe_controller(host: str, timeout_s: float) -> None:
    """Check with plain sockets that `host` speaks RTDE (30004) and has a dashboard (29999)
    before ur_rtde touches it (ur_rtde would block forever on a silent peer).

    Sends RTDE REQUEST_PROTOCOL_VERSION (v2) and expects a 'V' reply; reads the dashboard's
    greeting line (docs/ur_rtde_protocol.md §2.2, §5, §6). Raises ArmError saying which check failed and what
    to verify.
    """
    deadline = time.monotonic() + timeout_s

    def _left() -> float:
        return max(0.05, deadline - time.monotonic())

    try:
        with socket.create_connection((host, RTDE_PORT), timeout=_left()) as s:
            s.settimeout(_left())
            s.sendall(struct.pack(">HBH", 5, ord("V"), 2))
            head = b""
            while len(head) < 3:
                chunk = s.recv(3 - len(head))
                if not chunk:
                    raise ArmError(f"{host}:{RTDE_PORT} closed the connection during the RTDE handshake "
                                   "(another RTDE client holding it? a non-UR device?)")
                head += chunk
            _size, ptype = struct.unpack(">HB", head)
            if ptype != ord("V"):
                raise ArmError(f"{host}:{RTDE_PORT} answered the RTDE version request with package type "
                               f"{ptype} instead of 'V': not a UR RTDE server")
    except ConnectionRefusedError as e:
        raise ArmError(f"nothing listens on {host}:{RTDE_PORT} (RTDE): is the controller on, the IP right, "
                       "and RTDE enabled (e-Series: Settings > Security > Services)?") from e
    except socket.timeout as e:
        raise ArmError(f"{host}:{RTDE_PORT} did not answer the RTDE protocol within {timeout_s:.1f} s: not a UR "
                       "controller, a firewall, or the wrong IP; refusing to start ur_rtde (it would block "
                       "forever on such a peer)") from e
    except OSError as e:
        raise ArmError(f"cannot reach {host}:{RTDE_PORT} (RTDE): {e}") from e
    try:
        with socket.create_connection((host, DASHBOARD_PORT), timeout=_left()) as s:
            s.settimeout(_left())
            if not s.recv(256):
                raise ArmError(f"dashboard server {host}:{DASHBOARD_PORT} closed the connection at once")
    except socket.timeout as e:
        raise ArmError(f"dashboard server {host}:{DASHBOARD_PORT} sent no greeting within {timeout_s:.1f} s") from e
    except OSError as e:
        raise ArmError(f"cannot reach the dashboard server {host}:{DASHBOARD_PORT}: {e} "
                       "(ur_rtde's control interface needs it)") from e


# ---------------------------------------------------------------------------- worker
class _SharedState:
    """float64 slots in shared memory. The RTDE state slots (`write`) are seqlock-protected and
    written by one thread only (the worker's state thread); counter / flag slots (`set`) are
    single aligned doubles, each with one writer, stored without the lock. Readers never block
    the writers, and the worker's servo thread never waits for the state thread (no priority
    inversion)."""

    def __init__(self, ctx: Any) -> None:
        self.seq = ctx.Value(ctypes.c_uint64, 0, lock=False)
        self.data = ctx.Array(ctypes.c_double, _N_SLOTS, lock=False)
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
            self.data[_F[k]] = float(v)

    def bump(self, name: str) -> None:
        """Count one event in counter slot `name` (its only writer)."""
        self.data[_F[name]] += 1.0

    def raise_to(self, name: str, value: float) -> None:
        """Keep the maximum of `value` in slot `name` (its only writer)."""
        if value > self.data[_F[name]]:
            self.data[_F[name]] = float(value)

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


def _worker_main(cfg: dict, conn, shared: _SharedState, parent_pid: int) -> None:  # pragma: no cover - runs in a child
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
                    {_F["host_time_s"]: seen_host_s, _F["controller_time_s"]: ts,
                     _F["speed_scaling"]: rtde_r.getSpeedScalingCombined(), _F["robot_mode"]: rm,
                     _F["safety_mode"]: sm, _F["safety_status_bits"]: bits, _F["runtime_state"]: rs,
                     _F["robot_status_bits"]: rtde_r.getRobotStatus(),
                     _F["rtde_receive_connected"]: float(rtde_r.isConnected())},
                    {_Q: rtde_r.getActualQ(), _QD: rtde_r.getActualQd(), _TCP: rtde_r.getActualTCPPose(),
                     _TQ: rtde_r.getTargetQ()})
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


# ---------------------------------------------------------------------------- the arm
class URRtdeArm:
    """UR3 (CB3 or e-Series) over RTDE; implements `robot.arm.Arm` (+ rearm, set_freedrive).

    Args:
        config: `configs.robot.URRtdeConfig` (robot_ip, ur_type, servoj lookahead / gain, ...).
        gripper: a `robot.gripper.Gripper`; None -> from config.gripper ("robotiq_urcap" ->
            `RobotiqURCapGripper(robot_ip, gripper_port)`, "none" -> no gripper: set_gripper
            raises ArmError).
    Never command it directly: wrap it in `robot.safety.SafeArm` (docs/safety.md).
    Errors: ArmError (connection, worker death, stale state, refused re-arm), ArmNotConnectedError.
    """

    def __init__(self, config: URRtdeConfig, gripper: Gripper | None = None) -> None:
        if not isinstance(config, URRtdeConfig):
            raise TypeError(f"config must be a URRtdeConfig, got {type(config).__name__}")
        self.config = config
        self._gripper = gripper
        self._ctx = mp.get_context("spawn")
        self._proc = None
        self._conn = None
        self._shared: _SharedState | None = None
        self._send_lock = threading.Lock()
        self._req_lock = threading.Lock()
        self._req_id = 0
        self._gripper_cmd: float | None = None
        self.connect_info: dict = {}

    # ------------------------------------------------------------------ connection
    def connect(self) -> None:
        """Probe the controller, start the RTDE worker, activate the gripper.

        Raises ArmError (with the reason and what to check) when `robot_ip` is empty, the
        probe fails, or the worker does not report ready within `connect_timeout_s` (it is
        then killed, so nothing stays blocked).
        """
        if self.connected:
            return
        cfg = self.config
        if not cfg.robot_ip:
            raise ArmError("URRtdeConfig.robot_ip is empty: set the controller IP (ROS param ur3_driver.ur_rtde.robot_ip)")
        t0 = time.monotonic()
        probe_controller(cfg.robot_ip, timeout_s=min(cfg.connect_timeout_s, 5.0))
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        shared = _SharedState(self._ctx)
        proc = self._ctx.Process(target=_worker_main, args=(asdict(cfg), child_conn, shared, os.getpid()),
                                 name=f"ur_rtde_worker[{cfg.robot_ip}]", daemon=True)
        proc.start()
        child_conn.close()
        left = cfg.connect_timeout_s - (time.monotonic() - t0)
        msg = None
        try:
            if parent_conn.poll(max(0.1, left)):
                msg = parent_conn.recv()
        except (EOFError, OSError):
            msg = None
        if msg is None or msg[0] != "ready":
            proc.kill()
            proc.join(2.0)
            parent_conn.close()
            if msg is None:
                raise ArmError(
                    f"ur_rtde did not connect to {cfg.robot_ip} within {cfg.connect_timeout_s:.1f} s "
                    f"(worker {'exited with code ' + str(proc.exitcode) if proc.exitcode is not None else 'hung and was killed'}); "
                    "check that the robot is powered on, in remote control (e-Series), and that no other "
                    "program owns the RTDE input registers")
            raise ArmError(f"ur_rtde could not connect to {cfg.robot_ip}: {msg[1]}")
        self._proc, self._conn, self._shared = proc, parent_conn, shared
        self.connect_info = dict(msg[1], connect_s=time.monotonic() - t0)
        # Wait for the first state sample.
        deadline = time.monotonic() + cfg.state_timeout_s + 1.0
        while self._shared.read()[_F["host_time_s"]] == 0.0:
            if time.monotonic() > deadline:
                self.disconnect()
                raise ArmError(f"no RTDE state from {cfg.robot_ip} within {cfg.state_timeout_s + 1.0:.1f} s of connecting")
            time.sleep(0.005)
        if self._gripper is None and cfg.gripper == "robotiq_urcap":
            self._gripper = RobotiqURCapGripper(cfg.robot_ip, cfg.gripper_port, speed=cfg.gripper_speed,
                                                force=cfg.gripper_force)
        if self._gripper is not None:
            try:
                self._gripper.connect()
            except GripperError as e:
                self.disconnect()
                raise ArmError(f"gripper: {e}") from e
        log.info("URRtdeArm connected to %s (%s, %.0f Hz) in %.2f s", cfg.robot_ip, cfg.ur_type,
                 cfg.controller_rate_hz, self.connect_info["connect_s"])

    @property
    def connected(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    def reconnect(self) -> None:
        """Tear down the worker (if any) and connect again (after a network loss / controller
        reboot). Raises ArmError like connect()."""
        self.disconnect()
        self.connect()

    def disconnect(self) -> None:
        """servoStop, stop the control script, close the connections; idempotent."""
        if self._proc is not None:
            if self._proc.is_alive():
                try:
                    self._request("close", None, timeout_s=2.0)
                except ArmError:
                    pass
                self._proc.join(2.0)
                if self._proc.is_alive():
                    self._proc.kill()
                    self._proc.join(1.0)
            self._proc = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._gripper is not None:
            self._gripper.close()

    # ------------------------------------------------------------------ Arm
    def _require(self) -> None:
        if self._proc is None:
            raise ArmNotConnectedError("URRtdeArm used before connect() or after disconnect()")
        if not self._proc.is_alive():
            raise ArmError(f"RTDE worker process died (exit code {self._proc.exitcode}); reconnect()")

    def _snapshot(self) -> np.ndarray:
        self._require()
        snap = self._shared.read()
        age_s = time.monotonic() - snap[_F["host_time_s"]]
        if age_s > self.config.state_timeout_s:
            raise ArmError(f"RTDE state is {age_s:.2f} s old (> {self.config.state_timeout_s} s): connection to "
                           f"{self.config.robot_ip} lost? (rtde_receive connected: {bool(snap[_F['rtde_receive_connected']])})")
        return snap

    def state(self) -> ArmState:
        """Latest RTDE sample: q, dq (6,) rad, rad/s; TCP pose (7,) x, y, z m + quaternion wxyz in
        the UR base frame (the controller's TCP); gripper closure 0..1 (NaN without a gripper);
        stamp_s host monotonic time of the sample; protective_stop per `is_stopped`; extra:
        speed_scaling, safety_mode (name), robot_mode, runtime_state, program_running,
        freedrive, controller_time_s, counters. Raises ArmError when the sample is stale."""
        s = self._snapshot()
        sm, rm, rs = int(s[_F["safety_mode"]]), int(s[_F["robot_mode"]]), int(s[_F["runtime_state"]])
        bits = int(s[_F["safety_status_bits"]])
        tcp = s[_TCP:_TCP + 6]
        return ArmState(
            q=s[_Q:_Q + 6].copy(), dq=s[_QD:_QD + 6].copy(),
            tcp_pose=np.concatenate([tcp[:3], rotvec_to_quat_wxyz(tcp[3:])]),
            gripper=self._gripper.position() if self._gripper is not None else math.nan,
            stamp_s=float(s[_F["host_time_s"]]),
            protective_stop=is_stopped(sm, bits, rs, rm),
            extra={
                "speed_scaling": float(s[_F["speed_scaling"]]),
                "safety_mode": SAFETY_MODE_NAMES.get(sm, str(sm)), "robot_mode": rm, "runtime_state": rs,
                "program_running": rs == RUNTIME_PLAYING, "freedrive": bool(s[_F["freedrive"]]),
                "controller_time_s": float(s[_F["controller_time_s"]]), "target_q": s[_TQ:_TQ + 6].copy(),
                "gripper_command": self._gripper_cmd,
                "counters": {k: int(s[_F[k]]) for k in ("servo_sent", "servo_refused", "stale_stops",
                                                          "watchdog_kicks", "state_errors", "servo_errors")},
                "servo_call_max_ms": float(s[_F["servo_call_max_ms"]]),
                "stop_call_max_ms": float(s[_F["stop_call_max_ms"]]),
            },
        )

    @property
    def speed_scaling(self) -> float:
        """Speed slider x speed scaling reported by the controller (0..1); 0.0 if unreadable."""
        try:
            return float(self._snapshot()[_F["speed_scaling"]])
        except ArmError:
            return 0.0

    def servo_joint(self, q: np.ndarray, dt_s: float) -> None:
        """Stream one joint target (6,) rad, reached in dt_s s (servoJ t). Fire-and-forget; the
        worker refuses it while the controller is stopped or in freedrive. Raises ArmError
        if the worker is gone, SafetyViolation("invalid"/"non_finite") on a bad target or
        period (`robot.commands`, the conversion SafeArm uses; the worker checks again)."""
        q = joint_vector(q)
        dt_s = check_servo_period(dt_s)
        self._send(("servo", q.tolist(), dt_s))

    def set_gripper(self, closed_fraction: float) -> None:
        """Gripper closure 0 (open) .. 1 (closed); non-blocking. With gripper "none" the command
        is recorded (extra["gripper_command"]) and ignored (warned once). Raises ArmError after
        a gripper failure (socket lost)."""
        if self._gripper is None:
            if self._gripper_cmd is None:
                log.warning("URRtdeArm: no gripper configured (URRtdeConfig.gripper = 'none'): gripper commands are ignored")
            self._gripper_cmd = float(closed_fraction)
            return
        try:
            self._gripper.command(closed_fraction)
        except GripperError as e:
            raise ArmError(f"gripper: {e}") from e
        self._gripper_cmd = float(closed_fraction)

    def stop(self) -> None:
        """servoStop (the worker decelerates the arm); non-blocking, ordered after earlier targets."""
        if self._proc is not None and self._proc.is_alive():
            self._send(("stop",))

    def rearm(self) -> None:
        """Recover after a protective stop / stopped program: dashboard `unlock protective stop`
        (retried: a real controller refuses it for 5 s after the stop), re-upload the control
        script, re-enable the controller watchdog. Raises ArmError when an emergency stop is
        active or the controller does not recover within command_timeout_s. Call
        `SafeArm.rearm()` afterwards (the ur3_driver's rearm service does both)."""
        self._request("rearm", None, timeout_s=self.config.command_timeout_s + 2.0)

    def set_freedrive(self, enabled: bool) -> None:
        """UR teach mode (freedrive) on/off for kinesthetic demonstrations; servo targets are
        refused while it is on. Raises ArmError if the controller refuses."""
        self._request("freedrive", bool(enabled), timeout_s=self.config.command_timeout_s)

    # ------------------------------------------------------------------ plumbing
    def _send(self, msg: tuple) -> None:
        self._require()
        try:
            with self._send_lock:
                self._conn.send(msg)
        except (OSError, EOFError, BrokenPipeError) as e:
            raise ArmError(f"RTDE worker pipe broken: {e}; reconnect()") from e

    def _request(self, what: str, arg: Any, timeout_s: float) -> Any:
        with self._req_lock:
            self._req_id += 1
            req_id = self._req_id
            self._send(("request", req_id, what, arg))
            deadline = time.monotonic() + timeout_s
            while True:
                left = deadline - time.monotonic()
                try:
                    if left <= 0 or not self._conn.poll(left):
                        raise ArmError(f"RTDE worker did not answer {what!r} within {timeout_s:.1f} s")
                    reply = self._conn.recv()
                except (EOFError, OSError) as e:
                    raise ArmError(f"RTDE worker pipe broken during {what!r}: {e}") from e
                if reply[0] == "reply" and reply[1] == req_id:
                    if not reply[2]:
                        raise ArmError(f"{what} failed: {reply[3]}")
                    return reply[3]
