"""MJCF builder of the Pick-into-Sink cell: UR3 (CB3) from its DH table, parallel gripper, table,
sink basin, graspable objects and the fixed RGB-D camera.

The world frame is the UR `base` frame (DH base): the table top is z = 0, the robot base sits at
the origin. Each UR link is a body whose joint rotates about its local z; the next body sits at
pos = (a_i, 0, d_i) with quat = Rx(alpha_i) (standard DH, `robot/kinematics.py`), so MuJoCo's
flange (`tool0` site) equals `forward_kinematics(q)` exactly. Masses and centres of mass from
HARDWARE.md §1.3 (CB3), joint limits/speeds/torques from §1.1/§1.4, actuator pattern from the
Menagerie UR5e (§1.9) with UR3 torque clamps and gravity compensation on the arm bodies.
Joint speed limits are not a MuJoCo concept: SafeArm and the expert enforce them.

Collision bits: environment geoms contype=1 conaffinity=3, robot geoms contype=2 conaffinity=0,
so the robot touches the table, sink and objects but never itself.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dynaflip_ros.configs.sim import SimConfig
from dynaflip_ros.robot.arm import UR_JOINT_NAMES
from dynaflip_ros.robot.kinematics import (
    UR3_CB3_DH,
    UR3_JOINT_LIMITS_RAD,
    UR3_MAX_JOINT_SPEED_RAD_S,
)

# HARDWARE.md §1.3 (CB3): link masses (kg) and centres of mass in the DH frame i (end of link i).
UR3_LINK_MASS_KG = (2.0, 3.42, 1.26, 0.8, 0.8, 0.35)
UR3_LINK_COM_DH_M = (
    (0.0, -0.02, 0.0),
    (0.13, 0.0, 0.1157),
    (0.05, 0.0, 0.0238),
    (0.0, 0.0, 0.01),
    (0.0, 0.0, 0.01),
    (0.0, 0.0, -0.02),
)
# Cylinder-approximation inertias (ixx = iyy, izz), kg m^2, ur_description ROS 2 UR3 (§1.3).
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

FINGER_STROKE_M = 0.0425          # per finger: 85 mm opening of the 2F-85 (HARDWARE.md §2.1)
FINGER_PAD_HALF_M = (0.011, 0.005, 0.0175)   # pad half sizes along tool x, y (thickness), z
GRIPPER_MASS_KG = 0.925
# Finger damping (N s / m): with the force clamp the fingers close at about
# gripper_max_force_n / FINGER_DAMPING = 0.1 m/s each (2F-85: 20-150 mm/s, HARDWARE.md §2.1).
FINGER_DAMPING = 200.0

ROBOT_BODY_NAMES = ("shoulder_link", "upper_arm_link", "forearm_link",
                    "wrist_1_link", "wrist_2_link", "wrist_3_link")
FINGER_JOINT_NAMES = ("left_finger_joint", "right_finger_joint")
FINGER_ACTUATOR_NAMES = ("left_finger", "right_finger")
CAMERA_NAME = "front_rgbd"
TCP_SITE = "tcp"
FLANGE_SITE = "tool0"
SINK_BODY = "sink"


@dataclass(frozen=True)
class ObjectSpec:
    """A graspable object.

    shape: "box" | "cylinder" | "sphere"; size: MuJoCo geom size (box half-extents (3,),
    cylinder (radius, half-height), sphere (radius,)), metres; rgba; mass_kg.
    grasp_symmetry_rad: the grasp yaw repeats with this period (box: pi/2 for a cube, pi for a
    bar, 0 = any yaw works); grasp_across_y: close the fingers along the object's y axis (bar).
    """

    name: str
    shape: str
    size: tuple[float, ...]
    rgba: tuple[float, float, float, float]
    mass_kg: float
    grasp_symmetry_rad: float
    grasp_across_y: bool = False

    @property
    def body(self) -> str:
        return "obj_" + self.name.replace(" ", "_")

    @property
    def half_height_m(self) -> float:
        """Height of the centre above the table when the object rests upright (m)."""
        if self.shape == "box":
            return self.size[2]
        if self.shape == "cylinder":
            return self.size[1]
        return self.size[0]

    def surface_points(self, n: int = 32, seed: int = 0) -> np.ndarray:
        """(n, 3) fixed points on the object's surface in its body frame, metres.

        Deterministic (seeded), area-weighted for boxes/cylinders, Fibonacci lattice for spheres.
        """
        rng = np.random.default_rng(seed)
        if self.shape == "sphere":
            i = np.arange(n) + 0.5
            phi = np.arccos(1 - 2 * i / n)
            theta = math.pi * (1 + 5 ** 0.5) * i
            r = self.size[0]
            return np.stack([r * np.cos(theta) * np.sin(phi), r * np.sin(theta) * np.sin(phi),
                             r * np.cos(phi)], axis=1)
        if self.shape == "box":
            h = np.asarray(self.size)
            areas = np.array([h[1] * h[2], h[1] * h[2], h[0] * h[2], h[0] * h[2], h[0] * h[1], h[0] * h[1]])
            faces = rng.choice(6, size=n, p=areas / areas.sum())
            pts = rng.uniform(-1, 1, size=(n, 3)) * h
            axis, sign = faces // 2, np.where(faces % 2 == 0, 1.0, -1.0)
            pts[np.arange(n), axis] = sign * h[axis]
            return pts
        r, hh = self.size
        side, cap = 2 * math.pi * r * 2 * hh, 2 * math.pi * r * r
        on_side = rng.uniform(size=n) < side / (side + cap)
        ang = rng.uniform(0, 2 * math.pi, size=n)
        rad = np.where(on_side, r, r * np.sqrt(rng.uniform(size=n)))
        z = np.where(on_side, rng.uniform(-hh, hh, size=n), np.where(rng.uniform(size=n) < 0.5, hh, -hh))
        return np.stack([rad * np.cos(ang), rad * np.sin(ang), z], axis=1)


OBJECT_SPECS: dict[str, ObjectSpec] = {
    "red cube": ObjectSpec("red cube", "box", (0.02, 0.02, 0.02), (0.85, 0.1, 0.1, 1), 0.08, math.pi / 2),
    "green cylinder": ObjectSpec("green cylinder", "cylinder", (0.02, 0.03), (0.1, 0.7, 0.2, 1), 0.07, 0.0),
    "blue bar": ObjectSpec("blue bar", "box", (0.045, 0.0125, 0.015), (0.1, 0.25, 0.85, 1), 0.06,
                           math.pi, grasp_across_y=True),
    "yellow ball": ObjectSpec("yellow ball", "sphere", (0.022,), (0.95, 0.85, 0.1, 1), 0.05, 0.0),
}


def _rx_quat(alpha: float) -> str:
    return f"{math.cos(alpha / 2):.17g} {math.sin(alpha / 2):.17g} 0 0"


def _fmt(v) -> str:
    return " ".join(f"{float(x):.10g}" for x in v)


def _rx(alpha: float) -> np.ndarray:
    c, s = math.cos(alpha), math.sin(alpha)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


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


def _arm_xml(cfg: SimConfig, gripper_joints: bool) -> str:
    dh = UR3_CB3_DH
    lim = UR3_JOINT_LIMITS_RAD
    parts: list[str] = []
    # Fixed base: UR3 footprint Ø128 mm.
    parts.append('<body name="base" pos="0 0 0">')
    parts.append('<geom name="base_geom" type="cylinder" size="0.064 0.043" pos="0 0 0.043" '
                 'material="ur_dark" contype="2" conaffinity="0"/>')
    # Visual/collision geoms per link, in body i coordinates (joint axis = local z).
    link_geoms = {
        0: ['<geom type="cylinder" size="0.046 0.035" pos="0 0 0.1" material="ur_grey"/>',
            '<geom type="cylinder" size="0.046 0.06" pos="0 -0.06 0.1519" quat="0.7071068 0.7071068 0 0" material="ur_blue"/>'],
        1: ['<geom type="capsule" size="0.036" fromto="-0.03 0 0.12 -0.2136 0 0.12" material="ur_grey"/>',
            '<geom type="cylinder" size="0.037 0.05" pos="-0.24365 0 0.08" material="ur_blue"/>'],
        2: ['<geom type="capsule" size="0.03" fromto="-0.02 0 0.027 -0.19 0 0.027" material="ur_grey"/>',
            '<geom type="cylinder" size="0.03 0.045" pos="-0.21325 0 0.07" material="ur_blue"/>'],
        3: ['<geom type="cylinder" size="0.03 0.045" pos="0 -0.045 0.11235" quat="0.7071068 0.7071068 0 0" material="ur_blue"/>'],
        4: ['<geom type="cylinder" size="0.03 0.04" pos="0 0.035 0.08535" quat="0.7071068 0.7071068 0 0" material="ur_blue"/>'],
        5: ['<geom type="cylinder" size="0.032 0.012" pos="0 0 0.07" material="ur_grey"/>'],
    }
    for i in range(6):
        pos = "0 0 0" if i == 0 else f"{dh.a[i - 1]:.17g} 0 {dh.d[i - 1]:.17g}"
        quat = "1 0 0 0" if i == 0 else _rx_quat(dh.alpha[i - 1])
        com = np.array([dh.a[i], 0.0, dh.d[i]]) + _rx(dh.alpha[i]) @ np.asarray(UR3_LINK_COM_DH_M[i])
        ixx, izz = UR3_LINK_INERTIA[i]
        parts.append(f'<body name="{ROBOT_BODY_NAMES[i]}" pos="{pos}" quat="{quat}" gravcomp="1">')
        parts.append(f'<inertial pos="{_fmt(com)}" mass="{UR3_LINK_MASS_KG[i]}" diaginertia="{ixx} {ixx} {izz}"/>')
        parts.append(
            f'<joint name="{UR_JOINT_NAMES[i]}" axis="0 0 1" range="{lim[i, 0]:.17g} {lim[i, 1]:.17g}" '
            f'damping="{ARM_DAMPING[i]}" armature="{ARM_ARMATURE[i]}" '
            f'actuatorfrcrange="{-UR3_MAX_TORQUE_NM[i]} {UR3_MAX_TORQUE_NM[i]}"/>')
        for g in link_geoms[i]:
            parts.append(g.replace("<geom ", '<geom contype="2" conaffinity="0" '))
    # Flange (tool0) = DH frame 6, then the gripper.
    flange = f"0 0 {dh.d[5]:.17g}"
    parts.append(f'<site name="{FLANGE_SITE}" pos="{flange}" size="0.005" rgba="1 0 0 0"/>')
    parts.append(f'<body name="gripper" pos="{flange}" gravcomp="1">')
    parts.append(f'<inertial pos="0 0 0.06" mass="{GRIPPER_MASS_KG}" diaginertia="0.002 0.002 0.001"/>')
    parts.append(f'<site name="{TCP_SITE}" pos="0 0 {cfg.tcp_offset_m:.10g}" size="0.004" rgba="0 1 0 0"/>')
    palm_top = cfg.tcp_offset_m - FINGER_PAD_HALF_M[2] - 0.045   # fingers are 45 mm + pad
    rob = 'contype="2" conaffinity="0"'
    parts.append(f'<geom {rob} type="cylinder" size="0.0375 {palm_top / 2 - 0.002:.5g}" pos="0 0 {palm_top / 2 - 0.002:.5g}" material="grip_dark"/>')
    parts.append(f'<geom {rob} type="box" size="0.022 0.058 0.012" pos="0 0 {palm_top - 0.012:.5g}" material="grip_dark"/>')
    pad_z = cfg.tcp_offset_m
    finger_len_half = (pad_z + FINGER_PAD_HALF_M[2] - palm_top) / 2
    for side, sgn in (("left", 1.0), ("right", -1.0)):
        parts.append(f'<body name="{side}_finger" pos="0 {sgn * FINGER_STROKE_M:.6g} 0" gravcomp="1">')
        parts.append('<inertial pos="0 0 0.12" mass="0.05" diaginertia="1e-5 1e-5 1e-5"/>')
        if gripper_joints:
            parts.append(f'<joint name="{side}_finger_joint" type="slide" axis="0 {-sgn:.1f} 0" '
                         f'range="0 {FINGER_STROKE_M}" damping="{FINGER_DAMPING}" armature="0.01"/>')
        hy = FINGER_PAD_HALF_M[1]
        parts.append(f'<geom {rob} type="box" size="0.011 0.004 {finger_len_half:.5g}" '
                     f'pos="0 {sgn * (2 * hy + 0.004):.5g} {palm_top + finger_len_half:.5g}" material="grip_grey"/>')
        parts.append(f'<geom name="{side}_pad" {rob} type="box" size="{_fmt(FINGER_PAD_HALF_M)}" '
                     f'pos="0 {sgn * hy:.5g} {pad_z:.5g}" material="pad" friction="1.5 0.02 0.002" '
                     'condim="4" priority="1" solref="0.004 1"/>')
        parts.append("</body>")
    parts.append("</body>")  # gripper
    parts.append("</body>" * 6)
    parts.append("</body>")  # base
    return "\n".join(parts)


def _sink_xml(cfg: SimConfig) -> str:
    cx, cy = cfg.sink_center_xy_m
    ix, iy = cfg.sink_inner_size_m[0] / 2, cfg.sink_inner_size_m[1] / 2
    t, h = 0.012, cfg.sink_wall_height_m
    env = 'contype="1" conaffinity="3" material="steel"'
    walls = [
        f'<geom name="sink_floor" type="box" size="{ix + t:.5g} {iy + t:.5g} 0.005" pos="0 0 0.005" {env}/>',
        f'<geom name="sink_wall_px" type="box" size="{t / 2} {iy + t:.5g} {h / 2:.5g}" pos="{ix + t / 2:.5g} 0 {h / 2:.5g}" {env}/>',
        f'<geom name="sink_wall_nx" type="box" size="{t / 2} {iy + t:.5g} {h / 2:.5g}" pos="{-ix - t / 2:.5g} 0 {h / 2:.5g}" {env}/>',
        f'<geom name="sink_wall_py" type="box" size="{ix:.5g} {t / 2} {h / 2:.5g}" pos="0 {iy + t / 2:.5g} {h / 2:.5g}" {env}/>',
        f'<geom name="sink_wall_ny" type="box" size="{ix:.5g} {t / 2} {h / 2:.5g}" pos="0 {-iy - t / 2:.5g} {h / 2:.5g}" {env}/>',
        '<geom name="sink_drain" type="cylinder" size="0.02 0.0005" pos="0 0 0.0105" rgba="0.15 0.15 0.15 1" contype="0" conaffinity="0"/>',
    ]
    return f'<body name="{SINK_BODY}" pos="{cx:.5g} {cy:.5g} 0">' + "\n".join(walls) + "</body>"


def parked_position(index: int) -> tuple[float, float, float]:
    """Out-of-view resting place (x, y on the floor) of an object not used in the episode."""
    return (2.5, -1.0 + 0.3 * index, -0.75)   # on the floor behind the camera


def _objects_xml(cfg: SimConfig) -> str:
    out = []
    for i, name in enumerate(cfg.objects):
        spec = OBJECT_SPECS[name]
        px, py, pz = parked_position(i)
        extra = 'condim="6" friction="1.0 0.01 0.002"' if spec.shape == "sphere" else 'condim="4" friction="1.0 0.01 0.001"'
        out.append(
            f'<body name="{spec.body}" pos="{px} {py} {pz + spec.half_height_m:.5g}">'
            f'<freejoint name="{spec.body}_free"/>'
            f'<geom name="{spec.body}_geom" type="{spec.shape}" size="{_fmt(spec.size)}" '
            f'rgba="{_fmt(spec.rgba)}" mass="{spec.mass_kg}" contype="1" conaffinity="3" {extra}/>'
            "</body>")
    return "\n".join(out)


def build_cell_xml(cfg: SimConfig, arm_only: bool = False) -> str:
    """MJCF text of the cell. `arm_only=True`: only the UR3 + gripper (fingers fixed open), the
    model the expert's IK (mink) runs on."""
    h, w = cfg.image_hw
    assets = """
  <asset>
    <texture name="grid" type="2d" builtin="checker" width="256" height="256" rgb1="0.32 0.33 0.35" rgb2="0.28 0.29 0.31"/>
    <material name="floor" texture="grid" texrepeat="8 8"/>
    <material name="table" rgba="0.62 0.5 0.36 1"/>
    <material name="steel" rgba="0.72 0.74 0.78 1" specular="0.6" shininess="0.6"/>
    <material name="ur_grey" rgba="0.78 0.79 0.8 1"/>
    <material name="ur_blue" rgba="0.35 0.5 0.7 1"/>
    <material name="ur_dark" rgba="0.25 0.25 0.27 1"/>
    <material name="grip_dark" rgba="0.15 0.15 0.16 1"/>
    <material name="grip_grey" rgba="0.45 0.45 0.47 1"/>
    <material name="pad" rgba="0.05 0.05 0.05 1"/>
  </asset>"""
    arm = _arm_xml(cfg, gripper_joints=not arm_only)
    world = [arm]
    actuators = []
    kp_parts = []
    for i, jn in enumerate(UR_JOINT_NAMES):
        kp_parts.append(
            f'<position name="{jn}" joint="{jn}" kp="{ARM_KP[i]}" '
            f'ctrlrange="{UR3_JOINT_LIMITS_RAD[i, 0]:.17g} {UR3_JOINT_LIMITS_RAD[i, 1]:.17g}" '
            f'forcerange="{-UR3_MAX_TORQUE_NM[i]} {UR3_MAX_TORQUE_NM[i]}"/>')
    for i, jn in enumerate(UR_JOINT_NAMES):
        kp_parts.append(
            f'<velocity name="{jn}_vel" joint="{jn}" kv="{ARM_KV[i]}" '
            f'ctrlrange="{-UR3_MAX_JOINT_SPEED_RAD_S[i]:.17g} {UR3_MAX_JOINT_SPEED_RAD_S[i]:.17g}" '
            f'forcerange="{-UR3_MAX_TORQUE_NM[i]} {UR3_MAX_TORQUE_NM[i]}"/>')
    actuators += kp_parts
    if not arm_only:
        kp_f = cfg.gripper_max_force_n / 0.01   # full force at 10 mm squeeze
        for jn, an in zip(FINGER_JOINT_NAMES, FINGER_ACTUATOR_NAMES):
            actuators.append(f'<position name="{an}" joint="{jn}" kp="{kp_f:.6g}" ctrlrange="0 {FINGER_STROKE_M}" '
                             f'forcerange="{-cfg.gripper_max_force_n} {cfg.gripper_max_force_n}"/>')
        cam_pos, cam_r = camera_pose(cfg)
        world += [
            '<light name="key" pos="0.4 -0.3 1.6" dir="-0.2 0.2 -1" directional="true" diffuse="0.65 0.65 0.65" castshadow="false"/>',
            '<light name="fill" pos="1 0.8 1.2" dir="-0.6 -0.5 -0.8" directional="true" diffuse="0.25 0.25 0.25" castshadow="false"/>',
            '<geom name="floor" type="plane" size="4 4 0.1" pos="0 0 -0.75" material="floor" contype="1" conaffinity="3"/>',
            '<geom name="table" type="box" size="0.8 0.8 0.02" pos="0.1 0.0 -0.02" material="table" contype="1" conaffinity="3"/>',
            '<geom name="table_leg" type="box" size="0.7 0.7 0.365" pos="0.1 0.0 -0.405" material="table" contype="0" conaffinity="0"/>',
            _sink_xml(cfg),
            _objects_xml(cfg),
            f'<camera name="{CAMERA_NAME}" pos="{_fmt(cam_pos)}" xyaxes="{_fmt(cam_r[:, 0])} {_fmt(cam_r[:, 1])}" fovy="{cfg.camera_fovy_deg}"/>',
        ]
    return f"""<mujoco model="ur3_pick_into_sink{'_arm' if arm_only else ''}">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{cfg.timestep_s}" integrator="implicitfast" cone="elliptic" impratio="10"/>
  <visual>
    <global offwidth="{max(w, 640)}" offheight="{max(h, 480)}"/>
    <map znear="{cfg.camera_znear_m}" zfar="{cfg.camera_zfar_m}"/>
    <quality shadowsize="0"/>
    <headlight ambient="0.35 0.35 0.35" diffuse="0.35 0.35 0.35" specular="0.1 0.1 0.1"/>
  </visual>
  <statistic extent="1" center="0.2 0 0.2"/>
  {assets}
  <worldbody>
{chr(10).join(world)}
  </worldbody>
  <actuator>
{chr(10).join(actuators)}
  </actuator>
</mujoco>"""


def build_model(cfg: SimConfig, arm_only: bool = False):
    """Compile the cell into a `mujoco.MjModel`. Raises ValueError (from MuJoCo) on a bad model."""
    import mujoco

    return mujoco.MjModel.from_xml_string(build_cell_xml(cfg, arm_only=arm_only))
