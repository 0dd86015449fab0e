"""Per-episode driver statistics in a teleop recording are the episode's own share (counters
since the episode began), not session totals."""
import dynaflip_ros.sim  # noqa: F401 - headless GL before mujoco
from dynaflip_ros.configs.sim import SimConfig
from dynaflip_ros.data import dataset_io
from dynaflip_ros.data.recorder import EpisodeRecorder
from dynaflip_ros.teleop.devices import ReplayDevice, ReplayStep
from dynaflip_ros.teleop.drivers import LockstepSimDriver
from dynaflip_ros.teleop.session import SessionConfig, TeleopSession, counters_since

HW = (32, 40)


def test_counters_since_subtracts_integer_counters_only():
    start = {"safety": {"commands": 10, "accepted": 9}, "servo": {"ticks": 100, "rejections_by_reason": {"nan": 1},
                                                                 "jitter_max_s": 0.002}}
    end = {"safety": {"commands": 25, "accepted": 22, "stops": 1},
           "servo": {"ticks": 180, "rejections_by_reason": {"nan": 3, "workspace": 2}, "jitter_max_s": 0.004},
           "flag": True}
    assert counters_since(end, start) == {
        "safety": {"commands": 15, "accepted": 13, "stops": 1},
        "servo": {"ticks": 80, "rejections_by_reason": {"nan": 2, "workspace": 2}, "jitter_max_s": 0.004},
        "flag": True}
    assert counters_since(end, {}) == end


def test_episode_driver_counters_are_per_episode(tmp_path):
    from dynaflip_ros.sim.pick_into_sink import PickIntoSinkEnv

    env = PickIntoSinkEnv(SimConfig(image_hw=HW))
    try:
        driver = LockstepSimDriver(env)
        steps = [ReplayStep(0.0, events=("start",)), ReplayStep(0.05, twist=(0.03, 0, 0, 0, 0, 0)),
                 ReplayStep(0.6, twist=(0,) * 6, events=("stop",)),
                 ReplayStep(0.7, events=("start",)), ReplayStep(0.75, twist=(0, 0.03, 0, 0, 0, 0)),
                 ReplayStep(1.3, twist=(0,) * 6, events=("stop",))]
        device = ReplayDevice(steps, clock=driver.now_s)
        with EpisodeRecorder(tmp_path / "ds", HW) as rec:
            summary = TeleopSession(rec, driver, device, env.camera, SessionConfig()).run()
        total = driver.stats()
        driver.close()
    finally:
        env.close()
    assert summary.saved == [0, 1]
    recs = dataset_io.read_episode_records(tmp_path / "ds")
    s0, s1 = (r["extra"]["driver"]["safety"] for r in recs)
    v0, v1 = (r["extra"]["driver"]["servo"] for r in recs)
    assert s0["accepted"] > 0 and s1["accepted"] > 0
    # the second episode holds only its own commands: the two shares fit in the session total
    assert s0["commands"] + s1["commands"] <= total["safety"]["commands"]
    assert s0["accepted"] + s1["accepted"] <= total["safety"]["accepted"]
    assert v0["ticks"] + v1["ticks"] <= total["servo"]["ticks"]
    # equal-length episodes: shares of the same size, not a running total
    assert abs(v1["ticks"] - v0["ticks"]) <= 0.2 * v0["ticks"]
