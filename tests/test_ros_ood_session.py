"""The real-cell OOD session node (ros/nodes/ood_session.py) end to end, with the sim cell
standing in for the operator's scene: a stand-in node offers the driver's start / stop services
and /episode/status, publishes the deployed pair's info topics and, when an episode starts,
the camera image of the sim scene of the sheet's seed and condition. The "operator" confirms
and marks by keyboard and by the services; the session is interrupted after two episodes and
resumed by a new node. Checks the session files, the per-episode MCAP bags and the report."""
from __future__ import annotations

import itertools
import json
import os
import threading
import time

import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("mujoco")

from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from dynaflip_ros.configs.sim import SimConfig  # noqa: E402
from dynaflip_ros.episodes.protocol import EpisodeStatus, Outcome, Phase  # noqa: E402
from dynaflip_ros.eval.ood_records import read_episodes, read_session  # noqa: E402
from dynaflip_ros.ros import conversions as cv  # noqa: E402
from dynaflip_ros.ros.qos import (  # noqa: E402
    ENCODER_INFO_TOPIC, EPISODE_STATUS_TOPIC, EVENT_QOS, IMAGE_QOS, IMAGE_TOPIC, LATCHED_QOS, POLICY_INFO_TOPIC,
)
from dynaflip_ros.sim.perturbations import parse_condition  # noqa: E402
from dynaflip_ros.sim.pick_into_sink import PickIntoSinkEnv  # noqa: E402

HANG_S = 60.0  # a hang guard only: every wait below is on a condition
_domains = itertools.count()


def _wait(cond, timeout_s: float = HANG_S) -> bool:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if cond():
            return True
        time.sleep(0.02)
    return False


class StandInCell(Node):
    """The real cell's side of the session, played by the sim cell (module docstring)."""

    def __init__(self, env: PickIntoSinkEnv) -> None:
        super().__init__("stand_in_cell")
        self.env, self.sheet, self.started, self.episode = env, None, [], 0
        for topic, info in ((ENCODER_INFO_TOPIC, {"weights_sha256": "e" * 64, "model_dir": "enc"}),
                            (POLICY_INFO_TOPIC, {"ready": True, "weights_sha256": "p" * 64, "model_dir": "pol"})):
            self.create_publisher(String, topic, LATCHED_QOS).publish(String(data=json.dumps(info)))
        self.status_pub = self.create_publisher(String, EPISODE_STATUS_TOPIC, EVENT_QOS)
        self.image_pub = self.create_publisher(cv.Image, IMAGE_TOPIC, IMAGE_QOS)
        self.create_subscription(String, "/ood_session/status", self._on_session, LATCHED_QOS)
        self.create_service(Trigger, "/ur3_driver/start_episode", self._start)
        self.create_service(Trigger, "/ur3_driver/stop_episode", self._stop)

    def _on_session(self, msg: String) -> None:
        self.sheet = json.loads(msg.data)["sheet"]

    def status(self, phase: Phase, outcome: Outcome | None = None, reason: str = "") -> None:
        st = EpisodeStatus(source="ur3_driver", phase=phase, episode=self.episode, outcome=outcome, reason=reason,
                           safety={"rejected": self.episode})
        self.status_pub.publish(String(data=st.to_json()))

    def _start(self, req, res):
        self.episode += 1
        info = self.env.reset(seed=self.sheet["seed"], perturbation=parse_condition(self.sheet["condition"]))
        self.started.append((info.seed, self.sheet["condition"], info.instruction))
        self.status(Phase.RUNNING)
        self.image_pub.publish(cv.rgb_to_image(self.env.camera.read().rgb, 0.0, "camera_color_optical_frame"))
        res.success, res.message = True, "started"
        return res

    def _stop(self, req, res):
        self.status(Phase.IDLE, Outcome.STOPPED)
        res.success, res.message = True, "stopped"
        return res


@pytest.fixture()
def graph(monkeypatch, tmp_path):
    monkeypatch.setenv("ROS_DOMAIN_ID", str(1 + (os.getpid() * 11 + next(_domains)) % 100))
    env = PickIntoSinkEnv(SimConfig(image_hw=(32, 32)))
    params = tmp_path / "params.json"
    session = tmp_path / "session"
    params.write_text(json.dumps({"ood_session": {"ros__parameters": {
        "session_dir": str(session), "conditions": "lighting:1", "seeds": [100000, 100001],
        "episode_timeout_s": 600.0, "record_topics": ["/camera/color/image_raw", "/episode/status"]}}}))
    rclpy.init(args=["test", "--ros-args", "--params-file", str(params)])
    cell = StandInCell(env)
    ex = MultiThreadedExecutor(num_threads=6)
    ex.add_node(cell)
    threading.Thread(target=ex.spin, daemon=True).start()
    yield SimpleGraph(ex, cell, env, session)
    ex.shutdown(timeout_sec=2.0)
    rclpy.try_shutdown()
    env.close()


class SimpleGraph:
    def __init__(self, ex, cell, env, session) -> None:
        self.ex, self.cell, self.env, self.session = ex, cell, env, session

    def node(self, keys=None):
        from dynaflip_ros.ros.nodes.ood_session import OodSessionNode

        said = []
        node = OodSessionNode(keys=keys, env=self.env, announce=said.append)
        self.ex.add_node(node)
        node.start()
        return node, said

    def call(self, node: Node, name: str) -> Trigger.Response:
        cli = node.create_client(Trigger, f"/ood_session/{name}")
        assert cli.wait_for_service(timeout_sec=HANG_S)
        future = cli.call_async(Trigger.Request())
        assert _wait(future.done)
        return future.result()


def test_operator_session_against_the_sim_cell(graph):
    read_fd, write_fd = os.pipe()
    keys = os.fdopen(read_fd, "r")
    keyboard = os.fdopen(write_fd, "w", buffering=1)
    node, said = graph.node(keys=keys)
    cell = graph.cell
    assert _wait(lambda: cell.sheet is not None and cell.sheet["condition"] == "nominal")
    assert "set up the scene" in said[-1] and "nominal, seed 100000" in said[-1]
    keyboard.write("\n")  # 1: confirmed and marked by keyboard
    assert _wait(lambda: len(cell.started) == 1)
    keyboard.write("s\n")
    assert _wait(lambda: len(read_episodes(graph.session)) == 1)
    assert _wait(lambda: cell.sheet["condition"] == "lighting:1")
    assert graph.call(node, "confirm").success  # 2: confirmed by service, ended by a protective stop
    assert _wait(lambda: len(cell.started) == 2)
    cell.status(Phase.RUNNING, Outcome.SAFETY_STOP, "protective stop")
    assert _wait(lambda: len(read_episodes(graph.session)) == 2)
    assert not graph.call(node, "mark_success").success  # nothing running: refused
    graph.ex.remove_node(node)  # the operator's laptop dies here; a new node resumes
    node.destroy_node()
    keyboard.close()
    node2, said2 = graph.node()
    assert any("2 already done (resuming)" in line for line in said2)
    for mark in ("mark_wrong_object", "mark_failure"):
        assert _wait(lambda: cell.sheet is not None and cell.sheet["seed"] == 100001)
        assert graph.call(node2, "confirm").success
        assert graph.call(node2, mark).success
    assert _wait(node2.done.is_set)
    eps = read_episodes(graph.session)
    assert [(e.condition, e.seed, e.outcome) for e in eps] == [
        ("nominal", 100000, "success"), ("lighting:1", 100000, "safety_stop"),
        ("nominal", 100001, "wrong_object"), ("lighting:1", 100001, "timeout")]
    assert [s[:2] for s in cell.started] == [(100000, "nominal"), (100000, "lighting:1"), (100001, "nominal"),
                                              (100001, "lighting:1")]
    assert all(e.mode == "real" and e.models == {"encoder": "e" * 64, "policy": "p" * 64} for e in eps)
    assert eps[0].time_to_success_s is not None and eps[1].safety == {"rejected": 1}
    assert eps[1].scene["lighting"]["shadows"] and eps[0].instruction == cell.started[0][2]
    assert read_session(graph.session).mode == "real"
    from dynaflip_ros.teleop.rosbag_log import read_bag

    bags = sorted((graph.session / "bags" / "deployed").iterdir())
    assert len(bags) == 4
    for bag in bags:
        topics = read_bag(bag)
        assert len(topics.get(IMAGE_TOPIC, [])) == 1 and topics.get(EPISODE_STATUS_TOPIC), bag
    assert eps[0].frame and (graph.session / eps[0].frame).is_file()
    assert (graph.session / "setup" / "deployed").is_dir()
    from dynaflip_ros.eval.ood_report import write_report

    summary = write_report(graph.session)
    assert summary["models"]["deployed"]["nominal"]["n"] == 2 and (graph.session / "report.html").is_file()
    node2.destroy_node()
