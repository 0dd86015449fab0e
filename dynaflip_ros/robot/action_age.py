"""`ActionAgeMonitor`: how old each executed action is, per servo tick (docs/timing.md).

An action chunk is planned from one observation (its image's capture stamp). When the servo
loop executes an action of it at loop time t, that action's age is t - the observation stamp:
what the arm does now was decided from what the camera saw that long ago. In lock-step
simulation (inference takes no sim time) the age of action i is i * dt; in real time it grows by
capture, transport, inference and the time the chunk waits to be superseded.

Per servo tick `tick(now_s)` counts one of:

- `dry_ticks`: no chunk is being followed (none since the last re-anchor, or the latest chunk's
  last action is due before now): the arm holds or is stopped;
- otherwise the age now - stamp of the latest queued chunk into a histogram of `BIN_MS` wide
  bins (the last bin collects everything older), plus the sum in whole microseconds.

At every chunk switch (`switch`: a chunk arrives while another is being followed) the jump
between the target being commanded and the new chunk's plan for the same instant (max over the
joints) is counted, in whole microradians (`switch_n`, `switch_urad`): how much the new plan
disagrees with the one in flight, which the interpolator then absorbs over one segment.

Counters are integers only, so per-episode shares of a cumulative snapshot are differences
(`episodes.record.counter_delta`); `episodes.record.summarize_action_age` turns a snapshot (or
a difference) into percentiles. Times are seconds on the servo loop's clock (the simulation clock in the sim cell,
monotonic on the real cell). Thread-safe: `chunk` (policy / intake side), `tick` (servo side)
and `snapshot` take one leaf lock.
"""
from __future__ import annotations

import math
import threading
from typing import Any

BIN_MS = 50.0  # a float: `counter_delta` differences ints only, so a difference keeps the width
N_BINS = 61
"""Histogram bins [0, 50), [50, 100), ... [2950, 3000) ms and [3000, inf) ms."""


class ActionAgeMonitor:
    """Histogram of executed actions' ages (module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # leaf
        self._stamp_s: float | None = None
        self._end_s = -math.inf
        self._bins = [0] * N_BINS
        self._sum_us = 0
        self._dry = 0
        self._switch_n = 0
        self._switch_urad = 0

    def chunk(self, stamp_s: float, end_s: float) -> None:
        """The latest queued chunk: planned from the observation stamped `stamp_s`, last action
        due at `end_s` (both loop-clock seconds). Raises ValueError for non-finite times."""
        if not (math.isfinite(stamp_s) and math.isfinite(end_s)):
            raise ValueError(f"chunk times must be finite, got stamp {stamp_s!r}, end {end_s!r}")
        with self._lock:
            self._stamp_s, self._end_s = float(stamp_s), float(end_s)

    def clear(self) -> None:
        """Nothing is followed any more (re-anchor, hold, new episode)."""
        with self._lock:
            self._stamp_s, self._end_s = None, -math.inf

    def age_s(self, now_s: float) -> float | None:
        """now_s - the stamp of the chunk being followed; None when none is (dry)."""
        with self._lock:
            if self._stamp_s is None or now_s > self._end_s:
                return None
            return now_s - self._stamp_s

    def tick(self, now_s: float, *_: Any) -> None:
        """Count one servo tick at loop time `now_s` (extra arguments, e.g. the servo loop's
        `on_tick(now_s, target)`, are ignored)."""
        with self._lock:
            if self._stamp_s is None or now_s > self._end_s:
                self._dry += 1
                return
            age_ms = max(0.0, (now_s - self._stamp_s) * 1e3)
            self._bins[min(int(age_ms // BIN_MS), N_BINS - 1)] += 1
            self._sum_us += int(round(age_ms * 1e3))

    def switch(self, jump_rad: float) -> None:
        """Count one chunk switch whose plan jumped by `jump_rad` (>= 0, max over the joints)."""
        if not math.isfinite(jump_rad):
            return
        with self._lock:
            self._switch_n += 1
            self._switch_urad += int(round(abs(jump_rad) * 1e6))

    def snapshot(self) -> dict[str, Any]:
        """Cumulative counters: {"bin_ms", "bins" (N_BINS ints), "sum_us", "dry_ticks",
        "switch_n", "switch_urad"}."""
        with self._lock:
            return {"bin_ms": BIN_MS, "bins": list(self._bins), "sum_us": self._sum_us, "dry_ticks": self._dry,
                    "switch_n": self._switch_n, "switch_urad": self._switch_urad}
