"""`MonotonicClock`: a time source that never runs backwards, over an injected clock.

`SafeArm` measures elapsed time (watchdog, per-time speed limit) on a clock the caller injects:
`time.monotonic` on the real arm, simulation time in the lock-step simulation, a fake clock in
tests. `time.monotonic` never steps back; an injected clock may (a simulation restarted, a test).
Without care, a clock that steps back 10 s delays the watchdog by 10 s.

Rule (re-basing): when a reading is earlier than the previous one, the clock holds still at
the previous value for that step and continues from there: elapsed time only ever grows by the
forward increments of the source. So a step back of 10 s costs the watchdog nothing and can
never buy a larger speed-limit step. Each step back is counted and logged.

A clock that raises, or a non-finite or non-numeric reading, raises `SafetyViolation("clock")`
(the caller fails safe).
Not thread-safe: its owner (`SafeArm`, under its lock) is the only caller.
"""
from __future__ import annotations

import logging
import math
from typing import Callable

from dynaflip_ros.robot.commands import SafetyViolation, real_scalar

log = logging.getLogger(__name__)


class MonotonicClock:
    """Wraps `source` (seconds) so that readings never decrease (see the module docstring).

    Attributes:
        steps_back: how many times the source stepped back (each was re-based).
        stepped_back_s: total time the source stepped back, seconds.
    """

    def __init__(self, source: Callable[[], float]) -> None:
        if not callable(source):
            raise TypeError(f"clock must be callable, got {type(source).__name__}")
        self._source = source
        self._last_raw: float | None = None
        self._last_now_s = -math.inf
        self._offset_s = 0.0
        self.steps_back = 0
        self.stepped_back_s = 0.0

    def __call__(self) -> float:
        """Now, seconds: the source reading plus the accumulated re-basing offset."""
        try:
            reading = self._source()
        except Exception as e:  # noqa: BLE001 - any clock failure is a refusal, never a crash
            raise SafetyViolation("clock", f"clock failed: {type(e).__name__}: {e}") from e
        raw = real_scalar(reading, "clock reading", reason="clock")
        if not math.isfinite(raw):
            raise SafetyViolation("clock", f"clock reading is not finite: {raw!r}")
        if self._last_raw is not None and raw < self._last_raw:
            back = self._last_raw - raw
            self._offset_s += back
            self.steps_back += 1
            self.stepped_back_s += back
            log.warning("clock stepped back by %.6f s: re-based (elapsed time continues from %.6f s)",
                        back, self._last_now_s)
        self._last_raw = raw
        # max(): the offset arithmetic must not lose an ulp and step back after all.
        self._last_now_s = max(raw + self._offset_s, self._last_now_s)
        return self._last_now_s
