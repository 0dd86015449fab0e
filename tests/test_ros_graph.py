"""The Pick-into-Sink ROS graph across processes, with tiny real models.

The models are built once per module with the real artifact code: a randomly initialised
DynaFLIP encoder (`encoder.model.save_encoder`), exported to ONNX through the parity gate
(`export.onnx_export.export_onnx`), and a small untrained diffusion policy on its embeddings
(`policies.diffusion.DiffusionPolicyRunner.create(...).save`). The policy is not expected to
succeed; the tests check the plumbing:

- encoder_node on ONNX Runtime never imports torch, copies the image header into the 32FC1
  embedding and latches its manifest;
- policy_node refuses an encoder it was not trained on (no action chunk, policy_info error);
- the smoke test: `dynaflip launch pick_into_sink --sim --episodes 1` (sim_cell_node,
  encoder_node, policy_node, episode_manager_node as processes) while a probe node checks that
  embeddings carry image stamps, action chunks reach the driver, and the summary is printed.
"""
import itertools
import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from rclpy.node import Node  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from dynaflip_ros.episodes.protocol import EpisodeStatus  # noqa: E402
from dynaflip_ros.ros import conversions as cv  # noqa: E402
from dynaflip_ros.ros.qos import (  # noqa: E402
    ACTION_CHUNK_TOPIC, COMMAND_QOS, EMBEDDING_TOPIC, ENCODER_INFO_TOPIC, EPISODE_STATUS_TOPIC, EVENT_QOS,
    IMAGE_QOS, IMAGE_TOPIC, INSTRUCTION_TOPIC, JOINT_STATES_TOPIC, LATCHED_QOS, POLICY_INFO_TOPIC, STATE_QOS,
)

_domains = itertools.count()


def _domain_id() -> str:
    return str(1 + (os.getpid() * 13 + 50 + next(_domains)) % 100)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """(encoder_dir with encoder.onnx, policy_dir, encoder weights sha256) built with the real code."""
    import torch

    from dynaflip_ros.configs.encoder import EncoderConfig, EncoderModelConfig
    from dynaflip_ros.configs.policy import DiffusionModelConfig
    from dynaflip_ros.encoder.model import DynaFlipModel, save_encoder
    from dynaflip_ros.export.onnx_export import export_onnx
    from dynaflip_ros.policies.diffusion import DiffusionPolicyRunner

    root = tmp_path_factory.mktemp("ros_models")
    torch.manual_seed(0)
    cfg = EncoderConfig(model=EncoderModelConfig(
        pretrained=False, trunk_stages=2, input_hw=(64, 64), num_keypoints=8, embedding_dim=16, joint_dim=16,
        projection_hidden_dim=16, text_hidden_dim=16, flow_point_hidden_dim=16, flow_hidden_dim=16,
        actor_hidden_dim=16))
    manifest = save_encoder(root / "encoder_torch", DynaFlipModel(cfg, imagenet_init=False).eval(), cfg)
    export_onnx(root / "encoder_torch", root / "encoder", show_progress=False, num_threads=2,
                n_parity_images=2, parity_batch_sizes=(1,))
    d = manifest.embedding_dim
    lo = np.array([-3, -3, -3, -3, -3, -3, 0], np.float32)
    hi = np.array([3, 3, 3, 3, 3, 3, 1], np.float32)
    box = {"mean": (lo + hi) / 2, "std": (hi - lo) / 4, "min": lo, "max": hi}
    stats = {"observation.state": box, "action": box,
             "observation.environment_state": {"mean": np.zeros(d, np.float32), "std": np.ones(d, np.float32),
                                               "min": -np.ones(d, np.float32), "max": np.ones(d, np.float32)}}
    mc = DiffusionModelConfig(down_dims=(16, 32), n_groups=8, diffusion_step_embed_dim=16, num_inference_steps=3)
    DiffusionPolicyRunner.create(mc, d, stats, 10.0, manifest, seed=0).save(root / "policy")
    torch.manual_seed(1)  # a second member for the checkpoint ensemble (other initial weights)
    DiffusionPolicyRunner.create(mc, d, stats, 10.0, manifest, seed=1).save(root / "policy_b")
    return root / "encoder", root / "policy", manifest.weights_sha256


@pytest.fixture(scope="module")
def tiny_ensemble(tiny_models):
    """A checkpoint ensemble (policies.checkpoint_ensemble) of the two tiny policies."""
    from dynaflip_ros.policies.checkpoint_ensemble import write_ensemble

    _enc, policy_dir, _sha = tiny_models
    return write_ensemble([policy_dir, policy_dir.with_name("policy_b")], policy_dir.with_name("policy_ensemble"))


_ENCODER_PROBE = textwrap.dedent(r"""
    import json, sys, threading, time
    import numpy as np, rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.node import Node
    from sensor_msgs.msg import Image
    from std_msgs.msg import String
    from dynaflip_ros.ros import conversions as cv
    from dynaflip_ros.ros.nodes.encoder import EncoderNode
    from dynaflip_ros.ros.qos import EMBEDDING_TOPIC, ENCODER_INFO_TOPIC, IMAGE_QOS, IMAGE_TOPIC, LATCHED_QOS

    rclpy.init(args=["x", "--ros-args", "-p", "model_dir:=" + sys.argv[1], "-p", "backend:=onnxruntime"])
    enc = EncoderNode()
    probe = Node("probe")
    got, info = [], []
    probe.create_subscription(Image, EMBEDDING_TOPIC, got.append, IMAGE_QOS)
    probe.create_subscription(String, ENCODER_INFO_TOPIC, lambda m: info.append(json.loads(m.data)), LATCHED_QOS)
    pub = probe.create_publisher(Image, IMAGE_TOPIC, IMAGE_QOS)
    ex = MultiThreadedExecutor(num_threads=2); ex.add_node(enc); ex.add_node(probe)
    threading.Thread(target=ex.spin, daemon=True).start()
    rgb = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    t_end = time.monotonic() + 20
    while not got and time.monotonic() < t_end:
        pub.publish(cv.rgb_to_image(rgb, 1234.5, "cam_optical")); time.sleep(0.1)
    while not info and time.monotonic() < t_end:
        time.sleep(0.05)
    e = cv.image_to_embedding(got[0])
    ref = enc.backend.embed(rgb[None])[0]
    out = {"stamp": cv.stamp_to_s(got[0].header.stamp), "frame_id": got[0].header.frame_id,
           "encoding": got[0].encoding, "height": got[0].height, "dim": int(e.size),
           "max_abs_diff": float(np.abs(e - ref).max()), "info": info[0],
           "torch_loaded": "torch" in sys.modules}
    print("RESULT" + json.dumps(out), flush=True)
    ex.shutdown(timeout_sec=1.0)
    rclpy.try_shutdown()
""")


def test_encoder_node_onnxruntime_without_torch(tiny_models):
    enc_dir, _policy_dir, sha = tiny_models
    env = dict(os.environ, ROS_DOMAIN_ID=_domain_id())
    proc = subprocess.run([sys.executable, "-c", _ENCODER_PROBE, str(enc_dir)], capture_output=True, text=True,
                          timeout=60, env=env)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    assert line, f"rc {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    out = json.loads(line[0][len("RESULT"):])
    assert out["torch_loaded"] is False
    assert out["stamp"] == pytest.approx(1234.5) and out["frame_id"] == "cam_optical"
    assert (out["encoding"], out["height"], out["dim"]) == ("32FC1", 1, 16)
    assert out["max_abs_diff"] < 1e-6
    assert out["info"]["weights_sha256"] == sha and out["info"]["backend"] == "onnxruntime"
    assert out["info"]["embedding_dim"] == 16 and out["info"]["manifest"]["version"] == 1


def test_policy_node_refuses_another_encoder(tiny_models, monkeypatch):
    _enc_dir, policy_dir, sha = tiny_models
    from dynaflip_ros.ros.nodes.policy import PolicyNode
    from dynaflip_ros.ros.runtime import to_json_msg

    monkeypatch.setenv("ROS_DOMAIN_ID", _domain_id())
    rclpy.init(args=["x", "--ros-args", "-p", f"model_dir:={policy_dir}"])
    try:
        policy = PolicyNode()
        probe = Node("probe")
        infos, chunks = [], []
        probe.create_subscription(String, POLICY_INFO_TOPIC, lambda m: infos.append(json.loads(m.data)), LATCHED_QOS)
        probe.create_subscription(JointTrajectory, ACTION_CHUNK_TOPIC, chunks.append, COMMAND_QOS)
        enc_info = probe.create_publisher(String, ENCODER_INFO_TOPIC, LATCHED_QOS)
        status = probe.create_publisher(String, EPISODE_STATUS_TOPIC, EVENT_QOS)
        js = probe.create_publisher(JointState, JOINT_STATES_TOPIC, STATE_QOS)
        emb = probe.create_publisher(Image, EMBEDDING_TOPIC, IMAGE_QOS)
        ex = SingleThreadedExecutor()
        ex.add_node(policy)
        ex.add_node(probe)
        enc_info.publish(to_json_msg({"weights_sha256": "f" * 64}))  # not what the policy was trained on
        t_end = time.monotonic() + 30
        while time.monotonic() < t_end and not any(i.get("error") for i in infos):
            ex.spin_once(timeout_sec=0.05)
        assert infos and infos[-1]["ready"] is False and "EncoderMismatchError" in infos[-1]["error"]
        assert sha[:16] in infos[-1]["error"]
        # even inside a running episode with fresh inputs it publishes nothing
        status.publish(String(data=EpisodeStatus(source="sim_cell", phase="running", episode=0).to_json()))
        for _ in range(10):
            now_s = probe.get_clock().now().nanoseconds * 1e-9
            js.publish(JointState(header=cv.make_header(now_s), name=list(cv.ACTION_JOINT_NAMES), position=[0.0] * 7))
            emb.publish(cv.embedding_to_image(np.zeros(16, np.float32), cv.make_header(now_s, "cam")))
            t_spin = time.monotonic() + 0.1
            while time.monotonic() < t_spin:
                ex.spin_once(timeout_sec=0.02)
        assert chunks == [] and policy.chunks_published == 0 and policy.policy is None
        ex.shutdown(timeout_sec=1.0)
        policy.destroy_node()
        probe.destroy_node()
    finally:
        rclpy.try_shutdown()


class _Probe:
    """Records stamps on the graph's topics from the test process while the graph runs."""

    def __init__(self) -> None:
        self.node = Node("graph_probe")
        self.image_stamps: set[float] = set()
        self.embedding_stamps: list[float] = []
        self.chunks: list[JointTrajectory] = []
        self.joint_states = 0
        self.statuses: list[dict] = []
        n = self.node
        # an observer: a deeper queue than the graph's keep-last-1, so it drops fewer samples
        observer_qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        n.create_subscription(Image, IMAGE_TOPIC, lambda m: self.image_stamps.add(cv.stamp_to_s(m.header.stamp)),
                              observer_qos)
        n.create_subscription(Image, EMBEDDING_TOPIC,
                              lambda m: self.embedding_stamps.append(cv.stamp_to_s(m.header.stamp)), observer_qos)
        n.create_subscription(JointTrajectory, ACTION_CHUNK_TOPIC, self.chunks.append, COMMAND_QOS)
        n.create_subscription(JointState, JOINT_STATES_TOPIC, self._js, STATE_QOS)
        n.create_subscription(String, EPISODE_STATUS_TOPIC, lambda m: self.statuses.append(EpisodeStatus.from_json(m.data)),
                              EVENT_QOS)
        self.instructions: list[str] = []
        n.create_subscription(String, INSTRUCTION_TOPIC, lambda m: self.instructions.append(m.data), LATCHED_QOS)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(n)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)

    def _js(self, _msg) -> None:
        self.joint_states += 1


def _launch_one_episode(monkeypatch, args: list[str]) -> tuple[int, "_Probe"]:
    """`dynaflip launch pick_into_sink --sim --episodes 1 ... args` on a fresh domain with a probe
    node listening; returns (exit code, probe)."""
    from dynaflip_ros.cli import main

    domain = _domain_id()
    monkeypatch.setenv("ROS_DOMAIN_ID", domain)
    rclpy.init(args=["probe"])
    probe = _Probe()
    probe.thread.start()
    try:
        rc = main(["launch", "pick_into_sink", "--sim", "--episodes", "1", "--startup-timeout-s", "60",
                   "--backend", "onnxruntime", "--domain-id", domain, "--timeout-s", "85", *args])
    finally:
        probe.executor.shutdown(timeout_sec=1.0)
        probe.node.destroy_node()
        rclpy.try_shutdown()
    return rc, probe


@pytest.mark.slow
def test_graph_smoke_one_episode(tiny_models, tiny_ensemble, tmp_path, monkeypatch, capsys):
    """The whole graph for one episode, its policy a checkpoint ensemble (as the shipped one)."""
    from dynaflip_ros.encoder.manifest import sha256_file

    enc_dir, _single, sha = tiny_models
    policy_dir = tiny_ensemble
    results = tmp_path / "results.json"
    t0 = time.monotonic()
    rc, probe = _launch_one_episode(monkeypatch, ["--seed", "0", "--episode-timeout-s", "6", "--encoder", str(enc_dir),
                                                  "--policy", str(policy_dir), "--out", str(results)])
    wall_s = time.monotonic() - t0
    out = capsys.readouterr().out
    assert rc == 0, out[-4000:]
    # every process was started and logged with its prefix; the manager printed its summary
    for name in ("sim_cell", "encoder", "policy", "episode_manager"):
        assert f"[{name}" in out
    assert "evaluation (ros): 1 episode;" in out and "success      " in out and "wrong object " in out
    assert "[episode_manager] episode 1/1 seed=0 target=" in out
    res = json.loads(results.read_text())
    assert res["summary"]["episodes"] == 1 and res["models"]["encoder"] == sha
    for key in ("success_rate", "wrong_object_rate", "timeout_rate", "success_ci95", "wrong_object_ci95",
                "timeout_ci95"):
        assert key in res["summary"], key
    ep = res["episodes"][0]
    assert ep["outcome"] in ("success", "wrong_object", "timeout", "safety_stop")
    assert ep["target"] == ep["objects"][0] and 2 <= len(ep["objects"]) <= 4 and ep["instruction"]
    assert list(res["summary"]["by_target"]) == [ep["target"]]
    assert probe.instructions and probe.instructions[-1] == ep["instruction"]  # latched by the sim cell
    assert res["provenance"]["encoder"]["weights_sha256"] == sha
    assert res["models"]["policy"] == sha256_file(policy_dir / "ensemble.json")  # the ensemble's identity
    assert sum(res["summary"]["outcomes"].values()) == 1
    for stage in ("capture", "image_transport", "encode", "embedding_transport", "policy", "command"):
        st = res["summary"]["latency_ms"][stage]
        # stamps are the image's capture time: a missing or zeroed stamp would give ~1e12 ms; no real
        # latency exceeds the whole run (--timeout-s 85), however loaded the machine
        assert st["n"] > 0 and 0.0 <= st["p50"] < 85_000.0, (stage, st)
    ep = res["episodes"][0]
    assert ep["driver"]["chunks"]["queued"] > 0, ep["driver"]  # action chunks reached the driver ...
    assert ep["safety"]["accepted"] > 0  # ... and their targets went through SafeArm to the arm
    # seen from outside the graph: embeddings carry the stamps of published images, chunks too
    # (keep-last-1 topics: under CPU load the probe itself may miss a few images)
    assert probe.embedding_stamps and probe.image_stamps
    # (the publishers keep only the newest sample, so even the observer misses some images under
    # load; a stamp not copied from the image, e.g. now(), would match none)
    matched = np.mean([s in probe.image_stamps for s in probe.embedding_stamps])
    assert matched >= 0.5, matched
    assert probe.chunks and all(list(c.joint_names) == list(cv.ACTION_JOINT_NAMES) for c in probe.chunks)
    chunk_stamps = [cv.stamp_to_s(c.header.stamp) for c in probe.chunks]
    assert np.mean([s in probe.image_stamps for s in chunk_stamps]) >= 0.5, chunk_stamps
    assert probe.joint_states > 100
    assert any(s.running and s.episode == 0 for s in probe.statuses)
    print(f"graph smoke test: {wall_s:.1f} s wall")


@pytest.mark.slow
def test_graph_combined_inference_one_episode(tiny_models, tiny_ensemble, tmp_path, monkeypatch, capsys):
    """The CPU-frugal layout: no encoder process, the policy node embeds the camera images itself
    and publishes encoder_info; the episode runs as in the separate layout."""

    import yaml

    from dynaflip_ros import resources

    enc_dir, _single, sha = tiny_models
    results = tmp_path / "results.json"
    # the episode manager also appends each episode as a JSON line and resets under an OOD
    # condition (what `dynaflip eval-ood --ros` sets; params file copy with those two values)
    params = yaml.safe_load(resources.params_file("pick_into_sink").read_text())
    lines = tmp_path / "episodes.jsonl"
    params["episode_manager"]["ros__parameters"].update(episodes_path=str(lines), condition="lighting:0.5")
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    rc, probe = _launch_one_episode(monkeypatch, ["--combined-inference", "--seed", "1", "--episode-timeout-s", "5",
                                                  "--encoder", str(enc_dir), "--policy", str(tiny_ensemble),
                                                  "--out", str(results), "--params-file", str(params_file)])
    out = capsys.readouterr().out
    assert rc == 0, out[-4000:]
    assert "[encoder" not in out and "[policy" in out  # no encoder process
    assert not probe.embedding_stamps  # no embedding topic either
    res = json.loads(results.read_text())
    assert res["provenance"]["encoder"]["weights_sha256"] == sha and res["summary"]["episodes"] == 1
    for stage in ("image_transport", "encode", "embedding_transport", "policy", "command"):
        assert res["summary"]["latency_ms"][stage]["n"] > 0, stage
    ep = res["episodes"][0]
    assert ep["driver"]["chunks"]["queued"] > 0 and ep["action_age_ms"]["n"] > 0
    chunk_stamps = [cv.stamp_to_s(c.header.stamp) for c in probe.chunks]
    assert chunk_stamps and np.mean([s in probe.image_stamps for s in chunk_stamps]) >= 0.5
    appended = [json.loads(line) for line in lines.read_text().splitlines()]
    assert len(appended) == 1 and appended[0]["seed"] == ep["seed"] and appended[0]["outcome"] == ep["outcome"]
    assert ep["condition"] == "lighting:0.5" and any(st.condition == "lighting:0.5" for st in probe.statuses)
