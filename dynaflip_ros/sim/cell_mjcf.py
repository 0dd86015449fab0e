"""The Pick-into-Sink cell as MJCF text, for callers that edit the text before compiling.

`calibration/sim_scene.py` inserts a ChArUco board and a wrist camera into this text. The
cell itself is built with `mujoco.MjSpec` in `sim/cell.py`; this text builder is kept because
`MjSpec.to_xml()` writes numbers with 6 significant digits (joint ranges of 2 pi became
6.28319), which would change the compiled model. tests/test_sim_cell.py checks that both
compile to the same model, array by array. Numbers are written with the precision each field
had (`.17g` for DH values and limits, `.10g` for derived positions, `.5g` / `.6g` for the
gripper, sink and finger-gain values). Delete this module once sim_scene builds on
`cell.build_cell_spec`.
"""
from __future__ import annotations

import numpy as np

from dynaflip_ros.configs.sim import SimConfig
from dynaflip_ros.robot.arm import UR_JOINT_NAMES
from dynaflip_ros.robot.kinematics import UR3_CB3_DH, UR3_JOINT_LIMITS_RAD, UR3_MAX_JOINT_SPEED_RAD_S
from dynaflip_ros.sim.cell_params import (
    ARM_ARMATURE,
    ARM_DAMPING,
    ARM_KP,
    ARM_KV,
    CAMERA_NAME,
    FINGER_ACTUATOR_NAMES,
    FINGER_DAMPING,
    FINGER_JOINT_NAMES,
    FINGER_PAD_HALF_M,
    FINGER_STROKE_M,
    FLANGE_SITE,
    GRIPPER_MASS_KG,
    OBJECT_SPECS,
    ROBOT_BODY_NAMES,
    SINK_BODY,
    TCP_SITE,
    UR3_LINK_COM_DH_M,
    UR3_LINK_INERTIA,
    UR3_LINK_MASS_KG,
    UR3_MAX_TORQUE_NM,
    camera_pose,
    parked_position,
    rx_matrix,
    rx_quat_wxyz,
)


def _fmt(v, spec: str = ".10g") -> str:
    return " ".join(f"{float(x):{spec}}" for x in v)


def _arm_xml(cfg: SimConfig, gripper_joints: bool) -> str:
    dh = UR3_CB3_DH
    lim = UR3_JOINT_LIMITS_RAD
    parts: list[str] = []
    # Fixed base: UR3 footprint 128 mm diameter.
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
        quat = "1 0 0 0" if i == 0 else _fmt(rx_quat_wxyz(dh.alpha[i - 1]), '.17g')
        com = np.array([dh.a[i], 0.0, dh.d[i]]) + rx_matrix(dh.alpha[i]) @ np.asarray(UR3_LINK_COM_DH_M[i])
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
    """MJCF text of the cell; compiles to the same `mujoco.MjModel` as `cell.build_model(cfg,
    arm_only)` (tests/test_sim_cell.py compares every compiled array). `arm_only=True`: only the
    UR3 + gripper (fingers fixed open), the model the expert's IK (mink) runs on."""
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
