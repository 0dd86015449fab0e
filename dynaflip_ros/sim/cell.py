"""The Pick-into-Sink cell built with `mujoco.MjSpec`: UR3 (CB3) from its DH table, parallel
gripper, table, sink basin, graspable objects and the fixed RGB-D camera.

The world frame is the UR `base` frame (DH base): the table top is z = 0, the robot base sits at
the origin. Each UR link is a body whose joint rotates about its local z; the next body sits at
pos = (a_i, 0, d_i) with quat = Rx(alpha_i) (standard DH, `robot/kinematics.py`), so MuJoCo's
flange (`tool0` site) equals `forward_kinematics(q)` exactly. Parameters (masses, inertias, gains,
names, objects) live in `sim/cell_params.py` and are re-exported here; UR3 torque clamps and
gravity compensation on the arm bodies. Joint speed limits are not a MuJoCo concept: SafeArm and
the expert enforce them.

Collision bits: environment geoms contype=1 conaffinity=3, robot geoms contype=2 conaffinity=0,
so the robot touches the table, sink and objects but never itself.

Numbers are rounded as the cell's earlier MJCF text wrote them (`round_sig`), so the compiled
model is unchanged array for array (tests/test_sim_cell_spec.py pins every compiled array).
MjSpec: https://mujoco.readthedocs.io/en/stable/programming/modeledit.html. Pure functions; the
compiled `MjModel` is owned by the caller.
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
    ObjectSpec,
    camera_pose,
    cell_objects,
    parked_position,
    rx_matrix,
    rx_quat_wxyz,
    yaw_quat_wxyz,
)

__all__ = [
    "ARM_ARMATURE", "ARM_DAMPING", "ARM_KP", "ARM_KV", "CAMERA_NAME", "FINGER_ACTUATOR_NAMES",
    "FINGER_DAMPING", "FINGER_JOINT_NAMES", "FINGER_PAD_HALF_M", "FINGER_STROKE_M", "FLANGE_SITE",
    "GRIPPER_MASS_KG", "OBJECT_SPECS", "ROBOT_BODY_NAMES", "SINK_BODY", "TCP_SITE",
    "UR3_LINK_COM_DH_M", "UR3_LINK_INERTIA", "UR3_LINK_MASS_KG", "UR3_MAX_TORQUE_NM", "ObjectSpec",
    "build_cell_spec", "build_model", "camera_pose", "cell_objects", "parked_position", "round_sig", "round_sig_vec",
    "yaw_quat_wxyz",
]


def round_sig(x: float, digits: int) -> float:
    """x rounded to `digits` significant digits, as `f"{x:.{digits}g}"` writes it: the numbers
    the cell's (and the calibration scene's) earlier MJCF text held, so the compiled model is
    unchanged bit for bit."""
    return float(f"{float(x):.{digits}g}")


def round_sig_vec(v, digits: int = 10) -> list[float]:
    """`round_sig` of each element of v (a sequence of floats); returns a list."""
    return [round_sig(x, digits) for x in v]


_ROBOT = {"contype": 2, "conaffinity": 0}   # robot geoms: touch the environment, never itself
_ENV = {"contype": 1, "conaffinity": 3}     # environment geoms
_SHAPES = {"box": "mjGEOM_BOX", "cylinder": "mjGEOM_CYLINDER", "sphere": "mjGEOM_SPHERE",
           "capsule": "mjGEOM_CAPSULE", "plane": "mjGEOM_PLANE"}
_MATERIALS = (  # name, rgba, extra attributes
    ("table", (0.62, 0.5, 0.36, 1), {}),
    ("steel", (0.72, 0.74, 0.78, 1), {"specular": 0.6, "shininess": 0.6}),
    ("ur_grey", (0.78, 0.79, 0.8, 1), {}),
    ("ur_blue", (0.35, 0.5, 0.7, 1), {}),
    ("ur_dark", (0.25, 0.25, 0.27, 1), {}),
    ("grip_dark", (0.15, 0.15, 0.16, 1), {}),
    ("grip_grey", (0.45, 0.45, 0.47, 1), {}),
    ("pad", (0.05, 0.05, 0.05, 1), {}),
)
_Q_X90 = (0.7071068, 0.7071068, 0.0, 0.0)   # link-cylinder orientation (normalised by the compiler)
# Visual/collision geoms per link, in body i coordinates (joint axis = local z):
# (shape, size, pos, quat or None, material); capsules give `fromto` (6,) instead of pos.
_LINK_GEOMS = {
    0: [("cylinder", (0.046, 0.035), (0, 0, 0.1), None, "ur_grey"),
        ("cylinder", (0.046, 0.06), (0, -0.06, 0.1519), _Q_X90, "ur_blue")],
    1: [("capsule", (0.036,), (-0.03, 0, 0.12, -0.2136, 0, 0.12), None, "ur_grey"),
        ("cylinder", (0.037, 0.05), (-0.24365, 0, 0.08), None, "ur_blue")],
    2: [("capsule", (0.03,), (-0.02, 0, 0.027, -0.19, 0, 0.027), None, "ur_grey"),
        ("cylinder", (0.03, 0.045), (-0.21325, 0, 0.07), None, "ur_blue")],
    3: [("cylinder", (0.03, 0.045), (0, -0.045, 0.11235), _Q_X90, "ur_blue")],
    4: [("cylinder", (0.03, 0.04), (0, 0.035, 0.08535), _Q_X90, "ur_blue")],
    5: [("cylinder", (0.032, 0.012), (0, 0, 0.07), None, "ur_grey")],
}


def _geom(parent, shape: str, size, pos=None, quat=None, fromto=None, **attrs):
    """Add a geom of `shape` ("box", "cylinder", ...) to `parent` (an `mujoco.MjsBody`)."""
    import mujoco

    g = parent.add_geom()
    g.type = getattr(mujoco.mjtGeom, _SHAPES[shape])
    g.size[:len(size)] = size
    if pos is not None:
        g.pos = pos
    if quat is not None:
        g.quat = quat
    if fromto is not None:
        g.fromto = fromto
    for k, v in attrs.items():
        setattr(g, k, v)
    return g


def _inertial(body, pos, mass_kg: float, diaginertia) -> None:
    body.explicitinertial = True
    body.ipos = pos
    body.mass = mass_kg
    body.inertia = diaginertia


def _add_arm(spec, cfg: SimConfig, gripper_joints: bool) -> None:
    """UR3 links from the DH table, flange site, gripper body with its fingers (and their slide
    joints when `gripper_joints`)."""
    import mujoco

    dh = UR3_CB3_DH
    lim = UR3_JOINT_LIMITS_RAD
    # Fixed base: UR3 footprint 128 mm diameter.
    parent = spec.worldbody.add_body(name="base", pos=[0, 0, 0])
    _geom(parent, "cylinder", (0.064, 0.043), pos=(0, 0, 0.043), name="base_geom", material="ur_dark", **_ROBOT)
    for i in range(6):
        pos = [0.0, 0.0, 0.0] if i == 0 else [dh.a[i - 1], 0.0, dh.d[i - 1]]
        quat = [1.0, 0.0, 0.0, 0.0] if i == 0 else rx_quat_wxyz(dh.alpha[i - 1])
        com = np.array([dh.a[i], 0.0, dh.d[i]]) + rx_matrix(dh.alpha[i]) @ np.asarray(UR3_LINK_COM_DH_M[i])
        ixx, izz = UR3_LINK_INERTIA[i]
        body = parent.add_body(name=ROBOT_BODY_NAMES[i], pos=pos, quat=quat, gravcomp=1)
        _inertial(body, round_sig_vec(com), UR3_LINK_MASS_KG[i], [ixx, ixx, izz])
        j = body.add_joint(name=UR_JOINT_NAMES[i], axis=[0, 0, 1], range=[lim[i, 0], lim[i, 1]],
                           armature=ARM_ARMATURE[i],
                           actfrcrange=[-UR3_MAX_TORQUE_NM[i], UR3_MAX_TORQUE_NM[i]])
        j.damping[0] = ARM_DAMPING[i]
        for shape, size, where, q, material in _LINK_GEOMS[i]:
            if shape == "capsule":
                _geom(body, shape, size, fromto=where, material=material, **_ROBOT)
            else:
                _geom(body, shape, size, pos=where, quat=q, material=material, **_ROBOT)
        parent = body
    # Flange (tool0) = DH frame 6, then the gripper.
    flange = [0.0, 0.0, dh.d[5]]
    parent.add_site(name=FLANGE_SITE, pos=flange, rgba=[1, 0, 0, 0]).size[0] = 0.005
    grip = parent.add_body(name="gripper", pos=flange, gravcomp=1)
    _inertial(grip, [0, 0, 0.06], GRIPPER_MASS_KG, [0.002, 0.002, 0.001])
    grip.add_site(name=TCP_SITE, pos=[0, 0, round_sig(cfg.tcp_offset_m, 10)], rgba=[0, 1, 0, 0]).size[0] = 0.004
    palm_top = cfg.tcp_offset_m - FINGER_PAD_HALF_M[2] - 0.045   # fingers are 45 mm + pad
    palm_half = round_sig(palm_top / 2 - 0.002, 5)
    _geom(grip, "cylinder", (0.0375, palm_half), pos=(0, 0, palm_half), material="grip_dark", **_ROBOT)
    _geom(grip, "box", (0.022, 0.058, 0.012), pos=(0, 0, round_sig(palm_top - 0.012, 5)), material="grip_dark",
          **_ROBOT)
    pad_z = cfg.tcp_offset_m
    finger_len_half = (pad_z + FINGER_PAD_HALF_M[2] - palm_top) / 2
    hy = FINGER_PAD_HALF_M[1]
    for side, sgn in (("left", 1.0), ("right", -1.0)):
        finger = grip.add_body(name=f"{side}_finger", pos=[0, round_sig(sgn * FINGER_STROKE_M, 6), 0], gravcomp=1)
        _inertial(finger, [0, 0, 0.12], 0.05, [1e-5, 1e-5, 1e-5])
        if gripper_joints:
            j = finger.add_joint(name=f"{side}_finger_joint", type=mujoco.mjtJoint.mjJNT_SLIDE,
                                 axis=[0, -sgn, 0], range=[0, FINGER_STROKE_M], armature=0.01)
            j.damping[0] = FINGER_DAMPING
        _geom(finger, "box", (0.011, 0.004, round_sig(finger_len_half, 5)),
              pos=(0, round_sig(sgn * (2 * hy + 0.004), 5), round_sig(palm_top + finger_len_half, 5)),
              material="grip_grey", **_ROBOT)
        _geom(finger, "box", round_sig_vec(FINGER_PAD_HALF_M), pos=(0, round_sig(sgn * hy, 5), round_sig(pad_z, 5)),
              name=f"{side}_pad", material="pad", friction=[1.5, 0.02, 0.002], condim=4, priority=1,
              solref=[0.004, 1], **_ROBOT)


def _add_sink(spec, cfg: SimConfig) -> None:
    """The basin: floor, four walls (environment geoms) and a drain disc (visual only)."""
    cx, cy = cfg.sink_center_xy_m
    ix, iy = cfg.sink_inner_size_m[0] / 2, cfg.sink_inner_size_m[1] / 2
    t, h = 0.012, cfg.sink_wall_height_m
    sink = spec.worldbody.add_body(name=SINK_BODY, pos=[round_sig(cx, 5), round_sig(cy, 5), 0])
    env = dict(material="steel", **_ENV)
    _geom(sink, "box", (round_sig(ix + t, 5), round_sig(iy + t, 5), 0.005), pos=(0, 0, 0.005), name="sink_floor", **env)
    for name, size, pos in (
        ("sink_wall_px", (t / 2, iy + t, h / 2), (ix + t / 2, 0, h / 2)),
        ("sink_wall_nx", (t / 2, iy + t, h / 2), (-ix - t / 2, 0, h / 2)),
        ("sink_wall_py", (ix, t / 2, h / 2), (0, iy + t / 2, h / 2)),
        ("sink_wall_ny", (ix, t / 2, h / 2), (0, -iy - t / 2, h / 2)),
    ):
        _geom(sink, "box", round_sig_vec(size, 5), pos=round_sig_vec(pos, 5), name=name, **env)
    _geom(sink, "cylinder", (0.02, 0.0005), pos=(0, 0, 0.0105), name="sink_drain", rgba=[0.15, 0.15, 0.15, 1],
          contype=0, conaffinity=0)


def _add_objects(spec, cfg: SimConfig) -> None:
    """One free body per object of the cell (`cell_objects`), parked out of view
    (`parked_position`); one geom per part (the first named `<body>_geom`, the others
    `<body>_geom_<i>`), the object's mass spread over the parts by volume (MuJoCo's default)."""
    for i, name in enumerate(cell_objects(cfg)):
        s = OBJECT_SPECS[name]
        px, py, pz = parked_position(i)
        body = spec.worldbody.add_body(name=s.body, pos=[px, py, round_sig(pz + s.half_height_m, 5)])
        body.add_freejoint(name=f"{s.body}_free")
        rolls = s.primitive.shape in ("sphere", "capsule") and len(s.parts) == 1
        contact = ({"condim": 6, "friction": [1.0, 0.01, 0.002]} if rolls
                   else {"condim": 4, "friction": [1.0, 0.01, 0.001]})
        if len(s.parts) == 1:
            _geom(body, s.primitive.shape, round_sig_vec(s.primitive.size), name=f"{s.body}_geom",
                  rgba=round_sig_vec(s.rgba), mass=s.mass_kg, **_ENV, **contact)
            continue
        volumes = np.array([_part_volume(p) for p in s.parts])
        for k, part in enumerate(s.parts):
            _geom(body, part.shape, round_sig_vec(part.size), pos=round_sig_vec(part.pos),
                  name=f"{s.body}_geom" + (f"_{k}" if k else ""), rgba=round_sig_vec(s.rgba),
                  mass=float(s.mass_kg * volumes[k] / volumes.sum()), **_ENV, **contact)


def _part_volume(part) -> float:
    """Volume of a `task.catalogue.Part` (m^3)."""
    sz = part.size
    if part.shape == "box":
        return 8.0 * sz[0] * sz[1] * sz[2]
    if part.shape == "sphere":
        return 4.0 / 3.0 * np.pi * sz[0] ** 3
    if part.shape == "capsule":
        return np.pi * sz[0] ** 2 * 2.0 * sz[1] + 4.0 / 3.0 * np.pi * sz[0] ** 3
    return np.pi * sz[0] ** 2 * 2.0 * sz[1]


def _add_scene(spec, cfg: SimConfig) -> None:
    """Lights, floor, table, sink, objects and the fixed RGB-D camera (the full cell only)."""
    import mujoco

    for name, pos, direction, diffuse in (("key", (0.4, -0.3, 1.6), (-0.2, 0.2, -1), 0.65),
                                          ("fill", (1, 0.8, 1.2), (-0.6, -0.5, -0.8), 0.25)):
        spec.worldbody.add_light(name=name, pos=pos, dir=direction, type=mujoco.mjtLightType.mjLIGHT_DIRECTIONAL,
                                 diffuse=[diffuse] * 3, castshadow=False)
    w = spec.worldbody
    _geom(w, "plane", (4, 4, 0.1), pos=(0, 0, -0.75), name="floor", material="floor", **_ENV)
    _geom(w, "box", (0.8, 0.8, 0.02), pos=(0.1, 0.0, -0.02), name="table", material="table", **_ENV)
    _geom(w, "box", (0.7, 0.7, 0.365), pos=(0.1, 0.0, -0.405), name="table_leg", material="table",
          contype=0, conaffinity=0)
    _add_sink(spec, cfg)
    _add_objects(spec, cfg)
    cam_pos, cam_r = camera_pose(cfg)
    cam = w.add_camera(name=CAMERA_NAME, pos=round_sig_vec(cam_pos), fovy=cfg.camera_fovy_deg)
    cam.alt.type = mujoco.mjtOrientation.mjORIENTATION_XYAXES
    cam.alt.xyaxes = round_sig_vec(cam_r[:, 0]) + round_sig_vec(cam_r[:, 1])


SHADOW_MAP_SIZE = 2048
OOD_TEXTURE_LEVELS = 4
OOD_TEXTURE_KINDS = ("checker", "speckle")


def ood_texture_name(kind: str, level: int) -> str:
    """Name of a surface texture the `texture` condition puts on the table / floor
    (`sim.perturbations`): kind in OOD_TEXTURE_KINDS, level 1..OOD_TEXTURE_LEVELS (contrast
    level/OOD_TEXTURE_LEVELS)."""
    return f"ood_{kind}_{level}"


def _add_ood_textures(spec) -> None:
    """Surface textures of rising contrast for the `texture` condition (unused by the nominal
    scene; a material's rgba multiplies them): a checkerboard and a speckle pattern per level,
    white and a grey of 1 - 0.225 level, so the lowest level keeps most of the surface's brightness."""
    import mujoco

    for level in range(1, OOD_TEXTURE_LEVELS + 1):  # white and a grey: level 1 keeps 89 % of the brightness
        k = 0.45 * level / OOD_TEXTURE_LEVELS
        light, dark = [1.0] * 3, [round(1.0 - 2 * k, 4)] * 3
        spec.add_texture(name=ood_texture_name("checker", level), type=mujoco.mjtTexture.mjTEXTURE_2D,
                         builtin=mujoco.mjtBuiltin.mjBUILTIN_CHECKER, width=128, height=128, rgb1=light, rgb2=dark)
        spec.add_texture(name=ood_texture_name("speckle", level), type=mujoco.mjtTexture.mjTEXTURE_2D,
                         builtin=mujoco.mjtBuiltin.mjBUILTIN_FLAT, width=128, height=128, rgb1=light, rgb2=light,
                         mark=mujoco.mjtMark.mjMARK_RANDOM, markrgb=dark, random=round(0.1 + 0.1 * level, 3))


def _add_actuators(spec, cfg: SimConfig, arm_only: bool) -> None:
    """Per arm joint a position (kp) then, after all of them, a velocity (kv) actuator, both
    torque-clamped; finger position actuators in the full cell."""
    import mujoco

    joint = mujoco.mjtTrn.mjTRN_JOINT
    for i, jn in enumerate(UR_JOINT_NAMES):
        a = spec.add_actuator(name=jn, target=jn, trntype=joint, ctrlrange=list(UR3_JOINT_LIMITS_RAD[i]),
                              forcerange=[-UR3_MAX_TORQUE_NM[i], UR3_MAX_TORQUE_NM[i]])
        a.set_to_position(kp=ARM_KP[i])
    for i, jn in enumerate(UR_JOINT_NAMES):
        a = spec.add_actuator(name=f"{jn}_vel", target=jn, trntype=joint,
                              ctrlrange=[-UR3_MAX_JOINT_SPEED_RAD_S[i], UR3_MAX_JOINT_SPEED_RAD_S[i]],
                              forcerange=[-UR3_MAX_TORQUE_NM[i], UR3_MAX_TORQUE_NM[i]])
        a.set_to_velocity(kv=ARM_KV[i])
    if not arm_only:
        kp_f = cfg.gripper_max_force_n / 0.01   # full force at 10 mm squeeze
        for jn, an in zip(FINGER_JOINT_NAMES, FINGER_ACTUATOR_NAMES):
            a = spec.add_actuator(name=an, target=jn, trntype=joint, ctrlrange=[0, FINGER_STROKE_M],
                                  forcerange=[-cfg.gripper_max_force_n, cfg.gripper_max_force_n])
            a.set_to_position(kp=round_sig(kp_f, 6))


def build_cell_spec(cfg: SimConfig, arm_only: bool = False):
    """The cell as a `mujoco.MjSpec` (MuJoCo's model-editing API,
    https://mujoco.readthedocs.io/en/stable/programming/modeledit.html). `arm_only=True`: only the
    UR3 + gripper (fingers fixed open), the model the expert's IK (mink) runs on."""
    import mujoco

    h, w = cfg.image_hw
    spec = mujoco.MjSpec()
    spec.modelname = "ur3_pick_into_sink" + ("_arm" if arm_only else "")
    spec.compiler.degree = False
    spec.compiler.autolimits = True
    spec.option.timestep = cfg.timestep_s
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    spec.option.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
    spec.option.impratio = 10
    spec.visual.global_.offwidth = max(w, 640)
    spec.visual.global_.offheight = max(h, 480)
    spec.visual.map.znear = cfg.camera_znear_m
    spec.visual.map.zfar = cfg.camera_zfar_m
    spec.visual.quality.shadowsize = SHADOW_MAP_SIZE  # shadows are drawn only when a condition turns them on
    spec.visual.headlight.ambient = [0.35] * 3
    spec.visual.headlight.diffuse = [0.35] * 3
    spec.visual.headlight.specular = [0.1] * 3
    spec.stat.extent = 1
    spec.stat.center = [0.2, 0, 0.2]
    spec.add_texture(name="grid", type=mujoco.mjtTexture.mjTEXTURE_2D, builtin=mujoco.mjtBuiltin.mjBUILTIN_CHECKER,
                     width=256, height=256, rgb1=[0.32, 0.33, 0.35], rgb2=[0.28, 0.29, 0.31])
    floor = spec.add_material(name="floor", texrepeat=[8, 8])
    floor.textures[mujoco.mjtTextureRole.mjTEXROLE_RGB] = "grid"
    for name, rgba, extra in _MATERIALS:
        spec.add_material(name=name, rgba=list(rgba), **extra)
    if not arm_only:
        _add_ood_textures(spec)
    _add_arm(spec, cfg, gripper_joints=not arm_only)
    if not arm_only:
        _add_scene(spec, cfg)
    _add_actuators(spec, cfg, arm_only)
    return spec


def build_model(cfg: SimConfig, arm_only: bool = False):
    """Compile the cell into a `mujoco.MjModel`. Raises ValueError (from MuJoCo) on a bad model."""
    return build_cell_spec(cfg, arm_only=arm_only).compile()
