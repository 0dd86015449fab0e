"""The arm interface shared by the MuJoCo UR3 (`sim_arm.py`) and the real UR3 over ur_rtde.

Every implementation is wrapped by `robot.safety.SafeArm` before anything may command it
(docs/safety.md). Joint order is UR's: shoulder_pan, shoulder_lift, elbow, wrist_1,
wrist_2, wrist_3. Poses are in the UR `base` frame (the DH base frame, what RTDE reports).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from dynaflip_ros.errors import UserError

UR_JOINT_NAMES: tuple[str, ...] = (
    "shoulder_pan_joint",
    "shoulder_lift_joint",
    "elbow_joint",
    "wrist_1_joint",
    "wrist_2_joint",
    "wrist_3_joint",
)
N_JOINTS = 6


class ArmError(RuntimeError, UserError):
    """The arm (or its connection) failed; the message says what to do."""


class ArmNotConnectedError(ArmError):
    """A command or state read was issued before `connect()` or after `disconnect()`."""


@dataclass(frozen=True)
class ArmState:
    """One reading of the arm.

    Attributes:
        q: (6,) joint positions, rad.
        dq: (6,) joint velocities, rad/s.
        tcp_pose: (7,) TCP pose in the UR base frame: x, y, z (m), qw, qx, qy, qz.
        gripper: gripper opening command state, normalised 0 (open) .. 1 (closed).
        stamp_s: time of the reading, seconds on the arm's clock (`time.monotonic()` for the
            real arm, simulation time for the MuJoCo arm).
        protective_stop: the controller is in a protective or emergency stop; no motion until
            an explicit re-arm.
    """

    q: np.ndarray
    dq: np.ndarray
    tcp_pose: np.ndarray
    gripper: float
    stamp_s: float
    protective_stop: bool = False
    extra: dict = field(default_factory=dict)


@runtime_checkable
class Arm(Protocol):
    """A UR-like arm streaming joint (servoJ-style) targets.

    Implementations: `sim.arm.SimArm` (MuJoCo UR3), later `robot.ur_rtde_arm.URRtdeArm`.
    Never command an `Arm` directly: wrap it in `robot.safety.SafeArm`.
    """

    def connect(self) -> None:
        """Open the connection. Raises ArmError with the reason on failure."""

    def state(self) -> ArmState:
        """Latest measured state. Raises ArmNotConnectedError before connect()."""

    def servo_joint(self, q: np.ndarray, dt_s: float) -> None:
        """Stream one joint-position target (6,) rad, to be reached in dt_s seconds (servoJ)."""

    def set_gripper(self, closed_fraction: float) -> None:
        """Command the gripper: 0 = fully open, 1 = fully closed."""

    def stop(self) -> None:
        """Stop streaming and decelerate to rest (servoStop); holds the current pose."""

    def disconnect(self) -> None:
        """Stop and close the connection; idempotent."""
