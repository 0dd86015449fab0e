"""Node `camera`: a `cameras.base.Camera` -> /camera/color/image_raw (rgb8) + camera_info.

In simulation the node lives inside `sim_cell_node` and reads `PickIntoSinkEnv.camera` (the
MuJoCo world is shared with the arm). Standalone (`camera_node`, real cell) it opens the backend
named by the `backend` parameter; a backend that is not available raises a clear error.

Published (QoS in ros/qos.py):
  /camera/color/image_raw    sensor_msgs/Image rgb8, header.stamp = ROS clock at capture start,
                             frame_id = `frame_id` (optical frame)           IMAGE_QOS
  /camera/color/camera_info  sensor_msgs/CameraInfo (same header)            IMAGE_QOS
  /dynaflip/latency          {"stage": "capture", "ms": read duration}       EVENT_QOS
Parameters: configs.ros.CameraNodeConfig (section `camera:` of config/pick_into_sink.yaml).
"""
from __future__ import annotations

import sys

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image

from dynaflip_ros.cameras.base import Camera, CameraError
from dynaflip_ros.configs.ros import CameraNodeConfig
from dynaflip_ros.ros.conversions import camera_info_from_intrinsics, rgb_to_image
from dynaflip_ros.ros.params import load_node_config, node_kwargs
from dynaflip_ros.ros.qos import CAMERA_INFO_TOPIC, IMAGE_QOS, IMAGE_TOPIC
from dynaflip_ros.ros.runtime import (
    run_node,
    LatencyReporter, load_real_backend, Stopwatch, ros_now_s, safe_publish,
)

# Real-cell camera backends: backend name -> (module, class). The module is imported only when
# that backend is chosen (pyrealsense2 stays optional).
REAL_CAMERA_BACKENDS: dict[str, tuple[str, str]] = {
    "realsense": ("dynaflip_ros.cameras.realsense", "RealSenseCamera"),
}


def make_camera(backend: str) -> Camera:
    """Open a real-cell camera backend by name (`runtime.load_real_backend`; BackendUnavailableError
    for "sim", an unknown name, or a missing module)."""
    return load_real_backend("camera", backend, REAL_CAMERA_BACKENDS)


class CameraNode(Node):
    """Publishes frames of `camera` at `rate_hz`.

    Args:
        camera: an already constructed Camera (the sim cell passes `env.camera`); None -> the
            `backend` parameter's real camera (`make_camera`).
        connect: call camera.connect() (the sim camera needs it too; idempotent there).
    Raises ConfigError on bad parameters, BackendUnavailableError on a missing backend,
    CameraError if the camera cannot be opened.
    """

    def __init__(self, camera: Camera | None = None, connect: bool = True, node_name: str = "camera") -> None:
        super().__init__(node_name, **node_kwargs())
        self.config = load_node_config(self, CameraNodeConfig)
        if camera is None:
            camera = make_camera(self.config.backend)
        self.camera = camera
        if connect:
            self.camera.connect()
        self.frames_published = 0
        self.read_errors = 0
        self._image_pub = self.create_publisher(Image, IMAGE_TOPIC, IMAGE_QOS)
        self._info_pub = self.create_publisher(CameraInfo, CAMERA_INFO_TOPIC, IMAGE_QOS)
        self._latency = LatencyReporter(self)
        self._timer = self.create_timer(1.0 / self.config.rate_hz, self._capture,
                                        callback_group=MutuallyExclusiveCallbackGroup())
        self.get_logger().info(
            f"camera: {type(camera).__name__} at {self.config.rate_hz:g} Hz -> {IMAGE_TOPIC} "
            f"(frame {self.config.frame_id})")

    def _capture(self) -> None:
        stamp_s = ros_now_s(self)
        try:
            with Stopwatch() as sw:
                frame = self.camera.read()
        except CameraError as e:
            self.read_errors += 1
            self.get_logger().error(f"camera read failed ({self.read_errors} so far): {e}",
                                    throttle_duration_sec=2.0)
            return
        img = rgb_to_image(frame.rgb, stamp_s, self.config.frame_id)
        info = camera_info_from_intrinsics(frame.intrinsics, stamp_s, self.config.frame_id)
        if safe_publish(self, self._image_pub, img, "image"):
            self.frames_published += 1
        safe_publish(self, self._info_pub, info, "camera_info")
        self._latency.report("capture", sw.elapsed_s, stamp_s)

    def close(self) -> None:
        """Stop capturing and release the camera (idempotent)."""
        self._timer.cancel()
        self.camera.disconnect()


def main(argv: list[str] | None = None) -> int:
    """`camera_node` (real cell): the `camera` node standalone."""
    return run_node("camera", CameraNode, argv, close=True)


if __name__ == "__main__":
    sys.exit(main())
