"""The instruction through ROS: the latched /dynaflip/instruction topic, the policy node's
gating of a language-conditioned policy, the `instruction` launch argument / `--instruction`
flag, and the sim cell's use of the command's instruction (ROS-free parts first)."""
from __future__ import annotations

import argparse
import itertools
import json
import os
import threading

import numpy as np
import pytest

import launch_static as ls
from dynaflip_ros.configs.io import ConfigError
from dynaflip_ros.configs.ros import EpisodeManagerNodeConfig, PolicyNodeConfig
from dynaflip_ros.ros import graph
from dynaflip_ros.ros.launch_args import LaunchArgumentError, read_params_file
from dynaflip_ros.ros.launch_cli import build_overrides, register

ROOT = ls.ROOT


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(["launch", "pick_into_sink", *argv])


# ---------------------------------------------------------------------------------- launch (ROS-free)
def test_instruction_flag_reaches_the_policy_and_in_sim_the_episode_manager():
    real_doc = read_params_file(ROOT / "config" / "real_cell.yaml")
    text = "put the red cube in the sink"
    ov = build_overrides(_args("--real", "--robot-ip", "10.0.0.2", "--instruction", f"  {text} "), "/r.json", real_doc)
    assert ov["policy"] == {"instruction": text} and "episode_manager" not in ov
    sim_doc = read_params_file(ROOT / "config" / "pick_into_sink.yaml")
    ov = build_overrides(_args("--sim", "--object", "red cube", "--instruction", text), "/r.json", sim_doc)
    assert ov["policy"] == {"instruction": text}
    assert ov["episode_manager"]["instruction"] == text and ov["episode_manager"]["object_name"] == "red cube"
    with pytest.raises(LaunchArgumentError, match="needs the object it names"):
        build_overrides(_args("--sim", "--instruction", text), "/r.json", sim_doc)
    with pytest.raises(LaunchArgumentError, match="blank"):
        build_overrides(_args("--real", "--robot-ip", "10.0.0.2", "--instruction", " "), "/r.json", real_doc)
    assert "policy" not in build_overrides(_args("--sim"), "/r.json", sim_doc)  # default: the params file's


def test_instruction_launch_argument_is_a_string_parameter_of_the_policy_node():
    lf = ls.parse(ls.LAUNCH_DIR / "encoder_policy.launch.py")
    arg = {a.name: a for a in lf.arguments}["instruction"]
    assert arg.has_default and arg.default == "" and "instruction" in arg.description
    policy = {n.executable: n for n in lf.nodes}["policy_node"]
    assert ("instruction", "instruction", "str") in policy.launch_parameters  # never YAML-typed
    assert graph.LaunchParameter("instruction", "instruction", "str") in graph.POLICY.launch_parameters
    for mode in graph.MODES:  # included in both branches, so real_cell.launch.py takes instruction:= too
        assert any(n.executable == "policy_node" for _, n in ls.graph("pick_into_sink.launch.py", mode == graph.SIM))


def test_samples_per_chunk_parameter():
    """The policy node averages the deployment default of chunks per prediction (both cells'
    params files say so explicitly); out of 1..64 is refused at configuration time."""
    from dynaflip_ros.configs.policy import DEFAULT_SAMPLES_PER_CHUNK

    assert PolicyNodeConfig().samples_per_chunk == DEFAULT_SAMPLES_PER_CHUNK
    assert PolicyNodeConfig(samples_per_chunk=1).samples_per_chunk == 1
    for bad in (0, 65, 2.5):
        with pytest.raises(ConfigError, match="samples_per_chunk"):
            PolicyNodeConfig(samples_per_chunk=bad)
    for name in ("pick_into_sink", "real_cell"):
        doc = read_params_file(ROOT / "config" / f"{name}.yaml")
        assert doc["policy"]["ros__parameters"]["samples_per_chunk"] == DEFAULT_SAMPLES_PER_CHUNK


def test_instruction_configs():
    assert PolicyNodeConfig().instruction == "" and PolicyNodeConfig(instruction="x").instruction == "x"
    assert EpisodeManagerNodeConfig(object_name="red cube", instruction="put the red cube in the sink")
    with pytest.raises(ConfigError, match="needs object_name"):
        EpisodeManagerNodeConfig(instruction="put the red cube in the sink")
    for name in ("pick_into_sink", "real_cell"):
        doc = read_params_file(ROOT / "config" / f"{name}.yaml")
        assert doc["policy"]["ros__parameters"]["instruction"] == ""


# ---------------------------------------------------------------------------------- nodes (rclpy)
rclpy = pytest.importorskip("rclpy")

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from waiting import wait_until  # noqa: E402

from dynaflip_ros.episodes.protocol import EpisodeCommand, EpisodeStatus  # noqa: E402
from dynaflip_ros.policies.base import ActionChunk  # noqa: E402
from dynaflip_ros.policies.replan import ReplanSchedule  # noqa: E402
from dynaflip_ros.robot.arm import UR_JOINT_NAMES  # noqa: E402
from dynaflip_ros.ros import conversions as cv  # noqa: E402
from dynaflip_ros.ros.qos import EPISODE_STATUS_TOPIC, EVENT_QOS, INSTRUCTION_TOPIC, LATCHED_QOS  # noqa: E402

_domains = itertools.count()


@pytest.fixture()
def ros_params(monkeypatch, tmp_path):
    monkeypatch.setenv("ROS_DOMAIN_ID", str(1 + (os.getpid() * 11 + 30 + next(_domains)) % 100))

    def init(params: dict):
        f = tmp_path / "params.yaml"
        f.write_text(json.dumps({n: {"ros__parameters": p} for n, p in params.items()}))
        rclpy.init(args=["test", "--ros-args", "--params-file", str(f)])

    yield init
    rclpy.try_shutdown()


class FakePolicy:
    """A stand-in for DiffusionPolicyRunner: 8-action chunks holding the state."""

    encoder_sha256 = weights_sha256 = "0" * 64
    fps, embedding_dim, dt_s = 10.0, 4, 0.1

    def __init__(self, language_conditioned: bool | None) -> None:
        if language_conditioned is not None:
            self.language_conditioned = language_conditioned
        self.strict = language_conditioned is not False
        self.instructions: list[str | None] = []

    def reset(self, seed=None) -> None:
        pass

    def observe(self, obs) -> None:
        self.instructions.append(obs.instruction)

    def predict_action_chunk(self, obs) -> ActionChunk:
        if self.strict and obs.instruction is None:
            raise ValueError("this policy is language-conditioned: the observation needs an instruction")
        self.instructions.append(obs.instruction)
        return ActionChunk(np.tile(obs.state, (8, 1)), obs.stamp_s + 0.1, 0.1)


def _feed(node, stamp_s: float) -> None:
    """One joint state and one embedding stamped `stamp_s` (the ROS clock's now)."""
    js = JointState(name=[*UR_JOINT_NAMES, "gripper"], position=[0.0] * 7)
    js.header = cv.make_header(stamp_s)
    node._on_joint_state(js)
    node._on_embedding(cv.embedding_to_image(np.zeros(4, np.float32), cv.make_header(stamp_s)))


@pytest.mark.parametrize("declared", [True, None], ids=["declares", "raises"])
def test_conditioned_policy_acts_only_with_an_instruction(ros_params, tmp_path, declared):
    from dynaflip_ros.ros.nodes.policy import PolicyNode, needs_instruction

    ros_params({"policy": {"model_dir": str(tmp_path)}})
    node = PolicyNode()
    try:
        fake = FakePolicy(language_conditioned=declared)
        node.policy, node.schedule = fake, ReplanSchedule(0.1, 0)
        node.needs_instruction = needs_instruction(fake)
        assert node.needs_instruction is bool(declared)
        node._on_episode_status(String(data=EpisodeStatus(source="ur3_driver", phase="running", episode=0,
                                                          reset_stamp_s=0.0).to_json()))
        now = node.get_clock().now().nanoseconds * 1e-9
        for k in range(3):
            _feed(node, now + 0.01 * k)
        assert node.chunks_published == 0 and node.skipped["no_instruction"] == 3 and node._told_no_instruction
        assert node.needs_instruction  # learnt from the ValueError when undeclared
        node._on_instruction(String(data="   "))  # blank: ignored
        assert node.instruction is None
        node._on_instruction(String(data="put the blue bar in the sink"))
        assert not node._told_no_instruction  # would say it again if the instruction went away
        _feed(node, now + 0.05)
        assert node.chunks_published == 1 and fake.instructions == ["put the blue bar in the sink"]
        # the running episode's own instruction (the sim cell's) takes precedence over the topic's
        node._on_episode_command(String(data=EpisodeCommand.reset(1, stamp_s=now + 0.06).to_json()))
        node._on_episode_status(String(data=EpisodeStatus(
            source="sim_cell", phase="running", episode=1, reset_stamp_s=now + 0.07,
            instruction="drop the red block into the basin").to_json()))
        _feed(node, now + 0.08)
        assert fake.instructions[-1] == "drop the red block into the basin"
    finally:
        node.destroy_node()


def test_image_only_policy_ignores_the_missing_instruction(ros_params, tmp_path):
    from dynaflip_ros.ros.nodes.policy import PolicyNode

    ros_params({"policy": {"model_dir": str(tmp_path)}})
    node = PolicyNode()
    try:
        node.policy, node.schedule = FakePolicy(language_conditioned=False), ReplanSchedule(0.1, 0)
        node._on_episode_status(String(data=EpisodeStatus(source="ur3_driver", phase="running", episode=0).to_json()))
        _feed(node, node.get_clock().now().nanoseconds * 1e-9)
        assert node.chunks_published == 1 and node.skipped["no_instruction"] == 0
        assert node.policy.instructions == [None]
    finally:
        node.destroy_node()


def test_instruction_parameter_is_latched_on_the_topic(ros_params, tmp_path):
    """The launch's instruction reaches a subscriber that joins later (TRANSIENT_LOCAL), and a
    message published at run time replaces it in the policy node."""
    from dynaflip_ros.ros.nodes.policy import PolicyNode

    ros_params({"policy": {"model_dir": str(tmp_path), "instruction": "put the red cube in the sink"}})
    node = PolicyNode()
    assert node.instruction == "put the red cube in the sink"
    probe = Node("probe")
    got = []
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    ex.add_node(probe)
    spinner = threading.Thread(target=ex.spin, daemon=True)
    spinner.start()
    try:
        probe.create_subscription(String, INSTRUCTION_TOPIC, lambda m: got.append(m.data), LATCHED_QOS)  # late
        assert wait_until(lambda: "put the red cube in the sink" in got)
        pub = probe.create_publisher(String, INSTRUCTION_TOPIC, LATCHED_QOS)
        pub.publish(String(data="drop the green cylinder into the basin"))
        assert wait_until(lambda: node.instruction == "drop the green cylinder into the basin")
    finally:
        ex.shutdown(timeout_sec=1.0)
        node.destroy_node()
        probe.destroy_node()


def test_sim_cell_resets_with_the_commanded_instruction_and_latches_it(ros_params):
    """A reset with an instruction uses it as given (any wording); the statuses carry it with
    the target and the objects on the table, and /dynaflip/instruction (latched) says it too."""
    from dynaflip_ros.ros.nodes.sim_cell import SimCellNode
    from dynaflip_ros.ros.nodes.ur3_driver import Ur3DriverNode

    ros_params({"sim_cell": {"sim": {"image_hw": [16, 16]}}})
    sim = SimCellNode()
    env = sim.env
    driver = Ur3DriverNode(arm=env.arm, clock=lambda: env.sim_time_s, servo_thread=False, exclusive=env.exclusive)
    sim.attach(driver)
    probe = Node("probe")
    ex = SingleThreadedExecutor()
    for n in (sim, probe):
        ex.add_node(n)
    spinner = threading.Thread(target=ex.spin, daemon=True)
    spinner.start()
    try:
        text = "drop the red block into the basin"
        sim._on_command(String(data=EpisodeCommand.reset(3, 9, object_name="red cube", instruction=text).to_json()))
        st = sim.status()
        assert st.running and st.episode == 3 and st.instruction == text and st.object_name == "red cube"
        assert st.objects[0] == "red cube" and 2 <= len(st.objects) <= 4 and env.episode.instruction == text
        got = []
        probe.create_subscription(String, INSTRUCTION_TOPIC, lambda m: got.append(m.data), LATCHED_QOS)
        assert wait_until(lambda: got == [text])
        # without an instruction the seed draws one naming the (seeded) target
        sim._on_command(String(data=EpisodeCommand.reset(4, 10).to_json()))
        st = sim.status()
        assert st.episode == 4 and st.instruction == env.episode.instruction and st.instruction != text
        assert wait_until(lambda: got[-1:] == [st.instruction])
        # a distractor in the basin: the episode's outcome is wrong_object (it keeps running)
        x, y = env.config.sink_center_xy_m
        env.place_object(st.objects[1], x, y)
        st = sim.status()
        assert st.outcome.value == "wrong_object" and st.decided and st.running
        # the arm halted: the episode ends as safety_stop; the next reset re-arms the new world
        env.arm.inject_protective_stop()
        driver.loop.tick(env.sim_time_s)
        assert wait_until(lambda: driver.safe.halted)
        sim._on_command(String(data=EpisodeCommand.reset(5, 11).to_json()))
        env.arm.inject_protective_stop()
        driver.loop.tick(env.sim_time_s)
        st = sim.status()
        assert not st.running and st.outcome.value == "safety_stop" and st.episode == 5
        sim._on_command(String(data=EpisodeCommand.reset(6, 12).to_json()))
        assert not driver.safe.halted and sim.status().running
    finally:
        ex.shutdown(timeout_sec=1.0)
        sim.close()
        driver.close()
        env.close()
        for n in (sim, driver, probe):
            n.destroy_node()
