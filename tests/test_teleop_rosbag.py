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
