"""SimRunner: action chunks reach the MuJoCo arm only through SafeArm + interpolator + servo loop,
in lockstep with physics; run_expert_episode calls on_frame at 10 Hz before applying actions."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("mujoco")
pytest.importorskip("mink")

from dynaflip_ros.cameras.base import Frame  # noqa: E402
from dynaflip_ros.configs.sim import SimConfig  # noqa: E402
from dynaflip_ros.data.schema import PHASES  # noqa: E402
from dynaflip_ros.robot.arm import ArmState  # noqa: E402
from dynaflip_ros.robot.safety import SafeArm  # noqa: E402
from dynaflip_ros.sim.expert import ScriptedExpert  # noqa: E402
from dynaflip_ros.sim.pick_into_sink import PickIntoSinkEnv  # noqa: E402
from dynaflip_ros.sim.rollout import SimRunner  # noqa: E402
from dynaflip_ros.task.instructions import instruction_paraphrases  # noqa: E402


@pytest.fixture(scope="module")
def env():
    e = PickIntoSinkEnv(SimConfig(image_hw=(64, 80)))
    yield e
    e.close()


def test_chunk_is_tracked_through_safe_arm(env):
    runner = SimRunner(env)
    with pytest.raises(RuntimeError):
        runner.advance(0.1)
    runner.reset(seed=0)
    assert isinstance(runner.safe, SafeArm) and runner.safe.arm is env.arm
    q0 = env.arm.state().q.copy()
    target = np.concatenate([q0 + np.array([0.2, -0.1, 0.1, 0.0, 0.0, 0.3]), [1.0]])
    now = runner.now_s
    times = now + 0.1 * np.arange(1, 11)  # (10,) 1 s chunk at 10 Hz
    ramp = np.linspace(0, 1, 11)[1:, None]
    start = np.concatenate([q0, [0.0]])
    kept = runner.apply_chunk(times, start + ramp * (target - start))  # (10, 7)
    assert kept == 10
    t0 = runner.now_s
    ticks = runner.advance(1.2)
    assert ticks == 150 and runner.physics_steps == 600  # 125 Hz ticks, 4 physics steps each
    assert runner.now_s - t0 == pytest.approx(1.2, abs=1e-9)
    st = env.arm.state()
    np.testing.assert_allclose(st.q, target[:6], atol=3e-3)
    assert st.gripper > 0.95
    stats = runner.safe.stats
    assert stats.accepted >= 125 and stats.rejected == 0 and stats.rate_limited == 0


def test_unsafe_action_never_reaches_the_arm(env):
    runner = SimRunner(env)
    runner.reset(seed=1)
    q0 = env.arm.state().q.copy()
    bad = np.concatenate([q0 + np.array([0.0, 0.0, 5.0, 0.0, 0.0, 0.0]), [0.0]])  # elbow beyond pi
    runner.apply_action(bad, due_s=runner.now_s + runner.period_s)  # due at the next servo tick
    runner.advance(0.3)
    assert runner.loop.stats.safety_rejections > 0
    np.testing.assert_allclose(env.arm.state().q, q0, atol=2e-3)
    # too fast: 1 rad on the shoulder pan in 0.1 s is rate-limited to the SafeArm speed limit
    runner.reset(seed=1)
    fast = np.concatenate([q0 + np.array([1.0, 0, 0, 0, 0, 0]), [0.0]])
    runner.apply_action(fast)
    runner.advance(0.1)
    moved = env.arm.state().q[0] - q0[0]
    limit = runner.safety_config.joint_speed_limit_rad_s[0]
    assert 0 < moved <= limit * 0.1 + 0.02
    assert runner.safe.stats.rate_limited > 0


def test_run_expert_episode_calls_on_frame_before_each_action(env):
    runner = SimRunner(env)
    info = runner.reset(seed=2)
    expert = ScriptedExpert(env.config)
    calls = []

    def on_frame(frame, state, action, phase, tracks, valid):
        assert isinstance(frame, Frame) and isinstance(state, ArmState)
        assert frame.rgb.shape == (64, 80, 3) and frame.depth.shape == (64, 80)
        assert action.shape == (7,) and 0 <= phase < len(PHASES)
        assert tracks.shape == (96, 3) and tracks.dtype == np.float32 and valid.shape == (96,) and valid[:32].all()
        # the state is measured before this action is applied; the frame shows the same instant
        assert abs(frame.stamp_s - state.stamp_s) < 1e-9
        calls.append((frame.stamp_s, phase, action.copy(), state.q.copy()))

    result = runner.run_expert_episode(expert, on_frame=on_frame, max_duration_s=1.0, settle_s=0.0)
    assert result.steps == 10 == len(calls)
    assert result.duration_s == pytest.approx(1.0)
    stamps = np.array([c[0] for c in calls])
    np.testing.assert_allclose(np.diff(stamps), 0.1, atol=0.0081)  # 10 Hz on the 8 ms servo grid
    assert calls[0][1] == PHASES.index("approach")
    # the arm follows the expert's previous action
    np.testing.assert_allclose(calls[-1][3], calls[-2][2][:6], atol=0.02)
    assert result.info is info and not result.success


def test_full_expert_episode_grasps_lifts_and_drops_into_the_sink(env):
    runner = SimRunner(env)
    info = runner.reset(seed=7, object_name="red cube")
    expert = ScriptedExpert(env.config)
    log = []

    def on_frame(frame, state, action, phase, tracks, valid):
        log.append((phase, env.gripper_contacts(), env.object_pose()[2], state.gripper))

    result = runner.run_expert_episode(expert, on_frame=on_frame)
    assert result.success and env.success() and result.outcome == "success"
    assert result.steps == len(log) and result.duration_s <= 10.0
    phases = np.array([p for p, *_ in log])
    assert np.all(np.diff(phases) >= 0) and set(phases.tolist()) == set(range(len(PHASES)))
    carry = [entry for entry in log if entry[0] == PHASES.index("carry")]
    assert carry and all(c >= 2 for _, c, _, _ in carry)  # held between both pads
    assert all(z > env.config.sink_wall_height_m for _, _, z, _ in carry)  # lifted over the rim
    assert all(0.3 < g < 0.8 for *_, g in carry)  # fingers stopped by the 40 mm cube
    assert info.instruction in instruction_paraphrases("red cube", info.objects)
