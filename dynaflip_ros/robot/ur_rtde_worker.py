"""The RTDE worker process of `robot.ur_rtde_arm.URRtdeArm`: the only owner of the ur_rtde client.

ur_rtde's constructors can block forever (holding the GIL) on a peer that accepts TCP but never
speaks RTDE, and its interfaces are not thread-safe (docs/ur_rtde_protocol.md §1), so the node
process never imports it: `URRtdeArm.connect()` spawns `worker_main` in a child process
(multiprocessing "spawn") and talks to it over one duplex pipe plus one shared-memory block
(`robot.ur_rtde_state.SharedState`).

Two layouts:
- direct (teleop, calibration, the fault-injection bench): the node process runs interpolator,
  ServoLoop and SafeArm and sends each servo target here;
- servo in the worker (the `ur3_driver` node, `Ur3DriverNodeConfig.servo_in_worker`): this
  process runs a `robot.servo_core.ServoCore` (interpolator -> ServoLoop thread -> SafeArm) over
  its `WorkerArm`, and the node sends action chunks. The servo loop then shares a GIL only with
  this process's two other threads, never with rclpy callbacks or inference.

Process / thread ownership:
- worker main thread: receives pipe messages; in the direct layout calls servoJ / servoStop
  through `WorkerArm`; answers requests (re-arm, freedrive, close, the servo core's calls);
  kicks the controller watchdog and runs the stale-command stop.
- worker servo thread ("servo_loop", servo-in-worker layout only): `ServoCore`'s loop at the
  controller rate, SCHED_FIFO at `rt_priority`; servoJ / servoStop through `WorkerArm`.
- worker state thread ("rtde_state"): polls the `RTDEReceiveInterface` (`rtde_r`) getters at the
  RTDE rate and is the only writer of the seqlocked state slots and of `gripper_position`
  (the main thread reads `rtde_r` too, only while it re-arms).
- `WorkerArm` is the only user of `RTDEControlInterface` (`rtde_c`), under its leaf lock.
- node process (URRtdeArm): reads `SharedState` (never blocks the writers) and sends messages.

Pipe messages (node -> worker), all tuples:
    ("servo", q: list[6] rad, dt_s: float s)   direct layout: fire-and-forget servoJ target;
                                                re-converted and checked here
                                                (`robot.commands`), refused ones are counted
    ("stop",)                                   servoStop (servo in the worker: `ServoCore.hold`)
    ("request", req_id: int, what: str, arg)    what in {"rearm", "freedrive", "close", "servo"};
                                                "servo": arg = (method, args) of the worker's
                                                ServoCore, method in `SERVO_CORE_CALLS`; answered
                                                with ("reply", req_id, ok: bool, result | error text)
Worker -> node at start: ("ready", {"rate_hz", "pid", "servo_in_worker"}) or ("error", text).

Timing rules: in the direct layout servo targets go out at once (the node's ServoLoop owns the
timing); the pipe is polled every min(worker_stale_command_s / 4, half the controller-watchdog
period, 10 ms); no servoJ written for `worker_stale_command_s` while streaming -> servoStop
(the node froze, or the worker's servo thread stalled); a dead parent (pipe closed or ppid
changed) -> servoStop, stopScript, disconnect. All times are `time.monotonic()` seconds.
"""
from __future__ import annotations

import logging
import math
import os
import threading
import time
from typing import Any

from dynaflip_ros.configs.robot import URRtdeConfig
from dynaflip_ros.robot.commands import SafetyViolation, check_servo_period, joint_vector
from dynaflip_ros.robot.gripper import gripper_from_config
from dynaflip_ros.robot.ur_rtde_state import (  # noqa: F401 - re-exported for URRtdeArm
    N_SLOTS, QD_SLOT, Q_SLOT, RECEIVE_VARIABLES, ROBOT_MODE_RUNNING, RUNTIME_PLAYING, SAFETY_BIT_EMERGENCY,
    SAFETY_BIT_PROTECTIVE, SAFETY_MODE_NAMES, SAFETY_MODE_NORMAL, SAFETY_MODE_REDUCED, STATE_SLOTS, TARGET_Q_SLOT,
    TCP_SLOT, SharedState, arm_state_from_slots, fresh_snapshot, is_stopped,
)
from dynaflip_ros.robot.ur_rtde_worker_arm import WorkerArm

# The worker logs under the arm module's name, as it did before the split (same log lines).
log = logging.getLogger("dynaflip_ros.robot.ur_rtde_arm")

# The ServoCore methods the node may call through ("request", id, "servo", (method, args)).
SERVO_CORE_CALLS = frozenset({"add_chunk", "hold", "rearm", "status", "halt_state"})


def worker_main(cfg: dict, conn, shared: SharedState, parent_pid: int, driver_config=None) -> None:  # pragma: no cover - runs in a child
    """Entry point of the RTDE worker process (see the module docstring). `driver_config`: a
    `configs.ros.Ur3DriverNodeConfig` -> the servo core runs here (servo-in-worker layout)."""
    import signal

    import rtde_control
    import rtde_receive
    from dashboard_client import DashboardClient

    # Ctrl-C in a terminal reaches the whole process group: the node decides when the worker
    # stops (a "close" request, or the pipe closing when the node dies), never a stray SIGINT.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    config = URRtdeConfig(**cfg)
    host, rate_hz = config.robot_ip, config.controller_rate_hz
    publish = shared.set  # flags: one writer per slot, no lock

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
    gripper = None
    publish(gripper_position=math.nan)

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
                if gripper is not None:
                    publish(gripper_position=gripper.position())
            except Exception:  # noqa: BLE001 - counted; the parent sees the state age grow
                shared.bump("state_errors")
            t_next += period
            delay = t_next - time.monotonic()
            if delay > 0:
                stop_event.wait(delay)
            else:
                t_next = time.monotonic()

    if config.rt_priority > 0:  # before the threads start: they inherit the policy
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(config.rt_priority))
        except (PermissionError, OSError) as e:
            log.warning("RTDE worker: SCHED_FIFO %d refused (%s); running with normal priority", config.rt_priority, e)
    threading.Thread(target=state_loop, name="rtde_state", daemon=True).start()

    def read_state(gripper_command):
        snap = fresh_snapshot(shared, config.state_timeout_s, host)
        return arm_state_from_slots(snap, snap[STATE_SLOTS["gripper_position"]], gripper_command)

    arm = WorkerArm(config, rtde_c, rtde_r, dash, read_state, stopped_flag.is_set, shared)
    core = None

    def shut_down() -> None:
        """Stop the threads and the arm (servo core first, then servoStop / stopScript), disconnect."""
        stop_event.set()
        if core is not None:
            core.close()  # stops the servo thread, then servoStop
        arm.close()
        for closer in (rtde_c.disconnect, rtde_r.disconnect, dash.disconnect):
            try:
                closer()
            except Exception:  # noqa: BLE001
                pass

    kick_period_s = 0.5 / config.controller_watchdog_hz if config.controller_watchdog_hz > 0 else math.inf
    poll_s = min(config.worker_stale_command_s / 4.0, kick_period_s, 0.01)
    setup_done = threading.Event()

    def kick_during_setup() -> None:
        # Connecting the gripper takes seconds: keep the controller's RTDE watchdog fed meanwhile.
        while not setup_done.wait(poll_s):
            arm.kick_if_idle(time.monotonic())

    threading.Thread(target=kick_during_setup, name="rtde_setup_kick", daemon=True).start()
    try:
        if driver_config is not None:
            deadline = time.monotonic() + config.state_timeout_s + 1.0
            while shared.read()[STATE_SLOTS["host_time_s"]] == 0.0:  # the first state sample
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no RTDE state within {config.state_timeout_s + 1.0:.1f} s of connecting")
                time.sleep(0.005)
            # The freshly uploaded control script reports PLAYING a few cycles later: give it until
            # the deadline, so SafeArm does not latch a halt at connect for a start-up transient (a
            # real stop still active then is latched, as it must be).
            while stopped_flag.is_set() and time.monotonic() < deadline:
                time.sleep(0.005)
            gripper = gripper_from_config(config)
            if gripper is not None:
                gripper.connect()
                arm.gripper = gripper
            from dynaflip_ros.robot.servo_core import ServoCore

            core = ServoCore(arm, driver_config, time.monotonic)
            core.start(rt_priority=config.rt_priority)
    except Exception as e:  # noqa: BLE001 - reported to the parent, which raises ArmError
        setup_done.set()
        conn.send(("error", f"servo core: {type(e).__name__}: {e}"))
        shut_down()
        return
    setup_done.set()
    conn.send(("ready", {"rate_hz": rate_hz, "pid": os.getpid(), "servo_in_worker": core is not None}))

    def parent_alive() -> bool:
        return os.getppid() == parent_pid

    def serve(what: str, arg: Any) -> Any:
        if what == "rearm":
            return arm.rearm()
        if what == "freedrive":
            if core is not None:
                raise RuntimeError("the servo loop runs in the RTDE worker (ur3_driver); freedrive is for the "
                                   "direct layout (teleop)")
            return arm.set_freedrive(bool(arg))
        if what == "servo":
            method, args = arg
            if core is None or method not in SERVO_CORE_CALLS:
                raise ValueError(f"no servo core call {method!r} here (servo in worker: {core is not None})")
            return getattr(core, method)(*args)
        raise ValueError(f"unknown request {what!r}")

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
                publish(rtde_control_connected=float(arm.control_connected()))
                arm.stop_if_stale(now)
                arm.kick_if_idle(now)
                continue
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                break
            kind = msg[0]
            if kind == "servo":
                if core is not None:
                    log.error("RTDE worker: direct servo target refused: the servo loop runs in this worker")
                    continue
                try:  # defence in depth: the same conversion as SafeArm / URRtdeArm.servo_joint
                    q, dt_s = joint_vector(msg[1]), check_servo_period(msg[2])
                except (SafetyViolation, IndexError) as e:
                    # Refused, and not a sign of life: garbage must not hold off the stale stop.
                    log.error("RTDE worker: servo message refused: %s", e)
                    shared.bump("servo_refused")
                    arm.stop_if_stale(now)
                    continue
                arm.servo_joint(q, dt_s)
            elif kind == "stop":
                core.hold() if core is not None else arm.stop()
            elif kind == "request":
                _, req_id, what, arg = msg
                if what == "close":
                    conn.send(("reply", req_id, True, "closing"))
                    break
                try:
                    conn.send(("reply", req_id, True, serve(what, arg)))
                except Exception as e:  # noqa: BLE001 - reported to the caller
                    conn.send(("reply", req_id, False, f"{type(e).__name__}: {e}"))
    finally:
        shut_down()
