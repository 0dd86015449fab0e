"""`RealSenseCamera`: an Intel RealSense D4xx (D435/D435i/D415/D405) as a `cameras.base.Camera`.

Live device or recorded file (`RealSenseConfig.playback_path`). Sources of frames:
- live device, and real-time playback (`playback_realtime`): `rs.pipeline` (for a file through
  `rs.config.enable_device_from_file`) started with a frameset callback;
- non-real-time playback (default for files): `file_reader.FileReader` (every recorded frame in
  order; measured: the pipeline on a file loses its first frames in some runs, which a
  deterministic test cannot have).

Pipeline (docs/hardware.md §3.8): colour RGB8 + depth Z16 at the same fps -> one
`rs.align(rs.stream.color)` block -> `Frame.rgb` (H, W, 3) uint8 and `Frame.depth` (H, W)
float32 metres on the colour pixel grid = raw Z16 x depth scale (0 = no data, holes and occlusion
shadows of the alignment stay 0). `Frame.intrinsics` = the colour stream's intrinsics
(`stream_facts`). `Frame.sequence` = the colour frame number of the device. `Frame.stamp_s` =
capture time on the host monotonic clock (`clock.DeviceClockMapper`).
Fixed settings are written and read back on connect (`settings`); `settings()` returns them
with everything else that defines the imaging conditions (per-episode provenance).
Dropped frames: gaps in the colour (and depth) frame numbers of every frameset delivered
(`dropped_frames`, `dropped_depth_frames`).

Threads and locks: a live camera (and real-time playback) delivers framesets on librealsense's
threads to `_on_frameset`, which keeps only the newest one under `self._lock` (a Condition);
`read()` (one caller thread) returns the newest frame not returned before (a 10 Hz reader of a
30 fps stream gets fresh frames, skipped frames are not "dropped"). Non-real-time playback reads
every recorded frame in order, one per `read()` (deterministic). Counters restart at connect().
Timeouts (`frame_timeout_s`) are on the injected monotonic clock (s).
"""
from __future__ import annotations

import logging
import math
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from dynaflip_ros.cameras.base import CameraError, CameraIntrinsics, Frame
from dynaflip_ros.cameras.realsense.clock import DeviceClockMapper
from dynaflip_ros.cameras.realsense.device import check_live_modes, find_device, start_error_text
from dynaflip_ros.cameras.realsense.file_reader import FileReader
from dynaflip_ros.cameras.realsense.librealsense import enum_name, import_rs
from dynaflip_ros.cameras.realsense.settings import configure_fixed_settings
from dynaflip_ros.cameras.realsense.stream_facts import ROS_DISTORTION_MODELS, read_stream_facts
from dynaflip_ros.configs.realsense import RealSenseConfig

log = logging.getLogger(__name__)

OPTICAL_FRAME_ID = "camera_color_optical_frame"


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
        self._reader: FileReader | None = None
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
        rs = import_rs()
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
            dev = find_device(rs, cfg.serial)
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
            raise CameraError(start_error_text(rs, cfg, e, depth_size, self.is_playback)) from e
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
        reader = FileReader(rs, path, cfg, depth_size if cfg.enable_depth else None)
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
        (docs/hardware.md §3.5 [lrs-7614])."""
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

    def _read_stream_facts(self, rs, profiles: dict[str, Any], dev) -> None:
        """Intrinsics, depth scale, device info and the settings record (`stream_facts`).
        profiles: {"color": video_stream_profile, "depth": ... (with depth)}."""
        facts = read_stream_facts(rs, self.config, profiles, dev, self._readback, self._exposure_unit_us,
                                  self._problems, self.is_playback)
        self._intrinsics = facts.intrinsics
        self.rs_distortion_model = facts.rs_distortion_model
        if facts.depth_scale_m is not None:
            self.depth_scale_m = facts.depth_scale_m
        self._device_info = facts.device_info
        self._settings = facts.settings

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
        rs = import_rs()
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
        rs = import_rs()
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
        domain = enum_name(c.get_frame_timestamp_domain())
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
