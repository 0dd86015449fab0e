"""ROS node `teleop_recorder`: std_srvs/Trigger services start / stop / discard / rerecord drive
the recording session (sim cell, replay device in real time); status on ~/status."""
import itertools
import json
import os
import threading

import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from std_msgs.msg import String
from std_srvs.srv import Trigger

from dynaflip_ros.data import dataset_io
from dynaflip_ros.ros.qos import EVENT_QOS
from dynaflip_ros.teleop.devices import ReplayStep, write_replay
from waiting import wait_until

_domains = itertools.count()


@pytest.fixture()
def ros_params(monkeypatch, tmp_path):
    monkeypatch.setenv("ROS_DOMAIN_ID", str(1 + (os.getpid() * 11 + 37 + next(_domains)) % 100))

    def init(params: dict):
        f = tmp_path / "params.yaml"
        f.write_text(json.dumps({"teleop_recorder": {"ros__parameters": params}}))
        rclpy.init(args=["test", "--ros-args", "--params-file", str(f)])

    yield init
    rclpy.try_shutdown()


def test_bad_parameters_fail_at_startup(ros_params, tmp_path):
    from dynaflip_ros.ros.nodes.teleop_recorder import TeleopRecorderNode

    ros_params({"device": "keyboard"})
    with pytest.raises(ValueError, match="'out'"):
        TeleopRecorderNode()


@pytest.mark.timeout(120)
def test_services_drive_episodes(ros_params, tmp_path):
    from dynaflip_ros.ros.nodes.teleop_recorder import TeleopRecorderNode

    replay = write_replay(tmp_path / "hold.jsonl", [ReplayStep(0.0, twist=(0, 0, 0.01, 0, 0, 0))])
    out = tmp_path / "demos"
    ros_params({"device": f"replay:{replay}", "sim": True, "out": str(out), "image_hw": [32, 32],
                "realtime": True, "exit_when_done": False, "status_rate_hz": 10.0, "operator": "ros-test"})
    node = TeleopRecorderNode()
    client = Node("teleop_test_client")
    calls = {name: client.create_client(Trigger, f"/teleop_recorder/{name}") for name in ("start", "stop", "discard", "rerecord")}
    statuses = []
    client.create_subscription(String, "/teleop_recorder/status", lambda m: statuses.append(json.loads(m.data)), EVENT_QOS)
    ex = MultiThreadedExecutor(num_threads=4)
    ex.add_node(node)
    ex.add_node(client)
    spin = threading.Thread(target=ex.spin, daemon=True)
    spin.start()

    def call(name):
        fut = calls[name].call_async(Trigger.Request())
        assert wait_until(fut.done), f"{name}: no response"
        return fut.result().success, fut.result().message

    try:
        for c in calls.values():
            assert c.wait_for_service(timeout_sec=10.0)
        assert call("stop") == (False, "stop ignored: no episode is being recorded")
        ok, msg = call("start")
        assert ok and "episode 0 started" in msg
        assert wait_until(lambda: any(s.get("episode_frames", 0) >= 1 for s in statuses))
        ok, msg = call("rerecord")
        assert ok and "re-recording" in msg
        # Record at least 3 frames of the new take (10 Hz; wall-clock time varies with the load).
        statuses.clear()
        assert wait_until(lambda: any(s.get("episode_frames", 0) >= 3 for s in statuses))
        ok, msg = call("stop")
        assert ok and "episode 0 saved" in msg
        assert call("discard")[0] is False
        wait_until(lambda: any(s.get("saved") == 1 for s in statuses))
        assert any(s.get("state") == "recording" for s in statuses)
        assert any(s.get("saved") == 1 and s.get("state") == "idle" for s in statuses)
    finally:
        node.close()
        ex.shutdown(timeout_sec=2.0)
        node.destroy_node()
        client.destroy_node()
    recs = dataset_io.read_episode_records(out)
    assert len(recs) == 1 and recs[0]["demonstrator"] == "teleop" and 3 <= recs[0]["length"] <= 12
    assert recs[0]["seed"] == 0  # re-record kept the scene
    assert recs[0]["extra"]["provenance"]["operator"] == "ros-test"
    assert dataset_io.open_dataset(out).num_episodes == 1
