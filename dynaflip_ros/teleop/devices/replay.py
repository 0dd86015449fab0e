"""`ReplayDevice`: a recorded command sequence (JSON lines) played back as a device.

File format `dynaflip-teleop-replay-v1` (`load_replay`, `write_replay`): times `t_s` in seconds
after the device opens, twists in m/s and rad/s. Deterministic on the sim clock (lock-step
sessions). JSON only (no pickle). Read from the session loop's thread only.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dynaflip_ros.teleop.devices.command import DeviceError, TeleopCommand, TeleopDevice, TeleopEvent

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
