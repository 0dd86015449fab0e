"""`robot.action_age`: the age of each executed action (servo tick time - the stamp of the
observation its chunk was planned from), its per-episode share and summary, and its wiring into
the arm driver (chunks queued through `ArmDriver.queue_chunk`) and the lock-step runner."""
from __future__ import annotations

import math

import numpy as np
import pytest

from dynaflip_ros.episodes.record import EpisodeRecord, EvalReport, counter_delta, summarize_action_age as summarize
from dynaflip_ros.robot.action_age import BIN_MS, N_BINS, ActionAgeMonitor


def test_ticks_count_ages_into_bins_and_dry_ticks():
    m = ActionAgeMonitor()
    m.tick(0.0)  # nothing queued yet: dry
    m.chunk(stamp_s=1.0, end_s=2.0)
    for t in (1.0, 1.04, 1.32, 1.92, 2.0):
        m.tick(t)
    m.tick(2.01)  # past the chunk's last action: dry
    snap = m.snapshot()
    assert snap["dry_ticks"] == 2 and sum(snap["bins"]) == 5 and len(snap["bins"]) == N_BINS
    assert snap["bins"][0] == 2 and snap["bins"][int(320 // BIN_MS)] == 1 and snap["bins"][int(920 // BIN_MS)] == 1
    assert snap["bins"][int(1000 // BIN_MS)] == 1
    assert snap["sum_us"] == pytest.approx(1e3 * (0 + 40 + 320 + 920 + 1000), abs=5)
    s = summarize(snap)
    assert s["n"] == 5 and s["dry_ticks"] == 2 and s["dry_share"] == pytest.approx(2 / 7)
    assert s["mean"] == pytest.approx(456.0, abs=0.1)
    assert s["p50"] == 350.0  # upper edge of the bin of the median (320 ms)
    assert s["p95"] == 1050.0 and s["max_bin"] == 1050.0


def test_clear_and_the_overflow_bin():
    m = ActionAgeMonitor()
    m.chunk(0.0, 100.0)
    m.tick(50.0)  # 50 s old: the last bin
    assert m.snapshot()["bins"][-1] == 1 and summarize(m.snapshot())["p50"] == math.inf
    m.clear()
    m.tick(50.1)
    assert m.snapshot()["dry_ticks"] == 1
    with pytest.raises(ValueError):
        m.chunk(float("nan"), 1.0)
    assert summarize(None) is None and summarize({"bins": []}) is None


def test_the_share_of_an_episode_is_a_difference_and_keeps_the_bin_width():
    m = ActionAgeMonitor()
    m.chunk(0.0, 10.0)
    m.tick(0.2)
    start = m.snapshot()
    m.tick(0.6)
    m.tick(0.61)
    share = counter_delta(start, m.snapshot())
    assert share["bin_ms"] == BIN_MS and sum(share["bins"]) == 2 and share["bins"][int(600 // BIN_MS)] == 2
    rec = EpisodeRecord(episode=0, seed=1, outcome="timeout", action_age=share)
    assert rec.action_age_ms["n"] == 2 and rec.action_age_ms["p50"] == 650.0
    report = EvalReport(mode="realtime")
    report.add(rec)
    report.add(EpisodeRecord(episode=1, seed=2, outcome="success", action_age=start))
    assert report.summary()["action_age_ms"]["n"] == 3
    assert EvalReport(mode="lockstep").summary()["action_age_ms"] is None


def test_the_arm_driver_measures_the_executed_actions_age():
    from arm_doubles import FakeClock, RecordingArm

    from dynaflip_ros.configs.ros import Ur3DriverNodeConfig
    from dynaflip_ros.robot.arm_driver import ArmDriver

    clock = FakeClock(10.0)
    driver = ArmDriver(RecordingArm(clock=clock), Ur3DriverNodeConfig(), clock=clock)
    q = np.asarray(driver.safe.state().q)
    targets = np.tile(np.concatenate([q, [0.0]]), (8, 1))  # (8, 7) hold
    # planned from an observation stamped 0.25 s before receipt (ROS 100.0 = loop 10.0)
    assert driver.queue_chunk(99.75, 99.75 + 0.1 * np.arange(8), targets, recv_ros_s=100.0, recv_clock_s=10.0) == "queued"
    for _ in range(3):
        driver.loop.tick(clock.t)
        clock.t += 0.008
    age = summarize(driver.status()["action_age"])
    assert age["n"] == 3 and age["p50"] == 300.0  # 250-266 ms old
    driver.hold()
    driver.loop.tick(clock.t)
    assert driver.status()["action_age"]["dry_ticks"] == 1
    driver.close()


def test_a_chunk_switch_counts_the_plan_jump():
    from arm_doubles import FakeClock, RecordingArm

    from dynaflip_ros.configs.ros import Ur3DriverNodeConfig
    from dynaflip_ros.robot.arm_driver import ArmDriver

    clock = FakeClock(10.0)
    driver = ArmDriver(RecordingArm(clock=clock), Ur3DriverNodeConfig(), clock=clock)
    q = np.asarray(driver.safe.state().q)
    hold = np.tile(np.concatenate([q, [0.0]]), (8, 1))  # (8, 7)
    times = 100.0 + 0.1 * np.arange(8)
    assert driver.queue_chunk(100.0, times, hold, recv_ros_s=100.0, recv_clock_s=10.0) == "queued"
    assert driver.status()["action_age"]["switch_n"] == 0  # the first chunk replaces nothing
    for _ in range(3):
        driver.loop.tick(clock.t)
        clock.t += 0.008
    moved = hold.copy()
    moved[:, 2] += 0.01  # the next plan disagrees by 10 mrad on joint 2
    assert driver.queue_chunk(100.02, times + 0.02, moved, recv_ros_s=100.024, recv_clock_s=clock.t) == "queued"
    snap = driver.status()["action_age"]
    assert snap["switch_n"] == 1 and abs(snap["switch_urad"] - 10_000) <= 1
    assert summarize(snap)["switch_jump_mean_mrad"] == pytest.approx(10.0, abs=1e-3)
    driver.close()
