"""`ReplanSchedule`: when a policy driven by 10 Hz observations samples a new action chunk;
`step` feeds it one observation, `JointStateBuffer` pairs images with joint states.

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

import time
from collections import deque

import numpy as np

from dynaflip_ros.policies.base import ActionChunk, PolicyObservation


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


def step(policy, schedule: ReplanSchedule, obs: PolicyObservation) -> tuple[ActionChunk | None, float]:
    """Feed one observation to `policy`: when `schedule` says a chunk is due, (the new chunk,
    seconds its inference took); otherwise the observation only enters the policy's history:
    (None, 0.0). The caller sends the chunk and reports it with `schedule.chunk_sent`. A
    real-time-chunking policy (`policies.rtc`) first gets the schedule's expected latency as its
    inference delay. A policy's errors propagate (ValueError / RuntimeError)."""
    if not schedule.due(obs.stamp_s):
        policy.observe(obs)
        return None, 0.0
    if hasattr(policy, "expected_delay_s"):  # real-time chunking: actions due before the chunk arrives are frozen
        policy.expected_delay_s = schedule.expected_latency_s
    t0 = time.perf_counter()
    chunk = policy.predict_action_chunk(obs)
    return chunk, time.perf_counter() - t0


class JointStateBuffer:
    """Recent joint states (header stamp s, receipt s, (7,) joints rad + gripper): an observation
    pairs the image with the joint state stamped nearest to the image's capture, as in training
    (recorded frames pair image and state of one instant), not with whatever arrived last.
    Not thread-safe: its owner (the policy node) calls it under its own lock."""

    def __init__(self, maxlen: int = 128) -> None:
        self._states: deque[tuple[float, float, np.ndarray]] = deque(maxlen=maxlen)

    def add(self, stamp_s: float, received_s: float, state: np.ndarray) -> None:
        self._states.append((float(stamp_s), float(received_s), state))

    def nearest(self, stamp_s: float, now_s: float, max_age_s: float) -> np.ndarray | None:
        """The (7,) state stamped nearest to `stamp_s`; None when there is none or the newest
        arrived more than `max_age_s` before `now_s` (the arm's state stream is not fresh)."""
        if not self._states or now_s - self._states[-1][1] > max_age_s:
            return None
        return min(self._states, key=lambda e: abs(e[0] - stamp_s))[2]
