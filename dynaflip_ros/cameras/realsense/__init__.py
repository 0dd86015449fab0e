"""Intel RealSense D4xx (D435/D435i/D415/D405) camera backend: `RealSenseCamera`.

Live device or recorded file (`RealSenseConfig.playback_path`; `cameras/realsense_playback.py`
writes synthetic D435 recordings, which is how CI runs librealsense without hardware). Facts
used: docs/hardware.md §3. One concept per module:

| module          | what                                                                    |
|-----------------|-------------------------------------------------------------------------|
| `camera`        | `RealSenseCamera` (the `cameras.base.Camera`): connect, read, settings() |
| `clock`         | `DeviceClockMapper`: frame timestamps (ms) -> host monotonic s          |
| `device`        | device discovery, stream-mode checks, device info                       |
| `settings`      | fixed sensor settings (exposure, white balance, gain): write, read back |
| `stream_facts`  | intrinsics conversion, extrinsics, depth scale, provenance record       |
| `file_reader`   | `FileReader`: non-real-time playback of a recording, every frame        |
| `librealsense`  | lazy `pyrealsense2` import, enum names                                  |

Every public name used to live in one module `cameras/realsense.py`; they are re-exported here
so `dynaflip_ros.cameras.realsense.<name>` keeps working. Threading, units and timing rules are
in each module's docstring.
"""
from dynaflip_ros.cameras.realsense.camera import OPTICAL_FRAME_ID, RealSenseCamera
from dynaflip_ros.cameras.realsense.clock import WALL_CLOCK_DOMAINS, DeviceClockMapper
from dynaflip_ros.cameras.realsense.device import (
    check_live_modes,
    device_infos,
    find_device,
    stream_sensors,
    usb_type,
)
from dynaflip_ros.cameras.realsense.file_reader import FileReader
from dynaflip_ros.cameras.realsense.settings import (
    apply_fixed_settings,
    configure_fixed_settings,
    fixed_setting_targets,
)
from dynaflip_ros.cameras.realsense.stream_facts import ROS_DISTORTION_MODELS, StreamFacts, read_stream_facts

__all__ = [
    "OPTICAL_FRAME_ID", "ROS_DISTORTION_MODELS", "WALL_CLOCK_DOMAINS", "DeviceClockMapper", "FileReader",
    "RealSenseCamera", "StreamFacts", "apply_fixed_settings", "check_live_modes", "configure_fixed_settings",
    "device_infos", "find_device", "fixed_setting_targets", "read_stream_facts", "stream_sensors", "usb_type",
]
