"""`make_device`: a teleop device from its CLI name (`DEVICE_NAMES`)."""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from dynaflip_ros.teleop.devices.combined import CombinedDevice
from dynaflip_ros.teleop.devices.command import TeleopDevice
from dynaflip_ros.teleop.devices.freedrive import FreedriveDevice
from dynaflip_ros.teleop.devices.gamepad import GamepadDevice
from dynaflip_ros.teleop.devices.keyboard import KeyboardDevice
from dynaflip_ros.teleop.devices.replay import ReplayDevice
from dynaflip_ros.teleop.devices.spacemouse import SpaceMouseDevice

DEVICE_NAMES = ("keyboard", "gamepad", "spacemouse", "freedrive", "replay:FILE")


def make_device(spec: str, arm: Any = None, clock: Callable[[], float] = time.monotonic,
                keyboard_events: bool | None = None, **options: Any) -> TeleopDevice:
    """Build a device from its CLI name (`DEVICE_NAMES`).

    gamepad / spacemouse / freedrive get the keyboard added for episode events when
    `keyboard_events` (default: stdin is a terminal). `arm` is required for freedrive.
    `options` go to the device constructor. Raises ValueError for an unknown name.
    """
    if keyboard_events is None:
        keyboard_events = os.isatty(0)
    if spec.startswith("replay:"):
        path = spec.split(":", 1)[1]
        if not path:
            raise ValueError("replay needs a file: --teleop replay:PATH")
        return ReplayDevice(path, clock=clock, **options)
    if spec == "keyboard":
        return KeyboardDevice(clock=clock, **options)
    if spec == "gamepad":
        dev: TeleopDevice = GamepadDevice(clock=clock, **options)
    elif spec == "spacemouse":
        dev = SpaceMouseDevice(clock=clock, **options)
    elif spec == "freedrive":
        if arm is None:
            raise ValueError("freedrive needs the arm")
        dev = FreedriveDevice(arm, clock=clock)
    else:
        raise ValueError(f"unknown teleop device {spec!r}; one of {DEVICE_NAMES}")
    if keyboard_events:
        return CombinedDevice([dev, KeyboardDevice(clock=clock)])
    return dev
