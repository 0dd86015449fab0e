"""Temporal ensembling of overlapping action chunks (policies/ensemble.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from dynaflip_ros.policies.base import ActionChunk, PolicyObservation
from dynaflip_ros.policies.ensemble import TemporalEnsembler, TemporallyEnsembledPolicy

DT = 0.1


def chunk(t0: float, values, width: int = 7) -> ActionChunk:
    a = np.repeat(np.asarray(values, dtype=np.float32)[:, None], width, axis=1)
    return ActionChunk(actions=a, t0_s=t0, dt_s=DT)


def test_first_chunk_passes_through():
    e = TemporalEnsembler(0.01)
    c = chunk(1.0, [1, 2, 3])
    out = e.add(c)
    np.testing.assert_allclose(out.actions, c.actions)
    assert out.t0_s == c.t0_s and out.dt_s == c.dt_s


def test_overlap_is_weighted_mean_oldest_first():
    m = 0.5
    e = TemporalEnsembler(m)
    e.add(chunk(0.0, [0.0, 10.0, 20.0]))
    e.add(chunk(0.1, [12.0, 22.0, 32.0]))
    out = e.add(chunk(0.2, [25.0, 35.0, 45.0]))
    w = [math.exp(-m * i) for i in range(3)]
    expected_first = (20.0 * w[0] + 22.0 * w[1] + 25.0 * w[2]) / sum(w)  # due at 0.2: three predictions
    expected_second = (32.0 * w[0] + 35.0 * w[1]) / (w[0] + w[1])  # due at 0.3: two
    np.testing.assert_allclose(out.actions[:, 0], [expected_first, expected_second, 45.0], rtol=1e-6)


def test_zero_coeff_is_plain_mean_and_negative_favours_newest():
    plain = TemporalEnsembler(0.0)
    plain.add(chunk(0.0, [0.0, 4.0]))
    assert plain.add(chunk(0.1, [8.0, 1.0])).actions[0, 0] == pytest.approx(6.0)
    newest = TemporalEnsembler(-5.0)
    newest.add(chunk(0.0, [0.0, 4.0]))
    assert newest.add(chunk(0.1, [8.0, 1.0])).actions[0, 0] > 7.9


def test_past_slots_are_dropped_and_reset_forgets():
    e = TemporalEnsembler(0.0)
    e.add(chunk(0.0, [1.0, 1.0, 1.0]))
    e.add(chunk(0.5, [5.0, 5.0]))  # no overlap: everything pending before 0.5 is gone
    assert sorted(e._count) == [5, 6]
    e.reset()
    np.testing.assert_allclose(e.add(chunk(3.0, [7.0])).actions, chunk(3.0, [7.0]).actions)


@pytest.mark.parametrize("bad", [
    ActionChunk(actions=np.zeros((2, 7), np.float32), t0_s=0.15, dt_s=DT),  # off the grid
    ActionChunk(actions=np.zeros((2, 7), np.float32), t0_s=0.2, dt_s=0.05),  # other spacing
    ActionChunk(actions=np.full((2, 7), np.nan, np.float32), t0_s=0.2, dt_s=DT),
])
def test_bad_chunks_raise(bad):
    e = TemporalEnsembler()
    e.add(chunk(0.0, [0.0, 0.0]))
    with pytest.raises(ValueError):
        e.add(bad)


def test_non_finite_coeff_raises():
    with pytest.raises(ValueError):
        TemporalEnsembler(float("nan"))


class _CountingPolicy:
    """Returns chunk k = [k, k+1] starting at the observation stamp + DT."""

    def __init__(self):
        self.calls, self.observed, self.seed = 0, 0, None
        self.model_config = "passed through"

    def reset(self, seed=None):
        self.calls, self.seed = 0, seed

    def observe(self, obs):
        self.observed += 1

    def predict_action_chunk(self, obs):
        k = self.calls
        self.calls += 1
        return chunk(obs.stamp_s + DT, [10.0 * k, 10.0 * k + 10.0])


def test_wrapper_ensembles_every_query_and_passes_through():
    inner = _CountingPolicy()
    pol = TemporallyEnsembledPolicy(inner, coeff=0.0)
    obs = lambda t: PolicyObservation(embedding=np.zeros(4, np.float32), state=np.zeros(7, np.float32), stamp_s=t)
    pol.reset(seed=3)
    assert inner.seed == 3 and pol.model_config == "passed through"
    pol.predict_action_chunk(obs(0.0))  # due 0.1: 0, due 0.2: 10
    out = pol.predict_action_chunk(obs(0.1))  # due 0.2: 10, due 0.3: 20
    np.testing.assert_allclose(out.actions[:, 0], [10.0, 20.0])
    pol.observe(obs(0.2))
    assert inner.observed == 1
    pol.reset(seed=4)  # a new episode starts from nothing
    np.testing.assert_allclose(pol.predict_action_chunk(obs(5.0)).actions[:, 0], [0.0, 10.0])
