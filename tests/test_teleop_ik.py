"""Teleop kinematics: DLS inverse kinematics accuracy on the UR3 DH models, the geometric
Jacobian against finite differences, and the twist integrator (straight lines, clamps, refusal
of unreachable targets without wind-up)."""
import numpy as np
import pytest

from dynaflip_ros.configs.safety import SafetyConfig
from dynaflip_ros.robot.kinematics import (
    UR3_CB3_DH,
    UR3E_DH,
    forward_kinematics,
    geometric_jacobian,
    inverse_kinematics,
    rotation_error_vector,
    rotvec_to_matrix,
)
from dynaflip_ros.teleop.twist import TwistToJointTarget

TOOL = SafetyConfig().tool_transform


@pytest.mark.parametrize("dh", [UR3_CB3_DH, UR3E_DH], ids=["cb3", "e-series"])
def test_fk_of_ik_within_1mm_and_0p01rad(dh):
    rng = np.random.default_rng(0)
    worst_p, worst_r, n = 0.0, 0.0, 0
    while n < 150:
        q = rng.uniform(-np.pi, np.pi, 6)
        q[2] = rng.uniform(-2.6, 2.6)
        # away from singularities (smallest singular value of J > 0.05): where teleop works; at
        # a singularity the DLS solution is bounded but may stop short (next test)
        if np.linalg.svd(geometric_jacobian(q, dh, TOOL), compute_uv=False)[-1] < 0.05:
            continue
        n += 1
        target = forward_kinematics(q, dh, TOOL)
        res = inverse_kinematics(target, q + rng.normal(0.0, 0.15, 6), dh, TOOL)
        got = forward_kinematics(res.q, dh, TOOL)
        dp = float(np.linalg.norm(got[:3, 3] - target[:3, 3]))
        dr = float(np.linalg.norm(rotation_error_vector(target[:3, :3], got[:3, :3])))
        assert res.converged, (q, res)
        assert dp == pytest.approx(res.position_error_m, abs=1e-12)
        worst_p, worst_r = max(worst_p, dp), max(worst_r, dr)
    assert worst_p < 1e-3 and worst_r < 0.01, (worst_p, worst_r)


def test_ik_at_a_wrist_singularity_stays_bounded():
    q = np.array([0.3, -1.2, 1.4, -1.5, 0.0, 0.2])  # wrist_2 = 0: wrist singularity
    target = forward_kinematics(q, UR3_CB3_DH, TOOL)
    target[:3, 3] += [0.0, 0.01, 0.0]
    res = inverse_kinematics(target, q, UR3_CB3_DH, TOOL)
    assert np.all(np.isfinite(res.q)) and np.max(np.abs(res.q - q)) < np.pi
    assert res.position_error_m < 0.01


def test_ik_unreachable_target_reports_not_converged():
    q = np.array([0.0, -1.57, 1.57, -1.57, -1.57, 0.0])
    target = forward_kinematics(q, UR3_CB3_DH, TOOL)
    target[:3, 3] = [1.5, 0.0, 0.3]  # beyond the UR3's 0.5 m reach
    res = inverse_kinematics(target, q, UR3_CB3_DH, TOOL, max_iterations=50)
    assert not res.converged and res.position_error_m > 0.5
    assert np.all(np.isfinite(res.q))
    with pytest.raises(ValueError):
        inverse_kinematics(np.eye(3), q)
    with pytest.raises(ValueError):
        inverse_kinematics(target, np.full(6, np.nan))


def test_geometric_jacobian_matches_finite_differences():
    rng = np.random.default_rng(1)
    for _ in range(5):
        q = rng.uniform(-2, 2, 6)
        jac = geometric_jacobian(q, UR3_CB3_DH, TOOL)
        t0 = forward_kinematics(q, UR3_CB3_DH, TOOL)
        eps = 1e-6
        for i in range(6):
            dq = np.zeros(6)
            dq[i] = eps
            t1 = forward_kinematics(q + dq, UR3_CB3_DH, TOOL)
            np.testing.assert_allclose((t1[:3, 3] - t0[:3, 3]) / eps, jac[:3, i], atol=1e-5)
            np.testing.assert_allclose(rotation_error_vector(t1[:3, :3], t0[:3, :3]) / eps, jac[3:, i], atol=1e-5)


def test_rotation_vector_round_trip_including_near_pi():
    rng = np.random.default_rng(2)
    for angle in (1e-8, 0.3, 2.0, np.pi - 1e-7):
        axis = rng.normal(size=3)
        w = axis / np.linalg.norm(axis) * angle
        r = rotvec_to_matrix(w)
        back = rotation_error_vector(r, np.eye(3))
        np.testing.assert_allclose(rotvec_to_matrix(back), r, atol=1e-6)


HOME = np.array([1.9, -2.35, 1.88, -1.1, -1.5708, 0.0])


def test_twist_integrates_a_straight_line_with_fixed_orientation():
    tw = TwistToJointTarget(SafetyConfig())
    tw.reset(HOME)
    p0 = tw.tcp_pose(HOME)
    v = np.array([0.05, -0.03, 0.02])
    q = HOME
    for _ in range(50):  # 1 s at 50 Hz
        q = tw.step(np.concatenate([v, [0, 0, 0]]), 0.02)
    p1 = tw.tcp_pose(q)
    np.testing.assert_allclose(p1[:3, 3] - p0[:3, 3], v * 1.0, atol=1e-3)
    assert np.linalg.norm(rotation_error_vector(p1[:3, :3], p0[:3, :3])) < 0.01
    assert tw.stats.ik_failures == 0 and tw.stats.steps == 50


def test_twist_rotation_about_base_z_keeps_the_tcp_in_place():
    tw = TwistToJointTarget(SafetyConfig())
    tw.reset(HOME)
    p0 = tw.tcp_pose(HOME)
    q = HOME
    for _ in range(25):
        q = tw.step(np.array([0, 0, 0, 0, 0, 0.4]), 0.02)  # 0.2 rad yaw
    p1 = tw.tcp_pose(q)
    np.testing.assert_allclose(p1[:3, 3], p0[:3, 3], atol=1e-3)
    dr = rotation_error_vector(p1[:3, :3], p0[:3, :3])
    np.testing.assert_allclose(dr, [0, 0, 0.2], atol=0.01)


def test_twist_speed_and_workspace_clamps():
    cfg = SafetyConfig(workspace_min_m=(-0.5, -0.5, 0.10), workspace_max_m=(0.5, 0.5, 0.6))
    tw = TwistToJointTarget(cfg, max_linear_speed_m_s=0.1)
    tw.reset(HOME)
    z0 = tw.tcp_pose(HOME)[2, 3]
    q = tw.step(np.array([0, 0, -1.0, 0, 0, 0]), 0.02)  # 1 m/s requested, 0.1 m/s allowed
    assert tw.tcp_pose(q)[2, 3] == pytest.approx(z0 - 0.002, abs=1e-4)
    assert tw.stats.speed_clamps == 1
    for _ in range(400):
        q = tw.step(np.array([0, 0, -0.1, 0, 0, 0]), 0.02)
    assert tw.tcp_pose(q)[2, 3] == pytest.approx(0.10 + 0.005, abs=1e-3)  # box minus the margin
    assert tw.stats.workspace_clamps > 0


def test_unreachable_target_is_refused_without_windup():
    cfg = SafetyConfig(workspace_min_m=(-2.0, -2.0, -0.05), workspace_max_m=(2.0, 2.0, 2.0))
    tw = TwistToJointTarget(cfg, max_linear_speed_m_s=0.25)
    tw.reset(HOME)
    q = HOME
    for _ in range(400):  # 2 m outwards: far beyond the reach
        q = tw.step(np.array([0.0, -0.25, 0, 0, 0, 0]), 0.02)
        assert np.all(np.isfinite(q)) and cfg.joint_lower_rad.min() <= q.min() and q.max() <= cfg.joint_upper_rad.max()
    assert tw.stats.ik_failures > 0
    reach = np.linalg.norm(tw.tcp_pose(q)[:2, 3])
    assert reach < 0.75  # the target stopped at the edge of the reach
    # no wind-up: moving back in responds at once
    before = tw.tcp_pose(q)[1, 3]
    for _ in range(5):
        q = tw.step(np.array([0.0, 0.1, 0, 0, 0, 0]), 0.02)
    assert tw.tcp_pose(q)[1, 3] > before + 0.005


def test_twist_rejects_bad_input():
    tw = TwistToJointTarget()
    with pytest.raises(RuntimeError):
        tw.step(np.zeros(6), 0.02)
    tw.reset(HOME)
    with pytest.raises(ValueError):
        tw.step(np.array([np.nan, 0, 0, 0, 0, 0]), 0.02)
    with pytest.raises(ValueError):
        tw.step(np.zeros(6), 0.0)
    with pytest.raises(ValueError):
        TwistToJointTarget(max_linear_speed_m_s=0.0)
