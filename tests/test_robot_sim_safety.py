"""SafeArm in front of the MuJoCo UR3 (`sim.pick_into_sink.PickIntoSinkEnv`): refused commands
do not move the simulated arm; accepted ones do, at most at the speed limit."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("mujoco")

from dynaflip_ros.configs.safety import SafetyConfig  # noqa: E402
from dynaflip_ros.configs.sim import SimConfig  # noqa: E402
from dynaflip_ros.robot.interpolation import ActionChunkInterpolator  # noqa: E402
from dynaflip_ros.robot.safety import SafeArm, SafetyViolation  # noqa: E402
from dynaflip_ros.robot.servo_loop import ServoLoop  # noqa: E402
from dynaflip_ros.sim.pick_into_sink import PickIntoSinkEnv  # noqa: E402

SERVO_DT_S = 0.008


@pytest.fixture(scope="module")
def env():
    e = PickIntoSinkEnv(SimConfig())
    yield e
    e.close()


@pytest.fixture
def safe(env):
    env.reset(seed=3)
    s = SafeArm(env.arm, SafetyConfig(tcp_offset_m=env.config.tcp_offset_m), clock=lambda: env.sim_time_s)
    s.connect()
    yield s
    s.disconnect()


def test_workspace_check_matches_mujoco_tcp(env, safe):
    st = safe.state()
    np.testing.assert_allclose(safe.tcp_position(st.q), st.tcp_pose[:3], atol=2e-3)
    assert safe.in_workspace(st.q)


@pytest.mark.parametrize(
    "offset, reason",
    [
        (np.array([np.nan, 0, 0, 0, 0, 0]), "non_finite"),
        (np.array([0, 0, 0, np.inf, 0, 0]), "non_finite"),
        (np.array([0, 0, 5.0, 0, 0, 0]), "joint_limit"),  # elbow beyond +pi
        (np.array([0, 0.8, -1.88, 0, 1.5708, 0]), "workspace"),  # from home to arm straight up: TCP above 0.6 m
    ],
)
def test_refused_commands_do_not_move_the_sim_arm(env, safe, offset, reason):
    q0 = safe.state().q.copy()
    target = q0 + offset
    for _ in range(25):  # 0.2 s of refused streaming
        with pytest.raises(SafetyViolation) as ei:
            safe.servo_joint(target, SERVO_DT_S)
        assert ei.value.reason == reason
        env.step(SERVO_DT_S)
    q1 = safe.state().q
    assert np.max(np.abs(q1 - q0)) < 2e-3, q1 - q0
    assert safe.stats.accepted == 0


def test_servo_loop_moves_the_sim_arm_within_the_speed_limit(env, safe):
    q0 = safe.state().q.copy()
    interp = ActionChunkInterpolator(n_dims=7, anchor=np.concatenate([q0, [0.0]]))
    loop = ServoLoop(safe, interp, rate_hz=1.0 / SERVO_DT_S, clock=lambda: env.sim_time_s)
    # An aggressive chunk: +0.5 rad on the shoulder pan in 0.1 s (5 rad/s > 1.57 rad/s limit),
    # then hold there until 0.5 s; the rate limiter lags behind and catches up while holding.
    now = env.sim_time_s
    target = np.concatenate([q0 + np.array([0.5, 0, 0, 0, 0, 0]), [0.0]])
    interp.add_chunk(np.array([now + 0.1, now + 0.5]), np.stack([target, target]), now_s=now)
    speed = safe.config.joint_speed_limit_rad_s[0]
    qs = []
    for _ in range(50):  # 0.4 s
        env.step(SERVO_DT_S)
        loop.tick()
        qs.append(safe.state().q.copy())
    qs = np.array(qs)  # (50, 6)
    # After 0.2 s the pan has moved, but no faster than the limit (0.5 * 180 deg/s).
    moved_02 = qs[24, 0] - q0[0]
    assert 0.5 * speed * 0.2 < moved_02 <= speed * 0.2 + 0.02, moved_02
    assert abs(qs[-1, 0] - (q0[0] + 0.5)) < 0.02  # and reaches the target while the chunk holds
    assert safe.stats.rate_limited > 0 and loop.stats.safety_rejections == 0
    # A chunk whose action, due at the next tick, is beyond the elbow limit: refused, the arm holds.
    for _ in range(10):
        env.step(SERVO_DT_S)
        loop.tick()
    q_hold = safe.state().q.copy()
    bad = np.concatenate([q_hold + np.array([0, 0, 5.0, 0, 0, 0]), [0.0]])
    now = env.sim_time_s
    interp.add_chunk(np.array([now + SERVO_DT_S]), bad[None, :], now_s=now)
    n_accepted = safe.stats.accepted
    for _ in range(25):
        env.step(SERVO_DT_S)
        loop.tick()
    assert loop.stats.rejections_by_reason.get("joint_limit", 0) == 1
    assert safe.stats.accepted == n_accepted
    assert np.max(np.abs(safe.state().q - q_hold)) < 2e-3
