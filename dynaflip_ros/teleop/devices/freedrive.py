"""`FreedriveDevice`: kinesthetic demonstrations, the UR moved by hand in freedrive (teach mode).

No motion of its own: `read()` returns a zero command; the session records the measured joints.
Source: ur_rtde `RTDEControlInterface.teachMode` / `endTeachMode`.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from dynaflip_ros.teleop.devices.command import DeviceError, TeleopCommand, TeleopDevice, zero_command


class FreedriveDevice(TeleopDevice):
    """Kinesthetic demonstrations: the UR is put in freedrive (teach mode) and moved by hand.

    `open()` calls `arm.set_freedrive(True)` (URRtdeArm, ur_rtde `RTDEControlInterface.teachMode`),
    `close()` `set_freedrive(False)`. The session then streams no joint targets
    (`moves_arm_itself`), records the measured joints and takes the action one record period
    later from the measured joints too. Gripper and episode events come from another device
    (keyboard) through `CombinedDevice`.

    Args:
        arm: the raw arm (not SafeArm: teach mode is a controller mode, not a motion command).
    Raises DeviceError from `open()` when the arm has no freedrive (the MuJoCo SimArm has none).
    """

    name = "freedrive"
    moves_arm_itself = True

    def __init__(self, arm: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self.arm = arm
        self._clock = clock
        self._enabled = False

    def open(self) -> None:
        fn = getattr(self.arm, "set_freedrive", None)
        if fn is None or not callable(fn):
            raise DeviceError(f"freedrive needs an arm with set_freedrive() (the real UR over ur_rtde); "
                              f"{type(self.arm).__name__} has none (the sim arm cannot be moved by hand): "
                              "use --teleop keyboard|gamepad|spacemouse|replay:FILE with --sim")
        fn(True)
        self._enabled = True

    def read(self) -> TeleopCommand:
        return zero_command(self._clock())

    def close(self) -> None:
        if self._enabled:
            self._enabled = False
            self.arm.set_freedrive(False)
