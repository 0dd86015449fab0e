"""`robot.motion.move_to_joints` on the MuJoCo UR3 through SafeArm (lock-step: sleep = env.step)."""
from __future__ import annotations

import numpy as np
import pytest

from dynaflip_ros.robot.arm import ArmError, ArmState
from dynaflip_ros.robot.motion import min_jerk, move_to_joints, plan_duration_s

pytest.importorskip("mujoco")

from dynaflip_ros.configs.safety import SafetyConfig
from dynaflip_ros.configs.sim import SimConfig
from dynaflip_ros.robot.safety import SafeArm
from dynaflip_ros.sim.pick_into_sink import PickIntoSinkEnv


def test_min_jerk_profile_and_duration():
    u = np.linspace(0, 1, 1001)
    s = min_jerk(u)
    assert s[0] == 0 and s[-1] == pytest.approx(1.0)
    assert np.all(np.diff(s) >= 0)
    peak = np.max(np.gradient(s, u))
    assert peak == pytest.approx(15 / 8, rel=1e-3)
    q0 = np.zeros(6)
    q1 = np.array([0.4, -0.2, 0, 0, 0, 0.1])
    assert plan_duration_s(q0, q1, 0.5) == pytest.approx(1.875 * 0.4 / 0.5)
    # per-joint limits: joint 5 slow dominates
    assert plan_duration_s(q0, q1, np.array([1, 1, 1, 1, 1, 0.01])) == pytest.approx(1.875 * 0.1 / 0.01)
    with pytest.raises(ValueError):
        plan_duration_s(q0, q1, 0.0)


@pytest.fixture(scope="module")
def env():
    e = PickIntoSinkEnv(SimConfig())
    yield e
    e.close()


@pytest.fixture
def safe(env):
    env.reset(seed=1)
    s = SafeArm(env.arm, SafetyConfig(tcp_offset_m=env.config.tcp_offset_m), clock=lambda: env.sim_time_s)
    s.connect()
    yield s
    s.disconnect()


class _Recorder:
    """Wraps env.step as `sleep` and records the measured joints after every step."""

    def __init__(self, env, safe):
        self.env, self.safe, self.t, self.q = env, safe, [], []

    def __call__(self, dt_s):
        self.env.step(dt_s)
        st = self.safe.state()
        self.t.append(st.stamp_s)
        self.q.append(st.q.copy())


def test_move_reaches_goal_smoothly_within_speed(env, safe):
    q0 = safe.state().q.copy()
    goal = q0 + np.array([0.3, -0.15, 0.2, 0.25, -0.3, 0.6])
    rec = _Recorder(env, safe)
    t_start = env.sim_time_s
    st = move_to_joints(safe, goal, max_speed_rad_s=0.5, clock=lambda: env.sim_time_s, sleep=rec,
                        timeout_s=10.0)
    assert isinstance(st, ArmState)
    assert np.max(np.abs(st.q - goal)) <= 1e-3
    planned = plan_duration_s(q0, goal, 0.5)
    assert planned <= env.sim_time_s - t_start < planned + 1.0  # settles soon after the profile ends
    q = np.array(rec.q)
    t = np.array(rec.t)
    v = np.diff(q, axis=0) / np.diff(t)[:, None]
    assert np.max(np.abs(v)) < 0.5 * 1.1  # measured speed stays near/below the cap
    assert safe.stats.rate_limited == 0 and safe.stats.rejected == 0
    # No overshoot beyond a few mrad on any joint (min-jerk: monotone progress).
    prog = (q - q0) / (goal - q0)
    assert prog.min() > -0.01 and prog.max() < 1.01


def test_move_rejects_bad_goal_without_moving(env, safe):
    q0 = safe.state().q.copy()
    with pytest.raises(ValueError):
        move_to_joints(safe, q0 + np.array([0, 0, 5.0, 0, 0, 0]), clock=lambda: env.sim_time_s, sleep=env.step)
    with pytest.raises(ValueError):  # arm straight up: TCP above the 0.6 m workspace ceiling
        move_to_joints(safe, q0 + np.array([0, 0.8, -1.88, 0, 1.5708, 0]), clock=lambda: env.sim_time_s,
                       sleep=env.step)
    with pytest.raises(ValueError):
        move_to_joints(safe, np.full(6, np.nan), clock=lambda: env.sim_time_s, sleep=env.step)
    with pytest.raises(ValueError):  # too slow for the timeout
        move_to_joints(safe, q0 + 0.3, max_speed_rad_s=0.01, timeout_s=5.0, clock=lambda: env.sim_time_s,
                       sleep=env.step)
    assert safe.stats.accepted == 0
    assert np.max(np.abs(safe.state().q - q0)) < 2e-3


def test_move_times_out_when_arm_cannot_reach(env, safe):
    """A heavy unmodelled load (huge tolerance demand): tolerance below the servo's steady error."""
    q0 = safe.state().q.copy()
    with pytest.raises(ArmError, match="did not settle"):
        move_to_joints(safe, q0 + np.array([0.05, 0, 0, 0, 0, 0]), clock=lambda: env.sim_time_s,
                       sleep=env.step, timeout_s=0.5, settle_tol_rad=1e-9, settle_speed_rad_s=1e-9)


class _StoppingArm:
    """Delegating Arm that reports a protective stop after n state reads."""

    def __init__(self, arm, after):
        self._arm, self._after, self._n = arm, after, 0

    def connect(self):
        self._arm.connect()

    def state(self):
        st = self._arm.state()
        self._n += 1
        if self._n > self._after:
            return ArmState(q=st.q, dq=st.dq, tcp_pose=st.tcp_pose, gripper=st.gripper, stamp_s=st.stamp_s,
                            protective_stop=True)
        return st

    def servo_joint(self, q, dt_s):
        self._arm.servo_joint(q, dt_s)

    def set_gripper(self, g):
        self._arm.set_gripper(g)

    def stop(self):
        self._arm.stop()

    def disconnect(self):
        self._arm.disconnect()


def test_protective_stop_aborts_move(env):
    env.reset(seed=1)
    arm = _StoppingArm(env.arm, after=40)
    safe = SafeArm(arm, SafetyConfig(tcp_offset_m=env.config.tcp_offset_m), clock=lambda: env.sim_time_s)
    safe.connect()
    q0 = safe.state().q.copy()
    with pytest.raises(ArmError, match="protective stop"):
        move_to_joints(safe, q0 + np.array([0.3, 0, 0, 0, 0, 0]), clock=lambda: env.sim_time_s, sleep=env.step)
    assert safe.halted
    env.step(0.3)
    # stopped early: nowhere near the goal
    assert abs(env.arm.read_state().q[0] - q0[0]) < 0.2
    safe.disconnect()
