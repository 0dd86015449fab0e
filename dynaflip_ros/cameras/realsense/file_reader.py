"""`FileReader`: non-real-time playback of a RealSense recording, every frame in file order.

Used by `RealSenseCamera` for a recording (`RealSenseConfig.playback_path`) unless
`playback_realtime`. The recording is loaded as a playback device (`rs.context().load_device`)
whose sensors are started directly, in non-real-time mode from the first frame; colour and
depth frames are paired by capture time (within half a frame period) and joined into one
frameset for `rs.align`.

Threads: librealsense's playback thread runs the sensor callbacks, which put frames into
bounded queues (blocking put = back-pressure, nothing dropped); `next_frameset` runs on the
caller's thread (the camera's `read()`); `stop()` releases a blocked playback thread.
Timeouts are on the caller's injected monotonic clock (s).
Source: librealsense `rs2::playback`, https://dev.intelrealsense.com/docs/python2
"""
from __future__ import annotations

import logging
import math
import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable

from dynaflip_ros.cameras.base import CameraError
from dynaflip_ros.cameras.realsense.librealsense import enum_name
from dynaflip_ros.configs.realsense import RealSenseConfig

log = logging.getLogger(__name__)


class FileReader:
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
                recorded.append(f"{enum_name(prof.stream_type())} {v.width()}x{v.height()} "
                                f"{enum_name(prof.format()).upper()} @ {prof.fps()}")
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
