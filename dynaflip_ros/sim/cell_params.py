"""Physical parameters of the Pick-into-Sink cell: the UR3 (CB3) links, its servo gains, the
parallel gripper, the graspable objects, element names, and the camera / parking geometry.

Read by the MjSpec builder (`sim/cell.py`), the env, the arm and the expert. Frames: world = UR
`base` frame (DH base, table top z = 0). Lengths in metres, masses in kg, angles in radians.
Sources: masses, centres of mass, inertias, joint limits and torques of the UR3 CB3 and the 2F-85
gripper as in docs/hardware.md (UR3 technical specifications, ur_description ROS 2 UR3);
actuator pattern of the MuJoCo Menagerie UR5e. Rotations through
`scipy.spatial.transform.Rotation` (`scalar_first=True`: MuJoCo's w, x, y, z order;
https://docs.scipy.org/doc/scipy/reference/generated/scipy.spatial.transform.Rotation.html).
"""
from __future__ import annotations

import math

import numpy as np
from scipy.spatial.transform import Rotation

from dynaflip_ros.configs.sim import SimConfig
from dynaflip_ros.task.catalogue import CATALOGUE as OBJECT_SPECS  # noqa: F401  (the cell's objects)
from dynaflip_ros.task.catalogue import ObjectSpec, get_object  # noqa: F401

# docs/hardware.md §1.3 (CB3): link masses (kg) and centres of mass in the DH frame i (end of link i).
UR3_LINK_MASS_KG = (2.0, 3.42, 1.26, 0.8, 0.8, 0.35)
UR3_LINK_COM_DH_M = (
    (0.0, -0.02, 0.0),
    (0.13, 0.0, 0.1157),
    (0.05, 0.0, 0.0238),
    (0.0, 0.0, 0.01),
    (0.0, 0.0, 0.01),
    (0.0, 0.0, -0.02),
)
# Cylinder-approximation inertias (ixx = iyy, izz), kg m^2, ur_description ROS 2 UR3 (docs/hardware.md §1.3).
UR3_LINK_INERTIA = (
    (0.008093, 0.005625),
    (0.021728, 0.009619),
    (0.006547, 0.003544),
    (0.001611, 0.00225),
    (0.001572, 0.00225),
    (0.000136, 0.000179),
)
UR3_MAX_TORQUE_NM = (56.0, 56.0, 28.0, 12.0, 12.0, 12.0)
# Joint servo: a position actuator (kp, N m / rad) plus a velocity actuator (kv, N m s / rad) per
# joint, i.e. tau = kp (q* - q) + kv (dq* - dq) with the servoJ velocity feed-forward dq*; the sum
# is clamped to the UR3 torque limits (joint actuatorfrcrange). Roughly critically damped with
# the armature and link inertia; small passive joint damping.
ARM_KP = (3000.0, 3000.0, 2000.0, 800.0, 800.0, 800.0)
ARM_KV = (100.0, 100.0, 60.0, 15.0, 15.0, 10.0)
ARM_DAMPING = (1.0, 1.0, 1.0, 0.2, 0.2, 0.2)
ARM_ARMATURE = (0.1, 0.1, 0.1, 0.05, 0.05, 0.05)

FINGER_STROKE_M = 0.0425          # per finger: 85 mm opening of the 2F-85 (docs/hardware.md §2.1)
FINGER_PAD_HALF_M = (0.011, 0.005, 0.0175)   # pad half sizes along tool x, y (thickness), z
GRIPPER_MASS_KG = 0.925
# Finger damping (N s / m): with the force clamp the fingers close at about
# gripper_max_force_n / FINGER_DAMPING = 0.1 m/s each (2F-85: 20-150 mm/s, docs/hardware.md §2.1).
FINGER_DAMPING = 200.0

ROBOT_BODY_NAMES = ("shoulder_link", "upper_arm_link", "forearm_link",
                    "wrist_1_link", "wrist_2_link", "wrist_3_link")
FINGER_JOINT_NAMES = ("left_finger_joint", "right_finger_joint")
FINGER_ACTUATOR_NAMES = ("left_finger", "right_finger")
CAMERA_NAME = "front_rgbd"
TCP_SITE = "tcp"
FLANGE_SITE = "tool0"
SINK_BODY = "sink"


def cell_objects(cfg: SimConfig) -> tuple[str, ...]:
    """Names of the catalogue objects built into the cell: `cfg.objects`, or the whole catalogue
    when that is empty. Raises ValueError on a name the catalogue does not have."""
    names = cfg.objects or tuple(OBJECT_SPECS)
    for n in names:
        get_object(n)
    return tuple(names)


def rx_quat_wxyz(alpha: float) -> np.ndarray:
    """(4,) quaternion w, x, y, z (MuJoCo order) of a rotation by alpha (rad) about x."""
    return Rotation.from_euler("x", alpha).as_quat(scalar_first=True)


def rx_matrix(alpha: float) -> np.ndarray:
    """(3, 3) rotation matrix by alpha (rad) about x."""
    return Rotation.from_euler("x", alpha).as_matrix()


def yaw_quat_wxyz(yaw: float) -> np.ndarray:
    """(4,) quaternion w, x, y, z (MuJoCo order) of a rotation by yaw (rad) about z."""
    return Rotation.from_euler("z", yaw).as_quat(scalar_first=True)


def yaw_from_quat_wxyz(quat_wxyz) -> float:
    """Yaw (rad, in [-pi, pi]) of a (4,) w, x, y, z quaternion (MuJoCo order): the first angle of
    its intrinsic z-y'-x'' (yaw, pitch, roll) Euler decomposition."""
    return float(Rotation.from_quat(np.asarray(quat_wxyz, dtype=float), scalar_first=True).as_euler("ZYX")[0])


def camera_pose(cfg: SimConfig) -> tuple[np.ndarray, np.ndarray]:
    """Camera position (3,) and MuJoCo camera rotation (3, 3) (columns x, y, z; looks along -z)
    in the world (= UR base) frame, from `camera_target_m/range/tilt/azimuth`."""
    tilt, az = math.radians(cfg.camera_tilt_deg), math.radians(cfg.camera_azimuth_deg)
    target = np.asarray(cfg.camera_target_m, dtype=float)
    back = np.array([math.cos(az) * math.cos(tilt), math.sin(az) * math.cos(tilt), math.sin(tilt)])
    pos = target + cfg.camera_range_m * back
    fwd = -back
    x = np.cross(fwd, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(x, fwd)
    return pos, np.stack([x, y, -fwd], axis=1)


def parked_position(index: int) -> tuple[float, float, float]:
    """Out-of-view resting place (x, y on the floor) of an object not used in the episode."""
    return (2.5, -1.0 + 0.3 * index, -0.75)   # on the floor behind the camera
