"""State of the emulated UR controller (`ControllerCore`): robot / safety / program state, the
RTDE registers, the arm (motion generator + MuJoCo or kinematic model), the Robotiq gripper and
the uploaded `rtde_control` script, advanced one controller cycle per `step()`.

Timing: one cycle is `period_s` of controller time, 2 ms for e-Series versions (500 Hz) and 8 ms
for CB3 ones (125 Hz); `time_s = cycle * period_s`. The server calls `step()` at absolute host
deadlines t0 + k·period_s (server.py); the core itself never sleeps or reads sockets. Host time
(`time.monotonic`) is read only for the RTDE watchdog and the protective-stop unlock delay.

Threads: none. The core is owned by the controller process's single network-loop thread; it
holds no locks and must not be shared.

Units: rad, rad/s, rad/s², m, s; UR poses are (x, y, z, rx, ry, rz) with a rotation vector (rad).
Sources: docs/ur_rtde_protocol.md §2.3 (output variables), §3.2, §3.7 (commands), §4.1 (status
bits), §4.2 (upload sequence), §4.4 (protective stop).
"""
from __future__ import annotations

import collections
import logging
import math
import re
import time
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from dynaflip_ros.sim.ur_loopback import arm_model
from dynaflip_ros.sim.ur_loopback import rtde_protocol as rp
from dynaflip_ros.sim.ur_loopback.arm_model import ArmBackend, JointMotion
from dynaflip_ros.sim.ur_loopback.config import DEFAULT_UR_VERSION, check_q0, check_version, cycle_rate_hz
from dynaflip_ros.sim.ur_loopback.robotiq_server import RobotiqGripper
from dynaflip_ros.sim.ur_loopback.script_emulation import ScriptEmulator

log = logging.getLogger(__name__)

STOP_DECEL_RAD_S2 = 10.0         # program stop / watchdog stop deceleration

# Status bits (docs/ur_rtde_protocol.md §4.1)
SAFETY_BIT_NORMAL = 1 << 0
SAFETY_BIT_PROTECTIVE = 1 << 2
SAFETY_BIT_ROBOT_ESTOP = 1 << 6
SAFETY_BIT_EMERGENCY = 1 << 7
SAFETY_BIT_STOPPED_DUE_TO_SAFETY = 1 << 10
PLAYING, STOPPED, PAUSED = 2, 1, 4
_REGISTER_WRITE_RE = re.compile(r"write_output_integer_register\(\s*([0-9+\s]+?)\s*,\s*(-?\d+)\s*\)")


class ControllerCore:
    """State of the emulated UR controller (robot, safety, program, registers, arm, gripper).

    Args: version (4 ints), q0 (6,) rad, physics (MuJoCo vs kinematic), with_gripper,
    protective_stop_unlock_delay_s (a real UR refuses the unlock for 5 s, docs/ur_rtde_protocol.md §4.4).
    Raises ValueError on a bad version or q0 (config.check_version / check_q0).
    """

    def __init__(self, version=DEFAULT_UR_VERSION, q0=None, physics: bool = True,
                 with_gripper: bool = True, protective_stop_unlock_delay_s: float = 0.0) -> None:
        self.version = check_version(version)
        q0 = np.asarray(check_q0(q0))
        self.base_rate_hz = cycle_rate_hz(self.version)
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
            jac[3:, i] = arm_model.relative_rotvec(t1[:3, :3], t0[:3, :3]) / h
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
            self.script.note_unsupported(f"uploaded program {name!r}: only its "
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
        t_tcp = arm_model.flange_to_tcp(frames[-1], self.tcp_offset)
        tcp = arm_model.ur_pose_from_transform(t_tcp)
        dt = self.period_s
        lin = (tcp[:3] - self._prev_tcp[:3]) / dt
        r_prev = Rotation.from_rotvec(self._prev_tcp[3:]).as_matrix()
        ang = arm_model.relative_rotvec(t_tcp[:3, :3], r_prev) / dt
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

