"""Test doubles for the safety layer: an `Arm` that records what reaches it, and a fake clock.

A plain module, not conftest fixtures: tests construct these with arguments (`RecordingArm(q0,
fail_servo=True)`, `FakeClock(t)`) and Hypothesis state machines build them per example, which
function-scoped fixtures cannot do. Times are seconds of the injected `clock`.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

from dynaflip_ros.robot.arm import ArmError, ArmNotConnectedError, ArmState

# Flange-down "ready" pose: flange at (-0.299, -0.112, 0.314) in `base`.
Q_READY = np.array([0.0, -np.pi / 2, np.pi / 2, -np.pi / 2, -np.pi / 2, 0.0])
# Upright pose: TCP at z = 0.694 m, above the default 0.6 m workspace ceiling.
Q_UP = np.array([0.0, -np.pi / 2, 0.0, -np.pi / 2, 0.0, 0.0])


class RecordingArm:
    """Test double implementing `Arm`: records everything that reaches it (stamped by `clock`,
    default time.monotonic); q tracks commands. `fail_servo` makes every servo command raise ArmError."""

    def __init__(self, q0: np.ndarray = Q_READY, fail_servo: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.q = np.array(q0, dtype=float)
        self.gripper = 0.0
        self.commands: list[tuple[np.ndarray, float]] = []
        self.command_times: list[float] = []
        self.gripper_commands: list[float] = []
        self.stops = 0
        self.stop_times: list[float] = []
        self.connected = False
        self.protective_stop = False
        self.fail_servo = fail_servo

    def connect(self) -> None:
        self.connected = True

    def state(self) -> ArmState:
        if not self.connected:
            raise ArmNotConnectedError("not connected")
        return ArmState(
            q=self.q.copy(), dq=np.zeros(6), tcp_pose=np.zeros(7), gripper=self.gripper,
            stamp_s=0.0, protective_stop=self.protective_stop,
        )

    def servo_joint(self, q: np.ndarray, dt_s: float) -> None:
        assert self.connected
        if self.fail_servo:
            raise ArmError("RTDE connection lost")
        self.commands.append((np.array(q, dtype=float), float(dt_s)))
        self.command_times.append(self.clock())
        self.q = np.array(q, dtype=float)

    def set_gripper(self, closed_fraction: float) -> None:
        self.gripper_commands.append(float(closed_fraction))
        self.gripper = float(closed_fraction)

    def stop(self) -> None:
        self.stops += 1
        self.stop_times.append(self.clock())

    def disconnect(self) -> None:
        self.connected = False


class FakeClock:
    """A clock the test sets: `clock.t = ...` (seconds); calling it returns t."""

    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t
