"""`KeyboardDevice`: keyboard teleop in a terminal (termios cbreak mode + select; no X server).

Key map (`KEY_HELP`; the terminal reports presses, not releases: a motion key stays active for
`hold_timeout_s` after its last press or auto-repeat, space stops at once):

    w / s  +x / -x      a / d  +y / -y      r / f  +z (up) / -z     arrows: x / y too
    u / o  +/- roll (about base x)   i / k  +/- pitch (base y)   j / l  +/- yaw (base z)
    c close gripper   v open gripper   g toggle gripper   space stop motion
    + / -  speed x1.5 / ÷1.5
    b start episode   n stop + save   x discard take   z re-record take   Q or Ctrl-D quit
    (Ctrl-C interrupts as usual: the terminal is in cbreak mode, signals stay on)

Read from the session loop's thread only (non-blocking `select` with a zero timeout); times are
on the injected clock (s). The terminal settings are restored by `close()` and at exit.
Source: Python docs, `termios` / `tty.setcbreak`.
"""
from __future__ import annotations

import atexit
import os
import select
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from dynaflip_ros.teleop.devices.command import DeviceError, TeleopCommand, TeleopDevice, TeleopEvent

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
