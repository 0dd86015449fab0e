"""`RealSenseCamera`: an Intel RealSense D4xx (D435/D435i/D415/D405) as a `cameras.base.Camera`.

Live device or recorded file (`RealSenseConfig.playback_path`; `cameras/realsense_playback.py`
writes synthetic D435 recordings, which is how CI runs librealsense without hardware). Facts
used: HARDWARE.md §3. Sources of frames:
- live device, and real-time playback (`playback_realtime`): `rs.pipeline` (for a file through
  `rs.config.enable_device_from_file`) started with a frameset callback;
- non-real-time playback (default for files): the recording is loaded as a playback device
  (`rs.context().load_device`) whose sensors are started directly, in non-real-time mode from
  the first frame, colour and depth paired by capture time (`_FileReader`; measured: the
  pipeline on a file loses its first frames in some runs, which a deterministic test cannot have).

Pipeline (HARDWARE.md §3.8): colour RGB8 + depth Z16 at the same fps -> one
`rs.align(rs.stream.color)` block -> `Frame.rgb` (H, W, 3) uint8 and `Frame.depth` (H, W)
float32 metres on the colour pixel grid = raw Z16 x depth scale (0 = no data, holes and occlusion
shadows of the alignment stay 0). `Frame.intrinsics` = the colour stream profile's intrinsics
(distortion coefficients in OpenCV order k1, k2, p1, p2, k3; librealsense's model name in
`RealSenseCamera.rs_distortion_model`, its ROS name in `distortion_model`).
`Frame.sequence` = the colour frame number of the device.

Fixed settings (experiment conditions): on connect the colour sensor's auto exposure and auto
white balance are switched off, exposure (100 us units), white balance (K), gain and power-line
frequency are written, optionally the depth exposure (us), then every value is read back
(HARDWARE.md §3.7). A refused or differing value raises CameraError (`strict_settings`) or is
logged; a recording cannot be configured, so its recorded values are only compared (warning).
`settings()` returns all of it for the recorder's per-episode provenance log.

Timestamps (HARDWARE.md §3.5; `frame.get_timestamp()` is in ms). `Frame.stamp_s` is the capture
time on the HOST monotonic clock (`time.monotonic()`), mapped by `DeviceClockMapper`:
- live, global_time / system_time domain: those timestamps are host wall-clock ms
  (CLOCK_REALTIME, librealsense maps the device clock onto it), so
  stamp_s = t_ms / 1000 - (wall - monotonic), the offset sampled at connect (the tightest of 5
  bracketed readings) and re-sampled every `refresh_s` (1 s) so NTP slews are followed;
- live, hardware_clock domain (no global time / no metadata): device clock with an unknown
  epoch; offset = min over frames of (arrival monotonic - t_ms / 1000), i.e. the lowest
  observed transport latency is absorbed into the offset (stamps are late by at most the
  minimum latency); a backwards jump (32-bit clock wrap) restarts the estimate;
- playback: the recorded times are from another session, so the first frame is anchored to the
  monotonic time it is read and later frames keep the recorded spacing exactly.
Dropped frames: gaps in the colour (and depth) frame numbers of every frameset the pipeline
delivers (`dropped_frames`, `dropped_depth_frames`).

Reading: a live camera (and real-time playback) delivers framesets to a callback that keeps
only the newest one; `read()` returns the newest frame not returned before (a 10 Hz reader of a
30 fps stream gets fresh frames, skipped frames are not "dropped"). Non-real-time playback reads
every recorded frame in order, one per `read()` (deterministic). Counters restart at connect().
"""
from __future__ import annotations

import logging
import math
import queue
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np

from dynaflip_ros.cameras.base import CameraError, CameraIntrinsics, Frame
from dynaflip_ros.configs.realsense import RealSenseConfig

log = logging.getLogger(__name__)

OPTICAL_FRAME_ID = "camera_color_optical_frame"
# librealsense distortion model -> sensor_msgs/CameraInfo distortion_model (as realsense-ros
# publishes it: the Brown-Conrady variants as plumb_bob, Kannala-Brandt as equidistant).
ROS_DISTORTION_MODELS: dict[str, str] = {
    "none": "plumb_bob",
    "brown_conrady": "plumb_bob",
    "inverse_brown_conrady": "plumb_bob",
    "modified_brown_conrady": "plumb_bob",
    "kannala_brandt4": "equidistant",
}
# Timestamp domains whose values are host wall-clock milliseconds (HARDWARE.md §3.5).
WALL_CLOCK_DOMAINS = ("global_time", "system_time")


def _import_rs():
    try:
        import pyrealsense2 as rs
    except ImportError as e:  # pragma: no cover - pyrealsense2 is a base requirement
        raise CameraError("pyrealsense2 is not installed (pip install pyrealsense2; Debian: apt install "
                          f"libusb-1.0-0): {e}") from e
    return rs


def _enum_name(value: Any) -> str:
    """'timestamp_domain.global_time' -> 'global_time' (pybind11 enums)."""
    return str(value).rsplit(".", 1)[-1]


# ============================================================================ clock mapping
class DeviceClockMapper:
    """Maps device frame timestamps (ms, a `rs.timestamp_domain`) to host monotonic seconds.

    mode: "live" (wall-clock domains via the sampled wall -> monotonic offset, hardware clock via
    a minimum-latency offset) or "playback" (first frame anchored at its read time). See the
    module docstring for the model. `monotonic` / `wall` clocks (float seconds) are injectable
    for tests; `refresh_s` is the wall -> monotonic offset re-sampling period.
    """

    def __init__(self, mode: str = "live", monotonic: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, refresh_s: float = 1.0) -> None:
        if mode not in ("live", "playback"):
            raise ValueError(f"DeviceClockMapper mode must be 'live' or 'playback', got {mode!r}")
        self.mode = mode
        self._mono = monotonic
        self._wall = wall
        self.refresh_s = refresh_s
        self.wall_minus_mono_s: float | None = None
        self._sampled_at_mono = -math.inf
        self._hw_offset_s: float | None = None
        self._hw_last_ms: float | None = None
        self._anchor_offset_s: float | None = None
        self.last_domain: str | None = None
        self.sample_offset()

    def sample_offset(self) -> float:
        """Sample wall - monotonic (s): the tightest of 5 (mono, wall, mono) brackets."""
        best = None
        for _ in range(5):
            m0 = self._mono()
            w = self._wall()
            m1 = self._mono()
            if best is None or m1 - m0 < best[0]:
                best = (m1 - m0, w - 0.5 * (m0 + m1))
        self.wall_minus_mono_s = best[1]
        self._sampled_at_mono = self._mono()
        return self.wall_minus_mono_s

    def to_monotonic(self, t_ms: float, domain: str, arrival_mono_s: float) -> float:
        """Device timestamp `t_ms` (ms) in `domain` ("global_time" | "system_time" |
        "hardware_clock"), received at host monotonic `arrival_mono_s` -> host monotonic s."""
        t_s = float(t_ms) * 1e-3
        self.last_domain = domain
        if self.mode == "playback":
            if self._anchor_offset_s is None:
                self._anchor_offset_s = arrival_mono_s - t_s
            return t_s + self._anchor_offset_s
        if domain in WALL_CLOCK_DOMAINS:
            if self._mono() - self._sampled_at_mono >= self.refresh_s:
                self.sample_offset()
            return t_s - self.wall_minus_mono_s
        if domain != "hardware_clock":
            raise CameraError(f"unknown timestamp domain {domain!r}")
        if self._hw_last_ms is not None and t_ms < self._hw_last_ms - 1000.0:  # clock wrap / reset
            self._hw_offset_s = None
        self._hw_last_ms = float(t_ms)
        candidate = arrival_mono_s - t_s
        if self._hw_offset_s is None or candidate < self._hw_offset_s:
            self._hw_offset_s = candidate
        return t_s + self._hw_offset_s

    def describe(self) -> dict[str, Any]:
        """The current mapping (for provenance logs)."""
        return {"mode": self.mode, "domain": self.last_domain, "wall_minus_monotonic_s": self.wall_minus_mono_s,
                "hardware_clock_offset_s": self._hw_offset_s, "playback_anchor_offset_s": self._anchor_offset_s,
                "refresh_s": self.refresh_s}


# ============================================================================ settings
def _option(rs, name: str):
    return getattr(rs.option, name)


def fixed_setting_targets(config: RealSenseConfig) -> dict[str, list[tuple[str, float]]]:
    """{"color": [(option name, value)], "depth": [...]} in the order they must be written
    (auto modes off before the manual values; HARDWARE.md §3.7 units: RGB exposure in 100 us)."""
    color = [("enable_auto_exposure", 0.0), ("enable_auto_white_balance", 0.0),
             ("exposure", float(config.exposure_units)), ("white_balance", float(config.white_balance_k)),
             ("gain", float(config.gain)), ("power_line_frequency", float(config.power_line_frequency_value))]
    depth: list[tuple[str, float]] = []
    if config.enable_depth and config.depth_exposure_us > 0:
        depth = [("enable_auto_exposure", 0.0), ("exposure", float(config.depth_exposure_us))]
    return {"color": color, "depth": depth}


def apply_fixed_settings(sensor, targets: list[tuple[str, float]], write: bool, what: str) -> tuple[dict[str, float], list[str]]:
    """Write (if `write`) each (option, value) of `targets` to the librealsense `sensor` and read
    it back. Returns ({option: read-back value}, [problem descriptions]): unsupported option,
    read-only option (when writing), value out of the option's range, refused set, or a read-back
    that differs from the target by more than half the option's step."""
    rs = _import_rs()
    readback: dict[str, float] = {}
    problems: list[str] = []
    for name, value in targets:
        opt = _option(rs, name)
        if not sensor.supports(opt):
            problems.append(f"{what} sensor does not support option {name}")
            continue
        rng = sensor.get_option_range(opt)
        if write:
            if sensor.is_option_read_only(opt):
                problems.append(f"{what} option {name} is read-only (wanted {value:g})")
            elif not rng.min - 1e-9 <= value <= rng.max + 1e-9:
                problems.append(f"{what} option {name} = {value:g} is outside the device range "
                                f"[{rng.min:g}, {rng.max:g}]")
            else:
                try:
                    sensor.set_option(opt, float(value))
                except RuntimeError as e:
                    problems.append(f"{what} refused {name} = {value:g}: {e}")
        got = float(sensor.get_option(opt))
        readback[name] = got
        tol = max(0.5 * float(rng.step or 0.0), 1e-6 * max(1.0, abs(value)))
        if abs(got - value) > tol:
            problems.append(f"{what} option {name} reads back {got:g}, expected {value:g}")
    return readback, problems


def _all_options(rs, sensor) -> dict[str, float]:
    out: dict[str, float] = {}
    for opt in sensor.get_supported_options():
        try:
            out[_enum_name(opt)] = float(sensor.get_option(opt))
        except RuntimeError:  # some options are readable only while streaming
            continue
    return out


def _intrinsics_dict(i) -> dict[str, Any]:
    return {"width": i.width, "height": i.height, "fx": i.fx, "fy": i.fy, "ppx": i.ppx, "ppy": i.ppy,
            "model": _enum_name(i.model), "coeffs": [float(c) for c in i.coeffs]}


def _device_infos(rs, dev) -> dict[str, str]:
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
    when the device is connected over it (USB 2 exposes a small subset, HARDWARE.md §3.2)."""
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
            raise CameraError(f"RealSense {_enum_name(stream)} mode {w}x{h} @ {config.fps} fps "
                              f"{_enum_name(fmt).upper()} is not offered by this device{usb_note}; offered: {listing}")
    if usb.startswith("2"):
        log.warning("RealSense connected over USB %s: bandwidth is limited (use USB 3)", usb)


def stream_sensors(rs, dev):
    """(colour sensor, depth sensor or None): the sensors whose profiles stream colour / depth
    (on a D405 both are the stereo module: colour comes from the depth imager, HARDWARE.md §3.1)."""
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


def configure_fixed_settings(rs, dev, config: RealSenseConfig, write: bool
                             ) -> tuple[dict[str, dict[str, float]], list[str], float]:
    """Write (live: `write`) and read back the fixed colour / depth settings of `dev`.

    Returns ({"color": {option: read-back}, "depth": {...}}, problems, colour exposure unit in us).
    The colour exposure is written in the RGB sensor's 100 us units (HARDWARE.md §3.7); when the
    colour stream comes from the depth sensor (D405) that sensor's exposure is in us, so
    exposure_us is written as is, and a different depth_exposure_us is reported as a problem.
    """
    color, depth = stream_sensors(rs, dev)
    targets = fixed_setting_targets(config)
    shared = rs.stream.depth in {p.stream_type() for p in color.get_stream_profiles()}  # D405
    unit_us = 1.0 if shared else 100.0
    if shared:
        targets["color"] = [(n, float(config.exposure_us)) if n == "exposure" else (n, v) for n, v in targets["color"]]
        targets["depth"] = []
    readback, problems = apply_fixed_settings(color, targets["color"], write, "colour")
    out = {"color": readback, "depth": {}}
    if shared and config.depth_exposure_us and config.depth_exposure_us != config.exposure_us:
        problems.append(f"colour and depth share one imager (D405): depth_exposure_us {config.depth_exposure_us:g} "
                        f"cannot differ from exposure_us {config.exposure_us:g}")
    if targets["depth"]:
        if depth is None:
            problems.append("no depth sensor for depth_exposure_us")
        else:
            rb, p = apply_fixed_settings(depth, targets["depth"], write, "depth")
            out["depth"] = rb
            problems += p
    return out, problems, unit_us


# ============================================================================ file reader
class _FileReader:
    """Non-real-time playback of a recording, every frame in file order (deterministic).

    Measured with pyrealsense2 2.59.1: a pipeline started on a recording plays it in real time
    until `set_real_time(False)` can be called, and its syncer emits the first colour and depth
    frames unpaired, so frame 0 was lost in some runs. Here the playback device is loaded with
    `rs.context().load_device`, switched to non-real-time BEFORE its sensors start, and each
    sensor's frames go to a bounded queue whose blocking put holds the playback thread
    (back-pressure: nothing is dropped). Colour and depth frames are paired by capture time
    (within half a frame period) and joined into one frameset for `rs.align`.
    """

    def __init__(self, rs, path: Path, cfg: RealSenseConfig, depth_size: tuple[int, int] | None) -> None:
        self._rs = rs
        self._cfg = cfg
        try:
            self.device = rs.context().load_device(str(path))
        except RuntimeError as e:
            raise CameraError(f"cannot open RealSense recording {path}: {e}") from e
        self.playback = self.device.as_playback()
        self.playback.set_real_time(False)
        wanted = {"color": (rs.stream.color, rs.format.rgb8, (cfg.width, cfg.height))}
        if depth_size is not None:
            wanted["depth"] = (rs.stream.depth, rs.format.z16, depth_size)
        self.profiles: dict[str, Any] = {}
        self._sensor_of: dict[str, Any] = {}
        recorded = []
        for sensor in self.device.query_sensors():
            for prof in sensor.get_stream_profiles():
                if not prof.is_video_stream_profile():
                    continue
                v = prof.as_video_stream_profile()
                recorded.append(f"{_enum_name(prof.stream_type())} {v.width()}x{v.height()} "
                                f"{_enum_name(prof.format()).upper()} @ {prof.fps()}")
                for key, (stream, fmt, (w, h)) in wanted.items():
                    if (prof.stream_type() == stream and prof.format() == fmt and (v.width(), v.height()) == (w, h)
                            and prof.fps() == cfg.fps and key not in self.profiles):
                        self.profiles[key] = v
                        self._sensor_of[key] = sensor
        missing = [k for k in wanted if k not in self.profiles]
        if missing:
            want = f"colour {cfg.width}x{cfg.height} RGB8" + (
                f" + depth {depth_size[0]}x{depth_size[1]} Z16" if depth_size else "")
            raise CameraError(f"RealSense recording {path} cannot play {want} @ {cfg.fps} fps (no {missing} "
                              f"stream); it holds: {recorded}")
        self._queues = {k: queue.Queue(maxsize=4) for k in self.profiles}
        self._stopping = threading.Event()
        self._pending_depth = None
        self._started: list[Any] = []
        self._compose_depth = None
        self._composer = rs.processing_block(self._compose)
        self._composed = rs.frame_queue(2, True)
        self._composer.start(self._composed)
        self.unpaired = 0
        self._resumed_at = math.inf

    def start(self) -> None:
        """Open and start the sensors while the playback is paused (measured: otherwise the
        playback starts with the first sensor and the other one misses its first frames)."""
        by_sensor: dict[int, tuple[Any, list]] = {}
        for key, prof in self.profiles.items():
            sensor = self._sensor_of[key]
            by_sensor.setdefault(id(sensor), (sensor, []))[1].append((key, prof))
        for sensor, items in by_sensor.values():
            sensor.open([prof for _, prof in items])
        self.playback.pause()
        for sensor, items in by_sensor.values():
            sensor.start(self._make_callback({prof.stream_type(): key for key, prof in items}))
            self._started.append(sensor)
        self.playback.resume()
        self._resumed_at = time.monotonic()

    def _make_callback(self, key_of_stream: dict):
        def on_frame(frame) -> None:
            key = key_of_stream.get(frame.get_profile().stream_type())
            if key is None:
                return
            frame.keep()
            while not self._stopping.is_set():  # back-pressure on the playback thread
                try:
                    self._queues[key].put(frame, timeout=0.05)
                    return
                except queue.Full:
                    continue
        return on_frame

    def _compose(self, frame, source) -> None:
        frames = [frame] if self._compose_depth is None else [self._compose_depth, frame]
        source.frame_ready(source.allocate_composite_frame(frames))

    def _get(self, key: str, deadline: float, mono: Callable[[], float]):
        """Next frame of stream `key`; None at the end of the recording; CameraError on timeout."""
        rs = self._rs
        while True:
            try:
                return self._queues[key].get(timeout=0.05)
            except queue.Empty:
                pass
            if (self.playback.current_status() == rs.playback_status.stopped and self._queues[key].empty()
                    and time.monotonic() - self._resumed_at > 0.2):
                return None
            if mono() > deadline:
                raise CameraError(f"no frame from RealSense recording {self._cfg.playback_path} within "
                                  f"{self._cfg.frame_timeout_s:g} s")

    def next_frameset(self, deadline: float, mono: Callable[[], float]):
        """The next frameset (colour, + the depth frame captured within half a frame period), or
        None at the end of the recording."""
        half_period_ms = 500.0 / self._cfg.fps
        while True:
            color = self._get("color", deadline, mono)
            if color is None:
                return None
            depth = None
            if "depth" in self._queues:
                t_c = color.get_timestamp()
                while True:
                    d = self._pending_depth if self._pending_depth is not None else self._get("depth", deadline, mono)
                    self._pending_depth = None
                    if d is None:
                        return None
                    t_d = d.get_timestamp()
                    if t_d < t_c - half_period_ms:  # depth without its colour frame: skip it
                        continue
                    if t_d > t_c + half_period_ms:  # colour without its depth frame: keep the depth
                        self._pending_depth = d
                        break
                    depth = d
                    break
                if depth is None:
                    self.unpaired += 1
                    continue
            self._compose_depth = depth
            self._composer.invoke(color)
            self._compose_depth = None
            fs = self._composed.wait_for_frame(5000)
            return fs.as_frameset()

    def stop(self) -> None:
        self._stopping.set()
        for q in self._queues.values():  # release a blocked playback thread
            while not q.empty():
                q.get_nowait()
        for sensor in self._started:
            for call in (sensor.stop, sensor.close):
                try:
                    call()
                except RuntimeError as e:
                    log.warning("RealSense playback sensor %s: %s", call.__name__, e)
        self._started = []


# ============================================================================ camera
class RealSenseCamera:
    """Intel RealSense D4xx RGB-D camera (implements `cameras.base.Camera`).

    Args:
        config: RealSenseConfig (configs/realsense.py); None = defaults (the only connected device).
        frame_id: optical frame name put in each Frame.
        monotonic, wall: host clocks (s), injectable for tests.
    Attributes after connect(): intrinsics, distortion_model (ROS name), rs_distortion_model,
    depth_scale_m, last_frame_info, dropped_frames, dropped_depth_frames, frames_read.
    `stamp_clock = "host_monotonic"`: Frame.stamp_s is on time.monotonic() (ROS nodes map it
    onto the ROS clock).
    """

    stamp_clock = "host_monotonic"

    def __init__(self, config: RealSenseConfig | None = None, frame_id: str = OPTICAL_FRAME_ID,
                 monotonic: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.config = config if config is not None else RealSenseConfig()
        if not isinstance(self.config, RealSenseConfig):
            raise TypeError(f"RealSenseCamera needs a RealSenseConfig, got {type(self.config).__name__}")
        self.frame_id = frame_id
        self._mono = monotonic
        self._wall = wall
        self._lock = threading.Condition()
        self._pipeline = None
        self._align = None
        self._device_info: dict[str, str] = {}
        self._intrinsics: CameraIntrinsics | None = None
        self.rs_distortion_model: str | None = None
        self.depth_scale_m: float | None = None
        self._settings: dict[str, Any] = {}
        self._clock: DeviceClockMapper | None = None
        self._connected = False
        self._connected_at = -math.inf
        self._reader: _FileReader | None = None
        self._latest: tuple[Any, float, int] | None = None  # (frameset, arrival monotonic s, colour no.)
        self._last_color_seen: int | None = None
        self._last_depth_seen: int | None = None
        self._last_returned: int | None = None
        self._accepting = False
        self._playback = None
        self._readback: dict[str, dict[str, float]] = {}
        self._problems: list[str] = []
        self._exposure_unit_us = 100.0
        self.dropped_frames = 0
        self.dropped_depth_frames = 0
        self.unpaired_framesets = 0
        self.frames_read = 0
        self.last_frame_info: dict[str, Any] | None = None

    # ------------------------------------------------------------------ properties
    @property
    def is_playback(self) -> bool:
        return bool(self.config.playback_path)

    @property
    def intrinsics(self) -> CameraIntrinsics:
        """Colour intrinsics (from the colour stream profile). Raises CameraError before connect()."""
        if self._intrinsics is None:
            raise CameraError("RealSenseCamera is not connected (call connect())")
        return self._intrinsics

    @property
    def distortion_model(self) -> str:
        """sensor_msgs/CameraInfo distortion_model of the colour stream ("plumb_bob" on D4xx)."""
        if self.rs_distortion_model is None:
            raise CameraError("RealSenseCamera is not connected (call connect())")
        return ROS_DISTORTION_MODELS.get(self.rs_distortion_model, "plumb_bob")

    # ------------------------------------------------------------------ Camera protocol
    def connect(self) -> None:
        """Open the device (or recording), check the stream modes, write and verify the fixed
        settings, start the pipeline. Idempotent.

        Raises CameraError: pyrealsense2 missing, no device, several devices and no serial,
        serial not found, mode not offered (USB 2 named when that is why), recording missing or
        without the configured streams, settings refused (strict_settings).
        """
        if self._connected:
            return
        rs = _import_rs()
        cfg = self.config
        rs_cfg = rs.config()
        device_serial = None
        with self._lock:
            self._latest = None
            self._last_color_seen = self._last_depth_seen = self._last_returned = None
            self.dropped_frames = self.dropped_depth_frames = self.unpaired_framesets = self.frames_read = 0
            self.last_frame_info = None
        if self.is_playback:
            path = Path(cfg.playback_path).expanduser()
            if not path.is_file():
                raise CameraError(f"RealSense recording {path} does not exist")
            depth_size = (cfg.width, cfg.height)
            if not cfg.playback_realtime:
                self._connect_file_reader(rs, path, depth_size)
                return
            rs_cfg.enable_device_from_file(str(path), False)  # False: no repeat, the file ends
        else:
            dev = self._find_device(rs)
            device_serial = dev.get_info(rs.camera_info.serial_number)
            check_live_modes(rs, dev, cfg)
            depth_size = cfg.depth_mode()
            rs_cfg.enable_device(device_serial)
            problems = self._configure(rs, dev, write=True)
            self._report_problems(problems, live=True)
        rs_cfg.enable_stream(rs.stream.color, cfg.width, cfg.height, rs.format.rgb8, cfg.fps)
        if cfg.enable_depth:
            rs_cfg.enable_stream(rs.stream.depth, depth_size[0], depth_size[1], rs.format.z16, cfg.fps)
        pipeline = rs.pipeline()
        with self._lock:
            self._accepting = True
        try:
            profile = pipeline.start(rs_cfg, self._on_frameset)
        except RuntimeError as e:
            self._accepting = False
            raise CameraError(self._start_error(rs, e, depth_size)) from e
        try:
            dev = profile.get_device()
            if self.is_playback:
                self._playback = dev.as_playback()
                problems = self._configure(rs, dev, write=False)
                self._report_problems(problems, live=False)
            else:
                self._set_global_time(rs, dev)
            streams = {"color": profile.get_stream(rs.stream.color).as_video_stream_profile()}
            if cfg.enable_depth:
                streams["depth"] = profile.get_stream(rs.stream.depth).as_video_stream_profile()
            self._read_stream_facts(rs, streams, dev)
        except Exception:
            self._accepting = False
            pipeline.stop()
            raise
        self._clock = DeviceClockMapper("playback" if self.is_playback else "live", self._mono, self._wall)
        self._align = rs.align(rs.stream.color) if cfg.enable_depth else None
        with self._lock:
            self._pipeline = pipeline
            self._connected = True
            self._connected_at = self._mono()
        log.info("RealSense %s (%s) streaming colour %dx%d @ %d fps%s", self._device_info.get("name", "?"),
                 cfg.playback_path or device_serial, cfg.width, cfg.height, cfg.fps,
                 f" + depth {depth_size[0]}x{depth_size[1]}" if cfg.enable_depth else "")

    def _connect_file_reader(self, rs, path: Path, depth_size: tuple[int, int]) -> None:
        cfg = self.config
        reader = _FileReader(rs, path, cfg, depth_size if cfg.enable_depth else None)
        problems = self._configure(rs, reader.device, write=False)
        self._report_problems(problems, live=False)
        self._read_stream_facts(rs, reader.profiles, reader.device)
        self._clock = DeviceClockMapper("playback", self._mono, self._wall)
        self._align = rs.align(rs.stream.color) if cfg.enable_depth else None
        reader.start()
        with self._lock:
            self._reader = reader
            self._playback = reader.playback
            self._connected = True
        log.info("RealSense recording %s (%s) playing colour %dx%d @ %d fps%s, every frame in order", path,
                 self._device_info.get("name", "?"), cfg.width, cfg.height, cfg.fps,
                 " + depth" if cfg.enable_depth else "")

    def read(self) -> Frame:
        """The next colour (+ aligned depth) frame.

        rgb (H, W, 3) uint8 RGB; depth (H, W) float32 metres aligned to colour (0 = no data) or
        None; intrinsics = colour; stamp_s = capture time on the host monotonic clock;
        sequence = colour frame number. Raises CameraError when not connected, on timeout
        (`frame_timeout_s`), at the end of a recording, or when the device is lost.
        """
        with self._lock:
            if not self._connected:
                raise CameraError("RealSenseCamera is not connected (call connect())")
        deadline = self._mono() + self.config.frame_timeout_s
        fs, arrival = self._next_frameset(deadline)
        return self._to_frame(fs, arrival)

    def disconnect(self) -> None:
        """Stop the pipeline and release the device (idempotent)."""
        with self._lock:
            pipeline, self._pipeline = self._pipeline, None
            reader, self._reader = self._reader, None
            self._connected = False
            self._accepting = False
            self._latest = None
            self._lock.notify_all()
        self._playback = None
        if reader is not None:
            reader.stop()
        if pipeline is not None:
            try:
                pipeline.stop()
            except RuntimeError as e:  # already stopped / device gone
                log.warning("RealSense pipeline stop: %s", e)
        self._align = None

    # ------------------------------------------------------------------ provenance
    def settings(self) -> dict[str, Any]:
        """Everything that defines the experiment's imaging conditions (JSON-serialisable):
        backend, librealsense version, source (live / playback path), device info (name, serial,
        firmware, USB type), stream modes, colour and depth intrinsics, depth->colour extrinsics,
        depth scale (m), all readable sensor options, the fixed settings as read back (exposure
        in us and device units, white balance K, gain, auto modes), problems found, requested
        config, clock mapping, timestamp domain, frame / drop counters.
        Raises CameraError before connect()."""
        if not self._settings:
            raise CameraError("RealSenseCamera is not connected (call connect())")
        s = dict(self._settings)
        s["clock_mapping"] = self._clock.describe() if self._clock else None
        s["timestamp_domain"] = self._clock.last_domain if self._clock else None
        s["frames_read"] = self.frames_read
        s["dropped_frames"] = self.dropped_frames
        s["dropped_depth_frames"] = self.dropped_depth_frames
        return s

    # ------------------------------------------------------------------ connect helpers
    def _find_device(self, rs):
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
        if not self.config.serial:
            if len(devices) > 1:
                raise CameraError(f"{len(devices)} RealSense devices connected ({serials}); set "
                                  "camera.realsense.serial to choose one")
            return devices[0]
        for d, s in zip(devices, serials):
            if s == self.config.serial:
                return d
        raise CameraError(f"RealSense serial {self.config.serial!r} not found; connected: {serials}")

    def _configure(self, rs, dev, write: bool) -> list[str]:
        self._readback, problems, self._exposure_unit_us = configure_fixed_settings(rs, dev, self.config, write)
        self._problems = problems
        return problems

    def _report_problems(self, problems: list[str], live: bool) -> None:
        if not problems:
            return
        text = "; ".join(problems)
        if live and self.config.strict_settings:
            raise CameraError(f"RealSense fixed settings not applied (experiment conditions): {text}")
        where = "device" if live else f"recording {self.config.playback_path}"
        log.warning("RealSense %s does not hold the configured fixed settings: %s", where, text)

    def _set_global_time(self, rs, dev) -> None:
        """RS2_OPTION_GLOBAL_TIME_ENABLED on every sensor that has it, after the pipeline started
        (HARDWARE.md §3.5 [lrs-7614])."""
        want = 1.0 if self.config.global_time else 0.0
        for s in dev.query_sensors():
            if s.supports(rs.option.global_time_enabled) and not s.is_option_read_only(rs.option.global_time_enabled):
                try:
                    s.set_option(rs.option.global_time_enabled, want)
                except RuntimeError as e:
                    self._problems.append(f"global_time_enabled refused: {e}")
                if float(s.get_option(rs.option.global_time_enabled)) != want:
                    self._problems.append(f"{s.get_info(rs.camera_info.name)} global_time_enabled != {want:g}")
        if self._problems:
            log.warning("RealSense: %s", "; ".join(self._problems))

    def _start_error(self, rs, err: RuntimeError, depth_size) -> str:
        cfg = self.config
        want = f"colour {cfg.width}x{cfg.height} RGB8" + (f" + depth {depth_size[0]}x{depth_size[1]} Z16" if cfg.enable_depth else "")
        if not self.is_playback:
            return f"RealSense pipeline failed to start ({want} @ {cfg.fps} fps): {err}"
        recorded = []
        try:
            dev = rs.context().load_device(str(Path(cfg.playback_path).expanduser()))
            for s in dev.query_sensors():
                for p in s.get_stream_profiles():
                    if p.is_video_stream_profile():
                        v = p.as_video_stream_profile()
                        recorded.append(f"{_enum_name(p.stream_type())} {v.width()}x{v.height()} "
                                        f"{_enum_name(p.format()).upper()} @ {p.fps()}")
        except RuntimeError as e2:
            recorded.append(f"(unreadable: {e2})")
        return (f"RealSense recording {cfg.playback_path} cannot play {want} @ {cfg.fps} fps ({err}); "
                f"it holds: {recorded}")

    def _read_stream_facts(self, rs, profiles: dict[str, Any], dev) -> None:
        """Intrinsics, extrinsics, depth scale, device info and options -> self._settings.
        profiles: {"color": video_stream_profile, "depth": ... (with depth)}."""
        cfg = self.config
        cp = profiles["color"]
        ci = cp.get_intrinsics()
        self.rs_distortion_model = _enum_name(ci.model)
        coeffs = tuple(float(c) for c in ci.coeffs)
        self._intrinsics = CameraIntrinsics(width=ci.width, height=ci.height, fx=float(ci.fx), fy=float(ci.fy),
                                            cx=float(ci.ppx), cy=float(ci.ppy), distortion=coeffs)
        streams = {"color": {"width": cp.width(), "height": cp.height(), "fps": cp.fps(),
                             "format": _enum_name(cp.format())}}
        color_sensor, depth_sensor = stream_sensors(rs, dev)
        depth_info = extr = None
        if cfg.enable_depth:
            if depth_sensor is None or not depth_sensor.is_depth_sensor():
                raise CameraError("the RealSense device has no depth sensor (set enable_depth=False)")
            self.depth_scale_m = float(depth_sensor.as_depth_sensor().get_depth_scale())
            dp = profiles["depth"]
            depth_info = _intrinsics_dict(dp.get_intrinsics())
            streams["depth"] = {"width": dp.width(), "height": dp.height(), "fps": dp.fps(),
                                "format": _enum_name(dp.format())}
            e = dp.get_extrinsics_to(cp)
            extr = {"rotation_row_major": np.asarray(e.rotation, dtype=float).reshape(3, 3).T.reshape(-1).tolist(),
                    "translation_m": [float(v) for v in e.translation]}
        self._device_info = _device_infos(rs, dev)
        rb = self._readback
        color_rb = rb.get("color", {})
        fixed = {
            "auto_exposure": bool(color_rb.get("enable_auto_exposure", math.nan)),
            "auto_white_balance": bool(color_rb.get("enable_auto_white_balance", math.nan)),
            "exposure_device_units": color_rb.get("exposure"),
            "exposure_unit_us": self._exposure_unit_us,
            "exposure_us": None if "exposure" not in color_rb else color_rb["exposure"] * self._exposure_unit_us,
            "white_balance_k": color_rb.get("white_balance"),
            "gain": color_rb.get("gain"),
            "power_line_frequency": color_rb.get("power_line_frequency"),
            "depth_exposure_us": rb.get("depth", {}).get("exposure"),
        }
        self._settings = {
            "backend": "realsense",
            "librealsense_version": getattr(rs, "__version__", "unknown"),
            "source": "playback" if self.is_playback else "live",
            "playback_path": cfg.playback_path,
            "device": self._device_info,
            "streams": streams,
            "color_intrinsics": _intrinsics_dict(ci),
            "depth_intrinsics": depth_info,
            "depth_to_color_extrinsics": extr,
            "depth_scale_m": self.depth_scale_m,
            "align_depth_to_color": bool(cfg.enable_depth and cfg.align_depth_to_color),
            "fixed_settings": fixed,
            "settings_problems": list(self._problems),
            "options": {"color": _all_options(rs, color_sensor),
                        "depth": _all_options(rs, depth_sensor) if depth_sensor is not None else {}},
            "requested": asdict(cfg),
        }

    # ------------------------------------------------------------------ frames
    def _observe(self, fs) -> tuple[int, bool]:
        """Update the drop counters from a delivered frameset; returns (colour frame number,
        depth paired with this colour frame). Caller holds the lock."""
        c = fs.get_color_frame()
        if not c:
            return -1, False
        cn = int(c.get_frame_number())
        last = self._last_color_seen
        if last is not None and cn > last + 1:
            self.dropped_frames += cn - last - 1
        if last is None or cn > last or cn < last - 1000:  # < last - 1000: counter restarted
            self._last_color_seen = cn
        if not self.config.enable_depth:
            return cn, True
        d = fs.get_depth_frame()
        if not d:
            return cn, False
        dn = int(d.get_frame_number())
        dl = self._last_depth_seen
        if dl is not None and dn > dl + 1:
            self.dropped_depth_frames += dn - dl - 1
        if dl is None or dn > dl or dn < dl - 1000:
            self._last_depth_seen = dn
        # paired: capture times within half a frame period (the syncer may emit a new colour
        # frame with the previous depth frame before the matching one arrives)
        paired = abs(c.get_timestamp() - d.get_timestamp()) <= 500.0 / self.config.fps
        return cn, paired

    def _on_frameset(self, frame) -> None:
        """librealsense callback (its threads): keep the newest frameset."""
        arrival = self._mono()
        try:
            fs = frame.as_frameset()
        except RuntimeError:
            return
        with self._lock:
            if not self._accepting:
                return
            cn, paired = self._observe(fs)
            if cn < 0:
                return
            if not paired:
                self.unpaired_framesets += 1
                return
            fs.keep()
            self._latest = (fs, arrival, cn)
            self._lock.notify_all()

    def _is_new(self, cn: int) -> bool:
        last = self._last_returned
        return last is None or cn > last or cn < last - 1000

    def _next_frameset(self, deadline: float):
        if self._reader is not None:
            fs = self._reader.next_frameset(deadline, self._mono)
            if fs is None:
                raise CameraError(self._timeout_text())
            arrival = self._mono()
            with self._lock:
                self._observe(fs)
                self.unpaired_framesets = self._reader.unpaired
                self._last_returned = int(fs.get_color_frame().get_frame_number())
            return fs, arrival
        with self._lock:
            while True:
                if not self._connected:
                    raise CameraError("RealSenseCamera was disconnected")
                if self._latest is not None and self._is_new(self._latest[2]):
                    fs, arrival, cn = self._latest
                    self._last_returned = cn
                    return fs, arrival
                remaining = deadline - self._mono()
                ended = (self._playback is not None and self._mono() - self._connected_at > 1.0
                         and self._playback_stopped())
                if remaining <= 0 or ended:
                    raise CameraError(self._timeout_text())
                self._lock.wait(min(remaining, 0.1))

    def _playback_stopped(self) -> bool:
        rs = _import_rs()
        try:
            return self._playback.current_status() == rs.playback_status.stopped
        except RuntimeError:
            return True

    def _timeout_text(self) -> str:
        if self.is_playback:
            return (f"RealSense recording {self.config.playback_path} ended (or stalled) after "
                    f"{self.frames_read} frames")
        return (f"no RealSense frame within {self.config.frame_timeout_s:g} s (device unplugged, USB bandwidth, "
                f"or end of recording); {self.frames_read} frames read so far")

    def _to_frame(self, fs, arrival_mono_s: float) -> Frame:
        rs = _import_rs()
        try:
            if self._align is not None:
                fs = self._align.process(fs)
            c = fs.get_color_frame()
            rgb = np.array(c.get_data(), dtype=np.uint8, copy=True)  # (H, W, 3)
            depth = None
            if self.config.enable_depth:
                d = fs.get_depth_frame()
                depth = np.asarray(d.get_data(), dtype=np.uint16).astype(np.float32) * np.float32(self.depth_scale_m)
        except RuntimeError as e:
            raise CameraError(f"RealSense frame processing failed: {e}") from e
        if rgb.shape != (self.config.height, self.config.width, 3):
            raise CameraError(f"RealSense colour frame has shape {rgb.shape}, expected "
                              f"({self.config.height}, {self.config.width}, 3)")
        t_ms = float(c.get_timestamp())
        domain = _enum_name(c.get_frame_timestamp_domain())
        stamp_s = self._clock.to_monotonic(t_ms, domain, arrival_mono_s)
        meta = {}
        for key in ("frame_counter", "actual_exposure", "white_balance", "gain_level", "auto_exposure",
                    "sensor_timestamp", "time_of_arrival"):
            m = getattr(rs.frame_metadata_value, key)
            if c.supports_frame_metadata(m):
                meta[key] = int(c.get_frame_metadata(m))
        seq = int(c.get_frame_number())
        with self._lock:
            self.frames_read += 1
            self.last_frame_info = {
                "frame_number": seq, "depth_frame_number": int(fs.get_depth_frame().get_frame_number())
                if self.config.enable_depth else None,
                "timestamp_ms": t_ms, "timestamp_domain": domain, "stamp_s": stamp_s,
                "arrival_s": arrival_mono_s, "metadata": meta,
                "dropped_frames": self.dropped_frames, "dropped_depth_frames": self.dropped_depth_frames,
            }
        return Frame(rgb=rgb, depth=depth, intrinsics=self._intrinsics, stamp_s=stamp_s,
                     frame_id=self.frame_id, sequence=seq)
