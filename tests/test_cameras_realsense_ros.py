"""RealSense camera on ROS 2: depth / CameraInfo conversions and the `camera` node publishing
colour, CameraInfo and aligned depth from a played-back synthetic D435 recording (real
librealsense pipeline, real rclpy publishers and subscriptions on a private domain)."""
import itertools
import json
import os
import sys
import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("pyrealsense2")

from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from dynaflip_ros.cameras.base import CameraIntrinsics  # noqa: E402
from dynaflip_ros.cameras.realsense_playback import synthetic_rgb, write_synthetic_recording  # noqa: E402
from dynaflip_ros.ros import conversions as cv  # noqa: E402
from dynaflip_ros.ros.qos import (  # noqa: E402
    CAMERA_INFO_TOPIC, DEPTH_INFO_TOPIC, DEPTH_TOPIC, IMAGE_TOPIC,
)

_domains = itertools.count()


@pytest.fixture()
def ros_context(monkeypatch, tmp_path):
    """A fresh rclpy context on a private ROS_DOMAIN_ID with an optional params file."""
    monkeypatch.setenv("ROS_DOMAIN_ID", str(101 + (os.getpid() * 7 + next(_domains)) % 100))

    def make(params: dict | None = None):
        args = ["test"]
        if params:
            f = tmp_path / "params.yaml"
            f.write_text(json.dumps({n: {"ros__parameters": p} for n, p in params.items()}))  # JSON is YAML
            args += ["--ros-args", "--params-file", str(f)]
        rclpy.init(args=args)

    yield make
    rclpy.try_shutdown()


from waiting import wait_until as _wait  # timeout: a hang guard only (tests/waiting.py)


def test_depth_image_round_trip_rep118():
    d = np.array([[0.0, 0.5], [1.25, 0.0], [2.0, 3.5]], dtype=np.float32)  # (3, 2) m, 0 = no data
    msg = cv.depth_to_image(d, 12.5, "cam_optical")
    assert msg.encoding == "32FC1" and (msg.height, msg.width, msg.step) == (3, 2, 8)
    raw = np.frombuffer(bytes(msg.data), dtype="<f4" if not msg.is_bigendian else ">f4").reshape(3, 2)
    assert np.isnan(raw[0, 0]) and np.isnan(raw[1, 1]) and raw[2, 1] == np.float32(3.5)  # REP 118: NaN invalid
    assert msg.header.frame_id == "cam_optical" and cv.stamp_to_s(msg.header.stamp) == 12.5
    np.testing.assert_array_equal(cv.image_to_depth(msg), d)
    # realsense-ros style 16UC1 millimetres, big-endian with row padding
    mm = np.array([[0, 1000], [1500, 65535]], dtype=">u2")
    padded = np.zeros((2, 3), dtype=">u2")
    padded[:, :2] = mm
    m16 = Image(height=2, width=2, encoding="16UC1", is_bigendian=1, step=6, data=padded.tobytes())
    np.testing.assert_allclose(cv.image_to_depth(m16), [[0.0, 1.0], [1.5, 65.535]], rtol=1e-6)
    with pytest.raises(ValueError, match=">= 0"):
        cv.depth_to_image(-d, 0.0, "x")
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        cv.depth_to_image(np.zeros(4, np.float32), 0.0, "x")
    with pytest.raises(ValueError, match="encoding"):
        cv.image_to_depth(Image(encoding="rgb8"))
    with pytest.raises(ValueError, match="data size"):
        cv.image_to_depth(Image(height=2, width=2, encoding="32FC1", step=8, data=b"\0" * 12))


def test_camera_info_with_model():
    intr = CameraIntrinsics(640, 480, 612.0, 610.5, 321.6, 242.3, (0.1, -0.2, 0.001, 0.002, 0.05))
    msg = cv.camera_info_with_model(intr, 3.0, "camera_color_optical_frame", "plumb_bob")
    assert msg.distortion_model == "plumb_bob" and list(msg.d) == pytest.approx(intr.distortion)
    assert list(msg.k) == pytest.approx([612.0, 0, 321.6, 0, 610.5, 242.3, 0, 0, 1])
    assert list(msg.p) == pytest.approx([612.0, 0, 321.6, 0, 0, 610.5, 242.3, 0, 0, 0, 1, 0])
    assert cv.intrinsics_from_camera_info(msg) == intr
    with pytest.raises(ValueError, match="unknown distortion model"):
        cv.camera_info_with_model(intr, 0.0, "x", "fisheye_magic")
    with pytest.raises(ValueError, match="equidistant takes"):
        cv.camera_info_with_model(intr, 0.0, "x", "equidistant")


def test_camera_node_publishes_realsense_playback(ros_context, tmp_path):
    from dynaflip_ros.ros.nodes.camera import CameraNode

    coeffs = (0.02, -0.01, 0.0, 0.0, 0.0)
    rec = write_synthetic_recording(tmp_path / "d435.db3", n_frames=8, color_distortion=coeffs)
    ros_context({"camera": {"backend": "realsense", "rate_hz": 20.0, "frame_id": "cam_color_optical_frame",
                            "realsense": {"playback_path": str(rec.path), "frame_timeout_s": 0.5}}})
    node = CameraNode()
    assert node.config.realsense.playback_path == str(rec.path)
    assert node.has_parameter("realsense.exposure_us")  # `ros2 param list` shows camera.realsense.*
    probe = Node("probe")
    images, infos, depths, depth_infos = [], [], [], []
    probe.create_subscription(Image, IMAGE_TOPIC, images.append, 10)
    probe.create_subscription(CameraInfo, CAMERA_INFO_TOPIC, infos.append, 10)
    probe.create_subscription(Image, DEPTH_TOPIC, depths.append, 10)
    probe.create_subscription(CameraInfo, DEPTH_INFO_TOPIC, depth_infos.append, 10)
    # subscribers with queues: every frame of the non-real-time playback arrives (IMAGE_QOS keeps 1
    # on the publisher side, so wait for discovery before the first frame is published)
    ex = MultiThreadedExecutor(num_threads=2)
    ex.add_node(probe)
    spinner = threading.Thread(target=ex.spin, daemon=True)
    spinner.start()
    try:
        assert _wait(lambda: node.count_subscribers(IMAGE_TOPIC) > 0 and node.count_subscribers(DEPTH_TOPIC) > 0)
        t_before = time.time()
        ex.add_node(node)
        assert _wait(lambda: len(images) >= 4 and len(depths) >= 4 and len(infos) >= 4), \
            (len(images), len(depths), len(infos), node.read_errors)
        t_after = time.time()
    finally:
        node.close()
        ex.shutdown(timeout_sec=1.0)
        probe.destroy_node()
        node.destroy_node()
    img = images[0]
    assert img.encoding == "rgb8" and img.header.frame_id == "cam_color_optical_frame"
    first = cv.image_to_rgb(img)
    seq0 = next(n for n in rec.frame_numbers if np.array_equal(first, synthetic_rgb(n, 480, 640)))
    for k, m in enumerate(images[:4]):
        np.testing.assert_array_equal(cv.image_to_rgb(m), synthetic_rgb(seq0 + k, 480, 640))
    # header stamps: capture time mapped onto the ROS clock, recorded spacing (1/30 s) kept
    stamps = [cv.stamp_to_s(m.header.stamp) for m in images[:4]]
    np.testing.assert_allclose(np.diff(stamps), 1 / 30, atol=2e-3)
    # playback anchors the first frame at the time it is read (ROS clock = system time here)
    assert t_before - 0.01 <= stamps[0] <= t_after
    info = infos[0]
    assert info.header.frame_id == "cam_color_optical_frame" and (info.width, info.height) == (640, 480)
    assert info.distortion_model == "plumb_bob" and list(info.d) == pytest.approx(coeffs, rel=1e-6)
    ci = rec.color_intrinsics
    assert list(info.k) == pytest.approx([ci.fx, 0, ci.cx, 0, ci.fy, ci.cy, 0, 0, 1], rel=1e-6)
    assert list(info.p) == pytest.approx([ci.fx, 0, ci.cx, 0, 0, ci.fy, ci.cy, 0, 0, 0, 1, 0], rel=1e-6)
    stamp_by_image = {(m.header.stamp.sec, m.header.stamp.nanosec) for m in images}
    assert (info.header.stamp.sec, info.header.stamp.nanosec) in stamp_by_image
    d_msg = depths[0]
    assert d_msg.encoding == "32FC1" and d_msg.header.frame_id == "cam_color_optical_frame"
    assert (d_msg.header.stamp.sec, d_msg.header.stamp.nanosec) in stamp_by_image
    depth = cv.image_to_depth(d_msg)
    expected = rec.scene.expected_color_z_m(ci)
    valid = depth > 0
    assert valid.mean() > 0.95 and float(np.median(np.abs(depth[valid] - expected[valid]))) < 1.5e-3
    assert depth_infos and list(depth_infos[0].k) == list(info.k)


def test_camera_node_main_reports_missing_device(ros_context, tmp_path, capsys):
    """`camera_node` with the realsense backend and no device ends with a clear startup error."""
    from dynaflip_ros.ros.nodes import camera as camera_node

    params = tmp_path / "p.yaml"
    params.write_text(json.dumps({"camera": {"ros__parameters": {
        "backend": "realsense", "realsense": {"serial": "000000000001"}}}}))
    rc = camera_node.main(["camera_node", "--ros-args", "--params-file", str(params)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "CameraError" in err and ("no RealSense device connected" in err or "not found" in err), err
    assert sys.modules["dynaflip_ros.cameras.realsense"]  # the backend module was loaded by name


def test_camera_node_sim_style_camera_keeps_ros_clock_stamps_and_no_depth(ros_context):
    """A camera whose stamps are not host monotonic (the sim camera: sim time) is stamped with
    the ROS clock at capture, and the sim backend publishes no depth topic."""
    from dynaflip_ros.cameras.base import Frame
    from dynaflip_ros.ros.nodes.camera import CameraNode

    intr = CameraIntrinsics(8, 6, 10.0, 10.0, 3.5, 2.5)

    class SimTimeCamera:  # Camera protocol, stamps in "sim time" (1.5 s)
        def connect(self):
            pass

        def read(self):
            return Frame(rgb=np.full((6, 8, 3), 7, np.uint8), depth=np.ones((6, 8), np.float32),
                         intrinsics=intr, stamp_s=1.5)

        def disconnect(self):
            pass

    ros_context({"camera": {"rate_hz": 50.0}})
    node = CameraNode(camera=SimTimeCamera())
    assert node.config.backend == "sim" and node.count_publishers(DEPTH_TOPIC) == 0
    probe = Node("probe")
    images, infos = [], []
    probe.create_subscription(Image, IMAGE_TOPIC, images.append, 10)
    probe.create_subscription(CameraInfo, CAMERA_INFO_TOPIC, infos.append, 10)
    ex = MultiThreadedExecutor(num_threads=2)
    ex.add_node(probe)
    ex.add_node(node)
    spinner = threading.Thread(target=ex.spin, daemon=True)
    t0 = time.time()
    spinner.start()
    try:
        assert _wait(lambda: images and infos)
    finally:
        node.close()
        ex.shutdown(timeout_sec=1.0)
        probe.destroy_node()
        node.destroy_node()
    stamp = cv.stamp_to_s(images[0].header.stamp)
    assert t0 - 0.01 <= stamp <= time.time()  # ROS clock, not the 1.5 s sim stamp
    assert infos[0].distortion_model == "plumb_bob" and node.depth_published == 0
