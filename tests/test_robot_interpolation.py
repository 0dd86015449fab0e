"""ActionChunkInterpolator semantics (docs/timing.md)."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from dynaflip_ros.robot.interpolation import ActionChunkInterpolator

A0 = np.zeros(7)


def chunk(t0: float, values, dt: float = 0.1):
    x = np.asarray(values, dtype=float)
    if x.ndim == 1:
        x = np.repeat(x[:, None], 7, axis=1)  # (H, 7) every dim = the scalar
    return t0 + dt * np.arange(len(x)), x


def test_no_chunk_returns_none():
    it = ActionChunkInterpolator()
    assert it.sample(0.0) is None
    it.reset(A0)
    assert it.sample(0.0) is None  # anchored but nothing to follow: hold
    np.testing.assert_array_equal(it.last_target, A0)


def test_segment_starts_from_anchor_and_interpolates_linearly():
    it = ActionChunkInterpolator(anchor=A0)
    t, x = chunk(1.0, [1.0, 2.0, 3.0])  # due at 1.0, 1.1, 1.2
    assert it.add_chunk(t, x, now_s=0.9) == 3
    np.testing.assert_allclose(it.sample(0.9), A0)  # starts at the anchor, no jump
    np.testing.assert_allclose(it.sample(0.95), np.full(7, 0.5))
    np.testing.assert_allclose(it.sample(1.0), np.full(7, 1.0))
    np.testing.assert_allclose(it.sample(1.05), np.full(7, 1.5))
    np.testing.assert_allclose(it.sample(1.15), np.full(7, 2.5))


def test_past_actions_are_dropped():
    it = ActionChunkInterpolator(anchor=A0)
    t, x = chunk(0.0, [10.0, 20.0, 30.0, 40.0])  # due at 0.0 .. 0.3
    kept = it.add_chunk(t, x, now_s=0.15)
    assert kept == 2 and it.dropped_actions == 2
    # The segment runs from the anchor at 0.15 to action 2 (30) at 0.2: actions 0 and 1 never appear.
    np.testing.assert_allclose(it.sample(0.15), A0)
    np.testing.assert_allclose(it.sample(0.175), np.full(7, 15.0))
    np.testing.assert_allclose(it.sample(0.2), np.full(7, 30.0))
    np.testing.assert_allclose(it.sample(0.25), np.full(7, 35.0))


def test_action_due_exactly_now_is_dropped():
    it = ActionChunkInterpolator(anchor=A0)
    t, x = chunk(0.0, [5.0, 6.0])
    assert it.add_chunk(t, x, now_s=0.0) == 1


def test_new_chunk_starts_from_current_target_not_old_start():
    it = ActionChunkInterpolator(anchor=A0)
    t, x = chunk(0.1, [1.0, 2.0, 3.0, 4.0])
    it.add_chunk(t, x, now_s=0.0)
    v_before = it.sample(0.25)  # halfway 2 -> 3
    np.testing.assert_allclose(v_before, np.full(7, 2.5))
    # A new chunk arrives at 0.25 whose first actions are stale and whose future differs.
    t2, x2 = chunk(0.2, [-9.0, 10.0, 11.0])  # due 0.2 (past), 0.3, 0.4
    assert it.add_chunk(t2, x2, now_s=0.25) == 2
    np.testing.assert_allclose(it.sample(0.25), v_before)  # continuous: no jump to -9 or 0
    np.testing.assert_allclose(it.sample(0.275), np.full(7, (2.5 + 10.0) / 2))
    np.testing.assert_allclose(it.sample(0.3), np.full(7, 10.0))


def test_latest_chunk_wins_over_queued_future_actions():
    it = ActionChunkInterpolator(anchor=A0)
    t, x = chunk(0.1, [1.0] * 10)  # queued until 1.0 s
    it.add_chunk(t, x, now_s=0.0)
    t2, x2 = chunk(0.2, [5.0, 5.0])  # ends at 0.3
    it.add_chunk(t2, x2, now_s=0.1)
    assert it.end_time_s == pytest.approx(0.3)
    np.testing.assert_allclose(it.sample(0.31), np.full(7, 5.0))  # final target once
    assert it.sample(0.5) is None  # the old chunk's actions up to 1.0 s are gone


def test_end_of_chunk_returns_last_once_then_none():
    it = ActionChunkInterpolator(anchor=A0)
    t, x = chunk(0.1, [1.0, 2.0])
    it.add_chunk(t, x, now_s=0.0)
    np.testing.assert_allclose(it.sample(0.195), np.full(7, 1.95))
    np.testing.assert_allclose(it.sample(0.21), np.full(7, 2.0))  # overshoot: the final target once
    assert it.sample(0.22) is None
    np.testing.assert_allclose(it.last_target, np.full(7, 2.0))
    # The next chunk starts from the held final target.
    t2, x2 = chunk(1.1, [4.0])
    it.add_chunk(t2, x2, now_s=1.0)
    np.testing.assert_allclose(it.sample(1.05), np.full(7, 3.0))


def test_stale_chunk_is_ignored_and_queue_kept():
    it = ActionChunkInterpolator(anchor=A0)
    t, x = chunk(1.0, [1.0, 2.0])
    it.add_chunk(t, x, now_s=0.9)
    t2, x2 = chunk(0.0, [7.0, 8.0])  # all due before now
    assert it.add_chunk(t2, x2, now_s=0.95) == 0
    assert it.stale_chunks == 1
    np.testing.assert_allclose(it.sample(1.0), np.full(7, 1.0))


def test_unanchored_chunk_starts_at_first_kept_action():
    it = ActionChunkInterpolator()
    t, x = chunk(0.1, [1.0, 2.0])
    it.add_chunk(t, x, now_s=0.0)
    np.testing.assert_allclose(it.sample(0.05), np.full(7, 1.0))  # holds the first action
    np.testing.assert_allclose(it.sample(0.15), np.full(7, 1.5))


def test_reset_drops_queue_and_reanchors():
    it = ActionChunkInterpolator(anchor=A0)
    t, x = chunk(0.1, [1.0, 2.0])
    it.add_chunk(t, x, now_s=0.0)
    anchor = np.arange(7.0)
    it.reset(anchor)
    assert it.n_queued == 0 and it.sample(0.15) is None
    t2, x2 = chunk(0.3, [0.0])
    it.add_chunk(t2, x2, now_s=0.2)
    np.testing.assert_allclose(it.sample(0.2), anchor)
    np.testing.assert_allclose(it.sample(0.25), anchor / 2)


def test_samples_monotonic_toward_monotonic_waypoints():
    rng = np.random.default_rng(0)
    it = ActionChunkInterpolator(anchor=A0)
    vals = np.cumsum(rng.uniform(0, 1, 16))
    t, x = chunk(0.1, vals)
    it.add_chunk(t, x, now_s=0.0)
    samples = [it.sample(s) for s in np.arange(0.0, 1.6, 0.008)]
    seq = np.array([s[0] for s in samples if s is not None])
    assert len(seq) > 150
    assert np.all(np.diff(seq) >= -1e-12)
    assert seq.min() >= 0.0 and seq.max() <= vals[-1] + 1e-12


@pytest.mark.parametrize(
    "times, targets, msg",
    [
        (np.array([0.1, 0.1]), np.zeros((2, 7)), "strictly increasing"),
        (np.array([0.2, 0.1]), np.zeros((2, 7)), "strictly increasing"),
        (np.array([0.1, np.nan]), np.zeros((2, 7)), "finite"),
        (np.array([0.1, 0.2]), np.full((2, 7), np.nan), "NaN"),
        (np.array([0.1, 0.2]), np.zeros((2, 6)), "shape"),
        (np.array([0.1, 0.2]), np.zeros((3, 7)), "shape"),
        (np.zeros((0,)), np.zeros((0, 7)), "H >= 1"),
        (np.zeros((2, 1)), np.zeros((2, 7)), "shape"),
    ],
)
def test_add_chunk_validation(times, targets, msg):
    it = ActionChunkInterpolator(anchor=A0)
    with pytest.raises(ValueError, match=msg):
        it.add_chunk(times, targets, now_s=0.0)
    assert it.n_queued == 0


def test_other_validation():
    with pytest.raises(ValueError):
        ActionChunkInterpolator(n_dims=0)
    it = ActionChunkInterpolator()
    with pytest.raises(ValueError):
        it.reset(np.zeros(6))
    with pytest.raises(ValueError):
        it.reset(np.full(7, np.inf))
    with pytest.raises(ValueError):
        it.sample(float("nan"))
    with pytest.raises(ValueError):
        it.add_chunk(np.array([1.0]), np.zeros((1, 7)), now_s=float("nan"))


def test_concurrent_add_and_sample():
    it = ActionChunkInterpolator(anchor=A0)
    stop = threading.Event()
    errors = []

    def producer():
        k = 0
        while not stop.is_set():
            now = k * 0.01
            t, x = chunk(now + 0.05, np.full(8, float(k % 5)))
            try:
                it.add_chunk(t, x, now_s=now)
            except Exception as e:  # pragma: no cover - would be a bug
                errors.append(e)
            k += 1

    th = threading.Thread(target=producer)
    th.start()
    try:
        for k in range(3000):
            v = it.sample(k * 0.001)
            if v is not None:
                assert v.shape == (7,) and np.all(np.isfinite(v))
                assert -1e-9 <= v.min() and v.max() <= 4 + 1e-9
    finally:
        stop.set()
        th.join()
    assert not errors
