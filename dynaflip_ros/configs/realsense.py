"""Parameters of the Intel RealSense D4xx camera backend (`cameras/realsense/`).

The camera's colour exposure, white balance and gain are part of an experiment's conditions:
auto exposure and auto white balance are always switched OFF and the fixed values below are
written to the device and read back (`RealSenseCamera.connect`). Stream modes and option ranges:
docs/hardware.md §3.2 (D435 stream modes, USB 3) and §3.7 (sensor options); clock domains §3.5.
ROS parameters: `camera.realsense.*` (nested in `configs.ros.CameraNodeConfig`).
"""
from __future__ import annotations

from dataclasses import dataclass

from dynaflip_ros.configs.validate import require_choice, require_finite, require_int

# docs/hardware.md §3.2: colour modes of the D435 RGB sensor over USB 3, (width, height) -> fps.
D4XX_COLOR_MODES: dict[tuple[int, int], tuple[int, ...]] = {
    (1920, 1080): (6, 15, 30),
    (1280, 720): (6, 15, 30),
    (960, 540): (6, 15, 30, 60),
    (848, 480): (6, 15, 30, 60),
    (640, 480): (6, 15, 30, 60),
    (640, 360): (6, 15, 30, 60),
    (424, 240): (6, 15, 30, 60),
    (320, 240): (6, 30, 60),
    (320, 180): (6, 30, 60),
}
# docs/hardware.md §3.2: depth Z16 modes (width, height) -> fps (848x100 special modes left out).
D4XX_DEPTH_MODES: dict[tuple[int, int], tuple[int, ...]] = {
    (1280, 720): (6, 15, 30),
    (848, 480): (6, 15, 30, 60, 90),
    (640, 480): (6, 15, 30, 60, 90),
    (640, 360): (6, 15, 30, 60, 90),
    (480, 270): (6, 15, 30, 60, 90),
    (424, 240): (6, 15, 30, 60, 90),
}
# docs/hardware.md §3.7: RS2_OPTION_POWER_LINE_FREQUENCY values of the RGB sensor.
POWER_LINE_FREQUENCY_VALUES: dict[str, int] = {"off": 0, "50hz": 1, "60hz": 2}
# docs/hardware.md §3.7: RGB exposure is set in units of 100 us, range 1..10000.
RGB_EXPOSURE_UNIT_US = 100.0
RGB_EXPOSURE_RANGE_UNITS = (1, 10000)
WHITE_BALANCE_RANGE_K = (2800.0, 6500.0)


_OWNER = "RealSenseConfig"  # names the fields in the configs.validate messages


def _number(name: str, value: object) -> float:
    return float(require_finite(_OWNER, name, value))


def _int(name: str, value: object, lo: int, hi: int) -> int:
    return require_int(_OWNER, name, value, lo, hi)


@dataclass
class RealSenseConfig:
    """One RealSense D4xx (D435/D435i/D415/D405) as the cell's RGB-D camera.

    serial: device serial number (`rs-enumerate-devices -s`); "" = the only connected device
        (an error if several are connected). Ignored for playback.
    width, height: colour stream size in pixels; fps: frame rate in Hz. A live device accepts only
        the D4xx colour modes of docs/hardware.md §3.2 (`D4XX_COLOR_MODES`; with depth also an fps the
        depth sensor offers). Playback uses the recorded mode, which must match these values.
    enable_depth: also stream depth (Z16); depth mode = the colour size if it is a depth mode at
        `fps` (`D4XX_DEPTH_MODES`), else 848x480 (Intel's recommended mode, docs/hardware.md §3.2).
    align_depth_to_color: map depth into the colour image with one `rs.align(rs.stream.color)`
        block (docs/hardware.md §3.8) so `Frame.depth` is (H, W) metres on the colour pixel grid.
        Must be True when depth is enabled (`Frame.depth` is defined on the colour grid).
    exposure_us: fixed colour exposure in microseconds, a multiple of 100 us (the RGB sensor's
        unit, docs/hardware.md §3.7: 1..10000 units), at most one frame period (1e6 / fps us).
        Default 15600 us = the D435 RGB default of 156 units.
    white_balance_k: fixed colour white balance in kelvin, 2800..6500 (docs/hardware.md §3.7).
    gain: fixed colour gain (device units; D435 RGB 0..128, default 64).
    depth_exposure_us: fixed depth (stereo) exposure in microseconds; 0 = leave the depth
        sensor's auto exposure on (depth exposure does not change the colour image on
        D435/D415; on a D405 colour comes from the depth imager, docs/hardware.md §3.1).
    power_line_frequency: RGB anti-flicker, "50hz", "60hz" or "off" (docs/hardware.md §3.7).
    global_time: enable RS2_OPTION_GLOBAL_TIME_ENABLED so frame timestamps are device capture
        times mapped onto host time (docs/hardware.md §3.5).
    frame_timeout_s: `read()` raises CameraError when no new frame arrives within this time (s).
    strict_settings: a live device that refuses a fixed setting or reads back another value
        raises CameraError (True) or only logs a warning (False). Playback always warns.
    playback_path: "" = live device; else a recording (`.db3` written by librealsense's
        recorder, or a `.bag`) played back through `rs.config.enable_device_from_file`.
    playback_realtime: playback at the recorded frame rate, frames dropped when the reader is
        slow (True), or as fast as read() pulls, every frame in order (False: deterministic).
    """

    serial: str = ""
    width: int = 640
    height: int = 480
    fps: int = 30
    enable_depth: bool = True
    align_depth_to_color: bool = True
    exposure_us: float = 15600.0
    white_balance_k: float = 4600.0
    gain: int = 64
    depth_exposure_us: float = 0.0
    power_line_frequency: str = "50hz"
    global_time: bool = True
    frame_timeout_s: float = 2.0
    strict_settings: bool = True
    playback_path: str = ""
    playback_realtime: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.serial, str) or (self.serial and not self.serial.strip().isalnum()):
            raise ValueError(f"RealSenseConfig.serial must be '' or an alphanumeric serial, got {self.serial!r}")
        self.serial = self.serial.strip()
        _int("width", self.width, 1, 4096)
        _int("height", self.height, 1, 4096)
        _int("fps", self.fps, 1, 300)
        for name in ("enable_depth", "align_depth_to_color", "global_time", "strict_settings",
                     "playback_realtime"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"RealSenseConfig.{name} must be a bool, got {getattr(self, name)!r}")
        if not isinstance(self.playback_path, str):
            raise ValueError(f"RealSenseConfig.playback_path must be a string, got {self.playback_path!r}")
        if not self.playback_path:
            self.check_live_mode()
        if self.enable_depth and not self.align_depth_to_color:
            raise ValueError("RealSenseConfig.align_depth_to_color must be True when enable_depth is True "
                             "(Frame.depth is defined on the colour pixel grid)")
        self.exposure_us = _number("exposure_us", self.exposure_us)
        units = self.exposure_us / RGB_EXPOSURE_UNIT_US
        lo, hi = RGB_EXPOSURE_RANGE_UNITS
        if abs(units - round(units)) > 1e-6 or not lo <= round(units) <= hi:
            raise ValueError(
                f"RealSenseConfig.exposure_us must be a multiple of {RGB_EXPOSURE_UNIT_US:g} us in "
                f"[{lo * RGB_EXPOSURE_UNIT_US:g}, {hi * RGB_EXPOSURE_UNIT_US:g}] (RGB sensor unit, "
                f"docs/hardware.md §3.7), got {self.exposure_us!r}")
        frame_period_us = 1e6 / self.fps
        if self.exposure_us > frame_period_us + 1e-6:
            raise ValueError(
                f"RealSenseConfig.exposure_us = {self.exposure_us:g} us is longer than the frame period "
                f"{frame_period_us:.0f} us at {self.fps} fps (the frame rate would drop)")
        self.white_balance_k = _number("white_balance_k", self.white_balance_k)
        if not WHITE_BALANCE_RANGE_K[0] <= self.white_balance_k <= WHITE_BALANCE_RANGE_K[1]:
            raise ValueError(f"RealSenseConfig.white_balance_k must be in {WHITE_BALANCE_RANGE_K} K "
                             f"(docs/hardware.md §3.7), got {self.white_balance_k!r}")
        _int("gain", self.gain, 0, 1024)
        self.depth_exposure_us = _number("depth_exposure_us", self.depth_exposure_us)
        if not 0 <= self.depth_exposure_us <= 200_000:
            raise ValueError(f"RealSenseConfig.depth_exposure_us must be 0 (auto) or in (0, 200000] us, "
                             f"got {self.depth_exposure_us!r}")
        require_choice(_OWNER, "power_line_frequency", self.power_line_frequency, sorted(POWER_LINE_FREQUENCY_VALUES))
        _frame_timeout = _number("frame_timeout_s", self.frame_timeout_s)
        if not 0 < _frame_timeout <= 60:
            raise ValueError(f"RealSenseConfig.frame_timeout_s must be in (0, 60] s, got {self.frame_timeout_s!r}")
        self.frame_timeout_s = _frame_timeout

    # ------------------------------------------------------------------ derived values
    @property
    def exposure_units(self) -> int:
        """Colour exposure in the RGB sensor's 100 us units (docs/hardware.md §3.7)."""
        return int(round(self.exposure_us / RGB_EXPOSURE_UNIT_US))

    @property
    def power_line_frequency_value(self) -> int:
        """RS2_OPTION_POWER_LINE_FREQUENCY value (0 off, 1 = 50 Hz, 2 = 60 Hz)."""
        return POWER_LINE_FREQUENCY_VALUES[self.power_line_frequency]

    def check_live_mode(self) -> None:
        """Raise ValueError unless (width, height, fps) is a D4xx colour mode of docs/hardware.md §3.2
        (and, with depth, fps is a depth frame rate too)."""
        size = (self.width, self.height)
        if size not in D4XX_COLOR_MODES or self.fps not in D4XX_COLOR_MODES[size]:
            modes = ", ".join(f"{w}x{h}@{'/'.join(map(str, f))}" for (w, h), f in D4XX_COLOR_MODES.items())
            raise ValueError(
                f"RealSenseConfig: {self.width}x{self.height} @ {self.fps} fps is not a D4xx colour mode "
                f"(docs/hardware.md §3.2; a custom size fails with 'Couldn't resolve requests'); modes: {modes}")
        if self.enable_depth and self.depth_mode() is None:
            raise ValueError(f"RealSenseConfig: no D4xx depth mode runs at {self.fps} fps "
                             f"(docs/hardware.md §3.2: depth 6/15/30/60/90 fps); set enable_depth=False or another fps")

    def depth_mode(self) -> tuple[int, int] | None:
        """(width, height) of the depth stream for a live device: the colour size if it is a depth
        mode at `fps`, else 848x480, else 640x480 (None if no depth mode runs at `fps`)."""
        for size in ((self.width, self.height), (848, 480), (640, 480)):
            if self.fps in D4XX_DEPTH_MODES.get(size, ()):
                return size
        return None
