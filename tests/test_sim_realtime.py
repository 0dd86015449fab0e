"""RealtimeSimStepper: physics tracks its clock (an injected FakeClock here; the real monotonic clock in
the timing-marked test), on_tick runs at the servo rate, and a
CPU that cannot keep up drops time (catch-up cap) instead of fast-forwarding."""
from __future__ import annotations

import time

import pytest

pytest.importorskip("mujoco")

from dynaflip_ros.configs.sim import SimConfig  # noqa: E402
from dynaflip_ros.sim.pick_into_sink import PickIntoSinkEnv  # noqa: E402
from dynaflip_ros.sim.realtime import RealtimeSimStepper  # noqa: E402
from waiting import wait_until  # noqa: E402


class FakeClock:
    """The stepper's injected wall clock (seconds), advanced by the test or by on_tick."""

    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt_s: float) -> None:
        self.t += dt_s


def _first_tick(stepper: RealtimeSimStepper, clock: FakeClock) -> None:
    """Advance the fake clock in 2 ms steps until the stepper thread (which reads its start time
    when it starts) has ticked once."""
    wait_until(lambda: clock.advance(0.002) or stepper.stats.ticks >= 1)


@pytest.fixture(scope="module")
def env():
    e = PickIntoSinkEnv(SimConfig(image_hw=(32, 32)))
    yield e
    e.close()


@pytest.mark.timing  # the real monotonic clock: sim time keeps up only on an idle machine
def test_tracks_wall_clock_and_ticks_at_rate(env):
    env.reset(seed=0)
    ticks = []
    stepper = RealtimeSimStepper(env, rate_hz=125.0, on_tick=ticks.append)
    sim0 = env.sim_time_s
    wall0 = time.monotonic()
    with stepper:
        time.sleep(0.6)
        assert stepper.running
        frame = env.camera.read()  # renders interleave with the stepping thread
    wall = time.monotonic() - wall0
    assert not stepper.running
    sim = env.sim_time_s - sim0
    st = stepper.stats
    assert 0.75 * wall < sim <= wall + 0.02, (sim, wall)
    assert 0.75 < st.real_time_factor <= 1.05
    assert st.ticks == len(ticks) > 50
    # on_tick sees the sim clock advance by one servo period per tick
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    assert max(gaps) == pytest.approx(0.008, abs=1e-9) and min(gaps) == pytest.approx(0.008, abs=1e-9)
    assert frame.rgb.shape == (32, 32, 3)


def test_slow_ticks_drop_time_instead_of_bursting(env):
    env.reset(seed=0)
    # each 8 ms period costs 20 ms of (injected) wall time: the sim runs at 0.4x real time
    clock = FakeClock()
    stepper = RealtimeSimStepper(env, rate_hz=125.0, max_catchup_s=0.05,
                                 on_tick=lambda t: clock.advance(0.02), clock=clock)
    with stepper:
        _first_tick(stepper, clock)
        wait_until(lambda: stepper.stats.ticks >= 60)
    st = stepper.stats
    assert st.real_time_factor < 0.6
    assert st.dropped_s > 0.1
    assert st.lag_s <= 0.05 + 0.03


def test_faster_than_real_time_and_bad_args(env):
    env.reset(seed=0)
    clock = FakeClock()
    stepper = RealtimeSimStepper(env, rate_hz=125.0, real_time_factor=2.0, clock=clock)
    with stepper:
        _first_tick(stepper, clock)
        sim_a, wall_a = env.sim_time_s, clock.t
        for _ in range(20):  # 0.4 s of injected wall time, 20 ms at a time (below max_catchup_s)
            clock.advance(0.02)
            wall_target = sim_a + 2.0 * (clock.t - wall_a)
            wait_until(lambda: env.sim_time_s > wall_target - stepper.period_s - 1e-9)
    # sim / wall = 2 up to the one period the stepper may trail (8 ms of ~0.8 s) and the start
    assert stepper.stats.real_time_factor == pytest.approx(2.0, rel=0.03)
    with pytest.raises(ValueError):
        RealtimeSimStepper(env, rate_hz=300.0)  # 3.33 ms is not a whole number of 2 ms steps
    with pytest.raises(ValueError):
        RealtimeSimStepper(env, real_time_factor=0.0)
    stepper.start()
    with pytest.raises(RuntimeError):
        stepper.start()
    stepper.stop()
    stepper.stop()  # idempotent


def test_stepper_follows_when_sim_time_jumps_ahead():
    """Physics advanced outside the stepper (a reset's settling) must not pause the sim."""
    from dynaflip_ros.configs.sim import SimConfig
    from dynaflip_ros.sim.pick_into_sink import PickIntoSinkEnv
    from dynaflip_ros.sim.realtime import RealtimeSimStepper

    env = PickIntoSinkEnv(SimConfig(image_hw=(64, 64)))
    try:
        env.reset(seed=0)
        clock = FakeClock()
        with RealtimeSimStepper(env, max_catchup_s=0.1, clock=clock) as stepper:
            _first_tick(stepper, clock)
            env.step(2.0)  # 2 s of sim time at once, outside the stepper
            t_jump = clock.t
            # 10 ms of injected wall time per poll until the stepper has seen the jump and ticked
            wait_until(lambda: clock.advance(0.01) or stepper.stats.skipped_ahead_s >= 1.5)
            assert clock.t - t_jump < 1.5  # followed at once (a pause would last ~2 s of its clock)
            ticks0 = stepper.stats.ticks
            seen = [ticks0]

            def advance_after_each_tick() -> bool:
                if stepper.stats.ticks > seen[-1] or len(seen) == 1:
                    seen.append(stepper.stats.ticks)
                    clock.advance(0.01)
                return stepper.stats.ticks - ticks0 > 20

            wait_until(advance_after_each_tick)
            st = stepper.stats
        assert st.ticks - ticks0 > 20, st  # kept stepping
        assert clock.t - t_jump < 1.5, clock.t - t_jump  # ~0.2 s of clock for 20 ticks, no 2 s pause
        assert st.skipped_ahead_s >= 1.5, st
    finally:
        env.close()
