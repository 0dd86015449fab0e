"""Teleoperation devices behind one interface: `TeleopDevice.read() -> TeleopCommand`.

One module per device / concept (this package re-exports every public name, so
`dynaflip_ros.teleop.devices.<name>` keeps working): `command` (interface, command, events),
`axes` (deadzone, operator-frame yaw), `keyboard`, `gamepad`, `spacemouse`, `freedrive`,
`replay`, `combined`, `factory` (`make_device`).

A `TeleopCommand` carries a TCP twist (6,) = (vx, vy, vz m/s, wx, wy, wz rad/s) in the UR
`base` frame (robot/arm.py), an optional gripper target (0 open .. 1 closed; None = unchanged)
and the episode-control events pressed since the last read (`TeleopEvent`: start, stop (save),
discard, rerecord, quit; their meaning is defined in `teleop/session.py`).

Devices:

| name        | class              | motion                                  | needs                          |
|-------------|--------------------|-----------------------------------------|--------------------------------|
| keyboard    | `KeyboardDevice`   | keys held -> fixed-speed twist          | a terminal (termios), no X     |
| gamepad     | `GamepadDevice`    | sticks / hat, deadzone, configurable map | pygame 2.6 (SDL2), headless ok |
| spacemouse  | `SpaceMouseDevice` | 6-DoF puck, scaled                      | pyspacemouse 2.1 + libhidapi   |
| freedrive   | `FreedriveDevice`  | the arm is moved by hand (UR teach mode) | an arm with set_freedrive()    |
| replay:FILE | `ReplayDevice`     | a recorded command sequence (JSON lines) | nothing                        |

`CombinedDevice` merges devices (e.g. SpaceMouse motion + keyboard events). `make_device(spec)`
builds one from its CLI name.

The keyboard's key map is `keyboard.KEY_HELP` (and the `keyboard` module docstring).
"""
from dynaflip_ros.teleop.devices.axes import apply_deadzone, rotate_twist_about_z
from dynaflip_ros.teleop.devices.combined import CombinedDevice
from dynaflip_ros.teleop.devices.command import DeviceError, TeleopCommand, TeleopDevice, TeleopEvent, zero_command
from dynaflip_ros.teleop.devices.factory import DEVICE_NAMES, make_device
from dynaflip_ros.teleop.devices.freedrive import FreedriveDevice
from dynaflip_ros.teleop.devices.gamepad import GamepadDevice, GamepadMapping, map_gamepad
from dynaflip_ros.teleop.devices.keyboard import KEY_EVENTS, KEY_HELP, KEY_MOTION, KeyboardDevice, parse_keys
from dynaflip_ros.teleop.devices.replay import REPLAY_FORMAT, ReplayDevice, ReplayStep, load_replay, write_replay
from dynaflip_ros.teleop.devices.spacemouse import SpaceMouseDevice

__all__ = [
    "DEVICE_NAMES", "KEY_EVENTS", "KEY_HELP", "KEY_MOTION", "REPLAY_FORMAT", "CombinedDevice", "DeviceError",
    "FreedriveDevice", "GamepadDevice", "GamepadMapping", "KeyboardDevice", "ReplayDevice", "ReplayStep",
    "SpaceMouseDevice", "TeleopCommand", "TeleopDevice", "TeleopEvent", "apply_deadzone", "load_replay",
    "make_device", "map_gamepad", "parse_keys", "rotate_twist_about_z", "write_replay", "zero_command",
]
