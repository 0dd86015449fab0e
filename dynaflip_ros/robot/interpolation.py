"""Linear interpolation of timestamped action chunks for the servo loop (docs/timing.md).

The policy emits action chunks at ~10 Hz (H actions at dt 0.1 s, each due at a timestamp on the
observation clock); the servo loop samples the interpolator at the controller rate (125 Hz CB3).
Rules (as in the real-robot stacks docs/timing.md cites):

- actions whose time has passed (time <= now_s) are dropped;
- the new segment starts from the *current* commanded target at now_s (the interpolated value of
  the queue being followed, or the last target / anchor), never from an older chunk's start;
- the latest chunk wins: its actions replace every queued future action;
- after the last waypoint, `sample` returns the final waypoint once and then None (the caller
  holds; the SafeArm watchdog stops the arm after its timeout).

Thread-safe: `add_chunk` (policy thread) and `sample` (servo thread) share a lock.
"""
from __future__ import annotations

import threading

import numpy as np


class ActionChunkInterpolator:
    """Queue of timestamped waypoints, sampled by linear interpolation.

    Args:
        n_dims: size of one action (7: 6 joint targets in rad + gripper 0..1).
        anchor: optional (n_dims,) starting target (e.g. the measured pose); see `reset`.
    """

    def __init__(self, n_dims: int = 7, anchor: np.ndarray | None = None) -> None:
        if not isinstance(n_dims, (int, np.integer)) or isinstance(n_dims, bool) or n_dims < 1:
            raise ValueError(f"n_dims must be a positive int, got {n_dims!r}")
        self.n_dims = int(n_dims)
        self._lock = threading.Lock()
        self._times = np.zeros(0)  # (K,) waypoint times, s, strictly increasing
        self._values = np.zeros((0, self.n_dims))  # (K, n_dims)
        self._last: np.ndarray | None = None  # (n_dims,) last sampled target or anchor
        self.chunks_added = 0
        self.stale_chunks = 0  # chunks whose every action was already in the past
        self.dropped_actions = 0  # actions dropped because their time had passed
        if anchor is not None:
            self.reset(anchor)

    # ------------------------------------------------------------------ public API
    def reset(self, anchor: np.ndarray | None = None) -> None:
        """Drop every queued action and re-anchor (the next segment starts at `anchor`).

        anchor: (n_dims,) finite target, normally the measured pose + gripper; None clears the
        anchor too (the next chunk then starts at its first remaining action).
        Raises ValueError on a wrong shape or non-finite anchor.
        """
        a = None if anchor is None else self._check_vector(anchor, "anchor")
        with self._lock:
            self._times = np.zeros(0)
            self._values = np.zeros((0, self.n_dims))
            self._last = a

    def add_chunk(self, times_s: np.ndarray, targets: np.ndarray, now_s: float) -> int:
        """Queue an action chunk; the latest chunk replaces every queued future action.

        Args:
            times_s: (H,) due times of the actions, seconds, strictly increasing, same clock as
                now_s (e.g. `ActionChunk.times_s()`).
            targets: (H, n_dims) absolute targets (joints rad + gripper).
            now_s: current time on that clock.
        Returns:
            The number of actions kept (those with time > now_s). 0 means the chunk was stale
            (all actions in the past): it is ignored and the current queue is kept.
        Raises:
            ValueError: wrong shapes, H == 0, non-finite values, or times not strictly increasing.
        """
        t = np.asarray(times_s, dtype=float)
        x = np.asarray(targets, dtype=float)
        if t.ndim != 1 or t.shape[0] == 0:
            raise ValueError(f"times_s must have shape (H,) with H >= 1, got {t.shape}")
        if x.shape != (t.shape[0], self.n_dims):
            raise ValueError(f"targets must have shape ({t.shape[0]}, {self.n_dims}), got {x.shape}")
        if not np.all(np.isfinite(t)):
            raise ValueError(f"times_s must be finite, got {t}")
        if not np.all(np.isfinite(x)):
            raise ValueError("targets contain NaN/inf")
        if t.shape[0] > 1 and not np.all(np.diff(t) > 0):
            raise ValueError(f"times_s must be strictly increasing, got {t}")
        now = float(now_s)
        if not np.isfinite(now):
            raise ValueError(f"now_s must be finite, got {now_s!r}")
        keep = t > now  # (H,)
        n_keep = int(np.count_nonzero(keep))
        with self._lock:
            self.chunks_added += 1
            self.dropped_actions += t.shape[0] - n_keep
            if n_keep == 0:
                self.stale_chunks += 1
                return 0
            start = self._value_at_locked(now)
            if start is None:  # never anchored: the segment starts at the first kept action
                self._times = t[keep].copy()
                self._values = x[keep].copy()
            else:
                self._times = np.concatenate([[now], t[keep]])  # (n_keep + 1,)
                self._values = np.concatenate([start[None, :], x[keep]], axis=0)  # (n_keep + 1, n_dims)
            return n_keep

    def sample(self, now_s: float) -> np.ndarray | None:
        """Target at now_s by linear interpolation between queued waypoints.

        Returns a (n_dims,) copy; before the first waypoint the first waypoint (hold); at or
        after the last waypoint the last waypoint once, after which the queue is empty and
        sample returns None (nothing to follow: hold and let the watchdog stop the arm).
        Raises ValueError for a non-finite now_s.
        """
        now = float(now_s)
        if not np.isfinite(now):
            raise ValueError(f"now_s must be finite, got {now_s!r}")
        with self._lock:
            if self._times.shape[0] == 0:
                return None
            value = self._value_at_locked(now)
            if now >= self._times[-1]:
                self._times = np.zeros(0)
                self._values = np.zeros((0, self.n_dims))
            else:
                # Drop waypoints fully behind now (keep the one that starts the current segment).
                i = int(np.searchsorted(self._times, now, side="right")) - 1
                if i > 0:
                    self._times = self._times[i:]
                    self._values = self._values[i:]
            self._last = value.copy()
            return value

    @property
    def last_target(self) -> np.ndarray | None:
        """(n_dims,) last sampled target (or the anchor), None if never anchored/sampled."""
        with self._lock:
            return None if self._last is None else self._last.copy()

    @property
    def n_queued(self) -> int:
        """Number of queued waypoints (including the segment start)."""
        with self._lock:
            return int(self._times.shape[0])

    @property
    def end_time_s(self) -> float | None:
        """Due time of the last queued waypoint, None when the queue is empty."""
        with self._lock:
            return float(self._times[-1]) if self._times.shape[0] else None

    # ------------------------------------------------------------------ internals
    def _value_at_locked(self, now: float) -> np.ndarray | None:
        """Interpolated queue value at now, or the last target when the queue is empty."""
        times, values = self._times, self._values
        if times.shape[0] == 0:
            return None if self._last is None else self._last.copy()
        if now <= times[0]:
            return values[0].copy()
        if now >= times[-1]:
            return values[-1].copy()
        i = int(np.searchsorted(times, now, side="right")) - 1  # times[i] <= now < times[i+1]
        w = (now - times[i]) / (times[i + 1] - times[i])
        return (1.0 - w) * values[i] + w * values[i + 1]  # (n_dims,)

    def _check_vector(self, v: np.ndarray, name: str) -> np.ndarray:
        a = np.asarray(v, dtype=float)
        if a.shape != (self.n_dims,):
            raise ValueError(f"{name} must have shape ({self.n_dims},), got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} must be finite, got {a}")
        return a.copy()
