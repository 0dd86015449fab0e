"""`ReplanSchedule`: when a policy driven by 10 Hz observations samples a new action chunk.

A new chunk is sampled when

- there is no chunk yet in this episode, or
- the current chunk is used up: its last action is due before this observation's stamp plus
  the expected observation-to-driver latency plus one action period (so the driver never runs
  dry), or
- `n_action_steps` actions of the current chunk are due (0 = only the rule above).

The expected latency is an exponential moving average of the measured observation-stamp-to-
publish time. Times are seconds on the observations' clock (the ROS clock in the policy node).
Not thread-safe: its owner (the policy node) calls it under its own lock.
"""
from __future__ import annotations

from dynaflip_ros.policies.base import ActionChunk


class ReplanSchedule:
    """When to sample a new chunk (module docstring).

    Args:
        dt_s: action spacing of the policy's chunks (1 / fps).
        n_action_steps: replan after this many actions of a chunk are due; 0 disables the rule.
        latency_ema: smoothing of the measured observation-to-publish latency (0..1, weight of
            the newest sample).
    """

    def __init__(self, dt_s: float, n_action_steps: int = 0, latency_ema: float = 0.2) -> None:
        if not dt_s > 0:
            raise ValueError(f"dt_s must be > 0, got {dt_s}")
        if n_action_steps < 0:
            raise ValueError(f"n_action_steps must be >= 0, got {n_action_steps}")
        self.dt_s = float(dt_s)
        self.n_action_steps = int(n_action_steps)
        self.latency_ema = float(latency_ema)
        self.expected_latency_s = 0.0
        self._chunk: ActionChunk | None = None

    def reset(self) -> None:
        """Episode start: the next observation replans."""
        self._chunk = None

    def due(self, stamp_s: float) -> bool:
        """Whether the observation stamped `stamp_s` must produce a new chunk."""
        c = self._chunk
        if c is None:
            return True
        last_due_s = c.t0_s + (len(c.actions) - 1) * c.dt_s
        if stamp_s + self.expected_latency_s + self.dt_s >= last_due_s:
            return True
        return self.n_action_steps > 0 and stamp_s >= c.t0_s + (self.n_action_steps - 0.5) * c.dt_s

    def chunk_sent(self, chunk: ActionChunk, latency_s: float) -> None:
        """Record a published chunk and the observation-stamp-to-publish latency it took."""
        self._chunk = chunk
        if self.expected_latency_s == 0.0:
            self.expected_latency_s = float(latency_s)
        else:
            a = self.latency_ema
            self.expected_latency_s = (1 - a) * self.expected_latency_s + a * float(latency_s)
