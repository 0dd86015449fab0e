"""The one rule for image sizes: (height, width) in pixels, everywhere.

Type: `ImageHW = tuple[int, int]`, (H, W) px, as NumPy / OpenCV shape order (an image array is
(H, W, 3) uint8 RGB). Config fields say `image_hw` (recorded / rendered frames), `input_hw` (the
encoder's network input, the manifest's `input_hw`) or `parity_image_hw`; the command line takes
"N" (square) or "HxW" (`--image-size`, parsed by `parse_image_hw`). Bounds: 16..4096 px per side
for recorded / rendered frames (`IMAGE_SIDE_MIN_PX`, `IMAGE_SIDE_MAX_PX`).

How camera frames reach the encoder's input size (what the code does, docs/architecture.md):
  - sim camera: MuJoCo renders directly at `SimConfig.image_hw` (no resize);
  - real camera (teleop recording): centre crop to the aspect ratio of `image_hw`, then OpenCV
    INTER_AREA resize to `image_hw` (teleop/record.py);
  - the dataset stores frames at `image_hw`;
  - encoder training (data/triplets.py) and every deployment backend (encoder/preprocess.py):
    OpenCV INTER_AREA resize of the whole frame to the manifest's `input_hw`, no crop (the aspect
    ratio changes when the two differ).
Pure functions; safe from any thread.
"""
from __future__ import annotations

from typing import Any

from dynaflip_ros.configs.io import ConfigError

ImageHW = tuple[int, int]  # (height, width) in pixels

IMAGE_SIDE_MIN_PX = 16
IMAGE_SIDE_MAX_PX = 4096


def parse_image_hw(text: str, lo: int = IMAGE_SIDE_MIN_PX, hi: int = IMAGE_SIDE_MAX_PX) -> ImageHW:
    """'224' -> (224, 224); '120x160' -> (120, 160) (height x width).

    Raises:
        ValueError: "image size must be N or HxW, got '<text>'" (not numbers), or "image size must
            be N or HxW with lo <= N <= hi, got '<text>'" (out of bounds).
    """
    parts = str(text).lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"image size must be N or HxW, got {text!r}") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < lo or max(values) > hi:
        raise ValueError(f"image size must be N or HxW with {lo} <= N <= {hi}, got {text!r}")
    return values[0], values[1]


def require_image_hw(owner: str, name: str, value: Any, lo: int = IMAGE_SIDE_MIN_PX,
                     hi: int = IMAGE_SIDE_MAX_PX) -> ImageHW:
    """Check an (H, W) pair of ints (not bools) in [lo, hi] px; returns it as a tuple.

    Raises:
        ConfigError: "<owner>.<name> must be two ints in [lo, hi], got <value!r>".
    """
    try:
        hw = tuple(value)
    except TypeError:
        hw = ()
    ok = len(hw) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in hw)
    if not ok or not (lo <= min(hw) and max(hw) <= hi):
        prefix = f"{owner}.{name}" if owner else name
        raise ConfigError(f"{prefix} must be two ints in [{lo}, {hi}], got {value!r}")
    return hw  # type: ignore[return-value]
