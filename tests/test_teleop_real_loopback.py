"""Teleop on the real-arm path: URRtdeArm (the real ur_rtde 1.6.5 client) against the loopback
UR controller (sim/ur_loopback), RealArmDriver (servo thread at 125 Hz (CB3), time.monotonic), a
synthetic camera through FittedCamera; a replay device drives the TCP, then a freedrive
(teach mode) session records kinesthetic frames. No real UR or RealSense is involved."""
import numpy as np
import pytest

pytest.importorskip("rtde_control", reason="ur_rtde (PyPI ur-rtde 1.6.5) not installed")

from dynaflip_ros.cameras.base import CameraIntrinsics, Frame
from dynaflip_ros.configs.robot import URRtdeConfig
from dynaflip_ros.configs.safety import SafetyConfig
from dynaflip_ros.data import dataset_io, schema
from dynaflip_ros.data.recorder import EpisodeRecorder
from dynaflip_ros.robot.ur_rtde_arm import URRtdeArm
from dynaflip_ros.sim.ur_loopback import LoopbackURController
from dynaflip_ros.teleop.devices import (
    CombinedDevice,
    FreedriveDevice,
    ReplayDevice,
    ReplayStep,
)
from dynaflip_ros.teleop.drivers import RealArmDriver
from dynaflip_ros.teleop.provenance import camera_settings
from dynaflip_ros.teleop.record import FittedCamera, fit_image
from dynaflip_ros.teleop.session import SessionConfig, TeleopSession

HOST = "127.0.0.61"
HW = (32, 32)


class PatternCamera:
    """A 48x64 camera whose frames encode their sequence number (implements Camera + settings())."""

    def __init__(self):
        self.n = 0
        self.connected = False

    def connect(self):
        self.connected = True

    def read(self):
        import time

        self.n += 1
        rgb = np.zeros((48, 64, 3), np.uint8)
        rgb[:, :, 0] = self.n % 256
        rgb[:, 8:56, 1] = 200  # the centre 48x48 (what the crop keeps) is green
        return Frame(rgb=rgb, depth=None, intrinsics=CameraIntrinsics(64, 48, 50.0, 50.0, 31.5, 23.5),
                     stamp_s=time.monotonic(), sequence=self.n)

    def disconnect(self):
        self.connected = False

    def settings(self):
        return {"serial": "PATTERN0", "exposure_us": 10000.0}


def test_fit_image_center_crops_then_resizes():
    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[:, 8:56] = 255
    out = fit_image(rgb, (32, 32))
    assert out.shape == (32, 32, 3) and out.min() == 255  # the black side bands were cropped
    assert fit_image(rgb, (48, 64)) is rgb


@pytest.mark.timeout(180)
def test_real_arm_path_teleop_and_freedrive(tmp_path):
    root = tmp_path / "real"
    with LoopbackURController(host=HOST, ur_version=(3, 15, 7, 106331), physics=False, with_gripper=True):
        # controller_watchdog_hz=0: the controller-side RTDE watchdog (10 Hz) tripped into a protective
        # stop on this loaded 2-core machine in ~1 of 4 runs; SafeArm's own watchdog stays on
        arm = URRtdeArm(URRtdeConfig(robot_ip=HOST, ur_type="cb3", controller_watchdog_hz=0.0))
        driver = RealArmDriver(arm, SafetyConfig(robot_model="ur3_cb3"), servo_rate_hz=arm.config.controller_rate_hz)
        camera = FittedCamera(PatternCamera(), HW)
        camera.connect()
        try:
            z0 = driver.state().tcp_pose[2]
            device = ReplayDevice([ReplayStep(0.0, events=("start",)), ReplayStep(0.05, twist=(0, 0, 0.04, 0, 0, 0)),
                                   ReplayStep(1.05, twist=(0,) * 6), ReplayStep(1.3, events=("stop", "quit"))],
                                  clock=driver.now_s)
            extra = {"camera": camera_settings(camera)}
            with EpisodeRecorder(root, HW) as rec:
                s = TeleopSession(rec, driver, device, camera, SessionConfig(source="real", task="Pick the red cube into the sink"),
                                  episode_extra=extra)
                summary = s.run()
            assert summary.saved == [0]
            assert driver.state().tcp_pose[2] - z0 == pytest.approx(0.04, abs=0.006)  # 4 cm up, through SafeArm
            st = driver.safe.stats
            assert st.accepted > 100 and st.rejected == 0  # ~1.3 s at 125 Hz
            accepted_before = st.accepted

            # kinesthetic: teach mode on, nothing streamed, measured joints recorded as the action
            events = ReplayDevice([ReplayStep(0.0, events=("start",)), ReplayStep(0.55, events=("stop", "quit"))],
                                  clock=driver.now_s)
            with EpisodeRecorder(root, HW) as rec:
                s = TeleopSession(rec, driver, CombinedDevice([FreedriveDevice(driver.raw_arm), events]), camera,
                                  SessionConfig(source="real"))
                summary = s.run()
            assert summary.saved == [1]
            assert driver.safe.stats.accepted == accepted_before  # no joint target streamed in freedrive
        finally:
            driver.close()
            driver.safe.disconnect()
            camera.disconnect()

    ds = dataset_io.open_dataset(root)
    assert ds.num_episodes == 2
    recs = dataset_io.read_episode_records(root)
    assert [r["source"] for r in recs] == ["real", "real"] and recs[0]["seed"] is None
    ex0, ex1 = recs[0]["extra"], recs[1]["extra"]
    assert ex0["point_tracks_valid"] is False and ex0["success_source"] == "operator"
    assert ex0["camera"]["wrapped"]["serial"] == "PATTERN0" and "centre crop" in ex0["camera"]["preprocessing"]
    assert ex0["teleop"]["driver"] == "real" and ex1["teleop"]["kinesthetic"] is True
    n0 = recs[0]["length"]
    assert n0 == 13
    states = np.stack([ds[i][schema.STATE_KEY].numpy() for i in range(n0)])
    actions = np.stack([ds[i][schema.ACTION_KEY].numpy() for i in range(n0)])
    # target one period ahead ~ the next measured state (servoj lookahead 0.1 s adds lag, more under CPU load)
    lead = np.abs(actions[:-1, :6] - states[1:, :6])
    assert np.median(lead) < 0.01 and lead.max() < 0.06, lead.max()
    assert float(np.abs(ds[0][schema.TRACKS_KEY]).max()) == 0.0
    img = (ds[0][schema.IMAGE_KEY] * 255).round().byte().permute(1, 2, 0).numpy()
    assert img.shape == (32, 32, 3) and img[:, :, 1].min() == 200
    # freedrive episode: action = measured joints one record period later
    n1 = recs[1]["length"]
    s1 = np.stack([ds[n0 + i][schema.STATE_KEY].numpy() for i in range(n1)])
    a1 = np.stack([ds[n0 + i][schema.ACTION_KEY].numpy() for i in range(n1)])
    np.testing.assert_allclose(a1[:-1, :6], s1[1:, :6], atol=1e-4)
