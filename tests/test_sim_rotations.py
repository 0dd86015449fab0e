"""Rotation helpers of the sim cell (`sim.cell_params.rx_quat_wxyz` / `rx_matrix`, the object yaw
quaternion of `PickIntoSinkEnv`) go through `scipy.spatial.transform.Rotation`; pinned here
against the closed-form formulas they replaced, on a fixed grid of angles and at the UR3 DH
twists: quaternions (w, x, y, z, MuJoCo order) bit for bit, matrices to 1 ulp of 1."""
from __future__ import annotations

import math

import numpy as np
import pytest

from dynaflip_ros.robot.kinematics import UR3_CB3_DH
from dynaflip_ros.sim.cell_params import rx_matrix, rx_quat_wxyz, yaw_quat_wxyz

ANGLES_RAD = np.concatenate([[0.0, math.pi / 2, -math.pi / 2, math.pi, -math.pi, 1e-9, -1e-12, 2 * math.pi],
                             np.linspace(-2 * math.pi, 2 * math.pi, 721),
                             np.random.default_rng(0).uniform(-math.pi, math.pi, 500)])


def _rx_quat_closed_form(a: float) -> np.ndarray:
    return np.array([math.cos(a / 2), math.sin(a / 2), 0.0, 0.0])


def _rx_closed_form(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


@pytest.mark.parametrize("a", ANGLES_RAD)
def test_rx_and_yaw_quaternions_equal_the_closed_form_bit_for_bit(a):
    np.testing.assert_array_equal(rx_quat_wxyz(a), _rx_quat_closed_form(a))
    np.testing.assert_array_equal(yaw_quat_wxyz(a), [math.cos(a / 2), 0.0, 0.0, math.sin(a / 2)])
    np.testing.assert_allclose(rx_matrix(a), _rx_closed_form(a), rtol=0, atol=2.3e-16)


def test_dh_twists_pinned():
    h = math.sqrt(0.5)
    expected = {math.pi / 2: [0.7071067811865476, 0.7071067811865475, 0.0, 0.0], 0.0: [1.0, 0.0, 0.0, 0.0],
                -math.pi / 2: [0.7071067811865476, -0.7071067811865475, 0.0, 0.0]}
    for alpha in UR3_CB3_DH.alpha:
        np.testing.assert_array_equal(rx_quat_wxyz(alpha), expected[alpha])
        np.testing.assert_allclose(rx_quat_wxyz(alpha), _rx_quat_closed_form(alpha), rtol=0, atol=0)
    np.testing.assert_allclose(rx_matrix(math.pi / 2), [[1, 0, 0], [0, 0, -1], [0, 1, 0]], rtol=0, atol=3e-16)
    assert abs(rx_quat_wxyz(math.pi / 2)[0] - h) < 1e-16
