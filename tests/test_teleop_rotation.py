"""Rotation math of the teleop code goes through scipy Rotation: pinned against the hand-written
formulas it replaced (same numbers to 1e-12) and the twist integrator's joint targets pinned on a
fixed random twist sequence (recorded with the hand-written Rodrigues formula)."""
import math

import numpy as np
import pytest

from dynaflip_ros.teleop.devices import rotate_twist_about_z
from dynaflip_ros.teleop.twist import TwistToJointTarget, rotation_from_rotvec
from rotation_reference import old_rotvec_to_matrix as _old_rodrigues

YAWS = np.linspace(-2 * math.pi, 2 * math.pi, 41)


def _old_rotate_twist_about_z(twist, yaw_rad):
    c, s = math.cos(yaw_rad), math.sin(yaw_rad)
    r = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    tw = np.asarray(twist, dtype=float)
    return np.concatenate([r @ tw[:3], r @ tw[3:]])




@pytest.mark.parametrize("yaw", YAWS)
def test_rotate_twist_about_z_matches_the_old_formula(yaw):
    rng = np.random.default_rng(int(1000 * (yaw + 7)))
    for tw in [np.eye(6)[i] for i in range(6)] + [rng.normal(size=6) for _ in range(5)]:
        np.testing.assert_allclose(rotate_twist_about_z(tw, yaw), _old_rotate_twist_about_z(tw, yaw),
                                   rtol=0, atol=1e-12)


def test_rotvec_rotation_matches_rodrigues():
    rng = np.random.default_rng(3)
    vecs = [np.zeros(3), np.array([1e-13, 0, 0]), np.array([0, 0, math.pi]), np.array([math.pi, 0, 0])]
    vecs += [rng.normal(size=3) * s for s in (1e-6, 1e-3, 0.02, 0.5, 2.0) for _ in range(20)]
    for w in vecs:
        np.testing.assert_allclose(rotation_from_rotvec(w), _old_rodrigues(w), rtol=0, atol=1e-12)


def test_twist_integrator_joint_targets_are_pinned():
    """40 steps of a fixed random twist at 50 Hz from a fixed pose: joint targets as recorded
    with the hand-written Rodrigues formula (before scipy Rotation)."""
    t = TwistToJointTarget()
    t.reset(np.array([0.0, -1.2, 1.4, -1.77, -1.57, 0.3]))
    rng = np.random.default_rng(7)
    qs = [t.step(rng.normal(size=6) * np.array([0.05, 0.05, 0.05, 0.4, 0.4, 0.4]), 0.02) for _ in range(40)]
    pinned = {
        9: [-0.028422128791844324, -1.1936595512995085, 1.4166923147818593, -1.7994525997908273,
            -1.5330184568768408, 0.2826274475703718],
        19: [-0.05568882833953585, -1.2053725833264701, 1.4491147437676553, -1.8267271590480232,
             -1.500602124398125, 0.26941656052359864],
        39: [-0.07344742313828691, -1.172343631252976, 1.3867420731949744, -1.7568400973093816,
             -1.4484235880089444, 0.2528894796303892],
    }
    for i, q in pinned.items():
        np.testing.assert_allclose(qs[i], q, rtol=0, atol=1e-9)
    assert t.stats.steps == 40 and t.stats.ik_failures == 0
