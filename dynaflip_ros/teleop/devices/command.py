"""The teleop device interface: `TeleopDevice.read() -> TeleopCommand`, `TeleopEvent`, `DeviceError`.

A `TeleopCommand` carries a TCP twist (6,) = (vx, vy, vz m/s, wx, wy, wz rad/s) in the UR
`base` frame (robot/arm.py), an optional gripper target (0 open .. 1 closed; None = unchanged)
and the episode-control events pressed since the last read (`TeleopEvent`: start, stop (save),
discard, rerecord, quit; their meaning is defined in `teleop/session.py`). Devices are read from
the session loop's thread only; `read()` never blocks.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from dynaflip_ros.errors import UserError


class TeleopEvent(str, Enum):
    """Episode-control events (semantics: `teleop.session.TeleopSession`)."""

    START = "start"
    STOP = "stop"
    DISCARD = "discard"
    RERECORD = "rerecord"
    QUIT = "quit"


class DeviceError(RuntimeError, UserError):
    """A teleop device is missing, failed, or cannot work here (the message says what to do)."""


@dataclass(frozen=True)
class TeleopCommand:
    """One reading of a teleop device.

    twist: (6,) float64 TCP velocity in the UR base frame: vx, vy, vz (m/s), wx, wy, wz (rad/s);
    gripper: target closure 0 (open) .. 1 (closed), None = keep the current target;
    events: episode-control events since the previous read, in order;
    stamp_s: time of the reading on the device's clock.
    """

    twist: np.ndarray
    gripper: float | None = None
    events: tuple[TeleopEvent, ...] = ()
    stamp_s: float = 0.0

    def __post_init__(self) -> None:
        tw = np.asarray(self.twist, dtype=float)
        if tw.shape != (6,) or not np.all(np.isfinite(tw)):
            raise ValueError(f"twist must be finite (6,), got {self.twist!r}")
        object.__setattr__(self, "twist", tw)
        if self.gripper is not None:
            g = float(self.gripper)
            if not (math.isfinite(g) and 0.0 <= g <= 1.0):
                raise ValueError(f"gripper must be in [0, 1] or None, got {self.gripper!r}")
            object.__setattr__(self, "gripper", g)
        object.__setattr__(self, "events", tuple(TeleopEvent(e) for e in self.events))


def zero_command(stamp_s: float = 0.0, events: Iterable[TeleopEvent] = ()) -> TeleopCommand:
    """A command with no motion and no gripper change."""
    return TeleopCommand(np.zeros(6), None, tuple(events), stamp_s)


class TeleopDevice:
    """Base class of the teleop devices (see the module docstring).

    Attributes:
        name: CLI name ("keyboard", "gamepad", ...).
        moves_arm_itself: True for freedrive: the arm is moved by hand, the session streams no
            joint targets and records the measured joints as the action.
    Use as a context manager (`open()` / `close()`); `read()` never blocks.
    """

    name = "device"
    moves_arm_itself = False

    def open(self) -> None:
        """Acquire the device. Raises DeviceError when it is missing or cannot work here."""

    def read(self) -> TeleopCommand:  # pragma: no cover - abstract
        """The current command (non-blocking). Raises DeviceError when the device was lost."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the device (idempotent)."""

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable settings of the device (stored with every episode)."""
        return {"name": self.name}

    def __enter__(self) -> TeleopDevice:
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
