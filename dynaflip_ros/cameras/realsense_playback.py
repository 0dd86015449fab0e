"""Synthetic RealSense D435 recordings: `rs.software_device()` -> `rs.recorder` -> `.db3` file.

The file plays back through the real librealsense pipeline (`rs.config.enable_device_from_file`),
so `cameras.realsense.RealSenseCamera(RealSenseConfig(playback_path=...))` runs end to end
without hardware (CI, demos). What is written (all of it read back by the camera):

- device info: name, serial, firmware, product line, USB type descriptor;
- "Stereo Module" (depth, Z16, depth units 0.001 m read-only option) and "RGB Camera" (RGB8)
  software sensors with D435-like intrinsics (docs/hardware.md §3.3: colour 640x480 fx ~612, depth
  640x480 fx ~383; colour "Inverse Brown Conrady", depth "Brown Conrady") and depth->colour
  extrinsics (~15 mm along +x, a 0.2 deg rotation; typical D435 values [inferred]);
- writable options registered on the software sensors (auto exposure / auto white balance,
  exposure in 100 us units, white balance K, gain, power-line frequency, global time, depth
  exposure us) and set like `RealSenseCamera.connect` sets them on a live device, so the
  recorded option values are what the camera reads back and verifies;
- frames: colour `synthetic_rgb(frame_number)` (exact, recorded uncompressed), depth of a tilted
  plane (`SyntheticScene`) with a rectangular hole (0 = no data), both stamped
  `start_time_ms + frame_number * 1000 / fps` in the chosen timestamp domain, with frame numbers
  and `frame_counter` metadata; `skip_frame_numbers` leaves frames out (a dropped-frame gap).

Measured with pyrealsense2 2.59.1 (docs/environment.md): the recorder writes rosbag2 sqlite `.db3`
files only ("Output file must have .db3 extension"), and `software_sensor.add_option` swaps the
`step` and `default` fields of the `option_range` it is given (`_add_option` compensates and
checks the registered range).
"""
from __future__ import annotations

import argparse
import gc
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.spatial.transform import Rotation

from dynaflip_ros.cameras.base import CameraIntrinsics

DEFAULT_SERIAL = "000000000435"
DEFAULT_NAME = "Intel RealSense D435 (synthetic)"
DEFAULT_FIRMWARE = "5.16.0.1"
DEPTH_UNITS_M = 0.001  # docs/hardware.md §3.4: D400 default depth unit


def d435_color_intrinsics(width: int, height: int) -> CameraIntrinsics:
    """D435-like colour intrinsics (docs/hardware.md §3.3: 640x480 fx ~612, 1280x720 fx ~920; the
    focal length scales with the image height because 4:3 modes crop the 16:9 sensor)."""
    f = 612.0 * height / 480.0
    return CameraIntrinsics(width=width, height=height, fx=f, fy=f * 0.9975,
                            cx=width / 2 + 1.6 * width / 640, cy=height / 2 + 2.3 * height / 480)


def d435_depth_intrinsics(width: int, height: int) -> CameraIntrinsics:
    """D435-like depth intrinsics (docs/hardware.md §3.3: 640x480 fx ~383; 16:9 modes ~90 deg HFOV,
    848x480 fx ~424, 1280x720 fx ~638)."""
    f = 383.2 * width / 640.0 if abs(width / height - 4 / 3) < 1e-3 else 0.4985 * width
    return CameraIntrinsics(width=width, height=height, fx=f, fy=f, cx=(width - 1) / 2 - 0.7, cy=(height - 1) / 2 + 1.4)


def _rotation_xyz(rx: float, ry: float, rz: float) -> np.ndarray:
    """(3, 3) R = Rz(rz) Ry(ry) Rx(rx) (extrinsic x, y, z rotations, rad), scipy
    `Rotation.from_euler("xyz", ...)`."""
    return Rotation.from_euler("xyz", [rx, ry, rz]).as_matrix()


@dataclass(frozen=True)
class SyntheticScene:
    """Geometry of the synthetic depth image.

    A plane n . X = d in the DEPTH camera frame (X in metres, optical frame), `plane_normal`
    (unit, pointing away from the camera) and `plane_distance_m` (d); `hole_px` = (u0, v0, u1, v1)
    depth-image rectangle without data (0). depth->colour extrinsics: X_c = R X_d + t with
    R = Rz Ry Rx(`depth_to_color_rpy_rad`), t = `depth_to_color_t_m`.
    """

    plane_normal: tuple[float, float, float] = (0.08, -0.15, 0.985)
    plane_distance_m: float = 0.75
    hole_px: tuple[int, int, int, int] = (300, 180, 350, 230)
    depth_to_color_t_m: tuple[float, float, float] = (0.0148, 0.0001, 0.0003)
    depth_to_color_rpy_rad: tuple[float, float, float] = (0.002, -0.003, 0.001)

    def normal(self) -> np.ndarray:
        n = np.asarray(self.plane_normal, dtype=float)
        return n / np.linalg.norm(n)

    def rotation(self) -> np.ndarray:
        """(3, 3) R of depth -> colour (row-major)."""
        return _rotation_xyz(*self.depth_to_color_rpy_rad)

    def plane_z_m(self, intr: CameraIntrinsics, normal: np.ndarray, distance_m: float) -> np.ndarray:
        """(H, W) float64 Z (m) where each pixel ray of `intr` hits the plane normal . X = distance."""
        u = np.arange(intr.width, dtype=float)
        v = np.arange(intr.height, dtype=float)
        xn = (u[None, :] - intr.cx) / intr.fx
        yn = (v[:, None] - intr.cy) / intr.fy
        return distance_m / (normal[0] * xn + normal[1] * yn + normal[2])  # (H, W)

    def depth_raw(self, intr: CameraIntrinsics) -> np.ndarray:
        """(H, W) uint16 depth image in DEPTH_UNITS_M units (Z16), 0 inside the hole."""
        z = self.plane_z_m(intr, self.normal(), self.plane_distance_m)
        raw = np.clip(np.round(z / DEPTH_UNITS_M), 0, 65535).astype(np.uint16)
        u0, v0, u1, v1 = self.hole_px
        raw[v0:v1, u0:u1] = 0
        return raw

    def expected_color_z_m(self, color: CameraIntrinsics) -> np.ndarray:
        """(H, W) float64 Z (m) of the plane seen from the COLOUR camera (what aligned depth must
        equal where it has data): the plane moved into the colour frame, n_c = R n,
        d_c = d + n_c . t."""
        n_c = self.rotation() @ self.normal()
        d_c = self.plane_distance_m + float(n_c @ np.asarray(self.depth_to_color_t_m))
        return self.plane_z_m(color, n_c, d_c)


def synthetic_rgb(frame_number: int, height: int, width: int) -> np.ndarray:
    """Deterministic (H, W, 3) uint8 test image of frame `frame_number`: R = column ramp,
    G = row ramp, B = (frame_number * 7 + (u + v) // 8) mod 256 (differs every frame)."""
    u = np.arange(width, dtype=np.int64)[None, :]
    v = np.arange(height, dtype=np.int64)[:, None]
    r = np.broadcast_to(u % 256, (height, width))
    g = np.broadcast_to(v % 256, (height, width))
    b = (frame_number * 7 + (u + v) // 8) % 256
    return np.stack([r, g, b], axis=-1).astype(np.uint8)  # (H, W, 3)


@dataclass(frozen=True)
class SyntheticRecording:
    """What `write_synthetic_recording` wrote (the ground truth tests compare against).

    frame_numbers: emitted frame numbers in order; timestamps_ms: their device timestamps (ms,
    `timestamp_domain`); color/depth intrinsics with their librealsense distortion model names;
    depth_to_color_rotation (3, 3) row-major and translation (3,) m; options: {sensor: {name: value}}
    as recorded (RGB exposure in 100 us units).
    """

    path: Path
    width: int
    height: int
    fps: int
    serial: str
    name: str
    firmware_version: str
    frame_numbers: tuple[int, ...]
    timestamps_ms: tuple[float, ...]
    timestamp_domain: str
    color_intrinsics: CameraIntrinsics
    color_model: str
    depth_intrinsics: CameraIntrinsics | None
    depth_model: str
    depth_to_color_rotation: np.ndarray
    depth_to_color_translation_m: np.ndarray
    depth_scale_m: float
    scene: SyntheticScene
    options: dict[str, dict[str, float]] = field(default_factory=dict)


def _rs():
    import pyrealsense2 as rs

    return rs


def _add_option(sensor, option, lo: float, hi: float, step: float, default: float, value: float) -> None:
    """Register a writable option on a software sensor and set it to `value`.

    pyrealsense2 2.59.1 passes option_range's `step` as the default and `default` as the step
    (measured); the range is built accordingly and checked after registration, so a fixed
    binding also works.
    """
    rs = _rs()
    for rng in (rs.option_range(lo, hi, default, step), rs.option_range(lo, hi, step, default)):
        try:
            sensor.add_option(option, rng, True)
        except RuntimeError:
            continue
        got = sensor.get_option_range(option)
        if math.isclose(got.step, step) and math.isclose(got.default, default):
            break
    else:
        raise RuntimeError(f"cannot register option {option} with range [{lo}, {hi}] step {step} default {default}")
    sensor.set_option(option, float(value))


def _rs_intrinsics(intr: CameraIntrinsics, model):
    rs = _rs()
    i = rs.intrinsics()
    i.width, i.height = intr.width, intr.height
    i.fx, i.fy, i.ppx, i.ppy = intr.fx, intr.fy, intr.cx, intr.cy
    i.model = model
    i.coeffs = [float(c) for c in intr.distortion]
    return i


def write_synthetic_recording(
    path: str | Path,
    *,
    n_frames: int = 10,
    width: int = 640,
    height: int = 480,
    fps: int = 30,
    enable_depth: bool = True,
    skip_frame_numbers: Sequence[int] = (),
    serial: str = DEFAULT_SERIAL,
    name: str = DEFAULT_NAME,
    firmware_version: str = DEFAULT_FIRMWARE,
    usb_type: str = "3.2",
    timestamp_domain: str = "global_time",
    start_time_ms: float | None = None,
    exposure_us: float = 15600.0,
    white_balance_k: float = 4600.0,
    gain: int = 64,
    power_line_frequency: int = 1,
    depth_exposure_us: float = 0.0,
    color_distortion: Sequence[float] = (0.0, 0.0, 0.0, 0.0, 0.0),
    scene: SyntheticScene = SyntheticScene(),
    pace_s: float = 0.0,
) -> SyntheticRecording:
    """Write a synthetic D435 recording to `path` (must end in `.db3`) and return its ground truth.

    n_frames: frames 0 .. n_frames-1, minus `skip_frame_numbers` (left out: a dropped-frame gap).
    timestamp_domain: "global_time" | "hardware_clock" | "system_time" (docs/hardware.md §3.5);
    start_time_ms: timestamp of frame 0 in ms (default: host wall-clock time now, as global time
    would report). exposure_us (multiple of 100), white_balance_k, gain, power_line_frequency
    (0 off / 1 50 Hz / 2 60 Hz), depth_exposure_us (0 = depth auto exposure on) are set on the
    software sensors' registered options and so recorded. color_distortion: 5 inverse Brown-Conrady
    coefficients of the colour stream. pace_s: sleep between frames (the recorder stamps messages
    with arrival time, so real-time playback replays this spacing; 0 = as fast as possible).

    Raises ValueError on bad arguments, RuntimeError if librealsense refuses the device.
    Frames are recorded uncompressed, so colour pixels play back exactly.
    """
    rs = _rs()
    path = Path(path)
    if path.suffix != ".db3":
        raise ValueError(f"librealsense 2.59 records to .db3 (rosbag2 sqlite) only, got {path.name!r}")
    if n_frames < 1 or fps < 1 or width < 2 or height < 2:
        raise ValueError("n_frames, fps must be >= 1 and width, height >= 2")
    domains = {"global_time": rs.timestamp_domain.global_time, "hardware_clock": rs.timestamp_domain.hardware_clock,
               "system_time": rs.timestamp_domain.system_time}
    if timestamp_domain not in domains:
        raise ValueError(f"timestamp_domain must be one of {sorted(domains)}, got {timestamp_domain!r}")
    if len(color_distortion) != 5:
        raise ValueError("color_distortion needs 5 coefficients (k1, k2, p1, p2, k3)")
    exposure_units = exposure_us / 100.0
    if abs(exposure_units - round(exposure_units)) > 1e-9:
        raise ValueError(f"exposure_us must be a multiple of 100, got {exposure_us}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    if start_time_ms is None:
        start_time_ms = time.time() * 1e3
    skip = {int(n) for n in skip_frame_numbers}
    numbers = tuple(n for n in range(n_frames) if n not in skip)
    stamps = tuple(start_time_ms + n * 1000.0 / fps for n in numbers)

    color_intr = d435_color_intrinsics(width, height)
    color_intr = CameraIntrinsics(color_intr.width, color_intr.height, color_intr.fx, color_intr.fy,
                                  color_intr.cx, color_intr.cy, tuple(float(c) for c in color_distortion))
    depth_intr = d435_depth_intrinsics(width, height) if enable_depth else None
    rot = scene.rotation()
    trans = np.asarray(scene.depth_to_color_t_m, dtype=float)

    dev = rs.software_device()
    dev.register_info(rs.camera_info.name, name)
    dev.register_info(rs.camera_info.serial_number, serial)
    dev.register_info(rs.camera_info.firmware_version, firmware_version)
    dev.register_info(rs.camera_info.product_line, "D400")
    dev.register_info(rs.camera_info.product_id, "0B07")
    dev.register_info(rs.camera_info.usb_type_descriptor, usb_type)
    options: dict[str, dict[str, float]] = {"color": {}, "depth": {}}

    depth_sensor = depth_profile = None
    if enable_depth:
        depth_sensor = dev.add_sensor("Stereo Module")
        vs = rs.video_stream()
        vs.type, vs.index, vs.uid = rs.stream.depth, 0, 0
        vs.width, vs.height, vs.fps, vs.bpp, vs.fmt = width, height, fps, 2, rs.format.z16
        vs.intrinsics = _rs_intrinsics(depth_intr, rs.distortion.brown_conrady)
        depth_profile = depth_sensor.add_video_stream(vs, True)
        depth_sensor.add_read_only_option(rs.option.depth_units, DEPTH_UNITS_M)
        _add_option(depth_sensor, rs.option.enable_auto_exposure, 0, 1, 1, 1, 0 if depth_exposure_us > 0 else 1)
        _add_option(depth_sensor, rs.option.exposure, 1, 200000, 1, 8500, depth_exposure_us or 8500)
        _add_option(depth_sensor, rs.option.global_time_enabled, 0, 1, 1, 1, 1)
        options["depth"] = {"enable_auto_exposure": 0.0 if depth_exposure_us > 0 else 1.0,
                            "exposure": float(depth_exposure_us or 8500), "depth_units": DEPTH_UNITS_M}
    color_sensor = dev.add_sensor("RGB Camera")
    cs = rs.video_stream()
    cs.type, cs.index, cs.uid = rs.stream.color, 0, 1
    cs.width, cs.height, cs.fps, cs.bpp, cs.fmt = width, height, fps, 3, rs.format.rgb8
    cs.intrinsics = _rs_intrinsics(color_intr, rs.distortion.inverse_brown_conrady)
    color_profile = color_sensor.add_video_stream(cs, True)
    # Order as RealSenseCamera sets them: auto modes off first, then the fixed values.
    _add_option(color_sensor, rs.option.enable_auto_exposure, 0, 1, 1, 1, 0)
    _add_option(color_sensor, rs.option.enable_auto_white_balance, 0, 1, 1, 1, 0)
    _add_option(color_sensor, rs.option.exposure, 1, 10000, 1, 156, round(exposure_units))
    _add_option(color_sensor, rs.option.white_balance, 2800, 6500, 10, 4600, white_balance_k)
    _add_option(color_sensor, rs.option.gain, 0, 128, 1, 64, gain)
    _add_option(color_sensor, rs.option.power_line_frequency, 0, 3, 1, 3, power_line_frequency)
    _add_option(color_sensor, rs.option.global_time_enabled, 0, 1, 1, 1, 1)
    options["color"] = {"enable_auto_exposure": 0.0, "enable_auto_white_balance": 0.0,
                        "exposure": float(round(exposure_units)), "white_balance": float(white_balance_k),
                        "gain": float(gain), "power_line_frequency": float(power_line_frequency)}
    if enable_depth:
        ext = rs.extrinsics()
        ext.rotation = [float(v) for v in rot.T.reshape(-1)]  # librealsense: column-major
        ext.translation = [float(v) for v in trans]
        depth_profile.register_extrinsics_to(color_profile, ext)

    recorder = rs.recorder(str(path), dev, False)  # False: no compression (exact pixels)
    try:
        sensors = [(color_sensor, color_profile)] + ([(depth_sensor, depth_profile)] if enable_depth else [])
        for s, p in sensors:
            s.open(p)
            s.start(lambda f: None)
        depth_raw = scene.depth_raw(depth_intr) if enable_depth else None
        t_pace0 = time.monotonic()
        for n, t_ms in zip(numbers, stamps):
            if enable_depth:
                depth_sensor.set_metadata(rs.frame_metadata_value.frame_counter, n)
                f = rs.software_video_frame()
                f.pixels, f.stride, f.bpp = depth_raw.tobytes(), 2 * width, 2
                f.timestamp, f.domain, f.frame_number = t_ms, domains[timestamp_domain], n
                f.profile, f.depth_units = depth_profile.as_video_stream_profile(), DEPTH_UNITS_M
                depth_sensor.on_video_frame(f)
            color_sensor.set_metadata(rs.frame_metadata_value.frame_counter, n)
            color_sensor.set_metadata(rs.frame_metadata_value.actual_exposure, int(round(exposure_units)))
            color_sensor.set_metadata(rs.frame_metadata_value.white_balance, int(round(white_balance_k)))
            color_sensor.set_metadata(rs.frame_metadata_value.gain_level, int(gain))
            color_sensor.set_metadata(rs.frame_metadata_value.auto_exposure, 0)
            f = rs.software_video_frame()
            f.pixels, f.stride, f.bpp = synthetic_rgb(n, height, width).tobytes(), 3 * width, 3
            f.timestamp, f.domain, f.frame_number = t_ms, domains[timestamp_domain], n
            f.profile = color_profile.as_video_stream_profile()
            color_sensor.on_video_frame(f)
            if pace_s > 0:  # absolute deadlines: the record times keep the frame spacing (no drift)
                time.sleep(max(0.0, t_pace0 + (n - numbers[0] + 1) * pace_s - time.monotonic()))
        for s, _ in sensors:
            s.stop()
            s.close()
    finally:
        del recorder  # the file is finalised when the recorder is destroyed
        gc.collect()
    if not path.is_file():
        raise RuntimeError(f"librealsense recorder wrote no file at {path}")
    return SyntheticRecording(
        path=path, width=width, height=height, fps=fps, serial=serial, name=name,
        firmware_version=firmware_version, frame_numbers=numbers, timestamps_ms=stamps,
        timestamp_domain=timestamp_domain, color_intrinsics=color_intr, color_model="inverse_brown_conrady",
        depth_intrinsics=depth_intr, depth_model="brown_conrady", depth_to_color_rotation=rot,
        depth_to_color_translation_m=trans, depth_scale_m=DEPTH_UNITS_M, scene=scene, options=options)


def main(argv: list[str] | None = None) -> int:
    """`python -m dynaflip_ros.cameras.realsense_playback OUT.db3`: write a synthetic recording."""
    p = argparse.ArgumentParser(
        prog="python -m dynaflip_ros.cameras.realsense_playback",
        description="Write a synthetic RealSense D435 recording (software device -> rs.recorder -> .db3) "
                    "that RealSenseCamera plays back (camera.realsense.playback_path).",
        epilog="example: python -m dynaflip_ros.cameras.realsense_playback /tmp/d435.db3 --frames 60 --fps 30")
    p.add_argument("out", help="output file, must end in .db3")
    p.add_argument("--frames", type=int, default=30, help="number of frames (default 30)")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--no-depth", action="store_true", help="colour stream only")
    p.add_argument("--pace", action="store_true", help="write at the frame rate (for real-time playback)")
    a = p.parse_args(argv)
    rec = write_synthetic_recording(a.out, n_frames=a.frames, width=a.width, height=a.height, fps=a.fps,
                                    enable_depth=not a.no_depth, pace_s=1.0 / a.fps if a.pace else 0.0)
    print(f"wrote {rec.path} ({len(rec.frame_numbers)} frames, {rec.width}x{rec.height} @ {rec.fps} fps, "
          f"{rec.path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
