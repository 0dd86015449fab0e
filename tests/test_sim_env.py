"""PickIntoSinkEnv: seeded randomisation, instruction, success check, SimArm protocol."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("mujoco")

from dynaflip_ros.configs.sim import SimConfig  # noqa: E402
from dynaflip_ros.robot.arm import Arm, ArmNotConnectedError  # noqa: E402
from dynaflip_ros.sim.pick_into_sink import OBJECT_NAMES, PickIntoSinkEnv  # noqa: E402


@pytest.fixture(scope="module")
def env():
    e = PickIntoSinkEnv(SimConfig())
    yield e
    e.close()


def test_same_seed_same_episode_different_seeds_differ(env):
    a = env.reset(seed=11)
    pose_a = env.object_pose()
    b = env.reset(seed=11)
    assert (a.object_name, a.instruction) == (b.object_name, b.instruction)
    np.testing.assert_array_equal(a.object_pose, b.object_pose)
    np.testing.assert_array_equal(pose_a, env.object_pose())
    poses = {}
    names = set()
    for s in range(12):
        info = env.reset(seed=s)
        poses[s] = info.object_pose
        names.add(info.object_name)
        cfg = env.config
        x, y = info.object_pose[:2]
        assert cfg.object_region_x_m[0] <= x <= cfg.object_region_x_m[1]
        assert cfg.object_region_y_m[0] <= y <= cfg.object_region_y_m[1]
        assert info.instruction == f"Pick the {info.object_name} into the sink"
    assert len(names) >= 3  # the seed picks the object
    xy = np.array([p[:2] for p in poses.values()])
    assert len(np.unique(np.round(xy, 6), axis=0)) == len(xy)  # every seed places it elsewhere
    quats = np.array([p[3:] for p in poses.values()])
    assert np.ptp(quats[:, 3]) > 0.5  # yaw varies


def test_object_override_distractors_and_parking(env):
    for name in OBJECT_NAMES:
        info = env.reset(seed=5, object_name=name)
        assert info.object_name == name and info.instruction == f"Pick the {name} into the sink"
        # the other objects are parked out of the camera's view (behind it, on the floor)
        for other in OBJECT_NAMES:
            if other != name:
                assert env.object_pose(other)[2] < -0.5
    info = env.reset(seed=5, object_name="red cube", distractors=3)
    assert set(info.distractors) == set(OBJECT_NAMES) - {"red cube"}
    xy = np.array([env.object_pose(n)[:2] for n in OBJECT_NAMES])
    d = np.linalg.norm(xy[:, None] - xy[None], axis=-1) + np.eye(4)
    assert d.min() > 0.04  # placed without overlap
    for seed in range(10):  # a full table fits for every seed
        info = env.reset(seed=seed, distractors=3)
        xy = np.array([env.object_pose(n)[:2] for n in OBJECT_NAMES])
        assert (np.linalg.norm(xy[:, None] - xy[None], axis=-1) + np.eye(4)).min() > 0.04
    with pytest.raises(ValueError):
        env.reset(seed=1, object_name="purple mug")
    with pytest.raises(ValueError):
        env.reset(seed=1, distractors=4)


def test_success_only_when_resting_inside_the_basin(env):
    info = env.reset(seed=2, object_name="red cube")
    assert not env.success()  # on the table
    env.step(0.3)
    assert not env.success()
    cx, cy = env.config.sink_center_xy_m
    env.place_object("red cube", cx + 0.02, cy - 0.03, yaw_rad=0.4, z_m=0.12)  # above the rim
    assert not env.success()
    env.place_object("red cube", cx + 0.02, cy - 0.03, yaw_rad=0.4, z_m=0.065)  # just below it
    env.step(0.02)  # falling: inside the footprint and below the rim, but not resting
    assert env.in_basin(env.object_pose()[:3]) and np.linalg.norm(env.object_velocity()[:3]) > 0.1
    assert not env.success()
    env.step(0.8)
    assert env.in_basin(env.object_pose()[:3])
    assert env.success()
    # next to the sink on the table: not a success
    env.place_object("red cube", cx, cy - env.config.sink_inner_size_m[1] / 2 - 0.06)
    env.step(0.3)
    assert not env.success()
    assert info.object_name == "red cube"


def test_sim_time_is_monotonic_across_resets(env):
    env.reset(seed=0)
    env.step(0.5)
    t = env.sim_time_s
    info = env.reset(seed=1)
    assert info.start_time_s >= t and env.sim_time_s >= t


def test_sim_arm_protocol_and_state(env):
    env.reset(seed=0)
    arm = env.arm
    assert isinstance(arm, Arm)
    arm.disconnect()
    with pytest.raises(ArmNotConnectedError):
        arm.state()
    with pytest.raises(ArmNotConnectedError):
        arm.servo_joint(np.zeros(6), 0.008)
    arm.connect()
    st = arm.state()
    np.testing.assert_allclose(st.q, env.config.home_q_rad, atol=2e-3)
    assert st.q.shape == (6,) and st.dq.shape == (6,) and st.tcp_pose.shape == (7,)
    assert st.stamp_s == env.sim_time_s and 0.0 <= st.gripper <= 0.05
    with pytest.raises(ValueError):
        arm.set_gripper(1.5)
    arm.set_gripper(1.0)
    env.step(0.6)
    assert arm.state().gripper > 0.95  # nothing between the fingers: fully closed
    arm.set_gripper(0.0)
    env.step(0.6)
    assert arm.state().gripper < 0.05
    arm.disconnect()
