"""The RTDE state shared between the RTDE worker process and the node process: enumerations,
the shared-memory slot layout (`SharedState`, a seqlock) and its conversion to `ArmState`.

Writers: the worker's state thread is the only writer of the seqlocked state slots; each
counter / flag slot has one writer (the worker's thread that owns that event). Readers (the
node process's `URRtdeArm`, the worker's `WorkerArm`) never block the writers.
"""
from __future__ import annotations

import ctypes
import time
from typing import Any

import numpy as np

from dynaflip_ros.robot.arm import ArmError, ArmState
from dynaflip_ros.robot.kinematics import rotvec_to_quat_wxyz

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
    "gripper_position",
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


COUNTER_NAMES = ("servo_sent", "servo_refused", "stale_stops", "watchdog_kicks", "state_errors", "servo_errors")


def fresh_snapshot(shared: SharedState, state_timeout_s: float, host: str) -> np.ndarray:
    """A consistent copy of the slots; raises ArmError when the last RTDE sample is older than
    state_timeout_s (the connection to `host` was lost)."""
    snap = shared.read()
    age_s = time.monotonic() - snap[STATE_SLOTS["host_time_s"]]
    if age_s > state_timeout_s:
        raise ArmError(f"RTDE state is {age_s:.2f} s old (> {state_timeout_s} s): connection to "
                       f"{host} lost? (rtde_receive connected: {bool(snap[STATE_SLOTS['rtde_receive_connected']])})")
    return snap


def arm_state_from_slots(s: np.ndarray, gripper: float, gripper_command: float | None) -> ArmState:
    """`ArmState` of one snapshot: q, dq (6,) rad, rad/s; TCP pose (7,) x, y, z m + quaternion
    wxyz in the UR base frame; gripper closure 0..1 (NaN without a gripper); stamp_s host
    monotonic time of the sample; protective_stop per `is_stopped`; extra: speed_scaling,
    safety_mode (name), robot_mode, runtime_state, program_running, freedrive,
    controller_time_s, target_q, gripper_command, counters, servo / stop call maxima (ms)."""
    sm, rm, rs = int(s[STATE_SLOTS["safety_mode"]]), int(s[STATE_SLOTS["robot_mode"]]), int(s[STATE_SLOTS["runtime_state"]])
    bits = int(s[STATE_SLOTS["safety_status_bits"]])
    tcp = s[TCP_SLOT:TCP_SLOT + 6]
    return ArmState(
        q=s[Q_SLOT:Q_SLOT + 6].copy(), dq=s[QD_SLOT:QD_SLOT + 6].copy(),
        tcp_pose=np.concatenate([tcp[:3], rotvec_to_quat_wxyz(tcp[3:])]),
        gripper=float(gripper), stamp_s=float(s[STATE_SLOTS["host_time_s"]]),
        protective_stop=is_stopped(sm, bits, rs, rm),
        extra={
            "speed_scaling": float(s[STATE_SLOTS["speed_scaling"]]),
            "safety_mode": SAFETY_MODE_NAMES.get(sm, str(sm)), "robot_mode": rm, "runtime_state": rs,
            "program_running": rs == RUNTIME_PLAYING, "freedrive": bool(s[STATE_SLOTS["freedrive"]]),
            "controller_time_s": float(s[STATE_SLOTS["controller_time_s"]]),
            "target_q": s[TARGET_Q_SLOT:TARGET_Q_SLOT + 6].copy(),
            "gripper_command": gripper_command,
            "counters": {k: int(s[STATE_SLOTS[k]]) for k in COUNTER_NAMES},
            "servo_call_max_ms": float(s[STATE_SLOTS["servo_call_max_ms"]]),
            "stop_call_max_ms": float(s[STATE_SLOTS["stop_call_max_ms"]]),
        },
    )
