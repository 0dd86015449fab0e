"""The scripted IK expert picks the object into the sink in >= 90 % of 50 seeded episodes
(physics only, no rendering), within ~10 s of sim time, through SafeArm, well under the UR3
joint speed limits."""
from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("mujoco")
pytest.importorskip("mink")

from dynaflip_ros.configs.sim import SimConfig  # noqa: E402
from dynaflip_ros.data.schema import PHASES  # noqa: E402
from dynaflip_ros.robot.kinematics import UR3_MAX_JOINT_SPEED_RAD_S  # noqa: E402
from dynaflip_ros.sim.cell import OBJECT_SPECS  # noqa: E402
from dynaflip_ros.sim.expert import ScriptedExpert, gripper_down_rotation, yaw_of  # noqa: E402
from dynaflip_ros.sim.pick_into_sink import PickIntoSinkEnv  # noqa: E402
from dynaflip_ros.sim.rollout import SimRunner  # noqa: E402

N_EPISODES = 50


@pytest.fixture(scope="module")
def setup():
    env = PickIntoSinkEnv(SimConfig())
    yield env, SimRunner(env), ScriptedExpert(env.config)
    env.close()


def test_plan_phases_speeds_and_grasp_yaw(setup):
    env, runner, expert = setup
    for seed, name in [(0, "blue bar"), (1, "red cube"), (2, "green cylinder")]:
        info = runner.reset(seed=seed, object_name=name)
        expert.reset(env, info)
        times, q, g, phase = expert.plan
        assert np.all(np.diff(times) > 0) and expert.duration_s <= 10.0
        assert np.all(np.diff(phase) >= 0) and set(phase.tolist()) == set(range(len(PHASES)))
        speed = np.abs(np.diff(q, axis=0)) / np.diff(times)[:, None]  # (K-1, 6)
        assert np.all(speed <= expert.cfg.max_joint_speed_fraction * UR3_MAX_JOINT_SPEED_RAD_S + 1e-9)
        assert np.all(g[phase == PHASES.index("grasp")] == 1.0)
        assert np.all(g[phase == PHASES.index("release")] == 0.0)
        # the plan's TCP at the grasp is at the object, fingers closing across it
        i_grasp = int(np.nonzero(phase == PHASES.index("grasp"))[0][-1])
        p, r = expert.ik.fk(q[i_grasp])
        np.testing.assert_allclose(p[:2], info.object_pose[:2], atol=1e-3)
        np.testing.assert_allclose(r, gripper_down_rotation(yaw_of(r)), atol=2e-3)
        spec = OBJECT_SPECS[name]
        if spec.grasp_symmetry_rad > 0:
            tool_y = r[:2, 1]
            axis = 1 if spec.grasp_across_y else 0
            obj_axis = np.array([np.cos(info.object_yaw_rad + axis * np.pi / 2),
                                 np.sin(info.object_yaw_rad + axis * np.pi / 2)])
            assert abs(abs(tool_y @ obj_axis) - 1.0) < 1e-3
        # act() returns the plan's target one control period ahead, with the current phase
        a, ph = expert.act(None, info.start_time_s)
        np.testing.assert_allclose(a[:6], q[1], atol=1e-9)
        assert ph == 0
    with pytest.raises(RuntimeError):
        ScriptedExpert(env.config).act(None, 0.0)  # not reset


def test_expert_success_rate_over_50_seeded_episodes(setup):
    env, runner, expert = setup
    wall0 = time.perf_counter()
    results = []
    for seed in range(N_EPISODES):
        runner.reset(seed=seed)
        r = runner.run_expert_episode(expert, max_duration_s=12.0)
        assert r.duration_s <= 10.0 + 1e-9
        assert r.safety.rejected == 0
        results.append(r.success)
    rate = float(np.mean(results))
    wall = time.perf_counter() - wall0
    print(f"expert success {rate:.2%} over {N_EPISODES} episodes, {wall / N_EPISODES:.2f} s/episode")
    assert rate >= 0.9, f"success rate {rate:.2%} < 90%: failed seeds {[i for i, s in enumerate(results) if not s]}"
