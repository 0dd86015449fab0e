"""The synthetic RealSense recording's depth->colour rotation goes through scipy Rotation:
pinned against the hand-written Rz Ry Rx product it replaced (same numbers to 1e-12)."""
import math

import numpy as np

from dynaflip_ros.cameras.realsense_playback import SyntheticScene, _rotation_xyz


def _old_rotation_xyz(rx, ry, rz):
    cx, sx, cy, sy, cz, sz = math.cos(rx), math.sin(rx), math.cos(ry), math.sin(ry), math.cos(rz), math.sin(rz)
    r_x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    r_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    r_z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return r_z @ r_y @ r_x


def test_rotation_xyz_matches_the_old_product():
    grid = np.linspace(-math.pi, math.pi, 9)
    rng = np.random.default_rng(0)
    angles = [(a, b, c) for a in grid for b in grid for c in grid] + [tuple(rng.normal(size=3) * 0.01) for _ in range(50)]
    for a in angles:
        np.testing.assert_allclose(_rotation_xyz(*a), _old_rotation_xyz(*a), rtol=0, atol=1e-12)
    scene = SyntheticScene()
    np.testing.assert_allclose(scene.rotation(), _old_rotation_xyz(*scene.depth_to_color_rpy_rad), rtol=0, atol=1e-15)
