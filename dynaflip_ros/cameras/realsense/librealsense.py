"""Access to librealsense (`pyrealsense2`): the lazy import and the names of its enums.

No state, no threads. `import_rs()` is called at connect time, not at import time, so the
package imports without pyrealsense2 (a missing library is a CameraError with the fix).
Source: librealsense Python wrapper, https://dev.intelrealsense.com/docs/python2
"""
from __future__ import annotations

from typing import Any

from dynaflip_ros.cameras.base import CameraError


def import_rs():
    """The `pyrealsense2` module. Raises CameraError (with the install command) when missing."""
    try:
        import pyrealsense2 as rs
    except ImportError as e:  # pragma: no cover - pyrealsense2 is a base requirement
        raise CameraError("pyrealsense2 is not installed (pip install pyrealsense2; Debian: apt install "
                          f"libusb-1.0-0): {e}") from e
    return rs


def enum_name(value: Any) -> str:
    """'timestamp_domain.global_time' -> 'global_time' (pybind11 enums)."""
    return str(value).rsplit(".", 1)[-1]


def profile_listing(rs, dev, out: list[str] | None = None) -> list[str]:
    """["color 640x480 RGB8 @ 30", ...]: every video stream profile of `dev`'s sensors, appended
    to `out` (a new list when None) as they are read, so a failure part-way keeps the earlier ones."""
    out = [] if out is None else out
    for sensor in dev.query_sensors():
        for p in sensor.get_stream_profiles():
            if p.is_video_stream_profile():
                v = p.as_video_stream_profile()
                out.append(f"{enum_name(p.stream_type())} {v.width()}x{v.height()} "
                           f"{enum_name(p.format()).upper()} @ {p.fps()}")
    return out
