"""Teleop recording sessions on the MuJoCo cell: a replay device drives the sim arm through
SafeArm and records episodes with the sim-expert schema; episode control semantics; slow-loop
accounting; requests from another thread (what the ROS services use)."""
import json
import logging
import threading
import time

import numpy as np
import pytest

import dynaflip_ros.sim  # noqa: F401 - headless GL before mujoco
from dynaflip_ros.configs.sim import SimConfig
from dynaflip_ros.data import dataset_io, schema
from dynaflip_ros.data.recorder import EpisodeRecorder
from dynaflip_ros.sim.record_demos import record_sim_episodes
from dynaflip_ros.teleop.devices import ReplayDevice, ReplayStep, TeleopEvent
from dynaflip_ros.teleop.drivers import LockstepSimDriver, RealtimeSimDriver
from dynaflip_ros.teleop.session import SessionConfig, TeleopSession
from waiting import wait_until

HW = (32, 40)


@pytest.fixture(scope="module")
def env():
    from dynaflip_ros.sim.pick_into_sink import PickIntoSinkEnv

    e = PickIntoSinkEnv(SimConfig(image_hw=HW))
    yield e
    e.close()


def run_session(env, root, steps, driver_cls=LockstepSimDriver, camera=None, extra=None, **cfg):
    driver = driver_cls(env)
    device = ReplayDevice(steps, clock=driver.now_s)
    with EpisodeRecorder(root, HW, resume=True) as rec:
        s = TeleopSession(rec, driver, device, camera or env.camera, SessionConfig(**cfg), episode_extra=extra)
        try:
            summary = s.run()
        finally:
            driver.close()
    return s, summary, driver


MOVE = (0.04, -0.03, -0.04, 0.0, 0.0, 0.3)


def test_replay_drives_the_sim_through_safearm_and_records_the_expert_schema(env, tmp_path):
    root = tmp_path / "teleop"
    steps = [ReplayStep(0.0, events=("start",)), ReplayStep(0.05, twist=MOVE),
             ReplayStep(0.8, twist=(0,) * 6, gripper=1.0), ReplayStep(1.2, events=("stop",)),
             ReplayStep(1.3, events=("start",)), ReplayStep(1.35, twist=(0, 0.05, 0, 0, 0, 0)),
             ReplayStep(1.8, twist=(0,) * 6, events=("stop",))]
    s, summary, driver = run_session(env, root, steps, extra={"provenance": {"note": "test"}})
    assert summary.saved == [0, 1] and summary.discarded == 0 and summary.ended_by == "quit"
    # episode 1: the scene reset after saving episode 0 settles physics for 0.1 s of sim time (the
    # replay's clock), and the schedule is re-based after it: ticks 1.4 .. 1.7 s -> 4 frames
    assert summary.frames_saved == 12 + 4
    st = driver.safe.stats
    assert st.accepted > 100 and st.rejected == 0  # every target went through SafeArm

    # the same features (names, dtypes, shapes), fps and codebase as a scripted-expert recording
    expert_root = tmp_path / "expert"
    record_sim_episodes(1, expert_root, image_hw=HW, progress=False, only_success=False, max_episode_s=0.3)
    info_t = json.loads((root / "meta" / "info.json").read_text())
    info_e = json.loads((expert_root / "meta" / "info.json").read_text())
    for k in ("features", "fps", "codebase_version", "robot_type"):
        assert info_t[k] == info_e[k], k
    ds, ds_e = dataset_io.open_dataset(root), dataset_io.open_dataset(expert_root)
    assert ds.num_episodes == 2 and len(ds) == 16
    assert set(ds[0]) == set(ds_e[0])
    for key in ds_e[0]:
        if hasattr(ds_e[0][key], "shape"):
            assert ds[0][key].shape == ds_e[0][key].shape and ds[0][key].dtype == ds_e[0][key].dtype, key

    # action convention: action_k = joint target at t_k + 0.1 s (the arm tracks it: ~ state_{k+1})
    states = np.stack([ds[i][schema.STATE_KEY].numpy() for i in range(12)])
    actions = np.stack([ds[i][schema.ACTION_KEY].numpy() for i in range(12)])
    assert np.abs(actions[:-1, :6] - states[1:, :6]).max() < 0.02
    assert np.abs(actions[1:8, :6] - states[1:8, :6]).max() > 0.005  # moving: action leads the state
    assert actions[8:, 6].min() == 1.0 and actions[:7, 6].max() == 0.0  # gripper target
    assert ds[0][schema.PHASE_KEY].item() == -1
    from dynaflip_ros.robot.kinematics import forward_kinematics

    tcp0 = driver.safety.tool_transform

    p0 = forward_kinematics(states[0, :6].astype(float), driver.safety.dh, tcp0)[:3, 3]
    p8 = forward_kinematics(states[8, :6].astype(float), driver.safety.dh, tcp0)[:3, 3]
    np.testing.assert_allclose(p8 - p0, np.array(MOVE[:3]) * 0.75, atol=0.01)  # moved as commanded

    recs = dataset_io.read_episode_records(root)
    assert [r["demonstrator"] for r in recs] == ["teleop", "teleop"] and recs[0]["source"] == "sim"
    assert [r["seed"] for r in recs] == [0, 1]  # a new scene after each save
    ex = recs[0]["extra"]
    assert ex["provenance"] == {"note": "test"} and ex["teleop"]["device"]["name"] == "replay"
    assert ex["teleop"]["driver"] == "sim-lockstep" and ex["point_tracks_valid"] is True
    assert ex["loop"]["slow_ticks"] == 0 and ex["driver"]["safety"]["accepted"] > 0
    assert recs[0]["task"] == ds[0]["task"]


def test_discard_and_rerecord_semantics(env, tmp_path):
    root = tmp_path / "ctl"
    steps = [
        ReplayStep(0.0, events=("stop", "discard")),  # idle: ignored
        ReplayStep(0.1, events=("start",)),           # take A (scene 0)
        ReplayStep(0.35, events=("start",)),          # ignored: already recording
        ReplayStep(0.4, events=("discard",)),         # A dropped -> new scene 1
        ReplayStep(0.5, events=("rerecord",)),        # idle: = start (scene 1)
        ReplayStep(0.7, events=("rerecord",)),        # drop, same scene 1, begin again
        ReplayStep(1.0, events=("stop",)),            # saved: episode 0, seed 1, frames at 0.8 and 0.9 s
                                                      # (each scene reset settles 0.1 s of sim time)
        ReplayStep(1.1, events=("start",)),           # scene 2
        ReplayStep(1.4, events=("quit",)),            # in progress: dropped
    ]
    s, summary, _ = run_session(env, root, steps)
    assert summary.saved == [0] and summary.discarded == 3 and summary.ended_by == "quit"
    recs = dataset_io.read_episode_records(root)
    assert len(recs) == 1 and recs[0]["seed"] == 1 and recs[0]["length"] == 2
    assert not (root / "images").exists() or not any((root / "images").rglob("*.png"))


def test_episodes_limit_and_max_length(env, tmp_path):
    steps = [ReplayStep(0.0, events=("start",)), ReplayStep(5.0, events=("stop",))]
    s, summary, _ = run_session(env, tmp_path / "lim", steps, episodes=1, max_episode_s=0.5)
    assert summary.saved == [0] and summary.ended_by == "episodes"
    assert dataset_io.read_episode_records(tmp_path / "lim")[0]["length"] == 5


class SlowCamera:
    """The sim camera with an extra delay per read (a slow USB camera / overloaded CPU)."""

    def __init__(self, camera, delay_s):
        self.camera, self.delay_s = camera, delay_s

    def read(self):
        time.sleep(self.delay_s)
        return self.camera.read()


def test_slow_loop_is_counted_and_logged(env, tmp_path, caplog):
    steps = [ReplayStep(0.0, events=("start",)), ReplayStep(1.0, events=("stop", "quit"))]
    with caplog.at_level(logging.WARNING, logger="dynaflip_ros.teleop.session"):
        s, summary, driver = run_session(env, tmp_path / "slow", steps, driver_cls=RealtimeSimDriver,
                                         camera=SlowCamera(env.camera, 0.13))
    assert summary.saved == [0]
    rec = dataset_io.read_episode_records(tmp_path / "slow")[0]
    assert rec["extra"]["loop"]["slow_ticks"] >= 2 and rec["extra"]["loop"]["max_lateness_s"] > 0.05
    assert summary.slow_ticks >= rec["extra"]["loop"]["slow_ticks"]
    assert any("record loop is slow" in r.getMessage() for r in caplog.records)
    assert rec["extra"]["teleop"]["driver"] == "sim-realtime"


@pytest.mark.timing  # a real-time loop keeps its rate on an idle machine only
def test_fast_realtime_loop_has_no_slow_ticks(env, tmp_path):
    steps = [ReplayStep(0.0, events=("start",)), ReplayStep(0.1, twist=MOVE), ReplayStep(0.6, events=("stop", "quit"))]
    s, summary, driver = run_session(env, tmp_path / "rt", steps, driver_cls=RealtimeSimDriver)
    assert summary.saved == [0] and summary.slow_ticks <= 1  # tolerance: one hiccup on a loaded 2-core machine
    assert 0.4 < summary.wall_s < 3.0


def test_requests_from_another_thread(env, tmp_path):
    driver = RealtimeSimDriver(env)
    device = ReplayDevice([ReplayStep(0.0, twist=(0, 0, 0.02, 0, 0, 0))], clock=driver.now_s, quit_at_end=False)
    results = {}
    with EpisodeRecorder(tmp_path / "req", HW) as rec:
        s = TeleopSession(rec, driver, device, env.camera, SessionConfig())
        t = threading.Thread(target=lambda: results.setdefault("summary", s.run()))
        t.start()
        try:
            results["stop_idle"] = s.request(TeleopEvent.STOP)
            results["start"] = s.request("start")
            assert wait_until(lambda: s.status().get("episode_frames", 0) >= 3)  # frames to save
            assert s.status()["state"] == "recording"
            results["stop"] = s.request(TeleopEvent.STOP)
            results["quit"] = s.request(TeleopEvent.QUIT)
        finally:
            s.stop()
            t.join(10)
            driver.close()
    assert results["stop_idle"][0] is False and "no episode" in results["stop_idle"][1]
    assert results["start"][0] and "started" in results["start"][1]
    assert results["stop"][0] and "saved" in results["stop"][1]
    assert results["quit"] == (True, "quit")
    assert results["summary"].saved == [0]
    ok, msg = s.request("start", timeout_s=0.2)  # loop gone
    assert not ok


def test_session_config_validation():
    with pytest.raises(ValueError, match="multiple"):
        SessionConfig(command_rate_hz=33.0)
    with pytest.raises(ValueError):
        SessionConfig(source="mars")
    with pytest.raises(ValueError):
        SessionConfig(task=" ")
