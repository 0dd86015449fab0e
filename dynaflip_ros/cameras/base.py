"""The camera interface (`Camera`, `Frame`, `CameraIntrinsics`, `CameraError`) shared by the
simulated camera and the RealSense backend (`cameras/realsense/`).

Units: pixels for intrinsics, metres for depth, seconds for stamps (each backend says which
clock). A `Camera` is read from one thread; `connect` / `disconnect` are idempotent.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol, runtime_checkable

import numpy as np

from dynaflip_ros.errors import UserError


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics of the colour image (OpenCV optical frame: +x right, +y down, +z fwd).

    width, height in pixels; fx, fy, cx, cy in pixels; distortion coefficients (OpenCV order)
    default to zero (RealSense colour and MuJoCo cameras have none).
    """

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)

    def matrix(self) -> np.ndarray:
        """(3, 3) K matrix."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class Frame:
    """One captured frame.

    rgb: (H, W, 3) uint8; depth: (H, W) float32 metres along the optical axis (0 = no data) or
    None; stamp_s: capture time in seconds (host monotonic clock for real cameras, sim time for
    the sim camera); frame_id: the optical frame name.
    """

    rgb: np.ndarray
    depth: Optional[np.ndarray]
    intrinsics: CameraIntrinsics
    stamp_s: float
    frame_id: str = "camera_color_optical_frame"
    sequence: int = 0


class CameraError(RuntimeError, UserError):
    """The camera failed (not connected, device lost, timeout)."""


@runtime_checkable
class Camera(Protocol):
    def connect(self) -> None: ...

    def read(self) -> Frame:
        """Next frame. Raises CameraError on timeout or lost device."""

    def disconnect(self) -> None: ...
