"""RealSense device discovery and stream-mode checks (live devices).

`find_device` picks the connected device (by serial when several are plugged in), `check_live_modes`
refuses a colour / depth mode the device does not offer (naming USB 2 when that is why,
docs/hardware.md §3.2), `stream_sensors` finds the sensors that stream colour and depth (on a
D405 both are the stereo module, docs/hardware.md §3.1), `device_infos` and `start_error_text`
describe a device / a failed start. Pure functions, no state, no threads; errors are
CameraError with what to check.
Source: librealsense `rs2::context::query_devices`, https://dev.intelrealsense.com/docs/python2
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from dynaflip_ros.cameras.base import CameraError
from dynaflip_ros.cameras.realsense.librealsense import enum_name, profile_listing
from dynaflip_ros.configs.realsense import RealSenseConfig

log = logging.getLogger(__name__)


def find_device(rs, serial: str):
    """The connected device with serial number `serial` ("" = the only connected device).

    Raises CameraError: devices cannot be enumerated, none connected, several and no serial,
    serial not found (the message lists the connected serials)."""
    try:
        devices = list(rs.context().query_devices())
    except RuntimeError as e:
        raise CameraError(f"cannot enumerate RealSense devices (libusb / udev rules?): {e}") from e
    serials = []
    for d in devices:
        try:
            serials.append(d.get_info(rs.camera_info.serial_number))
        except RuntimeError:
            serials.append("?")
    if not devices:
        raise CameraError("no RealSense device connected (check the USB 3 cable and port, udev rules "
                          "99-realsense-libusb.rules, and `rs-enumerate-devices`)")
    if not serial:
        if len(devices) > 1:
            raise CameraError(f"{len(devices)} RealSense devices connected ({serials}); set "
                              "camera.realsense.serial to choose one")
        return devices[0]
    for d, s in zip(devices, serials):
        if s == serial:
            return d
    raise CameraError(f"RealSense serial {serial!r} not found; connected: {serials}")


def device_infos(rs, dev) -> dict[str, str]:
    """Name, serial, firmware, product line / id and USB type of `dev` (those it reports)."""
    out = {}
    for key in ("name", "serial_number", "firmware_version", "recommended_firmware_version", "product_line",
                "product_id", "usb_type_descriptor"):
        info = getattr(rs.camera_info, key)
        if dev.supports(info):
            out[key] = dev.get_info(info)
    return out


def usb_type(rs, dev) -> str:
    """The device's USB type descriptor ("3.2", "2.1", ...; "" when not reported)."""
    return dev.get_info(rs.camera_info.usb_type_descriptor) if dev.supports(rs.camera_info.usb_type_descriptor) else ""


def check_live_modes(rs, dev, config: RealSenseConfig) -> None:
    """Raise CameraError unless `dev` offers colour RGB8 (width, height, fps) and, with depth,
    depth Z16 `config.depth_mode()` at fps. The message lists the offered modes and names USB 2
    when the device is connected over it (USB 2 exposes a small subset, docs/hardware.md §3.2)."""
    usb = usb_type(rs, dev)
    wanted = [(rs.stream.color, rs.format.rgb8, (config.width, config.height))]
    if config.enable_depth:
        wanted.append((rs.stream.depth, rs.format.z16, config.depth_mode()))
    offered: dict[Any, set] = {}
    for sensor in dev.query_sensors():
        for p in sensor.get_stream_profiles():
            if p.is_video_stream_profile():
                v = p.as_video_stream_profile()
                offered.setdefault((p.stream_type(), p.format()), set()).add((v.width(), v.height(), p.fps()))
    for stream, fmt, (w, h) in wanted:
        modes = offered.get((stream, fmt), set())
        if (w, h, config.fps) not in modes:
            listing = ", ".join(f"{a}x{b}@{f}" for a, b, f in sorted(modes)) or "none"
            usb_note = (f"; the device is connected over USB {usb}, which offers only a small subset of modes "
                        "(use a USB 3 port and cable)") if usb.startswith("2") else ""
            raise CameraError(f"RealSense {enum_name(stream)} mode {w}x{h} @ {config.fps} fps "
                              f"{enum_name(fmt).upper()} is not offered by this device{usb_note}; offered: {listing}")
    if usb.startswith("2"):
        log.warning("RealSense connected over USB %s: bandwidth is limited (use USB 3)", usb)


def stream_sensors(rs, dev):
    """(colour sensor, depth sensor or None): the sensors whose profiles stream colour / depth
    (on a D405 both are the stereo module: colour comes from the depth imager, docs/hardware.md §3.1)."""
    color = depth = None
    for s in dev.query_sensors():
        streams = {p.stream_type() for p in s.get_stream_profiles()}
        if color is None and rs.stream.color in streams:
            color = s
        if depth is None and rs.stream.depth in streams:
            depth = s
    if color is None:
        raise CameraError("the RealSense device has no colour sensor")
    return color, depth


def start_error_text(rs, cfg: RealSenseConfig, err: RuntimeError, depth_size, is_playback: bool) -> str:
    """The CameraError message for a pipeline that failed to start with `err`: the wanted
    modes, and for a recording the streams it holds."""
    want = f"colour {cfg.width}x{cfg.height} RGB8" + (f" + depth {depth_size[0]}x{depth_size[1]} Z16" if cfg.enable_depth else "")
    if not is_playback:
        return f"RealSense pipeline failed to start ({want} @ {cfg.fps} fps): {err}"
    recorded: list[str] = []
    try:
        profile_listing(rs, rs.context().load_device(str(Path(cfg.playback_path).expanduser())), recorded)
    except RuntimeError as e2:
        recorded.append(f"(unreadable: {e2})")
    return (f"RealSense recording {cfg.playback_path} cannot play {want} @ {cfg.fps} fps ({err}); "
            f"it holds: {recorded}")
