"""Raw session log: rosbag2 MCAP written with `rosbags` and read back with it (no ROS install)."""
import numpy as np
import pytest

pytest.importorskip("rosbags")

from dynaflip_ros.teleop.rosbag_log import (
    TOPIC_EVENTS,
    TOPIC_IMAGE,
    TOPIC_JOINT_STATES,
    TOPIC_JOINT_TARGET,
    TOPIC_TWIST,
    SessionBag,
    read_bag,
)


def test_mcap_round_trip(tmp_path):
    path = tmp_path / "bag"
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    q = rng.normal(size=6)
    bag = SessionBag(path)
    bag.write_image(12.3, rgb)
    bag.write_joint_state(12.3, q, q * 0.1, 0.25)
    bag.write_command(12.32, np.array([0.01, -0.02, 0.03, 0.1, -0.2, 0.3]), q + 0.01, 1.0)
    bag.write_command(12.34, np.zeros(6), None, 1.0)  # freedrive: no joint target
    bag.write_event(12.4, "stop: episode 0 saved (3 frames)")
    bag.close()
    bag.close()  # idempotent
    assert (path / "metadata.yaml").exists() and list(path.glob("*.mcap"))
    with pytest.raises(FileExistsError):
        SessionBag(path)

    msgs = read_bag(path)
    assert {k: len(v) for k, v in msgs.items()} == {
        TOPIC_IMAGE: 1, TOPIC_JOINT_STATES: 1, TOPIC_TWIST: 2, TOPIC_JOINT_TARGET: 1, TOPIC_EVENTS: 1}
    t_ns, img = msgs[TOPIC_IMAGE][0]
    assert t_ns == 12_300_000_000 and img.header.stamp.sec == 12 and img.header.stamp.nanosec == 300_000_000
    assert (img.height, img.width, img.encoding, img.step) == (24, 32, "rgb8", 96)
    np.testing.assert_array_equal(np.asarray(img.data).reshape(24, 32, 3), rgb)
    _, js = msgs[TOPIC_JOINT_STATES][0]
    assert list(js.name)[-1] == "gripper" and len(js.name) == 7
    np.testing.assert_allclose(js.position, np.concatenate([q, [0.25]]))
    np.testing.assert_allclose(js.velocity[:6], q * 0.1)
    _, tw = msgs[TOPIC_TWIST][0]
    assert (tw.twist.linear.x, tw.twist.linear.y, tw.twist.linear.z) == (0.01, -0.02, 0.03)
    assert (tw.twist.angular.x, tw.twist.angular.y, tw.twist.angular.z) == (0.1, -0.2, 0.3)
    _, tgt = msgs[TOPIC_JOINT_TARGET][0]
    np.testing.assert_allclose(tgt.position, np.concatenate([q + 0.01, [1.0]]))
    assert msgs[TOPIC_EVENTS][0][1].data == "stop: episode 0 saved (3 frames)"
    stamps = [t for v in msgs.values() for t, _ in v]
    assert min(stamps) == 12_300_000_000 and max(stamps) == 12_400_000_000


def test_session_bag_from_a_recording(tmp_path):
    """A short sim teleop session with a bag: images / joint states at 10 Hz while recording,
    commands at the command rate, the events; the frames in the bag are the dataset's frames."""
    import dynaflip_ros.sim  # noqa: F401
    from dynaflip_ros.configs.sim import SimConfig
    from dynaflip_ros.data import dataset_io, schema
    from dynaflip_ros.data.recorder import EpisodeRecorder
    from dynaflip_ros.sim.pick_into_sink import PickIntoSinkEnv
    from dynaflip_ros.teleop.devices import ReplayDevice, ReplayStep
    from dynaflip_ros.teleop.drivers import LockstepSimDriver
    from dynaflip_ros.teleop.session import SessionConfig, TeleopSession

    env = PickIntoSinkEnv(SimConfig(image_hw=(24, 24)))
    try:
        driver = LockstepSimDriver(env)
        device = ReplayDevice([ReplayStep(0.0, events=("start",)), ReplayStep(0.0, twist=(0, 0, 0.03, 0, 0, 0)),
                               ReplayStep(0.5, events=("stop",))], clock=driver.now_s)
        bag = SessionBag(tmp_path / "bag")
        with EpisodeRecorder(tmp_path / "ds", (24, 24)) as rec:
            TeleopSession(rec, driver, device, env.camera, SessionConfig(), bag=bag).run()
        bag.close()
    finally:
        env.close()
    msgs = read_bag(tmp_path / "bag")
    assert len(msgs[TOPIC_IMAGE]) == 5 == len(msgs[TOPIC_JOINT_STATES])
    assert len(msgs[TOPIC_TWIST]) == 25  # 50 Hz for 0.5 s (stop and the end-of-replay quit at 0.5 s)
    assert [m.data.split(":")[0] for _, m in msgs[TOPIC_EVENTS]] == ["start", "stop", "quit"]
    ds = dataset_io.open_dataset(tmp_path / "ds")
    for i, (_, img) in enumerate(msgs[TOPIC_IMAGE]):
        stored = (ds[i][schema.IMAGE_KEY] * 255).round().byte().permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(np.asarray(img.data).reshape(24, 24, 3), stored)


def test_wall_clock_bag_keeps_sim_time_on_clock(tmp_path):
    """A real-time session's bag is stamped in wall-clock (ROS) time, one stamp per session
    instant; the sim time of each instant is on /clock at the same stamp."""
    from dynaflip_ros.teleop.rosbag_log import TOPIC_CLOCK

    walls = iter([1_750_000_000.25, 1_750_000_000.5, 1_750_000_000.75])
    bag = SessionBag(tmp_path / "bag", wall_clock=lambda: next(walls), sim_time=True)
    q = np.zeros(6)
    bag.write_image(12.3, np.zeros((4, 4, 3), np.uint8))
    bag.write_joint_state(12.3, q, q, 0.0)  # same instant: same wall stamp, no second read
    bag.write_command(12.32, np.zeros(6), q, 0.0)
    bag.write_event(12.4, "stop")
    bag.close()
    msgs = read_bag(tmp_path / "bag")
    img_ns, img = msgs[TOPIC_IMAGE][0]
    js_ns, js = msgs[TOPIC_JOINT_STATES][0]
    assert img_ns == js_ns == 1_750_000_000_250_000_000
    assert (img.header.stamp.sec, img.header.stamp.nanosec) == (1_750_000_000, 250_000_000)
    assert msgs[TOPIC_TWIST][0][0] == msgs[TOPIC_JOINT_TARGET][0][0] == 1_750_000_000_500_000_000
    assert msgs[TOPIC_EVENTS][0][0] == 1_750_000_000_750_000_000
    clocks = [(t, (m.clock.sec, m.clock.nanosec)) for t, m in msgs[TOPIC_CLOCK]]
    assert clocks == [(1_750_000_000_250_000_000, (12, 300_000_000)), (1_750_000_000_500_000_000, (12, 320_000_000)),
                      (1_750_000_000_750_000_000, (12, 400_000_000))]


def test_realtime_session_bag_is_in_ros_time_and_lockstep_in_sim_time(tmp_path):
    """open_session: a real-time sim session (--realtime replay) logs in wall-clock time with the
    sim time on /clock; a lock-step replay keeps sim-time stamps (deterministic, no /clock)."""
    import time

    from dynaflip_ros.teleop.config import TeleopConfig
    from dynaflip_ros.teleop.devices import ReplayStep, write_replay
    from dynaflip_ros.teleop.record import open_session
    from dynaflip_ros.teleop.rosbag_log import TOPIC_CLOCK

    replay = write_replay(tmp_path / "r.jsonl", [ReplayStep(0.0, events=("start",)),
                                                ReplayStep(0.05, twist=(0, 0, 0.02, 0, 0, 0)),
                                                ReplayStep(0.4, events=("stop",))])
    stamps = {}
    for realtime in (True, False):
        bag_dir = tmp_path / f"bag_{realtime}"
        cfg = TeleopConfig(device=f"replay:{replay}", out=str(tmp_path / f"ds_{realtime}"), image_hw=(24, 24),
                           realtime=realtime, rosbag_dir=str(bag_dir))
        t0 = time.time()
        res = open_session(cfg)
        try:
            assert res.driver.realtime is realtime
            assert res.session.run().saved == [0]
        finally:
            res.close()
        t1 = time.time()
        msgs = read_bag(bag_dir)
        ns = [t for v in msgs.values() for t, _ in v]
        stamps[realtime] = (min(ns) * 1e-9, max(ns) * 1e-9, t0, t1)
        if realtime:
            assert t0 <= min(ns) * 1e-9 and max(ns) * 1e-9 <= t1  # wall-clock (ROS) time of the run
            _, img = msgs[TOPIC_IMAGE][0]
            assert t0 <= img.header.stamp.sec + img.header.stamp.nanosec * 1e-9 <= t1
            sim = [m.clock.sec + m.clock.nanosec * 1e-9 for _, m in msgs[TOPIC_CLOCK]]
            assert sim == sorted(sim) and sim[-1] < t0 and sim[-1] > 0.3  # the session's sim time
            assert {t for t, _ in msgs[TOPIC_CLOCK]} >= {t for t, _ in msgs[TOPIC_IMAGE]}
        else:
            assert TOPIC_CLOCK not in msgs and max(ns) * 1e-9 < t0  # sim-time stamps, as before
