"""PickIntoSinkEnv: seeded multi-object layouts, instructions, outcomes, point tracks + mask,
scene randomisation, SimArm protocol."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("mujoco")

from dynaflip_ros.configs.sim import SceneRandomization, SimConfig  # noqa: E402
from dynaflip_ros.data import schema  # noqa: E402
from dynaflip_ros.robot.arm import Arm, ArmNotConnectedError  # noqa: E402
from dynaflip_ros.sim.pick_into_sink import PickIntoSinkEnv  # noqa: E402
from dynaflip_ros.task.catalogue import objects_in_split  # noqa: E402
from dynaflip_ros.task.instructions import instruction_paraphrases  # noqa: E402


@pytest.fixture(scope="module")
def env():
    e = PickIntoSinkEnv(SimConfig())
    yield e
    e.close()


def _placed_xy(env, info) -> np.ndarray:
    return np.array([env.object_pose(n)[:2] for n in info.objects])


def test_same_seed_same_episode_different_seeds_differ(env):
    a = env.reset(seed=11)
    pose_a = env.object_pose()
    b = env.reset(seed=11)
    assert (a.object_name, a.instruction, a.objects) == (b.object_name, b.instruction, b.objects)
    np.testing.assert_array_equal(a.object_pose, b.object_pose)
    np.testing.assert_array_equal(pose_a, env.object_pose())
    poses, names, counts = {}, set(), set()
    train = set(objects_in_split("train"))
    for s in range(20):
        info = env.reset(seed=s)
        poses[s] = info.object_pose
        names.add(info.object_name)
        counts.add(len(info.objects))
        assert set(info.objects) <= train and info.objects[0] == info.object_name
        cfg = env.config
        for x, y in _placed_xy(env, info):
            assert cfg.object_region_x_m[0] <= x <= cfg.object_region_x_m[1]
            assert cfg.object_region_y_m[0] <= y <= cfg.object_region_y_m[1]
        assert info.instruction in instruction_paraphrases(info.object_name, info.objects)
    assert len(names) >= 5 and counts == {2, 3, 4}  # the seed picks the objects and their count
    xy = np.array([p[:2] for p in poses.values()])
    assert len(np.unique(np.round(xy, 6), axis=0)) == len(xy)  # every seed places it elsewhere
    quats = np.array([p[3:] for p in poses.values()])
    assert np.ptp(quats[:, 3]) > 0.5  # yaw varies


def test_objects_override_spacing_and_parking(env):
    info = env.reset(seed=5, object_name="white mug", objects=["red cube", "blue bar"])
    assert info.objects == ("white mug", "red cube", "blue bar") and info.object_name == "white mug"
    for other in set(env.object_names) - set(info.objects):
        assert env.object_pose(other)[2] < -0.5  # parked out of view, behind the camera
    info = env.reset(seed=5, object_name="red cube", objects=4, instruction="put the red cube in the sink")
    assert len(info.objects) == 4 and info.instruction == "put the red cube in the sink"
    gap = env.config.min_object_gap_m
    for seed in range(30):  # a full table fits for every seed, with room for the fingers
        info = env.reset(seed=seed, objects=4)
        for i, a in enumerate(info.objects):
            for b in info.objects[i + 1:]:
                d = np.linalg.norm(env.object_pose(a)[:2] - env.object_pose(b)[:2])
                assert d > env.object_specs[a].radius_xy_m + env.object_specs[b].radius_xy_m + gap - 1e-3
    with pytest.raises(ValueError, match="unknown object"):
        env.reset(seed=1, object_name="purple mug")
    with pytest.raises(ValueError, match="cannot place 5"):
        env.reset(seed=1, objects=5)
    with pytest.raises(ValueError, match="not in this cell"):
        env.reset(seed=1, objects=["red cube", "teal torus"])


def test_novel_objects_never_in_nominal_episodes(env):
    novel = set(objects_in_split("novel"))
    assert novel and all(not (set(env.reset(seed=s).objects) & novel) for s in range(40))
    info = env.reset(seed=3, object_name="brown T-block", objects=2)  # OOD sessions name them
    assert info.object_name == "brown T-block"


def test_outcomes_success_and_wrong_object(env):
    info = env.reset(seed=2, object_name="red cube", objects=["red cube", "yellow ball"])
    assert env.outcome() is None  # on the table
    env.step(0.3)
    assert env.outcome() is None
    cx, cy = env.config.sink_center_xy_m
    env.place_object("red cube", cx + 0.02, cy - 0.03, yaw_rad=0.4, z_m=0.12)  # above the rim
    assert not env.success()
    env.place_object("red cube", cx + 0.02, cy - 0.03, yaw_rad=0.4, z_m=0.065)  # just below it
    env.step(0.02)  # falling: inside the footprint and below the rim, but not resting
    assert env.in_basin(env.object_pose()[:3]) and np.linalg.norm(env.object_velocity()[:3]) > 0.1
    assert not env.success() and env.outcome() is None
    env.step(0.8)
    assert env.in_basin(env.object_pose()[:3])
    assert env.success() and env.outcome() == "success" and env.task_state()[2] == "success"
    # another object in the basin too: wrong object, even with the target there
    env.place_object("yellow ball", cx - 0.04, cy + 0.04, z_m=0.03)
    env.step(0.5)
    assert env.outcome() == "wrong_object" and not env.success()
    # only the wrong object in the basin
    env.reset(seed=2, object_name="red cube", objects=["red cube", "yellow ball"])
    env.place_object("yellow ball", cx, cy, z_m=0.03)
    assert env.outcome() == "wrong_object"
    # an object parked off the table never counts
    env.reset(seed=2, object_name="red cube", objects=["red cube", "yellow ball"])
    env.place_object("blue bar", cx, cy, z_m=0.03)
    env.step(0.5)
    assert env.outcome() is None
    assert info.object_name == "red cube"


def test_scene_tracks_layout_and_mask(env):
    info = env.reset(seed=7, objects=3)
    tracks, valid = env.scene_tracks()
    assert tracks.shape == (schema.N_TRACK, 3) and tracks.dtype == np.float32 and valid.dtype == bool
    t, f, o = (schema.TRACK_SLICES[k] for k in ("target", "fingers", "others"))
    np.testing.assert_allclose(tracks[t], env.point_tracks(), atol=1e-6)
    assert valid[t].all() and valid[f].all()  # in view at home
    rows = np.arange(schema.N_TRACK)[o]
    filled = rows < o.start + 2 * schema.POINTS_PER_OTHER_OBJECT  # two other objects
    assert valid[rows[filled]].all() and not valid[rows[~filled]].any()
    assert not tracks[rows[~filled]].any()
    for k, name in enumerate(info.distractors):  # rows follow info.distractors
        centre = env.to_optical(env.object_pose(name)[None, :3])[0]
        spec = env.object_specs[name]
        rows_k = tracks[o.start + k * 16: o.start + (k + 1) * 16]
        assert np.linalg.norm(rows_k - centre, axis=1).max() <= np.hypot(spec.radius_xy_m, spec.height_m) + 1e-6
    # a point behind the camera / outside the image is invalid
    env.place_object(info.object_name, 3.0, 3.0, z_m=0.05)
    _, valid2 = env.scene_tracks()
    assert not valid2[t].any()


def test_scene_randomization_keeps_the_layout(env):
    cfg = SimConfig(randomization=SceneRandomization(enabled=True))
    with PickIntoSinkEnv(cfg) as rnd:
        a = rnd.reset(seed=4)
        rgb_a = rnd.camera.read().rgb.astype(int)
        cam_a = rnd.camera_pose_optical()
        b = rnd.reset(seed=5)
        assert a.scene and b.scene and a.scene != b.scene
        again = rnd.reset(seed=4)
        assert again.scene == a.scene
        np.testing.assert_array_equal(rnd.camera.read().rgb.astype(int), rgb_a)
    nominal = env.reset(seed=4)
    assert nominal.scene == {} and nominal.objects == a.objects
    np.testing.assert_allclose(nominal.object_pose, a.object_pose, atol=1e-9)
    moved = np.linalg.norm(env.camera_pose_optical()[:3, 3] - cam_a[:3, 3])
    assert 0.0 < moved <= np.sqrt(3) * cfg.randomization.camera_position_m + 1e-9
    assert np.abs(env.camera.read().rgb.astype(int) - rgb_a).mean() > 2.0


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
