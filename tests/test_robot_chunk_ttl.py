"""Late and stale action chunks in the arm driver (injected clock): when the followed chunk ends
before the next arrives the servo loop holds its last target for `dry_hold_s` (no watchdog
stop for a late chunk), then goes quiet and SafeArm's watchdog stops the arm; an action planned
from an observation older than `action_ttl_s` is never executed: the driver drops the chunk and
holds, and the next chunk starts from the held target."""
from __future__ import annotations

import numpy as np
import pytest
from arm_doubles import FakeClock, RecordingArm

from dynaflip_ros.configs.ros import Ur3DriverNodeConfig
from dynaflip_ros.configs.io import ConfigError
from dynaflip_ros.robot.arm_driver import ArmDriver

PERIOD_S = 1.0 / 125.0


def _driver(**cfg):
    clock = FakeClock(10.0)
    arm = RecordingArm(clock=clock)
    return ArmDriver(arm, Ur3DriverNodeConfig(**cfg), clock=clock), arm, clock


def _run(driver, clock, seconds: float) -> None:
    for _ in range(int(round(seconds / PERIOD_S))):
        clock.t += PERIOD_S
        driver.loop.tick(clock.t)


def _chunk(driver, clock, delta_rad: float, n: int = 5, stamp_age_s: float = 0.0):
    """A chunk moving joint 0 by delta_rad over n actions at 0.1 s, planned from an image
    stamp_age_s old; loop clock == ROS clock here."""
    q = np.asarray(driver.safe.state().q)
    start = np.concatenate([q, [0.0]])
    targets = np.tile(start, (n, 1))
    targets[:, 0] += np.linspace(delta_rad / n, delta_rad, n)
    stamp = clock.t - stamp_age_s
    times = clock.t + 0.1 * np.arange(1, n + 1)
    return driver.queue_chunk(stamp, times, targets, recv_ros_s=clock.t, recv_clock_s=clock.t)


def test_a_late_chunk_holds_position_instead_of_tripping_the_watchdog():
    driver, arm, clock = _driver(dry_hold_s=0.3)
    assert _chunk(driver, clock, 0.05) == "queued"
    _run(driver, clock, 0.52)  # the chunk ends at +0.5 s
    sent = len(arm.commands)
    _run(driver, clock, 0.25)  # late, within the hold: the last target keeps being streamed
    assert len(arm.commands) > sent and driver.safe.stats.watchdog_stops == 0
    assert np.allclose(arm.commands[-1][0], arm.commands[sent - 1][0])
    assert _chunk(driver, clock, 0.02) == "queued"  # the next chunk arrives in time
    _run(driver, clock, 0.5)
    assert driver.safe.stats.watchdog_stops == 0
    _run(driver, clock, 0.3 + 0.1)  # nothing comes any more: hold, then quiet -> the watchdog stops the arm
    assert driver.safe.stats.watchdog_stops == 1 and arm.stops >= 1


def test_without_a_hold_the_watchdog_stops_the_arm_when_the_chunk_ends():
    driver, arm, clock = _driver(dry_hold_s=0.0)
    _chunk(driver, clock, 0.05)
    _run(driver, clock, 0.5 + 0.08)
    assert driver.safe.stats.watchdog_stops == 1


def test_an_action_older_than_the_ttl_is_not_executed():
    driver, arm, clock = _driver(dry_hold_s=0.5, action_ttl_s=0.3)
    q0 = float(driver.safe.state().q[0])
    assert _chunk(driver, clock, 0.2, n=10, stamp_age_s=0.1) == "queued"  # 1 s of actions, planned 0.1 s ago
    _run(driver, clock, 0.2)  # actions up to 0.3 s old: executed
    assert driver.loop.stats.expired_chunks == 0
    _run(driver, clock, 0.1)  # older than the TTL: dropped, the arm holds where it is
    assert driver.loop.stats.expired_chunks == 1
    held = arm.commands[-1][0].copy()
    assert 0.0 < held[0] - q0 < 0.07  # stopped part-way (0.2 s of a 1 s chunk of 0.2 rad)
    _run(driver, clock, 0.2)
    assert np.allclose(arm.commands[-1][0], held) and driver.safe.stats.watchdog_stops == 0
    assert driver.status()["servo"]["expired_chunks"] == 1
    # a fresh chunk starts from the held target, not from where the dropped chunk would be now
    assert _chunk(driver, clock, 0.01, n=5) == "queued"
    clock.t += PERIOD_S
    driver.loop.tick(clock.t)
    assert abs(arm.commands[-1][0][0] - held[0]) < 0.002


@pytest.mark.parametrize("field, value", [("dry_hold_s", -0.1), ("dry_hold_s", 2.0), ("action_ttl_s", -1.0),
                                          ("action_ttl_s", float("nan"))])
def test_bad_values_are_refused(field, value):
    with pytest.raises(ConfigError, match=field):
        Ur3DriverNodeConfig(**{field: value})


def test_the_watchdog_timeout_derives_from_the_servo_period_and_jitter():
    assert Ur3DriverNodeConfig().watchdog_timeout_s == pytest.approx(3 / 125 + 0.01)  # 34 ms
    assert Ur3DriverNodeConfig(servo_rate_hz=500.0).watchdog_timeout_s == pytest.approx(3 / 500 + 0.01)  # 16 ms
    assert Ur3DriverNodeConfig(servo_rate_hz=10.0).watchdog_timeout_s == 0.05  # capped by SafetyConfig
    assert Ur3DriverNodeConfig(watchdog_missed_ticks=0).watchdog_timeout_s == 0.05
    for bad in ({"watchdog_missed_ticks": -1}, {"watchdog_missed_ticks": 1.5}, {"servo_jitter_s": -0.001}):
        with pytest.raises(ConfigError):
            Ur3DriverNodeConfig(**bad)
    # In the driver (injected clock): 4 quiet ticks (32 ms) are tolerated, the 5th (40 ms > 34 ms) stops the arm.
    driver, arm, clock = _driver(dry_hold_s=0.0)
    assert driver.status()["watchdog_timeout_ms"] == pytest.approx(34.0)
    _chunk(driver, clock, 0.05, n=1)  # one action, due at +0.1 s: the last target is sent then
    sent = -1
    while len(arm.commands) != sent:  # until the first tick that sends nothing (8 ms after the last command)
        sent = len(arm.commands)
        _run(driver, clock, PERIOD_S)
    _run(driver, clock, 3 * PERIOD_S)  # 32 ms without a command: tolerated
    assert driver.safe.stats.watchdog_stops == 0
    _run(driver, clock, PERIOD_S)  # 40 ms > 34 ms: stopped
    assert driver.safe.stats.watchdog_stops == 1
