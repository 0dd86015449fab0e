"""The committed sim-cell calibration equals the MuJoCo model, and projects points like the camera."""
from pathlib import Path

import numpy as np

from dynaflip_ros.configs.sim import SimConfig
from dynaflip_ros.sim.calibration import load_calibration, sim_camera_calibration
from dynaflip_ros.sim.pick_into_sink import PickIntoSinkEnv

CAL = Path(__file__).resolve().parents[1] / "calibration" / "sim_cell.yaml"


def test_committed_sim_calibration_matches_env():
    env = PickIntoSinkEnv(SimConfig())
    try:
        env.reset(seed=0)
        k, t_base_optical = load_calibration(CAL)
        live = sim_camera_calibration(env)
        np.testing.assert_allclose(t_base_optical, np.asarray(live["extrinsics"]["matrix"]), atol=1e-8)
        np.testing.assert_allclose(k, env.camera.intrinsics.matrix(), atol=1e-9)
        # object points through the YAML extrinsics == the env's optical-frame point tracks
        pts_base = env.object_points_base()  # (32, 3)
        pts_cam = (pts_base - t_base_optical[:3, 3]) @ t_base_optical[:3, :3]
        np.testing.assert_allclose(pts_cam, env.point_tracks(), atol=1e-5)
    finally:
        env.close()
