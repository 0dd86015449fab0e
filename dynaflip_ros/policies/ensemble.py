"""Temporal ensembling of overlapping action chunks (ACT: Zhao et al., "Learning Fine-Grained
Bimanual Manipulation with Low-Cost Hardware", RSS 2023).

The policy is queried at every observation; each query predicts actions for the next few due
times, so the chunks overlap. Every prediction made for a due time is kept, and the action sent
for that time is their weighted mean with weights w_i = exp(-coeff * i), i = 0 for the oldest
prediction (LeRobot `ACTTemporalEnsembler`: coeff 0.01 in the ACT paper; coeff > 0 favours the
older predictions, 0 is the plain mean, < 0 favours the newer ones). The mean is updated online
per due time, so memory is one running mean and one count per pending slot.

Times: a chunk's action i is due at t0_s + i * dt_s (`policies.base.ActionChunk`); due times are
matched on a grid of dt_s anchored at the first chunk of the episode (a chunk off that grid by
more than a quarter period raises ValueError, which the 10 Hz lock-step evaluation never
produces). Slots whose due time has passed are dropped when a newer chunk arrives.
The gripper channel is averaged like the joints (0 open .. 1 closed; the gripper driver takes
the continuous command).

Not thread-safe: its owner (the evaluation loop or the policy node) calls it from one thread.
"""
from __future__ import annotations

import math

import numpy as np

from dynaflip_ros.policies.base import ActionChunk, PolicyObservation


class TemporalEnsembler:
    """Running weighted means of overlapping chunks' predictions per due time (module docstring).

    Args:
        coeff: the weight exponent m in w_i = exp(-m * i) (finite; ACT uses 0.01).
    Raises ValueError for a non-finite coeff.
    """

    def __init__(self, coeff: float = 0.01) -> None:
        if not math.isfinite(coeff):
            raise ValueError(f"temporal ensemble coeff must be finite, got {coeff!r}")
        self.coeff = float(coeff)
        self.reset()

    def reset(self) -> None:
        """Episode start: forget every pending prediction."""
        self._origin_s: float | None = None
        self._dt_s: float | None = None
        self._mean: dict[int, np.ndarray] = {}  # slot -> (7,) running weighted mean
        self._count: dict[int, int] = {}  # slot -> predictions averaged so far

    def _slots(self, chunk: ActionChunk) -> np.ndarray:
        if self._origin_s is None:
            self._origin_s, self._dt_s = float(chunk.t0_s), float(chunk.dt_s)
        if not math.isclose(chunk.dt_s, self._dt_s, rel_tol=1e-6):
            raise ValueError(f"chunk dt_s {chunk.dt_s} differs from the episode's {self._dt_s}")
        k = (chunk.t0_s - self._origin_s) / self._dt_s
        if abs(k - round(k)) > 0.25:
            raise ValueError(f"chunk t0_s {chunk.t0_s} is off the {self._dt_s} s grid of this episode")
        return round(k) + np.arange(len(chunk.actions))

    def add(self, chunk: ActionChunk) -> ActionChunk:
        """Fold `chunk` (actions (H, A)) into the running means and return the ensembled chunk for
        the same due times (same t0_s, dt_s, shape). Raises ValueError on a chunk off the
        episode's time grid or with non-finite actions."""
        actions = np.asarray(chunk.actions, dtype=np.float64)
        if actions.ndim != 2 or not np.all(np.isfinite(actions)):
            raise ValueError(f"chunk actions must be a finite (H, A) array, got shape {actions.shape}")
        slots = self._slots(chunk)
        for old in [s for s in self._mean if s < slots[0]]:  # due before this chunk starts: executed
            del self._mean[old], self._count[old]
        out = np.empty_like(actions)
        for j, s in enumerate(int(x) for x in slots):
            n = self._count.get(s, 0)
            if n == 0:
                mean = actions[j]
            else:  # weights of predictions 0..n-1 sum to S(n); the new one weighs exp(-coeff * n)
                w_new = math.exp(-self.coeff * n)
                s_old = sum(math.exp(-self.coeff * i) for i in range(n))
                mean = (self._mean[s] * s_old + actions[j] * w_new) / (s_old + w_new)
            self._mean[s], self._count[s] = mean, n + 1
            out[j] = mean
        return ActionChunk(actions=out.astype(np.float32), t0_s=chunk.t0_s, dt_s=chunk.dt_s)


class TemporallyEnsembledPolicy:
    """A policy whose every chunk is the temporal ensemble (`TemporalEnsembler`) of the wrapped
    policy's chunks so far in the episode. Query it at every observation (`replan_steps` 1 in
    `eval.closed_loop`): each call samples a new chunk from `policy` and returns the running
    means for its due times. `reset`, `observe` and unknown attributes pass through to `policy`.
    """

    def __init__(self, policy, coeff: float = 0.01) -> None:
        self.policy = policy
        self.ensembler = TemporalEnsembler(coeff)

    def reset(self, seed: int | None = None) -> None:
        self.policy.reset(seed=seed)
        self.ensembler.reset()

    def observe(self, obs: PolicyObservation) -> None:
        self.policy.observe(obs)

    def predict_action_chunk(self, obs: PolicyObservation) -> ActionChunk:
        return self.ensembler.add(self.policy.predict_action_chunk(obs))

    def __getattr__(self, name: str):
        return getattr(self.policy, name)
