"""Node `camera`: a `cameras.base.Camera` -> /camera/color/image_raw (rgb8) + camera_info.

In simulation the node lives inside `sim_cell_node` and reads `PickIntoSinkEnv.camera` (the
MuJoCo world is shared with the arm). Standalone (`camera_node`, real cell) it opens the backend
named by the `backend` parameter; a backend that is not available raises a clear error.

Published (QoS in ros/qos.py):
  /camera/color/image_raw    sensor_msgs/Image rgb8, frame_id = `frame_id` (optical frame)  IMAGE_QOS
  /camera/color/camera_info  sensor_msgs/CameraInfo (same header; K, D, P of the colour stream,
                             distortion_model from the camera: plumb_bob on RealSense D4xx)  IMAGE_QOS
  /camera/aligned_depth_to_color/image_raw    real cameras with depth only: sensor_msgs/Image
                             32FC1 metres on the colour grid, NaN = no data (REP 118)  IMAGE_QOS
  /camera/aligned_depth_to_color/camera_info  = the colour CameraInfo (same header)     IMAGE_QOS
  /dynaflip/latency          {"stage": "capture", "ms": read duration}       EVENT_QOS
Header stamps: a camera whose `stamp_clock` is "host_monotonic" (RealSenseCamera: Frame.stamp_s =
capture time on time.monotonic()) is stamped with its capture time mapped onto the ROS clock,
ros_now - (monotonic_now - stamp_s); other cameras (the sim camera, stamp = sim time) with the
ROS clock at capture start.
Parameters: configs.ros.CameraNodeConfig (section `camera:` of config/pick_into_sink.yaml; the
RealSense backend's `realsense.*` -> configs/realsense.py).
"""
from __future__ import annotations

import sys
import time
from typing import Any

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image

from dynaflip_ros.cameras.base import Camera, CameraError
from dynaflip_ros.configs.ros import CameraNodeConfig
from dynaflip_ros.ros.conversions import (
    camera_info_from_intrinsics, camera_info_with_model, depth_to_image, rgb_to_image,
)
from dynaflip_ros.ros.params import load_node_config, node_kwargs
from dynaflip_ros.ros.qos import CAMERA_INFO_TOPIC, DEPTH_INFO_TOPIC, DEPTH_TOPIC, IMAGE_QOS, IMAGE_TOPIC
from dynaflip_ros.ros.runtime import (
    run_node,
    LatencyReporter, load_real_backend, Stopwatch, ros_now_s, safe_publish,
)

# Real-cell camera backends: backend name -> (module, class). The module is imported only when
# that backend is chosen (pyrealsense2 stays optional).
REAL_CAMERA_BACKENDS: dict[str, tuple[str, str]] = {
    "realsense": ("dynaflip_ros.cameras.realsense", "RealSenseCamera"),
}


def make_camera(backend: str, config: CameraNodeConfig | None = None) -> Camera:
    """Construct a real-cell camera backend by name with its config section (`realsense` ->
    `config.realsense`) through `runtime.load_real_backend`; BackendUnavailableError for "sim",
    an unknown name, or a missing module."""
    backend_config: Any = getattr(config, backend, None) if config is not None else None
    return load_real_backend("camera", backend, REAL_CAMERA_BACKENDS, backend_config)


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
            camera = make_camera(self.config.backend, self.config)
        self.camera = camera
        if connect:
            self.camera.connect()
        self.frames_published = 0
        self.depth_published = 0
        self.read_errors = 0
        self._monotonic_stamps = getattr(camera, "stamp_clock", None) == "host_monotonic"
        self._image_pub = self.create_publisher(Image, IMAGE_TOPIC, IMAGE_QOS)
        self._info_pub = self.create_publisher(CameraInfo, CAMERA_INFO_TOPIC, IMAGE_QOS)
        # Aligned depth: real cameras only (the sim graph does not use depth; it would cost CPU).
        self._depth_pub = self._depth_info_pub = None
        if self.config.backend != "sim":
            self._depth_pub = self.create_publisher(Image, DEPTH_TOPIC, IMAGE_QOS)
            self._depth_info_pub = self.create_publisher(CameraInfo, DEPTH_INFO_TOPIC, IMAGE_QOS)
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
        if self._monotonic_stamps:  # capture time (host monotonic) -> ROS clock
            stamp_s = max(0.0, ros_now_s(self) - (time.monotonic() - frame.stamp_s))
        img = rgb_to_image(frame.rgb, stamp_s, self.config.frame_id)
        model = getattr(self.camera, "distortion_model", None)
        info = (camera_info_with_model(frame.intrinsics, stamp_s, self.config.frame_id, model) if model
                else camera_info_from_intrinsics(frame.intrinsics, stamp_s, self.config.frame_id))
        if safe_publish(self, self._image_pub, img, "image"):
            self.frames_published += 1
        safe_publish(self, self._info_pub, info, "camera_info")
        if self._depth_pub is not None and frame.depth is not None:
            if safe_publish(self, self._depth_pub, depth_to_image(frame.depth, stamp_s, self.config.frame_id), "depth"):
                self.depth_published += 1
            safe_publish(self, self._depth_info_pub, info, "depth camera_info")
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
