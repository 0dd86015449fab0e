"""`DeviceClockMapper`: RealSense frame timestamps (ms) -> host monotonic seconds.

`frame.get_timestamp()` is in ms, in the frame's timestamp domain (docs/hardware.md §3.5).
`Frame.stamp_s` of `RealSenseCamera` is the capture time on the HOST monotonic clock
(`time.monotonic()`):
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

Not thread-safe: the camera calls it from `read()` only. Clocks are injectable (float seconds).
Source: librealsense `rs2_timestamp_domain`,
https://intelrealsense.github.io/librealsense/doxygen/rs__frame_8h.html
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable

from dynaflip_ros.cameras.base import CameraError

# Timestamp domains whose values are host wall-clock milliseconds (docs/hardware.md §3.5).
WALL_CLOCK_DOMAINS = ("global_time", "system_time")


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
