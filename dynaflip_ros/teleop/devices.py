"""Teleoperation devices behind one interface: `TeleopDevice.read() -> TeleopCommand`.

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

Keyboard key map (`KEY_HELP`; the terminal reports presses, not releases: a motion key stays
active for `hold_timeout_s` after its last press or auto-repeat, space stops at once):

    w / s  +x / -x      a / d  +y / -y      r / f  +z (up) / -z     arrows: x / y too
    u / o  +/- roll (about base x)   i / k  +/- pitch (base y)   j / l  +/- yaw (base z)
    c close gripper   v open gripper   g toggle gripper   space stop motion
    + / -  speed x1.5 / ÷1.5
    b start episode   n stop + save   x discard take   z re-record take   Q or Ctrl-D quit
    (Ctrl-C interrupts as usual: the terminal is in cbreak mode, signals stay on)
"""
from __future__ import annotations

import atexit
import json
import logging
import math
import os
import select
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class TeleopEvent(str, Enum):
    """Episode-control events (semantics: `teleop.session.TeleopSession`)."""

    START = "start"
    STOP = "stop"
    DISCARD = "discard"
    RERECORD = "rerecord"
    QUIT = "quit"


class DeviceError(RuntimeError):
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


def rotate_twist_about_z(twist: np.ndarray, yaw_rad: float) -> np.ndarray:
    """(6,) twist expressed in a frame yawed by `yaw_rad` about base z -> the UR base frame.

    Devices report motion in the operator's frame; `yaw_rad` is that frame's yaw in the base
    frame (e.g. pi when the operator faces the robot from the +x side)."""
    c, s = math.cos(yaw_rad), math.sin(yaw_rad)
    r = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    tw = np.asarray(twist, dtype=float)
    return np.concatenate([r @ tw[:3], r @ tw[3:]])


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


# ------------------------------------------------------------------------------------- keyboard
KEY_HELP = """keyboard teleop (UR base frame):
  w/s +x/-x   a/d +y/-y   r/f up/down   arrows x/y   u/o roll   i/k pitch   j/l yaw
  c close gripper   v open   g toggle   space stop   +/- speed
  b start episode   n stop+save   x discard take   z re-record take   Q / Ctrl-D quit"""

# key -> (twist index, sign)
KEY_MOTION: dict[str, tuple[int, int]] = {
    "w": (0, 1), "s": (0, -1), "a": (1, 1), "d": (1, -1), "r": (2, 1), "f": (2, -1),
    "UP": (0, 1), "DOWN": (0, -1), "LEFT": (1, 1), "RIGHT": (1, -1),
    "u": (3, 1), "o": (3, -1), "i": (4, 1), "k": (4, -1), "j": (5, 1), "l": (5, -1),
}
KEY_EVENTS: dict[str, TeleopEvent] = {
    "b": TeleopEvent.START, "n": TeleopEvent.STOP, "x": TeleopEvent.DISCARD,
    "z": TeleopEvent.RERECORD, "Q": TeleopEvent.QUIT, "CTRL-D": TeleopEvent.QUIT,
}
_ESCAPES = {b"\x1b[A": "UP", b"\x1b[B": "DOWN", b"\x1b[C": "RIGHT", b"\x1b[D": "LEFT",
            b"\x1bOA": "UP", b"\x1bOB": "DOWN", b"\x1bOC": "RIGHT", b"\x1bOD": "LEFT"}


def parse_keys(data: bytes) -> list[str]:
    """Split raw terminal bytes into key tokens.

    Printable characters are their own token ("w", "Q", " " -> "SPACE"); arrow escape
    sequences (ESC [ A..D and ESC O A..D) become "UP", "DOWN", "RIGHT", "LEFT"; Ctrl-D is
    "CTRL-D", Enter "ENTER", a lone ESC "ESC"; other control bytes and unknown escape
    sequences become "?" tokens (ignored by the key map).
    """
    out: list[str] = []
    i = 0
    while i < len(data):
        b = data[i:i + 1]
        if b == b"\x1b":
            seq = data[i:i + 3]
            if seq in _ESCAPES:
                out.append(_ESCAPES[seq])
                i += 3
                continue
            if data[i + 1:i + 2] in (b"[", b"O"):  # unknown CSI/SS3 sequence: skip to its final byte
                j = i + 2
                while j < len(data) and not (0x40 <= data[j] <= 0x7E):
                    j += 1
                out.append("?")
                i = j + 1
                continue
            out.append("ESC")
            i += 1
            continue
        c = data[i]
        if c == 0x04:
            out.append("CTRL-D")
        elif c in (0x0A, 0x0D):
            out.append("ENTER")
        elif c == 0x20:
            out.append("SPACE")
        elif 0x21 <= c <= 0x7E:
            out.append(chr(c))
        else:
            out.append("?")
        i += 1
    return out


class KeyboardDevice(TeleopDevice):
    """Keyboard teleop in a terminal (termios cbreak mode + select; no X server needed).

    Args:
        fd: terminal file descriptor (default: stdin); a pty slave works (tests).
        linear_speed_m_s / angular_speed_rad_s: speed of a held motion key (x speed scale).
        hold_timeout_s: a motion key stays active this long after its last press/auto-repeat
            (terminals report no key release; keep it above the auto-repeat delay, ~0.25-0.6 s).
        clock: monotonic seconds.
    Raises DeviceError from `open()` when fd is not a terminal. The terminal settings are
    restored by `close()`, at interpreter exit (atexit) and when the session unwinds after a
    crash (the session closes its device in `finally`).
    """

    name = "keyboard"

    def __init__(self, fd: int | None = None, linear_speed_m_s: float = 0.05, angular_speed_rad_s: float = 0.3,
                 hold_timeout_s: float = 0.6, clock: Callable[[], float] = time.monotonic) -> None:
        if not (linear_speed_m_s > 0 and angular_speed_rad_s > 0 and hold_timeout_s > 0):
            raise ValueError("linear_speed_m_s, angular_speed_rad_s and hold_timeout_s must be > 0")
        self._fd_arg = fd
        self.fd: int | None = None
        self.linear_speed_m_s = float(linear_speed_m_s)
        self.angular_speed_rad_s = float(angular_speed_rad_s)
        self.hold_timeout_s = float(hold_timeout_s)
        self.speed_scale = 1.0
        self._clock = clock
        self._saved_attrs = None
        self._active: dict[int, tuple[int, float]] = {}  # twist index -> (sign, active until)
        self._gripper = 0.0
        self.unknown_keys = 0

    def open(self) -> None:
        import termios
        import tty

        fd = self._fd_arg if self._fd_arg is not None else 0
        if not os.isatty(fd):
            raise DeviceError("keyboard teleop needs an interactive terminal (stdin is not a tty); "
                              "run it in a terminal, or use --teleop replay:FILE for scripted sessions")
        self.fd = fd
        self._saved_attrs = termios.tcgetattr(fd)
        tty.setcbreak(fd, termios.TCSANOW)  # no echo, no line buffering; Ctrl-C still signals
        atexit.register(self._restore)

    def _restore(self) -> None:
        if self._saved_attrs is not None and self.fd is not None:
            import termios

            try:
                termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved_attrs)
            except termios.error:  # terminal already gone
                pass
            self._saved_attrs = None

    def close(self) -> None:
        self._restore()
        try:
            atexit.unregister(self._restore)
        except Exception:  # noqa: BLE001
            pass

    def _read_bytes(self) -> bytes:
        chunks = []
        while True:
            ready, _, _ = select.select([self.fd], [], [], 0.0)
            if not ready:
                break
            b = os.read(self.fd, 1024)
            if not b:  # EOF (terminal closed)
                chunks.append(b"\x04")
                break
            chunks.append(b)
        return b"".join(chunks)

    def handle_tokens(self, tokens: Sequence[str], now_s: float) -> tuple[float | None, list[TeleopEvent]]:
        """Apply key tokens (`parse_keys`) at time now_s; returns (gripper target or None, events)."""
        gripper: float | None = None
        events: list[TeleopEvent] = []
        for tok in tokens:
            if tok in KEY_MOTION:
                idx, sign = KEY_MOTION[tok]
                self._active[idx] = (sign, now_s + self.hold_timeout_s)
            elif tok == "SPACE":
                self._active.clear()
            elif tok == "c":
                gripper = self._gripper = 1.0
            elif tok == "v":
                gripper = self._gripper = 0.0
            elif tok == "g":
                gripper = self._gripper = 0.0 if self._gripper >= 0.5 else 1.0
            elif tok in ("+", "="):
                self.speed_scale = min(self.speed_scale * 1.5, 4.0)
            elif tok == "-":
                self.speed_scale = max(self.speed_scale / 1.5, 0.1)
            elif tok in KEY_EVENTS:
                events.append(KEY_EVENTS[tok])
            else:
                self.unknown_keys += 1
        return gripper, events

    def twist_at(self, now_s: float) -> np.ndarray:
        """(6,) twist of the keys active at now_s."""
        tw = np.zeros(6)
        for idx, (sign, until) in list(self._active.items()):
            if now_s >= until:
                del self._active[idx]
                continue
            speed = self.linear_speed_m_s if idx < 3 else self.angular_speed_rad_s
            tw[idx] = sign * speed * self.speed_scale
        return tw

    def read(self) -> TeleopCommand:
        if self.fd is None:
            raise DeviceError("KeyboardDevice.read() before open()")
        now = self._clock()
        gripper, events = self.handle_tokens(parse_keys(self._read_bytes()), now)
        return TeleopCommand(self.twist_at(now), gripper, tuple(events), now)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "linear_speed_m_s": self.linear_speed_m_s,
                "angular_speed_rad_s": self.angular_speed_rad_s, "hold_timeout_s": self.hold_timeout_s}


# -------------------------------------------------------------------------------------- gamepad
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


def apply_deadzone(value: float, deadzone: float) -> float:
    """Axis value in [-1, 1] -> 0 inside the deadzone, else rescaled to (0, 1] keeping the sign."""
    v = float(np.clip(value, -1.0, 1.0))
    if abs(v) <= deadzone:
        return 0.0
    return math.copysign((abs(v) - deadzone) / (1.0 - deadzone), v)


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


# ----------------------------------------------------------------------------------- spacemouse
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


# ------------------------------------------------------------------------------------ freedrive
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


# --------------------------------------------------------------------------------------- replay
REPLAY_FORMAT = "dynaflip-teleop-replay-v1"


@dataclass(frozen=True)
class ReplayStep:
    """One line of a replay file: from t_s (seconds after the device opens) the twist (6,) holds;
    gripper (or None) and events are applied once at t_s."""

    t_s: float
    twist: tuple[float, ...] = (0.0,) * 6
    gripper: float | None = None
    events: tuple[str, ...] = ()


def load_replay(path: str | Path) -> list[ReplayStep]:
    """Read a replay file: JSON lines, first line `{"format": "dynaflip-teleop-replay-v1"}`, then
    one object per step {"t_s": float >= 0 (non-decreasing), "twist": [6 floats] (default 0),
    "gripper": 0..1 or null, "events": ["start" | "stop" | "discard" | "rerecord" | "quit", ...]}.
    JSON only (no pickle). Raises ValueError naming the line on bad content, OSError on I/O."""
    steps: list[ReplayStep] = []
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    if not lines or json.loads(lines[0]).get("format") != REPLAY_FORMAT:
        raise ValueError(f"{path}: first line must be {{\"format\": \"{REPLAY_FORMAT}\"}}")
    last_t = 0.0
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            t = float(d["t_s"])
            tw = tuple(float(v) for v in d.get("twist", [0.0] * 6))
            g = d.get("gripper")
            ev = tuple(TeleopEvent(e).value for e in d.get("events", []))
            TeleopCommand(np.array(tw), g, ev)  # validates twist / gripper
        except (KeyError, TypeError, ValueError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}:{n}: bad replay step ({type(e).__name__}: {e}): {line[:120]!r}") from e
        if not math.isfinite(t) or t < last_t:
            raise ValueError(f"{path}:{n}: t_s must be finite and non-decreasing, got {t}")
        last_t = t
        steps.append(ReplayStep(t, tw, None if g is None else float(g), ev))
    if not steps:
        raise ValueError(f"{path}: no replay steps")
    return steps


def write_replay(path: str | Path, steps: Iterable[ReplayStep | dict]) -> Path:
    """Write a replay file (format of `load_replay`); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = [json.dumps({"format": REPLAY_FORMAT})]
    for s in steps:
        if isinstance(s, ReplayStep):
            s = {"t_s": s.t_s, "twist": list(s.twist), "gripper": s.gripper, "events": list(s.events)}
        out.append(json.dumps(s))
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path


class ReplayDevice(TeleopDevice):
    """Plays back a recorded command sequence through the same code path as a human device.

    Time starts at `open()` on `clock` (pass the sim clock for lock-step sessions: the replay is
    then deterministic). `read()` returns the twist of the latest step with t_s <= elapsed, and
    the gripper targets and events of every step passed since the previous read, each once.
    After the last step (plus `quit_after_s`) a QUIT event is emitted once when `quit_at_end`.

    Args:
        steps: a replay file path or a list of `ReplayStep`.
        clock: seconds (default time.monotonic).
    Raises ValueError for a bad file (see `load_replay`).
    """

    name = "replay"

    def __init__(self, steps: str | Path | Sequence[ReplayStep], clock: Callable[[], float] = time.monotonic,
                 quit_at_end: bool = True, quit_after_s: float = 0.0) -> None:
        self.source = str(steps) if isinstance(steps, (str, Path)) else "<steps>"
        self.steps = load_replay(steps) if isinstance(steps, (str, Path)) else list(steps)
        if not self.steps:
            raise ValueError("a replay needs at least one step")
        self._clock = clock
        self.quit_at_end = quit_at_end
        self.quit_after_s = float(quit_after_s)
        self._t0: float | None = None
        self._next = 0
        self._twist = np.zeros(6)
        self._quit_sent = False

    def open(self) -> None:
        self._t0 = self._clock()
        self._next = 0
        self._twist = np.zeros(6)
        self._quit_sent = False

    @property
    def finished(self) -> bool:
        return self._next >= len(self.steps)

    def read(self) -> TeleopCommand:
        if self._t0 is None:
            raise DeviceError("ReplayDevice.read() before open()")
        now = self._clock()
        elapsed = now - self._t0
        gripper: float | None = None
        events: list[TeleopEvent] = []
        while self._next < len(self.steps) and self.steps[self._next].t_s <= elapsed + 1e-9:
            s = self.steps[self._next]
            self._twist = np.asarray(s.twist, dtype=float)
            if s.gripper is not None:
                gripper = s.gripper
            events.extend(TeleopEvent(e) for e in s.events)
            self._next += 1
        if (self.finished and self.quit_at_end and not self._quit_sent
                and elapsed >= self.steps[-1].t_s + self.quit_after_s - 1e-9):
            events.append(TeleopEvent.QUIT)
            self._quit_sent = True
        return TeleopCommand(self._twist.copy(), gripper, tuple(events), now)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "steps": len(self.steps)}


# ------------------------------------------------------------------------------------- combined
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
