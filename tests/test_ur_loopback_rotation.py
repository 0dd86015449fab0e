"""Rotation math of the loopback controller through scipy `Rotation` (issue 9): the relative
rotation vector `arm_model.relative_rotvec` (used by `ControllerCore.jacobian` and the reported
`actual_TCP_speed`) gives the numbers of the hand-written code it replaced.

The reference is that hand-written code, kept here verbatim (`_old_matrix_to_rotvec`,
`_old_rotvec_to_matrix`), evaluated on fixed grids: random rotation pairs (seeded), UR3 joint
configurations, and a servoJ run of the kinematic arm. No wall clock, no sockets, no MuJoCo.
"""
from __future__ import annotations

import numpy as np
import pytest

from dynaflip_ros.sim.ur_loopback import arm_model
from dynaflip_ros.sim.ur_loopback.arm_model import relative_rotvec
from dynaflip_ros.sim.ur_loopback.config import DEFAULT_Q0_RAD
from dynaflip_ros.sim.ur_loopback.core import ControllerCore
from rotation_reference import old_matrix_to_rotvec as _old_matrix_to_rotvec, old_rotvec_to_matrix as _old_rotvec_to_matrix

QS = [list(DEFAULT_Q0_RAD), [0.0] * 6, [0.1, -1.2, 1.5, -1.9, -1.57, 0.3],
      [np.pi, -np.pi / 2, 0.0, -np.pi / 2, 0.0, 0.0], [-2.5, 0.7, -2.9, 1.1, 2.2, -0.4]]
TCP_OFFSET = np.array([0.01, -0.02, 0.15, 0.1, -0.2, 0.3])






def _old_jacobian(core: ControllerCore, q: np.ndarray) -> np.ndarray:
    """ControllerCore.jacobian as it was, with the hand-written log map."""
    t0 = arm_model.transform_from_ur_pose(arm_model.tcp_pose(q, core.tcp_offset))
    jac = np.zeros((6, 6))
    h = 1e-6
    for i in range(6):
        dq = np.array(q, dtype=float)
        dq[i] += h
        t1 = arm_model.transform_from_ur_pose(arm_model.tcp_pose(dq, core.tcp_offset))
        jac[:3, i] = (t1[:3, 3] - t0[:3, 3]) / h
        jac[3:, i] = _old_matrix_to_rotvec(t1[:3, :3] @ t0[:3, :3].T) / h
    return jac


def test_relative_rotvec_equals_old_log_map_on_a_grid():
    """200 seeded rotation pairs, relative angles 1e-9 .. 3 rad (away from the pi ambiguity)."""
    rng = np.random.default_rng(7)
    for _ in range(200):
        w_from = rng.normal(size=3)
        w_from *= rng.uniform(0.0, 3.0) / np.linalg.norm(w_from)
        step = rng.normal(size=3)
        step *= 10.0 ** rng.uniform(-9.0, np.log10(3.0)) / np.linalg.norm(step)
        r_from = _old_rotvec_to_matrix(w_from)
        r_to = _old_rotvec_to_matrix(step) @ r_from
        new = relative_rotvec(r_to, r_from)
        np.testing.assert_allclose(new, _old_matrix_to_rotvec(r_to @ r_from.T), rtol=0, atol=1e-12)
        np.testing.assert_allclose(new, step, rtol=0, atol=1e-12)


@pytest.mark.parametrize("q", QS)
@pytest.mark.parametrize("offset", [np.zeros(6), TCP_OFFSET])
def test_jacobian_equals_old_code(q, offset):
    core = ControllerCore(q0=q, physics=False, with_gripper=False)
    core.tcp_offset = offset.copy()
    np.testing.assert_allclose(core.jacobian(np.array(q)), _old_jacobian(core, np.array(q)),
                               rtol=0, atol=1e-9)


def test_tcp_speed_equals_old_code_during_a_servoj_move():
    """actual_TCP_speed's angular part = old log(R_k R_{k-1}^T) / 2 ms, cycle by cycle."""
    core = ControllerCore(physics=False, with_gripper=False)
    core.tcp_offset = TCP_OFFSET.copy()
    prev = core.outputs()["actual_TCP_pose"]
    core.motion.servo(np.array(DEFAULT_Q0_RAD) + np.array([0.3, -0.2, 0.25, 0.4, -0.5, 0.6]), 0.1, 300)
    for _ in range(40):
        core.step()
        out = core.outputs()
        t_tcp = arm_model.flange_to_tcp(arm_model.dh_frames(out["actual_q"].tolist())[-1], core.tcp_offset)
        ang = _old_matrix_to_rotvec(t_tcp[:3, :3] @ _old_rotvec_to_matrix(prev[3:]).T) / core.period_s
        np.testing.assert_allclose(out["actual_TCP_speed"][3:], ang, rtol=0, atol=1e-11)
        np.testing.assert_allclose(out["actual_TCP_speed"][:3],
                                   (out["actual_TCP_pose"][:3] - prev[:3]) / core.period_s, rtol=0, atol=0)
        prev = out["actual_TCP_pose"].copy()
