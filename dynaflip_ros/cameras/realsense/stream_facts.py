"""Stream facts of a started RealSense: intrinsics conversion, extrinsics, depth scale, provenance.

`read_stream_facts` turns the colour / depth stream profiles of a started device (or
recording) into `StreamFacts`: the colour `CameraIntrinsics` (pixels; distortion coefficients in
OpenCV order k1, k2, p1, p2, k3; librealsense's model name kept, its ROS CameraInfo name via
`ROS_DISTORTION_MODELS`), the depth scale (m per Z16 unit), and the JSON-serialisable settings
record that `RealSenseCamera.settings()` returns (device info, stream modes, colour and depth
intrinsics, depth->colour extrinsics (rotation row-major, translation m), fixed settings as read
back, all readable sensor options, the requested config). Pure function, no threads.
Sources: librealsense `rs2_intrinsics` / `rs2_extrinsics` (rotation column-major),
https://intelrealsense.github.io/librealsense/doxygen/structrs2__extrinsics.html ;
sensor_msgs/CameraInfo distortion models as realsense-ros publishes them.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from dynaflip_ros.cameras.base import CameraError, CameraIntrinsics
from dynaflip_ros.cameras.realsense.device import device_infos, stream_sensors
from dynaflip_ros.cameras.realsense.librealsense import enum_name
from dynaflip_ros.cameras.realsense.settings import all_options
from dynaflip_ros.configs.realsense import RealSenseConfig

# librealsense distortion model -> sensor_msgs/CameraInfo distortion_model (as realsense-ros
# publishes it: the Brown-Conrady variants as plumb_bob, Kannala-Brandt as equidistant).
ROS_DISTORTION_MODELS: dict[str, str] = {
    "none": "plumb_bob",
    "brown_conrady": "plumb_bob",
    "inverse_brown_conrady": "plumb_bob",
    "modified_brown_conrady": "plumb_bob",
    "kannala_brandt4": "equidistant",
}


def intrinsics_dict(i) -> dict[str, Any]:
    """`rs.intrinsics` -> JSON-serialisable dict (pixels; librealsense model name, coefficients)."""
    return {"width": i.width, "height": i.height, "fx": i.fx, "fy": i.fy, "ppx": i.ppx, "ppy": i.ppy,
            "model": enum_name(i.model), "coeffs": [float(c) for c in i.coeffs]}


def to_camera_intrinsics(i) -> CameraIntrinsics:
    """`rs.intrinsics` -> `CameraIntrinsics` (fx, fy, cx = ppx, cy = ppy in pixels; coefficients as is)."""
    return CameraIntrinsics(width=i.width, height=i.height, fx=float(i.fx), fy=float(i.fy),
                            cx=float(i.ppx), cy=float(i.ppy), distortion=tuple(float(c) for c in i.coeffs))


@dataclass
class StreamFacts:
    """intrinsics: colour `CameraIntrinsics`; rs_distortion_model: librealsense model name;
    depth_scale_m: metres per Z16 unit (None without depth); device_info: `device_infos`;
    settings: the provenance record (see the module docstring)."""

    intrinsics: CameraIntrinsics
    rs_distortion_model: str
    depth_scale_m: float | None
    device_info: dict[str, str]
    settings: dict[str, Any]


def read_stream_facts(rs, cfg: RealSenseConfig, profiles: dict[str, Any], dev, readback: dict[str, dict[str, float]],
                      exposure_unit_us: float, problems: list[str], is_playback: bool) -> StreamFacts:
    """Facts of the started streams. profiles: {"color": video_stream_profile, "depth": ...
    (with depth)}; readback / exposure_unit_us / problems: `settings.configure_fixed_settings`.
    Raises CameraError when depth is enabled and the device has no depth sensor."""
    cp = profiles["color"]
    ci = cp.get_intrinsics()
    streams = {"color": {"width": cp.width(), "height": cp.height(), "fps": cp.fps(),
                         "format": enum_name(cp.format())}}
    color_sensor, depth_sensor = stream_sensors(rs, dev)
    depth_info = extr = None
    depth_scale_m = None
    if cfg.enable_depth:
        if depth_sensor is None or not depth_sensor.is_depth_sensor():
            raise CameraError("the RealSense device has no depth sensor (set enable_depth=False)")
        depth_scale_m = float(depth_sensor.as_depth_sensor().get_depth_scale())
        dp = profiles["depth"]
        depth_info = intrinsics_dict(dp.get_intrinsics())
        streams["depth"] = {"width": dp.width(), "height": dp.height(), "fps": dp.fps(),
                            "format": enum_name(dp.format())}
        e = dp.get_extrinsics_to(cp)
        extr = {"rotation_row_major": np.asarray(e.rotation, dtype=float).reshape(3, 3).T.reshape(-1).tolist(),
                "translation_m": [float(v) for v in e.translation]}
    info = device_infos(rs, dev)
    color_rb = readback.get("color", {})
    fixed = {
        "auto_exposure": bool(color_rb.get("enable_auto_exposure", math.nan)),
        "auto_white_balance": bool(color_rb.get("enable_auto_white_balance", math.nan)),
        "exposure_device_units": color_rb.get("exposure"),
        "exposure_unit_us": exposure_unit_us,
        "exposure_us": None if "exposure" not in color_rb else color_rb["exposure"] * exposure_unit_us,
        "white_balance_k": color_rb.get("white_balance"),
        "gain": color_rb.get("gain"),
        "power_line_frequency": color_rb.get("power_line_frequency"),
        "depth_exposure_us": readback.get("depth", {}).get("exposure"),
    }
    settings = {
        "backend": "realsense",
        "librealsense_version": getattr(rs, "__version__", "unknown"),
        "source": "playback" if is_playback else "live",
        "playback_path": cfg.playback_path,
        "device": info,
        "streams": streams,
        "color_intrinsics": intrinsics_dict(ci),
        "depth_intrinsics": depth_info,
        "depth_to_color_extrinsics": extr,
        "depth_scale_m": depth_scale_m,
        "align_depth_to_color": bool(cfg.enable_depth and cfg.align_depth_to_color),
        "fixed_settings": fixed,
        "settings_problems": list(problems),
        "options": {"color": all_options(rs, color_sensor),
                    "depth": all_options(rs, depth_sensor) if depth_sensor is not None else {}},
        "requested": asdict(cfg),
    }
    return StreamFacts(to_camera_intrinsics(ci), enum_name(ci.model), depth_scale_m, info, settings)
