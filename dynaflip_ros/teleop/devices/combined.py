"""`CombinedDevice`: several teleop devices read as one (e.g. SpaceMouse motion + keyboard events).

Twists add up, the last non-None gripper target wins, events are concatenated in device order.
Read from the session loop's thread only.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from dynaflip_ros.teleop.devices.command import TeleopCommand, TeleopDevice, TeleopEvent


class CombinedDevice(TeleopDevice):
    """Several devices as one: twists add up, the last non-None gripper target wins, events are
    concatenated in device order. `moves_arm_itself` if any part does (freedrive + keyboard)."""

    def __init__(self, devices: Sequence[TeleopDevice]) -> None:
        if not devices:
            raise ValueError("CombinedDevice needs at least one device")
        self.devices = list(devices)
        self.name = "+".join(d.name for d in self.devices)
        self.moves_arm_itself = any(d.moves_arm_itself for d in self.devices)

    def open(self) -> None:
        opened: list[TeleopDevice] = []
        try:
            for d in self.devices:
                d.open()
                opened.append(d)
        except BaseException:
            for d in reversed(opened):
                d.close()
            raise

    def read(self) -> TeleopCommand:
        tw = np.zeros(6)
        gripper = None
        events: list[TeleopEvent] = []
        stamp = 0.0
        for d in self.devices:
            c = d.read()
            tw += c.twist
            if c.gripper is not None:
                gripper = c.gripper
            events.extend(c.events)
            stamp = max(stamp, c.stamp_s)
        return TeleopCommand(tw, gripper, tuple(events), stamp)

    def close(self) -> None:
        errors = []
        for d in reversed(self.devices):
            try:
                d.close()
            except Exception as e:  # noqa: BLE001 - close every part
                errors.append(e)
        if errors:
            raise errors[0]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "parts": [d.describe() for d in self.devices]}
