"""The MJCF cell: UR3 from its DH table agrees with `robot.kinematics.forward_kinematics`, UR3
limits/masses/torques are the datasheet ones, objects are distinct, config/sim.yaml is valid."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mujoco")

import dynaflip_ros.sim  # noqa: E402,F401  (picks MUJOCO_GL before mujoco is imported)
import mujoco  # noqa: E402

from dynaflip_ros.configs.io import ConfigError, from_dict, load_yaml, to_dict  # noqa: E402
from dynaflip_ros.configs.sim import SimConfig  # noqa: E402
from dynaflip_ros.robot.arm import UR_JOINT_NAMES  # noqa: E402
from dynaflip_ros.robot.kinematics import (  # noqa: E402
    UR3_JOINT_LIMITS_RAD,
    UR3_MAX_JOINT_SPEED_RAD_S,
    forward_kinematics,
)
from dynaflip_ros.sim import cell  # noqa: E402
from dynaflip_ros.task.catalogue import CATALOGUE, ObjectSpec, Part, objects_in_split  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model():
    return cell.build_model(SimConfig())


def test_flange_and_tcp_equal_dh_forward_kinematics(model):
    data = mujoco.MjData(model)
    cfg = SimConfig()
    adr = [model.jnt_qposadr[model.joint(n).id] for n in UR_JOINT_NAMES]
    tool = np.eye(4)
    tool[2, 3] = cfg.tcp_offset_m
    rng = np.random.default_rng(0)
    for _ in range(50):
        q = rng.uniform(UR3_JOINT_LIMITS_RAD[:, 0], UR3_JOINT_LIMITS_RAD[:, 1])
        data.qpos[adr] = q
        mujoco.mj_kinematics(model, data)
        for site, t in (("tool0", forward_kinematics(q)), ("tcp", forward_kinematics(q, tool=tool))):
            s = model.site(site).id
            np.testing.assert_allclose(data.site_xpos[s], t[:3, 3], atol=1e-6)
            np.testing.assert_allclose(data.site_xmat[s].reshape(3, 3), t[:3, :3], atol=1e-6)
    # docs/hardware.md §1.2 check value: flange at q = 0.
    data.qpos[adr] = 0.0
    mujoco.mj_kinematics(model, data)
    np.testing.assert_allclose(data.site_xpos[model.site("tool0").id], [-0.4569, -0.19425, 0.06655], atol=1e-6)


def test_ur3_limits_masses_and_actuators(model):
    for i, name in enumerate(UR_JOINT_NAMES):
        j = model.joint(name)
        np.testing.assert_allclose(j.range, UR3_JOINT_LIMITS_RAD[i])
        np.testing.assert_allclose(model.jnt_actfrcrange[j.id], [-cell.UR3_MAX_TORQUE_NM[i], cell.UR3_MAX_TORQUE_NM[i]])
        np.testing.assert_allclose(model.actuator(name).ctrlrange, UR3_JOINT_LIMITS_RAD[i])
        np.testing.assert_allclose(model.actuator(name + "_vel").ctrlrange,
                                   [-UR3_MAX_JOINT_SPEED_RAD_S[i], UR3_MAX_JOINT_SPEED_RAD_S[i]])
        body = model.body(cell.ROBOT_BODY_NAMES[i])
        assert body.mass[0] == pytest.approx(cell.UR3_LINK_MASS_KG[i])
        assert model.body_gravcomp[body.id] == 1.0
    # Upper-arm CoM: docs/hardware.md §1.3 gives (-0.11365, 0, 0.1157) in the URDF frame = body frame here.
    np.testing.assert_allclose(model.body("upper_arm_link").ipos, [-0.11365, 0.0, 0.1157], atol=1e-9)
    assert model.opt.timestep == pytest.approx(0.002)


def test_catalogue_objects_in_the_cell(model):
    names = cell.cell_objects(SimConfig())
    assert names == tuple(CATALOGUE) and len(names) >= 10
    specs = [cell.OBJECT_SPECS[n] for n in names]
    assert len({(s.colour, s.shape) for s in specs}) == len(specs)  # colour + shape names one object
    assert len({s.rgba for s in specs}) == len(specs)
    assert {s.split for s in specs} == {"train", "novel"}
    assert any(len(s.parts) > 1 for s in specs if s.split == "train")  # composite shapes
    assert {p.shape for s in specs for p in s.parts} == {"box", "cylinder", "sphere", "capsule"}
    for s in specs:
        body = model.body(s.body)
        assert body.mass[0] == pytest.approx(s.mass_kg)
        geoms = np.flatnonzero(model.geom_bodyid == body.id)
        assert len(geoms) == len(s.parts)
        np.testing.assert_allclose(model.geom_rgba[geoms], np.tile(s.rgba, (len(geoms), 1)), rtol=1e-6)
        pts = s.surface_points(32)
        assert pts.shape == (32, 3)
        np.testing.assert_array_equal(pts, s.surface_points(32))  # fixed sample points
        # every point lies on the surface of a part (within 1e-9 of a face / the radius)
        on_surface = np.zeros(len(pts), bool)
        for p in s.parts:
            q = pts - np.asarray(p.pos)
            if p.shape == "sphere":
                on = np.isclose(np.linalg.norm(q, axis=1), p.size[0], atol=1e-9)
            elif p.shape == "box":
                on = np.isclose(np.abs(q), p.size, atol=1e-9).any(axis=1) & np.all(np.abs(q) <= np.asarray(p.size) + 1e-9, axis=1)
            elif p.shape == "capsule":
                axial = np.clip(q[:, 2], -p.size[1], p.size[1])
                on = np.isclose(np.linalg.norm(q - np.stack([0 * axial, 0 * axial, axial], 1), axis=1), p.size[0], atol=1e-9)
            else:
                r = np.linalg.norm(q[:, :2], axis=1)
                on = (np.isclose(r, p.size[0], atol=1e-9) & (np.abs(q[:, 2]) <= p.size[1] + 1e-9)) | (
                    np.isclose(np.abs(q[:, 2]), p.size[1], atol=1e-9) & (r <= p.size[0] + 1e-9))
            on_surface |= on
        assert on_surface.all(), s.name
        # resting upright, the lowest part touches the table
        assert min(p.pos[2] - p.half_height_m for p in s.parts) == pytest.approx(-s.half_height_m)


def test_catalogue_rejects_bad_entries():
    with pytest.raises(ValueError, match="split"):
        ObjectSpec("red cube", "red", "cube", ("red",), ("cube",), "test", (Part("box", (0.02,) * 3),),
                   (1, 0, 0, 1), 0.1, 0.0)
    with pytest.raises(ValueError, match="3 positive sizes"):
        Part("box", (0.02, 0.02))
    with pytest.raises(ValueError, match="unknown object"):
        cell.build_model(SimConfig(objects=("purple mug",)))
    assert objects_in_split("novel") and not set(objects_in_split("novel")) & set(objects_in_split("train"))


def test_arm_only_model_for_ik():
    m = cell.build_model(SimConfig(), arm_only=True)
    assert m.nq == 6 and m.nu == 12


def test_config_yaml_matches_defaults_and_validation():
    assert load_yaml(SimConfig, REPO / "config" / "sim.yaml") == SimConfig()
    assert from_dict(SimConfig, to_dict(SimConfig())) == SimConfig()
    with pytest.raises(ConfigError):
        from_dict(SimConfig, {"image_size": [10, 10]})
    with pytest.raises(ConfigError):
        from_dict(SimConfig, {"objects": ["red cube", "red cube"]})
    with pytest.raises(ConfigError):
        SimConfig(objects_per_episode=(3, 5))
    with pytest.raises(ValueError):
        SimConfig(image_hw=(224,))
    with pytest.raises(ValueError):
        SimConfig(object_region_x_m=(0.3, 0.2))
    cfg = from_dict(SimConfig, {"image_hw": [96, 128], "expert": {"lift_height_m": 0.16}})
    assert cfg.image_hw == (96, 128) and cfg.expert.lift_height_m == 0.16
