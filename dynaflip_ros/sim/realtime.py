"""`RealtimeSimStepper`: a thread that advances the MuJoCo world to track the wall clock.

For the ROS `sim_cell` process, where the camera, the arm driver and the policy run on real
time: every control period (1 / rate_hz of simulation time) the stepper optionally calls
`on_tick(sim_time_s)` (e.g. a `ServoLoop.tick` on the sim clock, so servo targets stay in
lockstep with physics) and then steps physics by one period, both through the world's owner API
(`PickIntoSinkEnv.advance_period`, which holds the world's lock for the period), one period at
a time so camera renders and state reads interleave. It tracks `time.monotonic()` scaled by
`real_time_factor`; when it falls behind by more than `max_catchup_s` (a slow CPU or a long
render) the excess is dropped (counted in `dropped_s`) instead of fast-forwarding, so the sim
slows down rather than jumping. `stats` reports the achieved real-time factor.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

log = logging.getLogger(__name__)


@dataclass
class RealtimeStats:
    """ticks: control periods stepped; sim_elapsed_s / wall_elapsed_s since start();
    real_time_factor: sim_elapsed / wall_elapsed since start; recent_real_time_factor: the same
    over the last ~2 s; dropped_s: sim time given up to the catch-up cap; skipped_ahead_s: sim
    time that ran ahead of the wall clock outside the stepper (followed, not waited for); lag_s: how far the sim
    trails its wall-clock target right now; tick_errors: exceptions raised by on_tick."""

    ticks: int = 0
    sim_elapsed_s: float = 0.0
    wall_elapsed_s: float = 0.0
    real_time_factor: float = float("nan")
    recent_real_time_factor: float = float("nan")
    dropped_s: float = 0.0
    skipped_ahead_s: float = 0.0
    lag_s: float = 0.0
    tick_errors: int = 0


class RealtimeSimStepper:
    """Advances `env` physics in a daemon thread to follow the monotonic clock.

    Args:
        env: a `PickIntoSinkEnv` (uses env.advance_period, env.sim_time_s).
        rate_hz: control periods per simulated second (125 = CB3 servo rate); 1 / rate_hz must
            be a whole number of physics timesteps.
        real_time_factor: target sim seconds per wall second (1.0 = real time).
        max_catchup_s: largest sim-time lag the stepper tries to make up; beyond it time is dropped.
        on_tick: optional callable(sim_time_s) run with the world held before each period's physics.
        clock: wall clock (default time.monotonic).
    Raises ValueError on bad arguments.
    """

    def __init__(self, env, rate_hz: float = 125.0, real_time_factor: float = 1.0,
                 max_catchup_s: float = 0.1, on_tick: Callable[[float], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not (math.isfinite(rate_hz) and rate_hz > 0):
            raise ValueError(f"rate_hz must be > 0, got {rate_hz!r}")
        if not (math.isfinite(real_time_factor) and 0 < real_time_factor <= 100):
            raise ValueError(f"real_time_factor must be in (0, 100], got {real_time_factor!r}")
        if not (math.isfinite(max_catchup_s) and max_catchup_s > 0):
            raise ValueError(f"max_catchup_s must be > 0, got {max_catchup_s!r}")
        self.env = env
        self.period_s = 1.0 / float(rate_hz)
        substeps = self.period_s / env.timestep_s
        if abs(substeps - round(substeps)) > 1e-6 or round(substeps) < 1:
            raise ValueError(f"period {self.period_s} s is not a whole number of physics steps ({env.timestep_s} s)")
        self.real_time_factor = float(real_time_factor)
        self.max_catchup_s = float(max_catchup_s)
        self.on_tick = on_tick
        self._clock = clock
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._stats_lock = threading.Lock()
        self._stats = RealtimeStats()
        self._window: deque[tuple[float, float]] = deque()  # (wall, sim) samples for the recent RTF
        self._wall0 = 0.0
        self._sim0 = 0.0

    def start(self) -> None:
        """Start the thread. Raises RuntimeError if already running."""
        if self.running:
            raise RuntimeError("RealtimeSimStepper already running")
        self._stop.clear()
        with self._stats_lock:
            self._stats = RealtimeStats()
            self._window.clear()
        self._thread = threading.Thread(target=self._run, name="sim_realtime", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop and join the thread (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.error("sim stepper thread did not stop within %.1f s", timeout_s)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def stats(self) -> RealtimeStats:
        """Snapshot of the statistics."""
        with self._stats_lock:
            s = RealtimeStats(**vars(self._stats))
            if len(self._window) >= 2:
                (w0, s0), (w1, s1) = self._window[0], self._window[-1]
                if w1 > w0:
                    s.recent_real_time_factor = (s1 - s0) / (w1 - w0)
        return s

    def __enter__(self) -> "RealtimeSimStepper":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _tick(self, sim_time_s: float) -> None:
        """on_tick, counted and logged instead of raised: a callback must not stop the sim."""
        if self.on_tick is None:
            return
        try:
            self.on_tick(sim_time_s)
        except Exception:  # noqa: BLE001 - see docstring
            with self._stats_lock:
                self._stats.tick_errors += 1
            log.exception("RealtimeSimStepper on_tick failed")

    def _run(self) -> None:
        env = self.env
        wall0 = self._clock()
        sim_start = env.sim_time_s
        sim_anchor = sim_start  # sim time that corresponds to wall0 (moved back on drops)
        dropped = 0.0
        ahead = 0.0
        while not self._stop.is_set():
            now = self._clock()
            lag = sim_anchor + self.real_time_factor * (now - wall0) - env.sim_time_s
            if lag > self.max_catchup_s:
                excess = lag - self.max_catchup_s
                sim_anchor -= excess
                dropped += excess
                lag = self.max_catchup_s
            if lag < -self.max_catchup_s:
                # sim time ran ahead of the wall clock (physics advanced outside the stepper, e.g.
                # an env.reset that settles objects): follow from here instead of pausing the
                # whole sim until the wall clock catches up.
                sim_anchor -= lag
                ahead += -lag
                lag = 0.0
            if lag < self.period_s:
                # Ahead of (or level with) the wall clock: sleep until the next period is due.
                wait = (self.period_s - lag) / self.real_time_factor
                self._stop.wait(min(wait, 0.05))
                continue
            # One period at a time, re-reading the clock in between, so the lag stays bounded.
            sim = env.advance_period(self.period_s, self._tick)
            wall = self._clock()
            with self._stats_lock:
                st = self._stats
                st.ticks += 1
                st.sim_elapsed_s = sim - sim_start
                st.wall_elapsed_s = wall - wall0
                st.real_time_factor = st.sim_elapsed_s / st.wall_elapsed_s if st.wall_elapsed_s > 0 else float("nan")
                st.dropped_s = dropped
                st.skipped_ahead_s = ahead
                st.lag_s = sim_anchor + self.real_time_factor * (wall - wall0) - sim
                self._window.append((wall, sim))
                while self._window and wall - self._window[0][0] > 2.0:
                    self._window.popleft()
