"""The loopback UR controller: controller state (`ControllerCore`), its single-threaded network
loop (`ControllerServer`) and the parent-side handle (`LoopbackURController`) that runs it in its
own process.

Sources: docs/ur_rtde_protocol.md (authoritative: §1 ports, §2 RTDE, §3 ur_rtde 1.6.5 behaviour,
§4 fake-controller design, §5 dashboard), the UR3 of `sim/cell.py`, and Robotiq's URCap socket
protocol (port 63352).

Design: one process, one thread. A `selectors` loop serves every socket (29999 dashboard, 30003
script upload, 30004 RTDE, 63352 Robotiq URCap) and the parent's command pipe, and runs the
controller cycle at absolute deadlines t0 + k·period (period 2 ms for e-Series versions, 8 ms for
CB3 ones). Each cycle: watchdog check, script tick (register command protocol), motion generator,
arm model (MuJoCo or kinematic), gripper, then one `U` package to every started RTDE connection
whose requested frequency is due. When the process falls behind, it runs the missed cycles
without sending (the real controller skips packages under load, docs/ur_rtde_protocol.md §2.4) and counts them.
"""
from __future__ import annotations

import atexit
import collections
import ipaddress
import json
import logging
import math
import os
import re
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import weakref
from typing import Any

import numpy as np

from dynaflip_ros.configs.sim import DEFAULT_HOME_Q_RAD
from dynaflip_ros.robot.kinematics import (
    UR3_JOINT_LIMITS_RAD,
)
from dynaflip_ros.sim.ur_loopback import arm_model, dashboard
from dynaflip_ros.sim.ur_loopback import rtde_protocol as rp
from dynaflip_ros.sim.ur_loopback.arm_model import ArmBackend, JointMotion
from dynaflip_ros.sim.ur_loopback.robotiq_server import RobotiqGripper
from dynaflip_ros.sim.ur_loopback.script_emulation import ScriptEmulator, split_programs

log = logging.getLogger(__name__)

DASHBOARD_PORT = 29999
SCRIPT_PORT = 30003
RTDE_PORT = 30004
ROBOTIQ_PORT = 63352
DEFAULT_UR_VERSION = (5, 11, 1, 108318)
# UR3 home inside the cell's workspace: the sim env's flange-down ready pose (configs/sim.py).
DEFAULT_Q0_RAD = tuple(DEFAULT_HOME_Q_RAD)
INJECT_KINDS = ("protective_stop", "emergency_stop", "clear_emergency_stop", "program_stop",
                "speed_slider", "silent", "stream_pause", "drop_connections", "gripper_object",
                "remote_control")
MAX_SEND_BUFFER = 4 << 20        # a client that stops draining is disconnected (docs/ur_rtde_protocol.md §2.4)
MAX_CATCHUP_CYCLES = 50          # beyond this lag controller time is dropped, not replayed
TRACE_MAX_ROWS = 300_000         # 10 min at 500 Hz
STOP_DECEL_RAD_S2 = 10.0         # program stop / watchdog stop deceleration

# Status bits (docs/ur_rtde_protocol.md §4.1)
SAFETY_BIT_NORMAL = 1 << 0
SAFETY_BIT_PROTECTIVE = 1 << 2
SAFETY_BIT_ROBOT_ESTOP = 1 << 6
SAFETY_BIT_EMERGENCY = 1 << 7
SAFETY_BIT_STOPPED_DUE_TO_SAFETY = 1 << 10
PLAYING, STOPPED, PAUSED = 2, 1, 4
_REGISTER_WRITE_RE = re.compile(r"write_output_integer_register\(\s*([0-9+\s]+?)\s*,\s*(-?\d+)\s*\)")


def _check_host(host: str) -> str:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError as e:
        raise ValueError(f"host must be a literal IPv4 loopback address (127.x.y.z), got {host!r}") from e
    if ip.version != 4 or not ip.is_loopback:
        raise ValueError(f"host must be an IPv4 loopback address (127.x.y.z), got {host!r}: "
                         "the loopback controller never listens on a network interface")
    return str(ip)


def _check_version(v) -> tuple[int, int, int, int]:
    try:
        t = tuple(int(x) for x in v)
    except (TypeError, ValueError) as e:
        raise ValueError(f"ur_version must be 4 integers (major, minor, bugfix, build), got {v!r}") from e
    if len(t) != 4 or min(t) < 0 or t[0] not in (3, 5):
        raise ValueError(f"ur_version must be (3|5, minor, bugfix, build), got {v!r}")
    return t  # type: ignore[return-value]


def _check_q0(q0) -> tuple[float, ...]:
    q = np.asarray(DEFAULT_Q0_RAD if q0 is None else q0, dtype=float)
    if q.shape != (6,) or not np.all(np.isfinite(q)):
        raise ValueError(f"q0 must be 6 finite joint angles (rad), got {q0!r}")
    if np.any(q < UR3_JOINT_LIMITS_RAD[:, 0]) or np.any(q > UR3_JOINT_LIMITS_RAD[:, 1]):
        raise ValueError(f"q0 outside the UR3 joint limits: {q0!r}")
    return tuple(float(x) for x in q)


class ControllerCore:
    """State of the emulated UR controller (robot, safety, program, registers, arm, gripper).

    Args: version (4 ints), q0 (6,) rad, physics (MuJoCo vs kinematic), with_gripper,
    protective_stop_unlock_delay_s (a real UR refuses the unlock for 5 s, docs/ur_rtde_protocol.md §4.4).
    """

    def __init__(self, version=DEFAULT_UR_VERSION, q0=None, physics: bool = True,
                 with_gripper: bool = True, protective_stop_unlock_delay_s: float = 0.0) -> None:
        self.version = _check_version(version)
        q0 = np.asarray(_check_q0(q0))
        self.base_rate_hz = 500.0 if self.version[0] >= 5 else 125.0
        self.period_s = 1.0 / self.base_rate_hz
        self.cycle = 0
        self.time_s = 0.0
        self.robot_mode = 7
        self.safety_mode = 1
        self.runtime_state = STOPPED
        self.program_name: str | None = None
        self.program_kind: str | None = None     # "rtde_control" | "foreign" | None
        self.loaded_program: str | None = None
        self.last_rtde_script: str | None = None
        self.last_foreign_script: str | None = None
        self.remote_control = True
        self.slider = 1.0                # target_speed_fraction (speed slider): scales all motion
        self.speed_scaling = 1.0         # trajectory-limiter scaling (< 1 while servo targets
                                         # exceed the joint speed limits)
        self.in_int = [0] * rp.N_REGISTERS
        self.in_dbl = [0.0] * rp.N_REGISTERS
        self.out_int = [0] * rp.N_REGISTERS
        self.out_dbl = [0.0] * rp.N_REGISTERS
        self.inputs: dict[str, Any] = {}
        self.digital_out = 0
        self.analog_out = [0.0, 0.0]
        self.tcp_offset = np.zeros(6)
        self.with_gripper = bool(with_gripper)
        self.payload_kg = 0.925 if with_gripper else 0.0
        self.payload_cog = np.array([0.0, 0.0, 0.06 if with_gripper else 0.0])
        self.payload_inertia = np.zeros(6)
        self.teach_mode = False
        self.protective_stop_unlock_delay_s = float(protective_stop_unlock_delay_s)
        self._pstop_host_s = 0.0
        self.motion = JointMotion(q0)
        self.arm = ArmBackend(q0, physics=physics)
        self.gripper = RobotiqGripper() if with_gripper else None
        self.gripper_block: float | None = None
        self.script = ScriptEmulator(self)
        self.q_history: collections.deque = collections.deque([q0.copy()], maxlen=1000)
        self.watchdog = {"armed": False, "min_hz": 0.0, "tripped": False, "trips": 0}
        self._wd_last_write_s = 0.0
        self.n_servoj = 0
        self.last_servoj: dict | None = None
        self.errors: list[str] = []          # protocol anomalies
        self.events: list[str] = []          # state changes, for the log
        self._prev_tcp = arm_model.tcp_pose(q0)
        self._tcp_speed = np.zeros(6)
        self.exec_time_ms = 0.0

    # ------------------------------------------------------------------ logging
    def log_error(self, msg: str) -> None:
        """A protocol anomaly or a failed command (counted; keep 0 in normal runs)."""
        if len(self.errors) < 1000:
            self.errors.append(f"t={self.time_s:.3f}s {msg}")
        log.warning("loopback UR: %s", msg)

    def _event(self, msg: str) -> None:
        if len(self.events) > 1000:
            del self.events[:500]
        self.events.append(f"t={self.time_s:.3f}s {msg}")
        log.info("loopback UR: %s", msg)

    # ------------------------------------------------------------------ derived values
    @property
    def safety_status_bits(self) -> int:
        if self.safety_mode == 1:
            return SAFETY_BIT_NORMAL
        if self.safety_mode == 3:
            return SAFETY_BIT_PROTECTIVE | SAFETY_BIT_STOPPED_DUE_TO_SAFETY
        if self.safety_mode in (6, 7):
            estop = SAFETY_BIT_ROBOT_ESTOP if self.safety_mode == 7 else (1 << 5)
            return estop | SAFETY_BIT_EMERGENCY | SAFETY_BIT_STOPPED_DUE_TO_SAFETY
        return 1 << 10

    @property
    def robot_status_bits(self) -> int:
        bits = 0
        if self.robot_mode in (4, 5, 6, 7):
            bits |= 1
        if self.runtime_state == PLAYING:
            bits |= 2
        return bits

    def jacobian(self, q: np.ndarray) -> np.ndarray:
        """(6, 6) numeric geometric Jacobian of the TCP (linear m/rad; angular via rotation
        vector differences) at q."""
        p0 = arm_model.tcp_pose(q, self.tcp_offset)
        t0 = arm_model.transform_from_ur_pose(p0)
        jac = np.zeros((6, 6))
        h = 1e-6
        for i in range(6):
            dq = np.array(q, dtype=float)
            dq[i] += h
            t1 = arm_model.transform_from_ur_pose(arm_model.tcp_pose(dq, self.tcp_offset))
            jac[:3, i] = (t1[:3, 3] - t0[:3, 3]) / h
            jac[3:, i] = arm_model.matrix_to_rotvec(t1[:3, :3] @ t0[:3, :3].T) / h
        return jac

    # ------------------------------------------------------------------ program control
    def start_script(self, text: str, name: str) -> None:
        """A program arrived on 30003 (docs/ur_rtde_protocol.md §4.2 step 5). The running one is replaced."""
        if self.runtime_state in (PLAYING, PAUSED):
            self.stop_program(f"replaced by uploaded program {name!r}")
        if self.robot_mode != 7 or self.safety_mode != 1:
            self.log_error(f"program {name!r} uploaded while robot_mode={self.robot_mode} "
                           f"safety_mode={self.safety_mode}: not started")
            return
        self.program_name = name
        if name == "rtde_control":
            self.program_kind = "rtde_control"
            self.last_rtde_script = text
            self.script.on_upload(text)
        else:
            # sendCustomScript* and other programs: run to completion at once (not interpreted)
            self.program_kind = "foreign"
            self.last_foreign_script = text
            # Only its register writes are executed, in order (sendCustomScriptFunction's wrapper
            # writes 1 at the start and 2 at the end, docs/ur_rtde_protocol.md §3.4); everything else is skipped.
            for idx, val in _REGISTER_WRITE_RE.findall(text):
                k = sum(int(x) for x in idx.split("+") if x.strip())
                if 0 <= k < rp.N_REGISTERS:
                    self.out_int[k] = int(val)
            self.script._unsupported_note(f"uploaded program {name!r}: only its "
                                          "write_output_integer_register calls are executed")
        self.runtime_state = PLAYING
        self.motion.hold(self.motion.q_ref)
        self._event(f"program {name!r} started")
        if self.program_kind == "foreign":
            self.stop_program(f"program {name!r} finished")

    def stop_program(self, reason: str) -> None:
        """Program ends (runtime_state STOPPED); the arm decelerates to standstill."""
        was = self.runtime_state
        self.runtime_state = STOPPED
        if self.motion.mode not in ("hold", "teach"):
            self.motion.stop(STOP_DECEL_RAD_S2)
        self.watchdog["armed"] = False
        self.script.executing = None
        self.script.path_running = False
        self.script.async_running = False
        if self.teach_mode:
            self.set_teach(False)
        if was != STOPPED:
            self._event(f"program stopped: {reason}")

    def pause_program(self) -> None:
        self.runtime_state = PAUSED
        self.motion.stop(STOP_DECEL_RAD_S2)
        self._event("program paused")

    def play_loaded_program(self) -> None:
        self.program_name = self.loaded_program
        self.program_kind = "foreign"
        self.runtime_state = PLAYING
        self._event(f"program {self.loaded_program!r} playing (not interpreted)")

    def protective_stop(self, reason: str) -> None:
        """docs/ur_rtde_protocol.md §4.4: safety_mode 3, bits 2 + 10; the arm stops where it is; the program is
        paused (runtime_state PAUSED) and stays halted until unlock (then STOPPED)."""
        if self.safety_mode == 3:
            return
        self.safety_mode = 3
        self._pstop_host_s = time.monotonic()
        self.motion.hold(self.arm.q)
        if self.runtime_state == PLAYING:
            self.runtime_state = PAUSED
        self.watchdog["armed"] = False
        self._event(f"protective stop: {reason}")

    def unlock_protective_stop(self) -> bool:
        """Dashboard `unlock protective stop`; False when refused (too early)."""
        if time.monotonic() - self._pstop_host_s < self.protective_stop_unlock_delay_s:
            return False
        self.safety_mode = 1
        if self.runtime_state != STOPPED:
            self.stop_program("protective stop unlocked (program must be re-uploaded)")
        self.motion.hold(self.arm.q)
        self._event("protective stop released")
        return True

    def emergency_stop(self) -> None:
        """Robot e-stop: safety_mode 7, bits 6, 7, 10; program stopped, arm power off
        (robot_mode POWER_OFF) with the arm held where it is."""
        self.safety_mode = 7
        self.motion.hold(self.arm.q)
        self.stop_program("emergency stop")
        self.motion.hold(self.arm.q)
        self.robot_mode = 3
        self._event("emergency stop")

    def clear_emergency_stop(self, power_on: bool = False) -> None:
        """E-stop released: safety NORMAL; the arm stays powered off (dashboard `power on` +
        `brake release` bring it to RUNNING) unless power_on=True."""
        if self.safety_mode in (6, 7):
            self.safety_mode = 1
            self._event("emergency stop released")
        if power_on:
            self.robot_mode = 7

    def power_on(self) -> None:
        if self.robot_mode in (3, 4) and self.safety_mode == 1:
            self.robot_mode = 5

    def power_off(self) -> None:
        self.stop_program("power off")
        self.motion.hold(self.arm.q)
        self.robot_mode = 3

    def brake_release(self) -> None:
        if self.robot_mode in (4, 5) and self.safety_mode == 1:
            self.robot_mode = 7

    def restart_safety(self) -> None:
        if self.safety_mode not in (1, 3, 6, 7):
            self.safety_mode = 1
            self.robot_mode = 3

    def set_teach(self, on: bool) -> None:
        self.teach_mode = bool(on)
        self.motion.teach(on)

    def set_watchdog(self, min_hz: float) -> None:
        """rtde_set_watchdog on the command register (docs/ur_rtde_protocol.md §3.7 notes); 0 disarms."""
        if not (math.isfinite(min_hz) and min_hz >= 0):
            self.log_error(f"setWatchdog with invalid frequency {min_hz!r}")
            return
        self.watchdog.update(armed=min_hz > 0, min_hz=float(min_hz), tripped=False)
        self._wd_last_write_s = time.monotonic()

    # ------------------------------------------------------------------ inputs (U from clients)
    def apply_inputs(self, values: dict[str, Any]) -> None:
        """Store the values of one input `U` package by name (docs/ur_rtde_protocol.md §4.2 step 6)."""
        o = self.script.offset
        cmd_reg = f"input_int_register_{o}"
        for name, val in values.items():
            if name.startswith("input_int_register_"):
                self.in_int[int(name[19:])] = int(val)
            elif name.startswith("input_double_register_"):
                self.in_dbl[int(name[22:])] = float(val)
            else:
                self.inputs[name] = val
        if cmd_reg in values:
            self._wd_last_write_s = time.monotonic()
            if int(values[cmd_reg]) == 11:
                self.n_servoj += 1
                self.last_servoj = {
                    "q": [float(x) for x in self.in_dbl[o:o + 6]],
                    "speed": float(self.in_dbl[o + 6]), "acc": float(self.in_dbl[o + 7]),
                    "time": float(self.in_dbl[o + 8]), "lookahead": float(self.in_dbl[o + 9]),
                    "gain": float(self.in_dbl[o + 10]), "stamp": self.time_s,
                }
        if int(values.get("speed_slider_mask", 0)) & 1:
            f = float(values.get("speed_slider_fraction", self.slider))
            if math.isfinite(f):
                self.slider = min(max(f, 0.0), 1.0)
        for mask_n, val_n, shift in (("standard_digital_output_mask", "standard_digital_output", 0),
                                     ("configurable_digital_output_mask", "configurable_digital_output", 8),
                                     ("tool_digital_output_mask", "tool_digital_output", 16)):
            if mask_n in values:
                mask = int(values[mask_n]) << shift
                bits = int(values.get(val_n, 0)) << shift
                self.digital_out = (self.digital_out & ~mask) | (bits & mask)
        if "standard_analog_output_mask" in values:
            mask = int(values["standard_analog_output_mask"])
            for k in (0, 1):
                if mask & (1 << k):
                    self.analog_out[k] = float(values.get(f"standard_analog_output_{k}", 0.0))

    # ------------------------------------------------------------------ the control cycle
    def step(self) -> None:
        """One controller cycle of `period_s`."""
        dt = self.period_s
        now = time.monotonic()
        wd = self.watchdog
        if wd["armed"] and self.runtime_state == PLAYING and now - self._wd_last_write_s > 1.0 / wd["min_hz"]:
            wd["tripped"] = True
            wd["trips"] += 1
            self.stop_program(f"RTDE watchdog: no command-register write for "
                              f"{now - self._wd_last_write_s:.3f} s (min {wd['min_hz']} Hz)")
        if self.program_kind == "rtde_control" and self.runtime_state == PLAYING and self.safety_mode == 1:
            self.script.tick()
        halted = self.safety_mode != 1 or self.robot_mode != 7
        if halted:
            self.motion.hold()
        self.motion.update(dt, 0.0 if halted else self.slider, self.arm.q, self.time_s)
        self.speed_scaling = self.motion.limiter
        finger_cmd = 0.0
        if self.gripper is not None:
            finger_cmd = self.gripper.step_command(dt)
        self.arm.step(dt, self.motion.q_ref, self.motion.qd_ref, finger_cmd, self.gripper_block)
        if self.gripper is not None:
            self.gripper.observe(dt, self.arm.finger_closure, self.arm.finger_velocity)
        self.cycle += 1
        self.time_s = self.cycle * dt
        self.q_history.append(self.arm.q.copy())

    def outputs(self) -> dict[str, Any]:
        """Every non-register output variable for the current cycle (docs/ur_rtde_protocol.md §2.3, §3.2)."""
        arm, mot = self.arm, self.motion
        q, qd = arm.q, arm.qd
        frames = arm_model.dh_frames(q.tolist())
        tool = arm_model.transform_from_ur_pose(self.tcp_offset) if np.any(self.tcp_offset) else np.eye(4)
        t_tcp = frames[-1] @ tool
        tcp = arm_model.ur_pose_from_transform(t_tcp)
        dt = self.period_s
        lin = (tcp[:3] - self._prev_tcp[:3]) / dt
        r_prev = arm_model.rotvec_to_matrix(self._prev_tcp[3:])
        ang = arm_model.matrix_to_rotvec(t_tcp[:3, :3] @ r_prev.T) / dt
        self._prev_tcp = tcp
        tcp_speed = np.concatenate([lin, ang])
        target_tcp = arm_model.tcp_pose(mot.q_ref, self.tcp_offset)
        current = arm.torque / np.array([13.0, 13.0, 9.0, 4.0, 4.0, 4.0])   # A, rough torque constants
        joint_mode = [253] * 6 if self.robot_mode == 7 else ([239] * 6 if self.robot_mode <= 3 else [255] * 6)
        accel = t_tcp[:3, :3].T @ np.array([0.0, 0.0, 9.81])
        elbow = frames[1][:3, 3]
        return {
            "timestamp": self.time_s,
            "target_q": mot.q_ref, "target_qd": mot.qd_ref, "target_qdd": mot.qdd_ref,
            "target_current": current, "target_moment": arm.torque,
            "actual_q": q, "actual_qd": qd, "actual_qdd": arm.qdd, "actual_current": current,
            "actual_current_as_torque": arm.torque, "actual_moment": arm.torque,
            "joint_control_output": current,
            "actual_TCP_pose": tcp, "actual_TCP_speed": tcp_speed, "actual_TCP_force": np.zeros(6),
            "target_TCP_pose": target_tcp, "target_TCP_speed": tcp_speed,
            "actual_digital_input_bits": 0, "joint_temperatures": [30.0] * 6,
            "actual_execution_time": self.exec_time_ms, "robot_mode": self.robot_mode,
            "joint_mode": joint_mode, "safety_mode": self.safety_mode,
            "actual_tool_accelerometer": accel, "speed_scaling": self.speed_scaling,
            "target_speed_fraction": self.slider,
            "actual_momentum": float(np.sum(np.abs(qd))) * 0.1,
            "actual_main_voltage": 48.0, "actual_robot_voltage": 48.0 if self.robot_mode >= 4 else 0.0,
            "actual_robot_current": 0.4 + float(np.sum(np.abs(current))) * 0.1,
            "actual_joint_voltage": [47.5] * 6, "actual_digital_output_bits": self.digital_out,
            "runtime_state": self.runtime_state, "standard_analog_input0": 0.0,
            "standard_analog_input1": 0.0, "standard_analog_output0": self.analog_out[0],
            "standard_analog_output1": self.analog_out[1],
            "robot_status_bits": self.robot_status_bits,
            "safety_status_bits": self.safety_status_bits,
            "ft_raw_wrench": np.zeros(6), "payload": self.payload_kg, "payload_cog": self.payload_cog,
            "payload_inertia": self.payload_inertia, "elbow_position": elbow,
            "elbow_velocity": np.zeros(3), "tool_mode": 0, "tool_output_voltage": 24,
            "tool_analog_input0": 0.0, "tool_analog_input1": 0.0, "tool_output_current": 0.0,
            "tool_temperature": 32.0, "tcp_force_scalar": 0.0,
            "output_bit_registers0_to_31": 0, "output_bit_registers32_to_63": 0,
        }

    def value(self, name: str, base: dict[str, Any]) -> Any:
        """One output variable (registers included)."""
        v = base.get(name)
        if v is not None:
            return v
        if name.startswith("output_int_register_"):
            return int(self.out_int[int(name[20:])])
        if name.startswith("output_double_register_"):
            return float(self.out_dbl[int(name[23:])])
        if name.startswith("input_int_register_"):
            return int(self.in_int[int(name[19:])])
        if name.startswith("input_double_register_"):
            return float(self.in_dbl[int(name[22:])])
        if name.startswith("output_bit_register_"):
            return 0
        raise KeyError(name)

    def snapshot(self) -> dict:
        """Plain-data view of the state (see LoopbackURController.snapshot)."""
        g = self.gripper.snapshot() if self.gripper is not None else None
        return {
            "actual_q": self.arm.q.tolist(), "actual_qd": self.arm.qd.tolist(),
            "target_q": self.motion.q_ref.tolist(), "robot_mode": self.robot_mode,
            "safety_mode": self.safety_mode, "safety_status_bits": self.safety_status_bits,
            "robot_status_bits": self.robot_status_bits, "runtime_state": self.runtime_state,
            "speed_scaling": self.speed_scaling, "target_speed_fraction": self.slider,
            "controller_time_s": self.time_s, "script_running": (
                self.program_kind == "rtde_control" and self.runtime_state == PLAYING),
            "program_name": self.program_name, "register_offset": self.script.offset,
            "n_servoj": self.n_servoj, "last_servoj": dict(self.last_servoj) if self.last_servoj else None,
            "watchdog": {k: self.watchdog[k] for k in ("armed", "min_hz", "tripped", "trips")},
            "teach_mode": self.teach_mode, "motion_mode": self.motion.mode, "gripper": g,
            "tcp_offset": self.tcp_offset.tolist(), "digital_output_bits": self.digital_out,
            "errors": list(self.errors), "n_errors": len(self.errors), "unsupported": list(self.script.unsupported),
            "events": list(self.events[-50:]), "physics": self.arm.physics,
            "base_rate_hz": self.base_rate_hz, "remote_control": self.remote_control,
            "last_foreign_script": self.last_foreign_script,
        }


class _Conn:
    """One accepted client socket."""

    __slots__ = (
        "closed",
        "in_recipes",
        "kind",
        "out_recipe",
        "owned",
        "peer",
        "phase",
        "proto",
        "rbuf",
        "sent",
        "silent",
        "sock",
        "started",
        "stream_t0",
        "stream_t1",
        "want_write",
        "wbuf",
    )

    def __init__(self, sock: socket.socket, kind: str, silent: bool, peer) -> None:
        self.sock = sock
        self.kind = kind
        self.rbuf = bytearray()
        self.wbuf = bytearray()
        self.silent = silent
        self.proto = 2
        self.out_recipe: rp.Recipe | None = None
        self.in_recipes: dict[int, rp.Recipe] = {}
        self.started = False
        self.phase = 0.0
        self.owned: set[str] = set()
        self.sent = 0
        self.peer = peer
        self.closed = False
        self.want_write = False
        self.stream_t0: float | None = None
        self.stream_t1: float | None = None

    def stream_stats(self) -> dict:
        """Packages sent on this RTDE connection and their mean rate (Hz)."""
        span = (self.stream_t1 - self.stream_t0) if self.stream_t0 is not None and self.stream_t1 else 0.0
        return {"peer": list(self.peer), "frequency_hz": self.out_recipe.frequency_hz if self.out_recipe else 0.0,
                "n_variables": len(self.out_recipe.names) if self.out_recipe else 0, "sent": self.sent,
                "duration_s": span, "rate_hz": (self.sent - 1) / span if span > 0 else 0.0}


class ControllerServer:
    """The network loop around a `ControllerCore` (see module doc).

    Args: host (IPv4 loopback), core, with_gripper (serve 63352), command_conn (`multiprocessing.connection.Connection` to the
    parent, or None), ports (kind -> port overrides). Every cycle is recorded in `trace_buf`.
    Raises OSError (e.g. EADDRINUSE) from `bind()`.
    """

    def __init__(self, host: str, core: ControllerCore, with_gripper: bool = True,
                 command_conn=None, ports: dict[str, int] | None = None) -> None:
        self.host = _check_host(host)
        self.core = core
        # select(2) takes microsecond timeouts (epoll rounds up to whole milliseconds)
        self.sel = selectors.SelectSelector()
        self.ports = {"dashboard": DASHBOARD_PORT, "script": SCRIPT_PORT, "rtde": RTDE_PORT}
        if with_gripper:
            self.ports["gripper"] = ROBOTIQ_PORT
        if ports:
            self.ports.update(ports)
        self.listeners: dict[str, socket.socket] = {}
        self.conns: list[_Conn] = []
        self.command_conn = command_conn
        self.running = False
        self.silent = False
        self.pause_until = 0.0
        self.trace_buf = TraceBuffer(TRACE_MAX_ROWS)
        self.stats = {"cycles": 0, "sent_packages": 0, "late_cycles": 0, "dropped_cycles": 0,
                      "max_late_s": 0.0, "disconnects_overflow": 0}
        self.closed_streams: collections.deque = collections.deque(maxlen=20)
        self._script_text: dict[int, str] = {}
        self._owners: dict[str, _Conn] = {}
        self._t0_host = 0.0
        self._cpu0 = 0.0
        self._late_hist: collections.deque = collections.deque(maxlen=5000)
        self._send_times: collections.deque = collections.deque(maxlen=5000)

    # ------------------------------------------------------------------ sockets
    def bind(self) -> None:
        """Listen on every port (SO_REUSEADDR, the given loopback host only)."""
        for kind, port in self.ports.items():
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((self.host, port))
            except OSError as e:
                s.close()
                self.close()
                raise OSError(e.errno, f"cannot bind {self.host}:{port} ({kind}): {e.strerror}") from e
            s.listen(8)
            s.setblocking(False)
            self.listeners[kind] = s
            self.sel.register(s, selectors.EVENT_READ, ("listen", kind))
        if self.command_conn is not None:
            self.sel.register(self.command_conn.fileno(), selectors.EVENT_READ, ("pipe", None))

    def close(self) -> None:
        for c in list(self.conns):
            self._close_conn(c)
        for s in self.listeners.values():
            try:
                self.sel.unregister(s)
            except (KeyError, ValueError):
                pass
            s.close()
        self.listeners.clear()

    def _accept(self, kind: str) -> None:
        s = self.listeners[kind]
        try:
            sock, peer = s.accept()
        except (BlockingIOError, InterruptedError):
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c = _Conn(sock, kind, self.silent and kind != "script", peer)
        self.conns.append(c)
        self.sel.register(sock, selectors.EVENT_READ, ("conn", c))
        if kind == "dashboard" and not c.silent:
            self._send(c, (dashboard.GREETING + "\n").encode())

    def _close_conn(self, c: _Conn) -> None:
        if c.closed:
            return
        c.closed = True
        try:
            self.sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        try:
            c.sock.close()
        except OSError:
            pass
        for name in c.owned:
            if self._owners.get(name) is c:
                del self._owners[name]
        if c in self.conns:
            self.conns.remove(c)
        if c.kind == "rtde" and c.sent:
            self.closed_streams.append(c.stream_stats())
        self._script_text.pop(id(c), None)

    def _send(self, c: _Conn, data: bytes) -> None:
        if c.closed:
            return
        if c.wbuf:
            c.wbuf += data
        else:
            try:
                n = c.sock.send(data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError:
                self._close_conn(c)
                return
            if n < len(data):
                c.wbuf += data[n:]
        if c.wbuf:
            if len(c.wbuf) > MAX_SEND_BUFFER:
                self.stats["disconnects_overflow"] += 1
                self.core.log_error(f"client {c.peer} on {c.kind} stopped draining; disconnected")
                self._close_conn(c)
                return
            if not c.want_write:
                c.want_write = True
                self.sel.modify(c.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, ("conn", c))

    def _flush(self, c: _Conn) -> None:
        try:
            n = c.sock.send(c.wbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close_conn(c)
            return
        del c.wbuf[:n]
        if not c.wbuf and c.want_write:
            c.want_write = False
            self.sel.modify(c.sock, selectors.EVENT_READ, ("conn", c))

    def _read(self, c: _Conn) -> None:
        try:
            data = c.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close_conn(c)
            return
        if c.silent:
            return
        c.rbuf += data
        try:
            if c.kind == "rtde":
                self._handle_rtde(c)
            elif c.kind == "dashboard":
                self._handle_lines(c, self._dashboard_line)
            elif c.kind == "gripper":
                self._handle_lines(c, self._gripper_line)
            elif c.kind == "script":
                self._handle_script(c)
        except rp.ProtocolError as e:
            self.core.log_error(f"{c.kind} {c.peer}: {e}; connection closed")
            self._close_conn(c)
        except Exception as e:  # a bug must not take the controller down: log, drop the client
            log.exception("loopback UR: handler error")
            self.core.log_error(f"internal error handling {c.kind} {c.peer}: {type(e).__name__}: {e}; "
                                "connection closed")
            self._close_conn(c)

    # ------------------------------------------------------------------ text protocols
    def _handle_lines(self, c: _Conn, fn) -> None:
        while not c.closed:
            i = c.rbuf.find(b"\n")
            if i < 0:
                if len(c.rbuf) > 65536:
                    raise rp.ProtocolError("line longer than 64 KiB")
                return
            line = c.rbuf[:i].decode("utf-8", errors="replace").rstrip("\r")
            del c.rbuf[:i + 1]
            fn(c, line)

    def _dashboard_line(self, c: _Conn, line: str) -> None:
        reply, close = dashboard.handle_command(self.core, line)
        self._send(c, (reply + "\n").encode())
        if close:
            self._close_conn(c)

    def _gripper_line(self, c: _Conn, line: str) -> None:
        reply, err = self.core.gripper.handle_line(line)
        if err:
            self.core.log_error(f"Robotiq socket: {err}")
        self._send(c, (reply + "\n").encode())

    def _handle_script(self, c: _Conn) -> None:
        text = self._script_text.get(id(c), "") + c.rbuf.decode("utf-8", errors="replace")
        c.rbuf.clear()
        programs, rest = split_programs(text)
        self._script_text[id(c)] = rest
        for prog in programs:
            name = prog.split("(", 1)[0].split()[-1]
            self.core.start_script(prog, name)

    # ------------------------------------------------------------------ RTDE
    def _handle_rtde(self, c: _Conn) -> None:
        core = self.core
        for ptype, payload in rp.split_packages(c.rbuf):
            if ptype == rp.RTDE_REQUEST_PROTOCOL_VERSION:
                ok = len(payload) == 2 and struct.unpack(">H", payload)[0] in (1, 2)
                if ok:
                    c.proto = struct.unpack(">H", payload)[0]
                else:
                    core.log_error(f"RTDE protocol version request {payload.hex()} refused")
                self._send(c, rp.pack_package(ptype, bytes([1 if ok else 0])))
            elif ptype == rp.RTDE_GET_URCONTROL_VERSION:
                self._send(c, rp.pack_package(ptype, struct.pack(">IIII", *core.version)))
            elif ptype == rp.RTDE_CONTROL_PACKAGE_SETUP_OUTPUTS:
                if c.proto >= 2:
                    if len(payload) < 8:
                        core.log_error("RTDE O without frequency")
                        self._send(c, rp.pack_package(ptype, b"\x00"))
                        continue
                    freq = struct.unpack(">d", payload[:8])[0]
                    names_b = payload[8:]
                else:
                    freq, names_b = core.base_rate_hz, payload
                if len(names_b) > rp.MAX_SETUP_NAMES_BYTES:
                    core.log_error(f"RTDE O name list of {len(names_b)} bytes > 2048")
                names = rp.parse_names(names_b)
                rec, reply = rp.output_setup_reply(1, names)
                if not rec.valid:
                    core.log_error("RTDE O with unknown variables: "
                                   + ",".join(n for n, t in zip(names, rec.types) if t == "NOT_FOUND"))
                if not (math.isfinite(freq) and 0 < freq <= core.base_rate_hz):
                    core.log_error(f"RTDE output frequency {freq} Hz outside (0, {core.base_rate_hz}]; clamped")
                    freq = min(max(freq if math.isfinite(freq) else core.base_rate_hz, 1.0), core.base_rate_hz)
                rec.frequency_hz = freq
                c.out_recipe = rec
                self._send(c, rp.pack_package(ptype, reply if c.proto >= 2 else reply[1:]))
            elif ptype == rp.RTDE_CONTROL_PACKAGE_SETUP_INPUTS:
                names = rp.parse_names(payload)
                in_use = {n for n in names if n in self._owners and self._owners[n] is not c}
                types = rp.input_setup_types(names, in_use)
                valid = bool(names) and all(t not in ("NOT_FOUND", "IN_USE") for t in types)
                rid = 0
                if valid:
                    rid = len(c.in_recipes) + 1
                    c.in_recipes[rid] = rp.Recipe(rid, names, types)
                    for n in names:
                        self._owners[n] = c
                        c.owned.add(n)
                    core.script.offset = self._infer_offset(names, core.script.offset)
                else:
                    core.log_error("RTDE I refused: " + ",".join(
                        f"{n}={t}" for n, t in zip(names, types) if t in ("NOT_FOUND", "IN_USE")))
                self._send(c, rp.pack_package(ptype, bytes([rid]) + ",".join(types).encode()))
            elif ptype == rp.RTDE_CONTROL_PACKAGE_START:
                ok = c.out_recipe is not None and c.out_recipe.valid
                if not ok:
                    core.log_error("RTDE S without a valid output recipe")
                c.started = ok
                c.phase = -1.0   # first package at the next cycle
                c.stream_t0 = None
                self._send(c, rp.pack_package(ptype, bytes([1 if ok else 0])))
            elif ptype == rp.RTDE_CONTROL_PACKAGE_PAUSE:
                c.started = False
                self._send(c, rp.pack_package(ptype, b"\x01"))
            elif ptype == rp.RTDE_DATA_PACKAGE:
                if not payload:
                    core.log_error("RTDE U without recipe id")
                    continue
                rec = c.in_recipes.get(payload[0])
                if rec is None:
                    core.log_error(f"RTDE U for unknown input recipe {payload[0]}")
                    continue
                values, exact = rec.decode(payload[1:])
                if not exact:
                    core.log_error(f"RTDE U for recipe {rec.recipe_id} has {len(payload) - 1} bytes, "
                                   f"recipe needs {rec.size}; decoded {len(values)} of {len(rec.names)} fields")
                core.apply_inputs(values)
            elif ptype == rp.RTDE_TEXT_MESSAGE:
                pass
            else:
                core.log_error(f"RTDE package type {ptype} ({chr(ptype) if 32 <= ptype < 127 else '?'}) not handled")

    @staticmethod
    def _infer_offset(names: list[str], current: int) -> int:
        # ur_rtde's control recipes all start with the command register (docs/ur_rtde_protocol.md §3.6)
        first = names[0]
        if first.startswith("input_int_register_"):
            k = int(first[19:])
            if k in (0, 24):
                return k
        return current

    # ------------------------------------------------------------------ parent commands
    def _handle_pipe(self) -> None:
        try:
            while self.command_conn.poll():
                msg = self.command_conn.recv()
                try:
                    result = self.command(msg[0], *msg[1:])
                    self.command_conn.send(("ok", result))
                except Exception as e:  # reported to the parent, which raises it
                    self.command_conn.send(("err", f"{type(e).__name__}: {e}"))
        except (EOFError, OSError):
            # the parent is gone: never outlive it
            self.running = False

    def command(self, name: str, *args) -> Any:
        """Parent commands: inject(kind, kw), snapshot(), trace(clear), stop()."""
        core = self.core
        if name == "snapshot":
            snap = core.snapshot()
            snap["stats"] = self.server_stats()
            return snap
        if name == "trace":
            return self.trace_buf.export(clear=bool(args and args[0]))
        if name == "stop":
            self.running = False
            return None
        if name == "inject":
            kind, kw = args
            return self.inject(kind, **kw)
        raise ValueError(f"unknown command {name!r}")

    def inject(self, kind: str, **kw) -> None:
        """Fault / operator injection (see LoopbackURController.inject)."""
        core = self.core
        if kind == "protective_stop":
            core.protective_stop("injected")
        elif kind == "emergency_stop":
            core.emergency_stop()
        elif kind == "clear_emergency_stop":
            core.clear_emergency_stop(power_on=bool(kw.get("power_on", False)))
        elif kind == "program_stop":
            core.stop_program("pendant stop (injected)")
        elif kind == "speed_slider":
            f = float(kw["fraction"])
            if not (math.isfinite(f) and 0.0 <= f <= 1.0):
                raise ValueError(f"speed_slider fraction must be in [0, 1], got {f!r}")
            core.slider = f
        elif kind == "silent":
            self.silent = bool(kw.get("on", True))
        elif kind == "stream_pause":
            d = float(kw["duration_s"])
            if not (math.isfinite(d) and d >= 0):
                raise ValueError(f"stream_pause duration_s must be >= 0, got {d!r}")
            self.pause_until = time.monotonic() + d
        elif kind == "drop_connections":
            for c in list(self.conns):
                self._close_conn(c)
        elif kind == "gripper_object":
            closure = kw.get("closure")
            if closure is not None:
                closure = float(closure)
                if not (math.isfinite(closure) and 0.0 <= closure <= 1.0):
                    raise ValueError("gripper_object closure must be in [0, 1] or None")
            core.gripper_block = closure
        elif kind == "remote_control":
            core.remote_control = bool(kw.get("on", True))
        else:
            raise ValueError(f"unknown inject kind {kind!r}; one of {INJECT_KINDS}")

    def server_stats(self) -> dict:
        wall = max(time.monotonic() - self._t0_host, 1e-9)
        late = np.asarray(self._late_hist) if self._late_hist else np.zeros(1)
        st = dict(self.stats)
        st.update(
            wall_s=wall, cpu_fraction=(time.process_time() - self._cpu0) / wall,
            lateness_p50_ms=float(np.percentile(late, 50) * 1e3),
            lateness_p99_ms=float(np.percentile(late, 99) * 1e3),
            lateness_max_ms=float(late.max() * 1e3),
            connections={k: sum(1 for c in self.conns if c.kind == k) for k in self.ports},
            streaming=sum(1 for c in self.conns if c.kind == "rtde" and c.started),
            streams=[c.stream_stats() for c in self.conns if c.kind == "rtde" and c.sent],
            closed_streams=list(self.closed_streams),
        )
        return st

    # ------------------------------------------------------------------ main loop
    def serve(self, on_ready=None) -> None:
        """Run until `running` is cleared (parent stop / pipe EOF / KeyboardInterrupt)."""
        core = self.core
        period = core.period_s
        self.running = True
        self._t0_host = time.monotonic()
        self._cpu0 = time.process_time()
        next_t = self._t0_host + period
        if on_ready is not None:
            on_ready()
        try:
            while self.running:
                now = time.monotonic()
                timeout = next_t - now
                if timeout > 0:
                    self._poll(timeout)
                    continue
                # One or more cycles are due. First take in what the clients sent while this
                # process was not scheduled (a loaded host), so input that arrived on time is
                # applied before the cycles run (the RTDE watchdog must not trip on our lateness).
                self._poll(0.0)
                lateness = now - next_t
                n_due = int(lateness / period) + 1
                if n_due > MAX_CATCHUP_CYCLES:
                    self.stats["dropped_cycles"] += n_due - MAX_CATCHUP_CYCLES
                    next_t += (n_due - MAX_CATCHUP_CYCLES) * period
                    n_due = MAX_CATCHUP_CYCLES
                self._late_hist.append(lateness)
                self.stats["max_late_s"] = max(self.stats["max_late_s"], lateness)
                for k in range(n_due):
                    t_cycle0 = time.perf_counter()
                    last = k == n_due - 1
                    try:
                        core.step()
                        self._publish(send=last)
                    except Exception as e:  # keep serving; the anomaly is reported
                        log.exception("loopback UR: cycle error")
                        core.log_error(f"internal error in the control cycle: {type(e).__name__}: {e}")
                    self.stats["cycles"] += 1
                    if not last:
                        self.stats["late_cycles"] += 1
                    core.exec_time_ms = (time.perf_counter() - t_cycle0) * 1e3
                    next_t += period
        finally:
            self.close()

    def _poll(self, timeout_s: float) -> None:
        """Handle ready sockets (accept, pipe commands, client input, pending output)."""
        for key, ev in self.sel.select(timeout_s):
            tag, obj = key.data
            if tag == "listen":
                self._accept(obj)
            elif tag == "pipe":
                self._handle_pipe()
            else:
                if ev & selectors.EVENT_WRITE and not obj.closed:
                    self._flush(obj)
                if ev & selectors.EVENT_READ and not obj.closed:
                    self._read(obj)

    def _publish(self, send: bool) -> None:
        core = self.core
        now = time.monotonic()
        mot = core.motion
        self.trace_buf.append(core.time_s, now, mot.servo_target if mot.mode == "servo" else None,
                              core.arm.q, mot.q_ref, core.runtime_state, core.safety_mode)
        streams = [c for c in self.conns if c.kind == "rtde" and c.started and not c.closed]
        if not streams:
            return
        due = []
        for c in streams:
            ratio = core.base_rate_hz / c.out_recipe.frequency_hz
            n = round(ratio)
            if c.phase < 0:
                c.phase = 0.0
                due.append(c)
            elif abs(ratio - n) < 1e-6:
                # integer divisor of the controller rate: exactly every n-th cycle
                c.phase += 1.0
                if c.phase >= n - 0.5:
                    c.phase = 0.0
                    due.append(c)
            else:
                c.phase += 1.0 / ratio
                if c.phase >= 1.0:
                    c.phase -= 1.0
                    due.append(c)
        if not due or not send or now < self.pause_until:
            return
        base = core.outputs()
        for c in due:
            rec = c.out_recipe
            try:
                vals = [core.value(n, base) for n in rec.names]
                pkg = rp.pack_package(rp.RTDE_DATA_PACKAGE, bytes([rec.recipe_id]) + rec.encode(vals))
            except (KeyError, struct.error) as e:
                core.log_error(f"cannot encode output recipe: {e}")
                c.started = False
                continue
            self._send(c, pkg)
            c.sent += 1
            if c.stream_t0 is None:
                c.stream_t0 = now
            c.stream_t1 = now
            self.stats["sent_packages"] += 1
        self._send_times.append(now)


class TraceBuffer:
    """Per-cycle record in numpy chunks of 10 000 rows; the oldest chunks are dropped beyond
    `max_rows` (memory grows with use: ~0.2 kB per row)."""

    CHUNK = 10_000

    def __init__(self, max_rows: int) -> None:
        self.max_chunks = max(1, max_rows // self.CHUNK)
        self.chunks: collections.deque = collections.deque()
        self._new_chunk()

    def _new_chunk(self) -> None:
        n = self.CHUNK
        self.cur = {"t_s": np.empty(n), "host_monotonic_s": np.empty(n),
                    "commanded_q": np.empty((n, 6)), "actual_q": np.empty((n, 6)),
                    "target_q": np.empty((n, 6)), "runtime_state": np.empty(n, dtype=np.int32),
                    "safety_mode": np.empty(n, dtype=np.int32)}
        self.n = 0

    def append(self, t_s, host_s, commanded_q, actual_q, target_q, runtime_state, safety_mode) -> None:
        if self.n == self.CHUNK:
            self.chunks.append(self.cur)
            while len(self.chunks) >= self.max_chunks:
                self.chunks.popleft()
            self._new_chunk()
        i, c = self.n, self.cur
        c["t_s"][i] = t_s
        c["host_monotonic_s"][i] = host_s
        c["commanded_q"][i] = np.nan if commanded_q is None else commanded_q
        c["actual_q"][i] = actual_q
        c["target_q"][i] = target_q
        c["runtime_state"][i] = runtime_state
        c["safety_mode"][i] = safety_mode
        self.n += 1

    def export(self, clear: bool) -> dict:
        parts = list(self.chunks) + [{k: v[:self.n] for k, v in self.cur.items()}]
        out = {k: np.concatenate([p[k] for p in parts]) for k in self.cur}
        if clear:
            self.chunks.clear()
            self._new_chunk()
        return out


# ---------------------------------------------------------------------- child process
def child_main(fd: int, config: dict) -> int:
    """Entry of the controller process (`python -m dynaflip_ros.sim.ur_loopback._child`).

    fd: the child end of a socketpair carrying `multiprocessing.connection` messages;
    config: host, version, q0, with_gripper, physics, unlock_delay_s, log_level."""
    from multiprocessing.connection import Connection

    logging.basicConfig(level=config.get("log_level", logging.WARNING),
                        format="%(asctime)s loopback-ur %(levelname)s %(message)s")
    # Ctrl-C in a terminal reaches the whole process group: the parent stops us in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn = Connection(fd)
    server = None
    try:
        core = ControllerCore(config["version"], config["q0"], physics=config["physics"],
                              with_gripper=config["with_gripper"],
                              protective_stop_unlock_delay_s=config["unlock_delay_s"])
        server = ControllerServer(config["host"], core, with_gripper=config["with_gripper"],
                                  command_conn=conn)
        server.bind()
    except Exception as e:  # reported to start()
        try:
            conn.send(("error", f"{type(e).__name__}: {e}"))
        finally:
            if server is not None:
                server.close()
        return 1
    parent = os.getppid()

    def watch_parent() -> None:
        # exit when the parent dies even if the pipe is somehow kept open (belt and braces)
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch_parent, daemon=True).start()
    server.serve(on_ready=lambda: conn.send(("ready", {"host": config["host"], "ports": server.ports,
                                                       "pid": os.getpid()})))
    return 0


_LIVE: weakref.WeakSet[LoopbackURController] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for ctrl in list(_LIVE):
        try:
            ctrl.stop(timeout_s=2.0)
        except Exception:
            pass


class LoopbackURController:
    """A URSim substitute the real ur_rtde 1.6.5 client talks to, running in its own process.

    Serves on `host` (an IPv4 loopback address; use distinct 127.0.0.x hosts for parallel
    controllers): 29999 dashboard, 30003 script upload, 30004 RTDE, 63352 Robotiq URCap socket
    (with_gripper). Source of the behaviour: docs/ur_rtde_protocol.md, HARDWARE.md §1, §2.3.

    Args:
        host: loopback IPv4 address to bind (ValueError otherwise).
        ur_version: (major, minor, bugfix, build) answered to RTDE `v` and PolyscopeVersion;
            major 5 -> e-Series (500 Hz), 3 -> CB3 (125 Hz). Keep 5.x below 5.23 (docs/ur_rtde_protocol.md §3.3).
        q0: (6,) initial joints, rad (default: the sim cell's home pose, `DEFAULT_Q0_RAD`).
        with_gripper: serve the Robotiq URCap socket and simulate the 2F-85.
        physics: MuJoCo UR3 cell (True) or kinematic arm (False).
        protective_stop_unlock_delay_s: the dashboard refuses `unlock protective stop` for this
            long after the stop (a real UR: 5 s); 0 by default for fast tests.
        log_level: logging level of the controller process.

    Use as a context manager or call start()/stop(). The controller process exits when the parent
    dies (command-socket EOF, parent-pid watch) and is stopped at interpreter exit (atexit).
    """

    def __init__(self, host: str = "127.0.0.1", ur_version=DEFAULT_UR_VERSION, q0=None,
                 with_gripper: bool = True, physics: bool = True,
                 protective_stop_unlock_delay_s: float = 0.0, log_level: int = logging.WARNING) -> None:
        self.host = _check_host(host)
        self.ur_version = _check_version(ur_version)
        self.q0 = _check_q0(q0)
        self.with_gripper = bool(with_gripper)
        self.physics = bool(physics)
        if not (math.isfinite(protective_stop_unlock_delay_s) and protective_stop_unlock_delay_s >= 0):
            raise ValueError("protective_stop_unlock_delay_s must be >= 0")
        self.unlock_delay_s = float(protective_stop_unlock_delay_s)
        self.log_level = int(log_level)
        self._proc: subprocess.Popen | None = None
        self._conn = None
        self._lock = threading.Lock()
        self.info: dict | None = None

    @property
    def rate_hz(self) -> float:
        """Controller cycle rate: 500 Hz (e-Series version) or 125 Hz (CB3 version)."""
        return 500.0 if self.ur_version[0] >= 5 else 125.0

    @property
    def running(self) -> bool:
        """True while the controller process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """Process id of the controller process (None when not started)."""
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout_s: float = 15.0) -> LoopbackURController:
        """Start the controller process; returns once every port listens.

        The process is `python -m dynaflip_ros.sim.ur_loopback._child` (a fresh interpreter, like
        a multiprocessing 'spawn' child but without re-importing the caller's __main__), talking
        over a socketpair. Raises RuntimeError with the reason (port in use, process died,
        timeout)."""
        from multiprocessing.connection import Connection

        if self.running:
            raise RuntimeError("LoopbackURController already started")
        parent_sock, child_sock = socket.socketpair()
        config = {"host": self.host, "version": list(self.ur_version), "q0": list(self.q0),
                  "with_gripper": self.with_gripper, "physics": self.physics,
                  "unlock_delay_s": self.unlock_delay_s, "log_level": self.log_level}
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "dynaflip_ros.sim.ur_loopback._child",
                 str(child_sock.fileno()), json.dumps(config)],
                pass_fds=(child_sock.fileno(),), env=env, stdin=subprocess.DEVNULL)
        finally:
            child_sock.close()
        conn = Connection(parent_sock.detach())
        self._proc, self._conn = proc, conn
        _LIVE.add(self)
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self._kill()
                raise RuntimeError(f"loopback UR controller on {self.host} not ready within {timeout_s} s")
            if conn.poll(min(left, 0.1)):
                try:
                    tag, payload = conn.recv()
                except (EOFError, OSError):
                    code = proc.wait(5.0)
                    self._kill()
                    raise RuntimeError(f"loopback UR controller on {self.host} died during start "
                                       f"(exit code {code})") from None
                if tag == "ready":
                    self.info = payload
                    return self
                self._kill()
                raise RuntimeError(f"loopback UR controller on {self.host} failed to start: {payload}")
            if proc.poll() is not None:
                code = proc.returncode
                self._kill()
                raise RuntimeError(f"loopback UR controller on {self.host} exited during start "
                                   f"(exit code {code})")

    def _call(self, *msg, timeout_s: float = 10.0):
        with self._lock:
            if not self.running or self._conn is None:
                raise RuntimeError("loopback UR controller is not running")
            self._conn.send(msg)
            if not self._conn.poll(timeout_s):
                raise RuntimeError(f"loopback UR controller did not answer {msg[0]!r} within {timeout_s} s")
            tag, payload = self._conn.recv()
        if tag == "err":
            if payload.startswith("ValueError"):
                raise ValueError(payload)
            raise RuntimeError(payload)
        return payload

    def inject(self, kind: str, **kw) -> None:
        """Inject an event. kinds:
        "protective_stop" (safety_mode 3; arm halts; unlock on the dashboard, then re-upload),
        "emergency_stop" (safety_mode 7, program stopped, robot_mode POWER_OFF),
        "clear_emergency_stop" (power_on=False: `power on` + `brake release` on the dashboard
        still needed; power_on=True goes straight back to RUNNING),
        "program_stop" (pendant stop: runtime_state STOPPED),
        "speed_slider" (fraction=0..1: target_speed_fraction, scales all motion),
        "silent" (on=True: new 30004/29999/63352 connections are accepted and never answered),
        "stream_pause" (duration_s: no U packages for that long),
        "drop_connections" (close every client socket),
        "gripper_object" (closure=0..1 or None: an object blocks the fingers at that closure),
        "remote_control" (on=bool: dashboard `is in remote control`).
        Raises ValueError on an unknown kind or bad argument, RuntimeError when not running."""
        if kind not in INJECT_KINDS:
            raise ValueError(f"unknown inject kind {kind!r}; one of {INJECT_KINDS}")
        self._call("inject", kind, dict(kw))

    def snapshot(self) -> dict:
        """Controller state: actual_q, actual_qd, target_q (6 lists, rad, rad/s), robot_mode,
        safety_mode, safety_status_bits, runtime_state, speed_scaling, target_speed_fraction,
        controller_time_s, script_running, n_servoj (servoJ command packages received),
        last_servoj {q, speed, acc, time, lookahead, gain, stamp (controller s)}, watchdog
        {armed, min_hz, tripped, trips}, teach_mode, gripper {pos 0..255, requested, activated,
        obj, ...} or None, errors (protocol anomalies), unsupported (commands acknowledged
        without effect), events, stats (cycles, sent_packages, late/dropped cycles, lateness
        percentiles, cpu_fraction of the controller process)."""
        return self._call("snapshot")

    def trace(self, clear: bool = True) -> dict:
        """Per-cycle record (numpy arrays, N rows): t_s (controller time, s), host_monotonic_s,
        commanded_q (N, 6) latest servoJ target (NaN while not servoing), actual_q (N, 6),
        target_q (N, 6) the controller's reference, runtime_state (N,), safety_mode (N,).
        clear: drop the returned rows from the controller's buffer (10 min max)."""
        return self._call("trace", bool(clear), timeout_s=30.0)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the controller process (idempotent)."""
        proc = self._proc
        if proc is None:
            return
        try:
            if proc.poll() is None:
                try:
                    with self._lock:
                        self._conn.send(("stop",))
                except OSError:
                    pass
                try:
                    proc.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    pass
        finally:
            self._kill()

    def _kill(self) -> None:
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(2.0)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(2.0)
        if self._conn is not None:
            self._conn.close()
        self._proc, self._conn = None, None
        _LIVE.discard(self)

    def __enter__(self) -> LoopbackURController:
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self._kill()
        except Exception:
            pass
