"""Axis helpers shared by the stick / puck devices: deadzone and operator-frame yaw.

Pure functions. Twists are (6,) = (vx, vy, vz m/s, wx, wy, wz rad/s); angles in rad. The yaw
rotation goes through `scipy.spatial.transform.Rotation`
(https://docs.scipy.org/doc/scipy/reference/generated/scipy.spatial.transform.Rotation.html).
"""
from __future__ import annotations

import math

import numpy as np
from scipy.spatial.transform import Rotation


def apply_deadzone(value: float, deadzone: float) -> float:
    """Axis value in [-1, 1] -> 0 inside the deadzone, else rescaled to (0, 1] keeping the sign."""
    v = float(np.clip(value, -1.0, 1.0))
    if abs(v) <= deadzone:
        return 0.0
    return math.copysign((abs(v) - deadzone) / (1.0 - deadzone), v)


def rotate_twist_about_z(twist: np.ndarray, yaw_rad: float) -> np.ndarray:
    """(6,) twist expressed in a frame yawed by `yaw_rad` about base z -> the UR base frame.

    Devices report motion in the operator's frame; `yaw_rad` is that frame's yaw in the base
    frame (e.g. pi when the operator faces the robot from the +x side)."""
    r = Rotation.from_rotvec([0.0, 0.0, float(yaw_rad)])
    tw = np.asarray(twist, dtype=float)
    return np.concatenate([r.apply(tw[:3]), r.apply(tw[3:])])
