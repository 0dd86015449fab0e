"""The real UR3 over RTDE (ur_rtde 1.6.5) behind the `Arm` interface of the sim arm: the node side.

Process layout (why): ur_rtde's constructors block forever, holding the GIL, on a peer that
accepts TCP but never speaks RTDE (docs/environment.md; docs/ur_rtde_protocol.md §1), and its
interfaces are not thread-safe. So the ur_rtde client lives in a **worker process** that owns it
alone (`robot.ur_rtde_worker`: its threads, pipe messages and timing rules). Two layouts:

    direct (teleop, calibration, fault bench)      RTDE worker process (spawned)
    node: ServoLoop thread (125 / 500 Hz)          main thread: commands -> WorkerArm ->
      -> SafeArm -> URRtdeArm.servo_joint  --pipe->   rtde_c.servoJ, servoStop, re-arm; stale stop
    URRtdeArm.state()  <-- shared memory (seqlock) --  state thread: rtde_r getters at the RTDE rate

    servo in the worker (`servo=`: the ur3_driver node, `robot.ur_rtde_servo.WorkerServoCore`)
    node: ArmDriver (chunk intake, episodes)       servo thread: ServoCore = interpolator ->
      -> servo_call("add_chunk", ...)      --pipe->   ServoLoop -> SafeArm -> WorkerArm -> servoJ
    URRtdeArm.state()  <-- shared memory (seqlock) --  main thread: requests; state thread as above

Threads in the node process: any thread may call `URRtdeArm`'s methods; `_send_lock` orders
messages on the pipe, `_req_lock` serialises blocking requests (one reply awaited at a time);
`state()` reads shared memory without a lock and never blocks the worker. `connect()` /
`disconnect()` are not meant to race with each other.

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

import logging
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
from dynaflip_ros.robot.commands import check_servo_period, joint_vector
from dynaflip_ros.robot.gripper import Gripper, GripperError, command_gripper, gripper_from_config
from dynaflip_ros.robot.kinematics import rotvec_to_quat_wxyz  # noqa: F401 - re-exported
from dynaflip_ros.robot.ur_rtde_state import (  # noqa: F401 - RTDE enumerations re-exported
    RECEIVE_VARIABLES,
    ROBOT_MODE_RUNNING,
    RUNTIME_PLAYING,
    SAFETY_BIT_EMERGENCY,
    SAFETY_BIT_PROTECTIVE,
    SAFETY_MODE_NAMES,
    SAFETY_MODE_NORMAL,
    SAFETY_MODE_REDUCED,
    STATE_SLOTS,
    SharedState,
    arm_state_from_slots,
    fresh_snapshot,
    is_stopped,
)
from dynaflip_ros.robot.ur_rtde_worker import worker_main

log = logging.getLogger(__name__)

RTDE_PORT = 30004
DASHBOARD_PORT = 29999


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


# ---------------------------------------------------------------------------- the arm
class URRtdeArm:
    """UR3 (CB3 or e-Series) over RTDE; implements `robot.arm.Arm` (+ rearm, set_freedrive).

    Args:
        config: `configs.robot.URRtdeConfig` (robot_ip, ur_type, servoj lookahead / gain, ...).
        gripper: a `robot.gripper.Gripper`; None -> from config.gripper ("robotiq_urcap" ->
            `RobotiqURCapGripper(robot_ip, gripper_port)`, "none" -> no gripper: set_gripper
            raises ArmError).
        servo: a `configs.ros.Ur3DriverNodeConfig` -> the servo-in-worker layout: the worker
            runs the servo core (interpolator, ServoLoop, SafeArm, the gripper) with these
            settings, reached through `servo_call` (`robot.ur_rtde_servo.WorkerServoCore`);
            `servo_joint` / `set_gripper` are then refused. None -> the direct layout.
    Never command it directly: wrap it in `robot.safety.SafeArm` (docs/safety.md), or let the
    worker's servo core do it.
    Errors: ArmError (connection, worker death, stale state, refused re-arm), ArmNotConnectedError.
    """

    def __init__(self, config: URRtdeConfig, gripper: Gripper | None = None, servo: Any = None) -> None:
        if not isinstance(config, URRtdeConfig):
            raise TypeError(f"config must be a URRtdeConfig, got {type(config).__name__}")
        if servo is not None and gripper is not None:
            raise ValueError("with the servo core in the worker the worker owns the gripper: pass gripper=None")
        self.config = config
        self.servo_config = servo
        self._gripper = gripper
        self._ctx = mp.get_context("spawn")
        self._proc = None
        self._conn = None
        self._shared: SharedState | None = None
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
        shared = SharedState(self._ctx)
        proc = self._ctx.Process(target=worker_main, args=(asdict(cfg), child_conn, shared, os.getpid(), self.servo_config),
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
        while self._shared.read()[STATE_SLOTS["host_time_s"]] == 0.0:
            if time.monotonic() > deadline:
                self.disconnect()
                raise ArmError(f"no RTDE state from {cfg.robot_ip} within {cfg.state_timeout_s + 1.0:.1f} s of connecting")
            time.sleep(0.005)
        if self._gripper is None and self.servo_config is None:  # with the servo core the worker owns it
            self._gripper = gripper_from_config(cfg)
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
        return fresh_snapshot(self._shared, self.config.state_timeout_s, self.config.robot_ip)

    def state(self) -> ArmState:
        """Latest RTDE sample (`ur_rtde_state.arm_state_from_slots`: q, dq (6,) rad, rad/s; TCP
        pose (7,) x, y, z m + quaternion wxyz in the UR base frame; gripper closure 0..1, NaN
        without a gripper; stamp_s host monotonic time; protective_stop; extra: speed_scaling,
        safety_mode, counters, ...). Raises ArmError when the sample is stale."""
        s = self._snapshot()
        gripper = self._gripper.position() if self._gripper is not None else s[STATE_SLOTS["gripper_position"]]
        return arm_state_from_slots(s, gripper, self._gripper_cmd)

    @property
    def speed_scaling(self) -> float:
        """Speed slider x speed scaling reported by the controller (0..1); 0.0 if unreadable."""
        try:
            return float(self._snapshot()[STATE_SLOTS["speed_scaling"]])
        except ArmError:
            return 0.0

    def servo_joint(self, q: np.ndarray, dt_s: float) -> None:
        """Stream one joint target (6,) rad, reached in dt_s s (servoJ t). Fire-and-forget; the
        worker refuses it while the controller is stopped or in freedrive. Raises ArmError
        if the worker is gone, SafetyViolation("invalid"/"non_finite") on a bad target or
        period (`robot.commands`, the conversion SafeArm uses; the worker checks again)."""
        q = joint_vector(q)
        dt_s = check_servo_period(dt_s)
        self._refuse_if_worker_servo("servo_joint")
        self._send(("servo", q.tolist(), dt_s))

    def set_gripper(self, closed_fraction: float) -> None:
        """Gripper closure 0 (open) .. 1 (closed); non-blocking. With gripper "none" the command
        is recorded (extra["gripper_command"]) and ignored (warned once). Raises ArmError after
        a gripper failure (socket lost)."""
        self._refuse_if_worker_servo("set_gripper")
        if self._gripper is None:
            if self._gripper_cmd is None:
                log.warning("URRtdeArm: no gripper configured (URRtdeConfig.gripper = 'none'): gripper commands are ignored")
            self._gripper_cmd = float(closed_fraction)
            return
        command_gripper(self._gripper, closed_fraction)
        self._gripper_cmd = float(closed_fraction)

    def stop(self) -> None:
        """servoStop (the worker decelerates the arm; with the servo core there, its `hold`);
        non-blocking, ordered after earlier targets."""
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

    def servo_call(self, method: str, *args: Any, timeout_s: float | None = None) -> Any:
        """Call `method(*args)` of the worker's servo core (servo-in-worker layout;
        `ur_rtde_worker.SERVO_CORE_CALLS`) and return its result. Raises ArmError when the
        worker is gone, does not answer within timeout_s (default command_timeout_s), or the
        call fails (the worker's error text)."""
        if self.servo_config is None:
            raise ArmError("URRtdeArm was built without a servo core in the worker (servo=None)")
        return self._request("servo", (method, args), timeout_s=timeout_s or self.config.command_timeout_s)

    # ------------------------------------------------------------------ plumbing
    def _refuse_if_worker_servo(self, what: str) -> None:
        if self.servo_config is not None:
            raise ArmError(f"URRtdeArm.{what}: the servo loop runs in the RTDE worker (servo-in-worker layout); "
                           "send action chunks through robot.ur_rtde_servo.WorkerServoCore")

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
