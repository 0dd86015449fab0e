"""Emulation of ur_rtde's uploaded `rtde_control` URScript: the register command protocol.

Source: docs/ur_rtde_protocol.md §3.5 (registers, script main loop), §3.7 (command ids and their
arguments), §4.2 step 5 (what a fresh upload does), §4.3 (script tick), §4.4 (protective stop).
Register offset o = 0, or 24 with FLAG_UPPER_RANGE_REGISTERS (read from the uploaded text, §3.4
"Script details", or from the input recipe names).

Per control cycle while the program is PLAYING:
* cmd = input_int_register_o; 0 -> ready (1), forget "executing".
* real-time set {6, 9, 10, 11, 12, 24, 25, 26, 27, 38, 58, 66..71}: processed every cycle,
  then ready (1).
* 255: the program ends (runtime_state STOPPED), no done.
* other: processed once (until a 0 is seen); done (2) at once, or, for synchronous moves and
  stops, when the motion has finished. Results go to output_int_register_o+1 /
  output_double_register_o+0..5 before the done.

The emulator reads and writes the controller state through `ScriptHost` (the protocol below,
implemented by `core.ControllerCore`), so this module does not import the core. Threads: none; it
runs inside the controller cycle (`ControllerCore.step`, one call of `tick()` per 2 ms / 8 ms
cycle) on the controller process's single thread.
"""
from __future__ import annotations

import collections
import re
from typing import Protocol

import numpy as np

from dynaflip_ros.robot.kinematics import UR3_JOINT_LIMITS_RAD
from dynaflip_ros.sim.ur_loopback import arm_model
from dynaflip_ros.sim.ur_loopback.arm_model import HOLD, MOVE, ArmBackend, JointMotion

REALTIME_CMDS = frozenset({6, 9, 10, 11, 12, 24, 25, 26, 27, 38, 58, 66, 67, 68, 69, 70, 71})
CMD_NAMES = {
    1: "moveJ", 2: "moveJ_IK", 3: "moveL", 4: "moveL_FK", 6: "forceMode", 7: "forceModeStop",
    8: "zeroFtSensor", 9: "speedJ", 10: "speedL", 11: "servoJ", 12: "servoC", 15: "speedStop",
    16: "servoStop", 17: "setPayload", 18: "teachMode", 19: "endTeachMode",
    20: "forceModeSetDamping", 21: "forceModeSetGainScaling", 24: "servoL", 25: "toolContact",
    26: "getStepTime", 27: "getActualJointPositionsHistory", 28: "getTargetWaypoint",
    29: "setTcp", 30: "getInverseKinematics", 31: "triggerProtectiveStop", 33: "stopL",
    34: "stopJ", 35: "setWatchdog", 36: "isPoseWithinSafetyLimits",
    37: "isJointsWithinSafetyLimits", 38: "getJointTorques", 39: "poseTrans",
    40: "getTCPOffset", 41: "jogStart", 42: "jogStop", 43: "getForwardKinematics",
    44: "getForwardKinematics(q,tcp)", 45: "movePath", 46: "getInverseKinematics(x)",
    47: "isSteady", 51: "moveUntilContact", 52: "freedriveMode", 53: "endFreedriveMode",
    54: "getFreedriveStatus", 55: "setExternalForceTorque", 56: "ftRtdeInputEnable",
    57: "enableExternalFtSensor", 58: "getActualToolFlangePose", 59: "setGravity",
    60: "getInverseKinematicsHasSolution", 61: "getInverseKinematicsHasSolution(qnear)",
    62: "startContactDetection", 63: "stopContactDetection", 64: "readContactDetection",
    65: "setTargetPayload", 66: "directTorque", 67: "getMassMatrix",
    68: "getCoriolisAndCentrifugalTorques", 69: "getTargetJointAccelerations", 70: "getJacobian",
    71: "getJacobianTimeDerivative", 255: "stopScript",
}
# Accepted and acknowledged, with no effect on this model (no F/T sensor, no contact model).
_NO_EFFECT = frozenset({7, 8, 20, 21, 55, 56, 57, 59, 62, 63})
_UNSUPPORTED = frozenset({6, 12, 25, 41, 42, 51, 66, 67, 68, 70, 71})

_PROGRAM_RE = re.compile(r"^def\s+([A-Za-z_]\w*)\s*\(\s*\)\s*:", re.MULTILINE)
_INT_OFFSET_RE = re.compile(r"#\s*int register offset\s*\n\s*(\d+)")
_PATH_MOVE_RE = re.compile(
    r"^\s*(movel|movej)\(\s*(p?)\[([^\]]*)\]\s*((?:,\s*\w+\s*=\s*[-+0-9.eE]+\s*)*)\)", re.MULTILINE)


def split_programs(text: str) -> tuple[list[str], str]:
    """Complete top-level programs in `text` (`def name():` ... a line `end` at column 0) and
    the unconsumed rest (docs/ur_rtde_protocol.md §4.2 step 5)."""
    programs = []
    rest = text
    while True:
        m = _PROGRAM_RE.search(rest)
        if m is None:
            # keep only a possible partial header
            return programs, rest[-4096:] if len(rest) > 4096 else rest
        end = re.search(r"^end[ \t]*\r?$", rest[m.end():], re.MULTILINE)
        if end is None:
            return programs, rest[m.start():]
        stop = m.end() + end.end()
        programs.append(rest[m.start():stop])
        rest = rest[stop:]


def parse_path(script: str) -> list[dict]:
    """movel/movej lines injected by movePath/moveL(path)/moveJ(path) (docs/ur_rtde_protocol.md §3.4): list of
    {kind, pose_or_q (6,), a, v, r}."""
    out = []
    for m in _PATH_MOVE_RE.finditer(script):
        kind, is_pose, vec, kw = m.groups()
        try:
            vals = [float(x) for x in vec.split(",")]
        except ValueError:
            continue
        if len(vals) != 6:
            continue
        args = dict(re.findall(r"(\w+)\s*=\s*([-+0-9.eE]+)", kw or ""))
        out.append({"kind": kind, "pose": bool(is_pose), "target": vals,
                    "a": float(args.get("a", 1.4 if kind == "movej" else 1.2)),
                    "v": float(args.get("v", 1.05 if kind == "movej" else 0.25)),
                    "r": float(args.get("r", 0.0))})
    return out


class ScriptHost(Protocol):
    """What the script reads and drives on the controller (`core.ControllerCore`)."""

    in_int: list[int]             # input/output int and double registers, rp.N_REGISTERS each
    in_dbl: list[float]
    out_int: list[int]
    out_dbl: list[float]
    motion: JointMotion
    arm: ArmBackend
    tcp_offset: np.ndarray        # (6,) UR pose of the TCP in the flange frame
    q_history: collections.deque  # (6,) actual joints of the last cycles, newest last
    period_s: float               # controller cycle, s
    runtime_state: int
    safety_mode: int
    teach_mode: bool
    payload_kg: float
    payload_cog: np.ndarray       # (3,) m
    payload_inertia: np.ndarray   # (6,) kg m²

    def log_error(self, msg: str) -> None: ...
    def stop_program(self, reason: str) -> None: ...
    def protective_stop(self, reason: str) -> None: ...
    def set_teach(self, on: bool) -> None: ...
    def set_watchdog(self, min_hz: float) -> None: ...
    def jacobian(self, q: np.ndarray) -> np.ndarray: ...


class ScriptEmulator:
    """The rtde_control program running on the controller (see module doc)."""

    def __init__(self, core: ScriptHost) -> None:
        self.core = core
        self.offset = 0
        self.executing: int | None = None
        self.waiting_motion = False
        self.path: list[dict] = []
        self.path_index = 0
        self.path_running = False
        self.async_running = False
        self.async_op = 0
        self.async_writes = 0
        self.unsupported: list[str] = []

    # ------------------------------------------------------------------ program lifecycle
    def on_upload(self, script: str) -> None:
        """A fresh rtde_control upload (§4.2 step 5): registers and command state reset."""
        m = _INT_OFFSET_RE.search(script)
        if m is not None:
            self.offset = int(m.group(1))
        o = self.offset
        core = self.core
        core.out_int[o] = 1
        core.out_int[o + 1] = 0
        core.out_int[o + 2] = 0
        self.executing = None
        self.waiting_motion = False
        self.path = parse_path(script)
        self.path_index = 0
        self.path_running = False
        self.async_running = False

    # ------------------------------------------------------------------ per cycle
    def tick(self) -> None:
        core = self.core
        o = self.offset
        # path execution (cmd 45) and async moves progress independently of the command register
        self._advance_path()
        if self.async_running and core.motion.move_done and not self.path_running:
            self.async_running = False
        self._write_async_word()
        cmd = int(core.in_int[o])
        if cmd == 0:
            core.out_int[o] = 1
            self.executing = None
            self.waiting_motion = False
            return
        if cmd == 255:
            core.stop_program("stopScript (cmd 255)")
            return
        if cmd in REALTIME_CMDS:
            self._realtime(cmd)
            core.out_int[o] = 1
            return
        if self.executing is None:
            self.executing = cmd
            sync = self._regular(cmd)
            if core.runtime_state != 2 or core.safety_mode != 1:
                return   # e.g. triggerProtectiveStop: no done (§4.4)
            if sync:
                self.waiting_motion = True
            else:
                core.out_int[o] = 2
        elif self.waiting_motion:
            if core.motion.mode == HOLD and core.motion.move_done and not self.path_running:
                self.waiting_motion = False
                core.out_int[o] = 2

    # ------------------------------------------------------------------ helpers
    def _d(self, k: int, n: int = 1):
        o = self.offset
        v = self.core.in_dbl[o + k:o + k + n]
        return np.asarray(v, dtype=float) if n > 1 else float(v[0])

    def _i(self, k: int) -> int:
        return int(self.core.in_int[self.offset + k])

    def _out_vec(self, v) -> None:
        o = self.offset
        v = list(np.asarray(v, dtype=float).ravel())[:6]
        self.core.out_dbl[o:o + len(v)] = v

    def _unsupported(self, cmd: int) -> None:
        name = CMD_NAMES.get(cmd, "unknown")
        self.note_unsupported(f"command {cmd} ({name}) is not emulated; acknowledged without effect")

    def note_unsupported(self, msg: str) -> None:
        """Record (once) a command or program part acknowledged without effect."""
        if msg not in self.unsupported:
            self.unsupported.append(msg)

    def _write_async_word(self) -> None:
        # bits 0-14 progress, 15 running, 16-22 write counter, 24-30 operation id (§3.7 notes)
        running = self.async_running or self.path_running
        self.async_writes = (self.async_writes + 1) & 0x7F
        word = (self.path_index & 0x7FFF) | ((1 << 15) if running else 0)
        word |= self.async_writes << 16
        word |= (self.async_op & 0x7F) << 24
        self.core.out_int[self.offset + 2] = word if running else 0

    # ------------------------------------------------------------------ real-time commands
    def _realtime(self, cmd: int) -> None:
        core = self.core
        mot = core.motion
        if cmd == 11:    # servoJ
            mot.servo(self._d(0, 6), self._d(9), self._d(10))
        elif cmd == 24:  # servoL: pose target through IK from the current reference
            q = arm_model.inverse_kinematics(self._d(0, 6), mot.q_ref, core.tcp_offset, max_iters=30,
                                             tol_pos_m=1e-5, tol_rot_rad=1e-4)
            if q is None:
                core.log_error("servoL target has no IK solution near the current joints")
            else:
                mot.servo(q, self._d(9), self._d(10))
        elif cmd == 9:   # speedJ
            mot.speed(self._d(0, 6), self._d(6))
        elif cmd == 10:  # speedL: joint speeds from the (numeric) Jacobian at the reference
            xd = self._d(0, 6)
            jac = core.jacobian(mot.q_ref)
            qd = np.linalg.lstsq(jac, xd, rcond=None)[0]
            # acceleration in m/s^2 (or rad/s^2): the joint ramp takes |xd| / a like the TCP's
            mag = float(np.linalg.norm(xd[:3])) or float(np.linalg.norm(xd[3:]))
            acc = self._d(6) * float(np.max(np.abs(qd))) / mag if mag > 0 else self._d(6)
            mot.speed(qd, acc)
        elif cmd == 26:  # getStepTime
            core.out_dbl[self.offset] = core.period_s
        elif cmd == 27:  # getActualJointPositionsHistory(steps)
            steps = max(0, self._i(1))
            hist = core.q_history
            q = hist[-1 - steps] if steps < len(hist) else hist[0]
            self._out_vec(q)
        elif cmd == 38:  # getJointTorques
            self._out_vec(core.arm.torque)
        elif cmd == 58:  # getActualToolFlangePose
            self._out_vec(arm_model.tcp_pose(core.arm.q))
        elif cmd == 69:  # getTargetJointAccelerations
            self._out_vec(mot.qdd_ref)
        else:
            self._unsupported(cmd)

    # ------------------------------------------------------------------ regular commands
    def _regular(self, cmd: int) -> bool:
        """Process a regular command once; True when its done waits for the motion."""
        core = self.core
        mot = core.motion
        o = self.offset
        if cmd in (1, 2, 3, 4):   # moveJ, moveJ_IK, moveL, moveL_FK
            target = self._d(0, 6)
            speed, acc, asynchronous = self._d(6), self._d(7), self._i(1) == 1
            if cmd in (2, 3):
                q = arm_model.inverse_kinematics(target, mot.q_ref, core.tcp_offset)
                if q is None:
                    core.log_error(f"{CMD_NAMES[cmd]}: pose has no IK solution; program stopped")
                    core.stop_program("IK failure")
                    return False
                target = q
            if cmd in (3, 4):
                # joint-interpolated to the IK solution (not a straight Cartesian line); the
                # Cartesian speed/acc are used as joint speed/acc scaled by 4 (rad per m)
                speed, acc = speed * 4.0, acc * 4.0
                self.note_unsupported("moveL is joint-interpolated (no straight-line Cartesian path)")
            mot.move(target, speed, acc)
            if asynchronous:
                self.async_running = True
                self.async_op = (self.async_op + 1) & 0x7F
                return False
            return True
        if cmd == 45:   # movePath from the uploaded script
            if not self.path:
                core.log_error("movePath: the uploaded script holds no path")
                return False
            self.path_index = 0
            self.path_running = True
            self._start_path_segment()
            self.async_op = (self.async_op + 1) & 0x7F
            return self._i(1) != 1
        if cmd in (15, 16, 33, 34):   # speedStop, servoStop, stopL, stopJ
            a = self._d(0)
            mot.stop(a if cmd != 33 else a * 4.0)
            self.path_running = False
            self.async_running = False
            return not (cmd in (33, 34) and self._i(1) == 1)
        if cmd == 17:
            core.payload_kg = self._d(0)
            core.payload_cog = self._d(1, 3)
        elif cmd == 65:
            core.payload_kg = self._d(0)
            core.payload_cog = self._d(1, 3)
            core.payload_inertia = self._d(4, 6)
        elif cmd in (18, 52):
            core.set_teach(True)
        elif cmd in (19, 53):
            core.set_teach(False)
        elif cmd == 54:
            core.out_int[o + 1] = 1 if core.teach_mode else 0
        elif cmd == 28:   # getTargetWaypoint
            goal = mot.move_goal if mot.mode == MOVE and mot.move_goal is not None else mot.q_ref
            self._out_vec(arm_model.tcp_pose(goal, core.tcp_offset))
        elif cmd == 29:
            core.tcp_offset = self._d(0, 6)
        elif cmd == 40:
            self._out_vec(core.tcp_offset)
        elif cmd == 30:   # getInverseKinematics(x, qnear, maxPosErr, maxOriErr)
            q = arm_model.inverse_kinematics(self._d(0, 6), self._d(6, 6), core.tcp_offset)
            if q is None:
                core.log_error("getInverseKinematics: no solution")
                q = np.zeros(6)
            self._out_vec(q)
        elif cmd == 46:
            q = arm_model.inverse_kinematics(self._d(0, 6), core.arm.q, core.tcp_offset)
            if q is None:
                core.log_error("getInverseKinematics: no solution")
                q = np.zeros(6)
            self._out_vec(q)
        elif cmd in (60, 61):
            near = self._d(6, 6) if cmd == 61 else core.arm.q
            q = arm_model.inverse_kinematics(self._d(0, 6), near, core.tcp_offset)
            core.out_int[o + 1] = 0 if q is None else 1
        elif cmd == 31:
            core.protective_stop("triggerProtectiveStop (cmd 31)")
            return False
        elif cmd == 35:
            core.set_watchdog(self._d(0))
        elif cmd == 36:   # isPoseWithinSafetyLimits
            q = arm_model.inverse_kinematics(self._d(0, 6), core.arm.q, core.tcp_offset)
            core.out_int[o + 1] = 0 if q is None else 1
        elif cmd == 37:   # isJointsWithinSafetyLimits
            q = self._d(0, 6)
            ok = bool(np.all(np.isfinite(q)) and np.all(q >= UR3_JOINT_LIMITS_RAD[:, 0])
                      and np.all(q <= UR3_JOINT_LIMITS_RAD[:, 1]))
            core.out_int[o + 1] = 1 if ok else 0
        elif cmd == 39:   # poseTrans(p_from, p_from_to)
            t = arm_model.transform_from_ur_pose(self._d(0, 6)) @ arm_model.transform_from_ur_pose(self._d(6, 6))
            self._out_vec(arm_model.ur_pose_from_transform(t))
        elif cmd == 43:
            self._out_vec(arm_model.tcp_pose(core.arm.q, core.tcp_offset))
        elif cmd == 44:
            self._out_vec(arm_model.tcp_pose(self._d(0, 6), self._d(6, 6)))
        elif cmd == 47:   # isSteady
            core.out_int[o + 1] = 1 if float(np.max(np.abs(core.arm.qd))) < 1e-3 else 0
        elif cmd == 64:
            core.out_int[o + 1] = 0
        elif cmd in _NO_EFFECT:
            pass
        elif cmd in _UNSUPPORTED:
            self._unsupported(cmd)
        else:
            core.log_error(f"unknown command id {cmd}")
        return False

    # ------------------------------------------------------------------ paths
    def _start_path_segment(self) -> None:
        core = self.core
        seg = self.path[self.path_index]
        target = np.asarray(seg["target"], dtype=float)
        speed, acc = seg["v"], seg["a"]
        if seg["pose"]:
            q = arm_model.inverse_kinematics(target, core.motion.q_ref, core.tcp_offset)
            if q is None:
                core.log_error("movePath: waypoint without IK solution; path aborted")
                self.path_running = False
                return
            target = q
            speed, acc = speed * 4.0, acc * 4.0
        core.motion.move(target, speed, acc)

    def _advance_path(self) -> None:
        if not self.path_running:
            return
        if self.core.motion.move_done:
            self.path_index += 1
            if self.path_index >= len(self.path):
                self.path_running = False
                return
            self._start_path_segment()
