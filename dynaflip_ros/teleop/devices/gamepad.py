"""`GamepadDevice`: gamepad / joystick teleop through pygame 2.6 (SDL2), and its axis map.

`GamepadMapping` says which axis / hat / button drives which twist component, the gripper and
the episode events; `map_gamepad` applies it to raw values (pure, tested on synthetic values).
Read from the session loop's thread only (`pygame.event.pump` + polling, non-blocking).
Units: twist at full deflection in m/s and rad/s. Source: pygame docs, `pygame.joystick`.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dynaflip_ros.teleop.devices.axes import apply_deadzone
from dynaflip_ros.teleop.devices.command import DeviceError, TeleopCommand, TeleopDevice, TeleopEvent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GamepadMapping:
    """Axis / button map of `GamepadDevice` (defaults: an Xbox-layout pad under SDL2 on Linux:
    axes 0 LX, 1 LY, 2 LT, 3 RX, 4 RY, 5 RT; buttons 0 A, 1 B, 2 X, 3 Y, 4 LB, 5 RB, 6 Back,
    7 Start, 8 Guide; hat 0 = d-pad).

    Attributes:
        joystick_index: SDL joystick index.
        deadzone: |axis| below this reads 0; above, the axis is rescaled to start from 0 (0..0.9).
        linear_speed_m_s / angular_speed_rad_s: twist at full deflection.
        axes: (twist index 0..5, axis index, sign) per mapped axis. Default: left stick up -> +x,
            left -> +y, right stick up -> +z, right stick left -> +yaw.
        hat_axes: (twist index, hat index, component 0 = x / 1 = y, sign). Default: d-pad
            right/left -> +/- roll, up/down -> +/- pitch.
        gripper_close_button / gripper_open_button: buttons setting the gripper target 1 / 0.
        event_buttons: (event name, button index) pairs: a press (not a hold) emits the event.
    Raises ValueError on indices out of range or a bad deadzone.
    """

    joystick_index: int = 0
    deadzone: float = 0.15
    linear_speed_m_s: float = 0.1
    angular_speed_rad_s: float = 0.5
    axes: tuple[tuple[int, int, float], ...] = ((0, 1, -1.0), (1, 0, -1.0), (2, 4, -1.0), (5, 3, -1.0))
    hat_axes: tuple[tuple[int, int, int, float], ...] = ((3, 0, 0, 1.0), (4, 0, 1, 1.0))
    gripper_close_button: int = 0
    gripper_open_button: int = 1
    event_buttons: tuple[tuple[str, int], ...] = (
        ("start", 7), ("stop", 6), ("discard", 2), ("rerecord", 3), ("quit", 8))

    def __post_init__(self) -> None:
        if not 0.0 <= self.deadzone < 0.9:
            raise ValueError(f"deadzone must be in [0, 0.9), got {self.deadzone!r}")
        if not (self.linear_speed_m_s > 0 and self.angular_speed_rad_s > 0):
            raise ValueError("linear_speed_m_s and angular_speed_rad_s must be > 0")
        for t, a, s in self.axes:
            if not (0 <= t < 6 and a >= 0 and s in (-1.0, 1.0, -1, 1)):
                raise ValueError(f"axes entries must be (twist 0..5, axis >= 0, sign +/-1), got {(t, a, s)}")
        for t, h, c, s in self.hat_axes:
            if not (0 <= t < 6 and h >= 0 and c in (0, 1) and s in (-1.0, 1.0, -1, 1)):
                raise ValueError(f"hat_axes entries must be (twist 0..5, hat >= 0, 0|1, sign), got {(t, h, c, s)}")
        for name, b in self.event_buttons:
            TeleopEvent(name)  # ValueError on an unknown event name
            if b < 0:
                raise ValueError(f"button index must be >= 0, got {b}")


def map_gamepad(axes: Sequence[float], buttons: Sequence[int], hats: Sequence[tuple[int, int]],
                mapping: GamepadMapping) -> tuple[np.ndarray, float | None, set[TeleopEvent]]:
    """Raw joystick values -> (twist (6,), gripper target or None, events whose button is down).

    axes in [-1, 1], buttons 0/1, hats (x, y) in {-1, 0, 1}. Entries of the mapping beyond the
    device's axes/buttons/hats are ignored. Pure function (tested on synthetic values).
    """
    tw = np.zeros(6)
    for t, a, s in mapping.axes:
        if a < len(axes):
            tw[t] += s * apply_deadzone(axes[a], mapping.deadzone)
    for t, h, c, s in mapping.hat_axes:
        if h < len(hats):
            tw[t] += s * float(hats[h][c])
    tw = np.clip(tw, -1.0, 1.0)
    tw[:3] *= mapping.linear_speed_m_s
    tw[3:] *= mapping.angular_speed_rad_s
    gripper = None
    if mapping.gripper_open_button < len(buttons) and buttons[mapping.gripper_open_button]:
        gripper = 0.0
    if mapping.gripper_close_button < len(buttons) and buttons[mapping.gripper_close_button]:
        gripper = 1.0
    down = {TeleopEvent(name) for name, b in mapping.event_buttons if b < len(buttons) and buttons[b]}
    return tw, gripper, down


class GamepadDevice(TeleopDevice):
    """Gamepad / joystick through pygame 2.6 (SDL2). Headless: SDL_VIDEODRIVER=dummy is set
    when unset, and SDL_JOYSTICK_ALLOW_BACKGROUND_EVENTS=1 so no window focus is needed.

    Args:
        mapping: `GamepadMapping` (axes, deadzone, buttons).
        clock: monotonic seconds.
    Raises DeviceError from `open()` when pygame is missing or no joystick is connected.
    Source: pygame docs, `pygame.joystick` (get_axis / get_button / get_hat); SDL2 wiki,
    SDL_HINT_JOYSTICK_ALLOW_BACKGROUND_EVENTS.
    """

    name = "gamepad"

    def __init__(self, mapping: GamepadMapping | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.mapping = mapping if mapping is not None else GamepadMapping()
        self._clock = clock
        self._pygame = None
        self._js = None
        self._down: set[TeleopEvent] = set()
        self.joystick_name = ""

    def open(self) -> None:
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
        os.environ.setdefault("SDL_JOYSTICK_ALLOW_BACKGROUND_EVENTS", "1")
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
        try:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pygame 2.6 warns about pkg_resources
                import pygame
        except ImportError as e:
            raise DeviceError(f"gamepad teleop needs pygame (pip install pygame==2.6.1): {e}") from e
        pygame.display.init()
        pygame.joystick.init()
        pygame.event.pump()
        n = pygame.joystick.get_count()
        idx = self.mapping.joystick_index
        if idx >= n:
            raise DeviceError(f"no gamepad at joystick index {idx} ({n} joystick(s) found by SDL); "
                              "plug one in (check /dev/input/js* permissions) or choose another index")
        self._pygame = pygame
        self._js = pygame.joystick.Joystick(idx)
        self.joystick_name = self._js.get_name()
        log.info("gamepad %r: %d axes, %d buttons, %d hats", self.joystick_name, self._js.get_numaxes(),
                 self._js.get_numbuttons(), self._js.get_numhats())

    def read(self) -> TeleopCommand:
        if self._js is None:
            raise DeviceError("GamepadDevice.read() before open()")
        pg = self._pygame
        pg.event.pump()
        js = self._js
        axes = [js.get_axis(i) for i in range(js.get_numaxes())]
        buttons = [js.get_button(i) for i in range(js.get_numbuttons())]
        hats = [js.get_hat(i) for i in range(js.get_numhats())]
        tw, gripper, down = map_gamepad(axes, buttons, hats, self.mapping)
        pressed = [e for e in TeleopEvent if e in down and e not in self._down]  # rising edges
        self._down = down
        return TeleopCommand(tw, gripper, tuple(pressed), self._clock())

    def close(self) -> None:
        if self._pygame is not None:
            self._pygame.joystick.quit()
            self._pygame = None
            self._js = None

    def describe(self) -> dict[str, Any]:
        import dataclasses

        return {"name": self.name, "joystick": self.joystick_name, "mapping": dataclasses.asdict(self.mapping)}
