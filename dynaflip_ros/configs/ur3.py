"""UR3 / UR3e facts the config defaults need: DH tables, joint position and speed limits.

Pure constants (numpy arrays, metres, radians, rad/s); `robot.kinematics` imports them from
here, so configs stay free of other project packages. Nothing here changes at run time.

Sources (public):
- DH tables: Universal Robots, "DH parameters for calculations of kinematics and dynamics"
  (https://www.universal-robots.com/articles/ur/application-installation/dh-parameters-for-calculations-of-kinematics-and-dynamics/),
  CB3 UR3 and e-Series UR3e rows. Standard (distal) DH, theta offsets 0.
- Limits: UR3 / UR3e technical specifications (universal-robots.com datasheets): working range
  ±360° on every joint, joint speed 180 °/s (base, shoulder, elbow) and 360 °/s (wrists); the
  elbow is limited to ±180° as in ur_description
  (https://github.com/UniversalRobots/Universal_Robots_ROS2_Description, config/ur3/joint_limits.yaml),
  since the shoulder blocks it beyond.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DHParams:
    """Standard (distal) DH table: a (m), d (m), alpha (rad); theta offsets are 0 for UR arms."""

    a: tuple[float, ...]
    d: tuple[float, ...]
    alpha: tuple[float, ...]


UR3_CB3_DH = DHParams(
    a=(0.0, -0.24365, -0.21325, 0.0, 0.0, 0.0),
    d=(0.1519, 0.0, 0.0, 0.11235, 0.08535, 0.0819),
    alpha=(np.pi / 2, 0.0, 0.0, np.pi / 2, -np.pi / 2, 0.0),
)
UR3E_DH = DHParams(
    a=(0.0, -0.24355, -0.2132, 0.0, 0.0, 0.0),
    d=(0.15185, 0.0, 0.0, 0.13105, 0.08535, 0.0921),
    alpha=(np.pi / 2, 0.0, 0.0, np.pi / 2, -np.pi / 2, 0.0),
)

# (6, 2) lower/upper joint position limits, rad, UR joint order (base .. wrist 3).
UR3_JOINT_LIMITS_RAD = np.array(
    [[-2 * np.pi, 2 * np.pi]] * 2 + [[-np.pi, np.pi]] + [[-2 * np.pi, 2 * np.pi]] * 3
)
# (6,) datasheet joint speed limits, rad/s.
UR3_MAX_JOINT_SPEED_RAD_S = np.array([np.pi, np.pi, np.pi, 2 * np.pi, 2 * np.pi, 2 * np.pi])
