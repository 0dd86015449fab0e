"""`SpaceMouseDevice`: 3Dconnexion SpaceMouse teleop through pyspacemouse 2.1 (HID).

Read from the session loop's thread only. Units: twist at full deflection in m/s and rad/s;
`base_yaw_rad` in rad. Source: pyspacemouse 2.1 `api.open`, `SpaceMouseState`.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from dynaflip_ros.teleop.devices.axes import apply_deadzone, rotate_twist_about_z
from dynaflip_ros.teleop.devices.command import DeviceError, TeleopCommand, TeleopDevice, TeleopEvent


class SpaceMouseDevice(TeleopDevice):
    """3Dconnexion SpaceMouse through pyspacemouse 2.1 (HID via easyhid + the system hidapi).

    Axes use pyspacemouse's `AxisConvention.HID_Z_UP` (x right, y away from the user, z up,
    right-handed rotations), mapped to the base frame by `base_yaw_rad` (`rotate_twist_about_z`).
    The left button toggles the gripper; the right button emits `right_button_event` (default
    none). Episode events normally come from the keyboard (`CombinedDevice`, `make_device`).

    Args:
        linear_speed_m_s / angular_speed_rad_s: twist at full deflection; deadzone on |value|.
        base_yaw_rad: yaw of the device frame in the UR base frame.
        right_button_event: event emitted by a press of the right button (None: none).
    Raises DeviceError from `open()` naming what is missing: the Python package
    (`pip install pyspacemouse==2.1.0`), the hidapi library (Debian `libhidapi-hidraw0`), or
    the device (or its /dev/hidraw* permissions).
    Source: pyspacemouse 2.1 `api.open`, `SpaceMouseState` (x..yaw in [-1, 1], buttons).
    """

    name = "spacemouse"

    def __init__(self, linear_speed_m_s: float = 0.1, angular_speed_rad_s: float = 0.5, deadzone: float = 0.05,
                 base_yaw_rad: float = 0.0, right_button_event: TeleopEvent | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.linear_speed_m_s = float(linear_speed_m_s)
        self.angular_speed_rad_s = float(angular_speed_rad_s)
        self.deadzone = float(deadzone)
        self.base_yaw_rad = float(base_yaw_rad)
        self.right_button_event = None if right_button_event is None else TeleopEvent(right_button_event)
        self._clock = clock
        self._dev = None
        self._buttons_prev: list[int] = []
        self._gripper = 0.0

    def open(self) -> None:
        try:
            import pyspacemouse
        except ImportError as e:
            raise DeviceError("SpaceMouse teleop needs pyspacemouse: pip install pyspacemouse==2.1.0 "
                              f"(and the Debian package libhidapi-hidraw0): {e}") from e
        try:
            devices = pyspacemouse.get_connected_devices()
        except RuntimeError as e:  # easyhid could not load libhidapi
            raise DeviceError(f"SpaceMouse: the hidapi library is missing (apt-get install libhidapi-hidraw0): {e}") from e
        if not devices:
            raise DeviceError("no SpaceMouse connected (pyspacemouse found none; check the USB cable / receiver "
                              "and read access to /dev/hidraw*, e.g. a udev rule for vendor 256f / 046d)")
        try:
            self._dev = pyspacemouse.open(axis_convention=pyspacemouse.AxisConvention.HID_Z_UP)
        except Exception as e:
            raise DeviceError(f"cannot open SpaceMouse {devices[0]!r}: {type(e).__name__}: {e}") from e

    def read(self) -> TeleopCommand:
        if self._dev is None:
            raise DeviceError("SpaceMouseDevice.read() before open()")
        st = self._dev.read()
        raw = np.array([st.x, st.y, st.z, st.roll, st.pitch, st.yaw], dtype=float)
        tw = np.array([apply_deadzone(v, self.deadzone) for v in raw])
        tw[:3] *= self.linear_speed_m_s
        tw[3:] *= self.angular_speed_rad_s
        tw = rotate_twist_about_z(tw, self.base_yaw_rad)
        buttons = list(st.buttons)
        pressed = [i for i, b in enumerate(buttons) if b and not (i < len(self._buttons_prev) and self._buttons_prev[i])]
        self._buttons_prev = buttons
        gripper = None
        events: list[TeleopEvent] = []
        if 0 in pressed:
            gripper = self._gripper = 0.0 if self._gripper >= 0.5 else 1.0
        if 1 in pressed and self.right_button_event is not None:
            events.append(self.right_button_event)
        return TeleopCommand(tw, gripper, tuple(events), self._clock())

    def close(self) -> None:
        if self._dev is not None:
            try:
                self._dev.close()
            finally:
                self._dev = None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "linear_speed_m_s": self.linear_speed_m_s,
                "angular_speed_rad_s": self.angular_speed_rad_s, "deadzone": self.deadzone,
                "base_yaw_rad": self.base_yaw_rad}
