"""RealtimeSimStepper: physics tracks the monotonic clock, on_tick runs at the servo rate, and a
CPU that cannot keep up drops time (catch-up cap) instead of fast-forwarding."""
from __future__ import annotations

import time

import pytest

pytest.importorskip("mujoco")

from dynaflip_ros.configs.sim import SimConfig  # noqa: E402
from dynaflip_ros.sim.pick_into_sink import PickIntoSinkEnv  # noqa: E402
from dynaflip_ros.sim.realtime import RealtimeSimStepper  # noqa: E402


@pytest.fixture(scope="module")
def env():
    e = PickIntoSinkEnv(SimConfig(image_hw=(32, 32)))
    yield e
    e.close()


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
    # each 8 ms period costs 20 ms of wall time: the sim can run at most at ~0.4x real time
    stepper = RealtimeSimStepper(env, rate_hz=125.0, max_catchup_s=0.05,
                                 on_tick=lambda t: time.sleep(0.02))
    with stepper:
        time.sleep(0.5)
    st = stepper.stats
    assert st.real_time_factor < 0.6
    assert st.dropped_s > 0.1
    assert st.lag_s <= 0.05 + 0.03


def test_faster_than_real_time_and_bad_args(env):
    env.reset(seed=0)
    stepper = RealtimeSimStepper(env, rate_hz=125.0, real_time_factor=2.0)
    with stepper:
        time.sleep(0.4)
    assert 1.5 < stepper.stats.real_time_factor <= 2.1
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
    import time

    from dynaflip_ros.configs.sim import SimConfig
    from dynaflip_ros.sim.pick_into_sink import PickIntoSinkEnv
    from dynaflip_ros.sim.realtime import RealtimeSimStepper

    env = PickIntoSinkEnv(SimConfig(image_hw=(64, 64)))
    try:
        env.reset(seed=0)
        with RealtimeSimStepper(env, max_catchup_s=0.1) as stepper:
            time.sleep(0.3)
            env.step(2.0)  # 2 s of sim time at once, outside the stepper
            ticks0 = stepper.stats.ticks
            time.sleep(0.5)
            st = stepper.stats
        assert st.ticks - ticks0 > 20, st  # kept stepping (a pause would last ~2 s)
        assert st.skipped_ahead_s >= 1.5, st
    finally:
        env.close()
