"""Node `policy`: (embedding, joint state) -> timestamped action chunk (docs/timing.md).

Driven by embedding arrivals (10 Hz, one per camera frame): every observation enters the
policy's observation history (`DiffusionPolicyRunner.observe`); a new chunk is sampled
(`predict_action_chunk`) when `policies.replan.ReplanSchedule` says so (no chunk yet, the
current one about to run dry, or every `n_action_steps` actions).

The chunk is published as a JointTrajectory: header.stamp = the observation's image stamp,
point i at time_from_start = i * dt (the runner's chunk starts at the observation).

Encoder skew guard (docs/architecture.md, "Artifacts"): the policy is loaded only after
/dynaflip/encoder_info arrives, with that encoder's weights_sha256; a policy trained on another
encoder raises EncoderMismatchError -> the node logs the error, publishes
/dynaflip/policy_info {"ready": false, "error": ...} and never publishes an action.

The node acts only during an episode (`episodes.gate.EpisodeGate`, follower side): a reset
command on /episode/command (`EpisodeCommand`, stamp t) resets the policy and stops acting; the
first /episode/status (`EpisodeStatus`) of that episode, running, whose `reset_stamp_s` >= t
re-enables it, and observations stamped before `reset_stamp_s` are ignored. Duplicated resets
are idempotent (as in the sim cell). Malformed or other-version messages are logged and ignored.

Instruction (`PolicyObservation.instruction`): the running episode's own (its statuses'
`instruction`: the sim cell sets one per episode) when there is one, else the latest message on
/dynaflip/instruction (std_msgs/String, latched), which starts as the `instruction` parameter
(the real cell's `instruction:=` launch argument; published latched at start-up when given).
A language-conditioned policy (its `language_conditioned` attribute true) gets no observation
and sends no chunk until there is an instruction; the node logs why once (`skipped["no_instruction"]` counts the frames). An image-only policy
ignores the instruction.

CPU-frugal layout (`encoder_in_process: true`; `dynaflip launch --combined-inference`,
`combined_inference:=true`): the node loads the image encoder itself (`encoder.*` parameters, as
the encoder node's), subscribes to /camera/color/image_raw instead of /dynaflip/embedding, embeds
each image and acts on it in the same callback (no encoder process, no embedding message), and
publishes /dynaflip/encoder_info (LATCHED_QOS) and the latency stages "image_transport" and
"encode" itself.

Subscribed: /dynaflip/embedding (IMAGE_QOS; /camera/color/image_raw with encoder_in_process), /joint_states (STATE_QOS),
            /dynaflip/encoder_info, /dynaflip/instruction (LATCHED_QOS), /episode/command,
            /episode/status (EVENT_QOS)
Published:  /dynaflip/action_chunk trajectory_msgs/JointTrajectory (COMMAND_QOS),
            /dynaflip/policy_info std_msgs/String JSON, /dynaflip/instruction (the parameter's,
            once) (LATCHED_QOS),
            /dynaflip/latency stages "embedding_transport", "policy" (EVENT_QOS)
Parameters: configs.ros.PolicyNodeConfig (section `policy:`).
"""
from __future__ import annotations

import sys
import threading

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from dynaflip_ros.configs.ros import PolicyNodeConfig
from dynaflip_ros.episodes.gate import EpisodeGate, Transition
from dynaflip_ros.episodes.protocol import EpisodeCommand, EpisodeStatus, ProtocolError
from dynaflip_ros.policies.base import EncoderMismatchError, PolicyObservation
from dynaflip_ros.policies.checkpoint_ensemble import load_deployed_policy  # torch / LeRobot only inside
from dynaflip_ros.policies.replan import JointStateBuffer, ReplanSchedule
from dynaflip_ros.policies.replan import step as replan_step
from dynaflip_ros.resources import resolve_path
from dynaflip_ros.ros.conversions import (
    action_chunk_to_trajectory, image_to_embedding, stamp_to_s, state_vector_from_joint_state,
)
from dynaflip_ros.ros.params import load_node_config, node_kwargs
from dynaflip_ros.ros.qos import (
    ACTION_CHUNK_TOPIC, COMMAND_QOS, EMBEDDING_TOPIC, ENCODER_INFO_TOPIC, EPISODE_COMMAND_TOPIC,
    EPISODE_STATUS_TOPIC, EVENT_QOS, IMAGE_QOS, INSTRUCTION_TOPIC, JOINT_STATES_TOPIC, LATCHED_QOS,
    POLICY_INFO_TOPIC, STATE_QOS,
)
from dynaflip_ros.ros.runtime import (
    run_node,
    LatencyReporter, from_json_msg, ros_now_s, safe_publish, to_json_msg,
)


def needs_instruction(policy) -> bool:
    """Whether `policy` is language-conditioned (its `language_conditioned` attribute)."""
    return bool(getattr(policy, "language_conditioned", False))


NO_INSTRUCTION = (f"the policy is language-conditioned and has no instruction: sending no action chunks until one "
                  f"arrives (publish it latched on {INSTRUCTION_TOPIC}, or launch with instruction:=...)")


def _policy_facts(policy) -> dict:
    """The loaded policy's provenance for /dynaflip/policy_info."""
    return dict(encoder_sha256=policy.encoder_sha256, weights_sha256=policy.weights_sha256, fps=policy.fps,
                embedding_dim=policy.embedding_dim, n_obs_steps=policy.model_config.n_obs_steps,
                chunk_len=policy.model_config.n_action_steps, language_conditioned=needs_instruction(policy))


def _start_preimport() -> threading.Thread:
    """Import torch + LeRobot (seconds) in a thread while the encoder starts; the load itself
    waits for the encoder's sha256 and joins this thread (concurrent imports of torch / the
    torchvision shim from two threads are not safe)."""
    thread = threading.Thread(target=_preimport, name="policy_preimport", daemon=True)
    thread.start()
    return thread


def _preimport() -> None:
    """Import the policy runtime (torch, LeRobot) ahead of the first load."""
    try:
        from dynaflip_ros.policies import diffusion

        diffusion.import_lerobot()
        import lerobot.policies.diffusion.modeling_diffusion  # noqa: F401
        import lerobot.policies.factory  # noqa: F401
    except Exception:  # noqa: BLE001 - the real load reports any import error
        pass


class PolicyNode(Node):
    """Runs a `DiffusionPolicyRunner` (or a `CheckpointEnsemble` of them) on embeddings + joint
    states. Raises ConfigError on bad parameters and FileNotFoundError when `model_dir` does not
    exist."""

    def __init__(self, node_name: str = "policy") -> None:
        super().__init__(node_name, **node_kwargs())
        self.config = load_node_config(self, PolicyNodeConfig)
        self.model_dir = resolve_path(self.config.model_dir)
        self.policy = None  # DiffusionPolicyRunner / CheckpointEnsemble once the encoder is known
        self.schedule: ReplanSchedule | None = None
        self.refused_reason = ""
        self.chunks_published = self.observations = 0
        self.skipped = {"inactive": 0, "stale": 0, "no_joint_state": 0, "no_instruction": 0, "error": 0}
        self.instruction = self.config.instruction.strip() or None  # the topic's (module docstring)
        self.needs_instruction = self._told_no_instruction = False  # needs_instruction: from the loaded policy
        self._lock = threading.Lock()  # lock order: self._lock, then the gate's (a leaf)
        self.gate = EpisodeGate()
        self._joint_states = JointStateBuffer()
        self._latency = LatencyReporter(self)
        self._chunk_pub = self.create_publisher(JointTrajectory, ACTION_CHUNK_TOPIC, COMMAND_QOS)
        self._info_pub = self.create_publisher(String, POLICY_INFO_TOPIC, LATCHED_QOS)
        self._publish_info(ready=False, error="", waiting_for="encoder_info")
        self._instruction_pub = self.create_publisher(String, INSTRUCTION_TOPIC, LATCHED_QOS)
        if self.instruction is not None:
            safe_publish(self, self._instruction_pub, String(data=self.instruction), "instruction")
        self.create_subscription(String, INSTRUCTION_TOPIC, self._on_instruction, LATCHED_QOS)
        self.create_subscription(String, ENCODER_INFO_TOPIC, self._on_encoder_info, LATCHED_QOS)
        self.create_subscription(JointState, JOINT_STATES_TOPIC, self._on_joint_state, STATE_QOS)
        self.create_subscription(String, EPISODE_COMMAND_TOPIC, self._on_episode_command, EVENT_QOS)
        self.create_subscription(String, EPISODE_STATUS_TOPIC, self._on_episode_status, EVENT_QOS)
        if self.config.encoder_in_process:  # the image encoder runs here (module docstring)
            from dynaflip_ros.ros.nodes.encoder import InProcessEncoder, load_encoder

            self.encoder = InProcessEncoder(self, *load_encoder(self.config.encoder), self._act, self._latency,
                                            wanted=self._active)
        else:
            self.create_subscription(Image, EMBEDDING_TOPIC, self._on_embedding, IMAGE_QOS)
        self._preload = _start_preimport()
        self.get_logger().info(f"policy: {self.model_dir}; waiting for {ENCODER_INFO_TOPIC}")

    # ------------------------------------------------------------------ model
    def _publish_info(self, ready: bool, error: str, **extra) -> None:
        info = {"ready": ready, "error": error, "model_dir": str(self.model_dir), "instruction": self.instruction,
                **extra, **(_policy_facts(self.policy) if self.policy is not None else {})}
        safe_publish(self, self._info_pub, to_json_msg(info), "policy_info")

    def _on_encoder_info(self, msg: String) -> None:
        try:
            sha = str(from_json_msg(msg)["weights_sha256"])
        except (ValueError, KeyError) as e:
            self.get_logger().error(f"malformed {ENCODER_INFO_TOPIC}: {e}")
            return
        with self._lock:
            if self.policy is not None:
                if sha != self.policy.encoder_sha256:
                    self._refuse(EncoderMismatchError(
                        f"the encoder changed to {sha[:16]}... but the policy was trained on "
                        f"{self.policy.encoder_sha256[:16]}..."))
                return
            if self.refused_reason:
                return
            self._load(sha)

    def _load(self, encoder_sha256: str) -> None:
        self._preload.join()  # never import torch / LeRobot from two threads at once
        try:  # a policy checkpoint or an ensemble of them (policies.checkpoint_ensemble)
            policy, warm_s = load_deployed_policy(
                self.model_dir, encoder_sha256=encoder_sha256, num_threads=self.config.num_threads,
                samples_per_chunk=self.config.samples_per_chunk, temporal_ensemble_coeff=self.config.temporal_ensemble_coeff,
                real_time_chunking=self.config.real_time_chunking)
        except (EncoderMismatchError, FileNotFoundError, ValueError) as e:
            self._refuse(e)
            return
        self.needs_instruction = needs_instruction(policy)
        self.policy = policy  # with temporal ensembling: a chunk at every observation
        self.schedule = ReplanSchedule(policy.dt_s, 1 if self.config.temporal_ensemble_coeff is not None
                                       else self.config.n_action_steps)
        self._publish_info(ready=True, error="")
        self.get_logger().info(
            f"policy loaded: encoder sha256 {encoder_sha256[:12]} matches; chunk of "
            f"{policy.model_config.n_action_steps} actions at {policy.dt_s:g} s -> {ACTION_CHUNK_TOPIC} "
            f"(warm-up {warm_s * 1e3:.0f} ms){'; language-conditioned' if self.needs_instruction else ''}")

    def _refuse(self, err: Exception) -> None:
        self.policy = None
        self.refused_reason = f"{type(err).__name__}: {err}"
        self.get_logger().error(f"policy refuses to run, publishing nothing: {self.refused_reason}")
        self._publish_info(ready=False, error=self.refused_reason)

    # ------------------------------------------------------------------ instruction
    def _on_instruction(self, msg: String) -> None:
        text = msg.data.strip()
        if not text:
            self.get_logger().error(f"{INSTRUCTION_TOPIC}: a blank instruction is ignored")
            return
        with self._lock:
            changed, self.instruction, self._told_no_instruction = text != self.instruction, text, False
        if changed:
            self.get_logger().info(f"instruction: {text!r}")

    def _no_instruction(self) -> None:
        """Count a frame skipped for lack of an instruction; say why once (call with the lock held)."""
        self.skipped["no_instruction"] += 1
        if not self._told_no_instruction:
            self._told_no_instruction = True
            self.get_logger().warning(NO_INSTRUCTION)

    # ------------------------------------------------------------------ episode gating
    def _on_episode_command(self, msg: String) -> None:
        self._follow_episode(msg, EpisodeCommand.from_json, self.gate.expect, EPISODE_COMMAND_TOPIC)

    def _on_episode_status(self, msg: String) -> None:
        self._follow_episode(msg, EpisodeStatus.from_json, self.gate.follow, EPISODE_STATUS_TOPIC)

    def _follow_episode(self, msg: String, parse, transition, topic: str) -> None:
        """A command / status through the gate; stopping or starting an episode clears the
        policy's observation history and replan schedule."""
        try:
            message = parse(msg.data)
        except ProtocolError as e:
            self.get_logger().error(f"{topic} ignored: {e}", throttle_duration_sec=5.0)
            return
        with self._lock:
            if transition(message) is not Transition.NONE:
                for stateful in (self.policy, self.schedule):
                    if stateful is not None:
                        stateful.reset()

    # ------------------------------------------------------------------ data path
    def _on_joint_state(self, msg: JointState) -> None:
        try:
            x = state_vector_from_joint_state(msg)  # (7,)
        except ValueError as e:
            self.get_logger().error(f"bad {JOINT_STATES_TOPIC}: {e}", throttle_duration_sec=5.0)
            return
        with self._lock:
            self._joint_states.add(stamp_to_s(msg.header.stamp), ros_now_s(self), x)

    def _admits(self, stamp_s: float) -> bool:
        """Whether an observation stamped `stamp_s` is acted on (a loaded policy, a running
        episode it belongs to); counts it as inactive otherwise. Call with the lock held."""
        if self.policy is not None and self.gate.admits(stamp_s):
            return True
        self.skipped["inactive"] += 1
        return False

    def _active(self, stamp_s: float) -> bool:  # encoder_in_process: embed only images that are acted on
        with self._lock:
            return self._admits(stamp_s)

    def _on_embedding(self, msg: Image) -> None:
        try:
            embedding = image_to_embedding(msg)  # (D,)
        except ValueError as e:
            with self._lock:
                self.skipped["error"] += 1
            self.get_logger().error(f"bad {EMBEDDING_TOPIC}: {e}", throttle_duration_sec=2.0)
            return
        self._act(embedding, msg.header)

    def _act(self, embedding: np.ndarray, header) -> None:
        """One observation: the (D,) embedding of the image with `header`; latency reported after the chunk."""
        stamp_s, now_s = stamp_to_s(header.stamp), ros_now_s(self)
        with self._latency.deferred(), self._lock:
            self._latency.report("embedding_transport", now_s - stamp_s, stamp_s)
            if not self._admits(stamp_s):
                return
            if now_s - stamp_s > self.config.max_observation_age_s:
                self.skipped["stale"] += 1
                return
            js = self._joint_states.nearest(stamp_s, now_s, self.config.max_joint_state_age_s)
            if js is None:
                self.skipped["no_joint_state"] += 1
                self.get_logger().warning(f"no fresh {JOINT_STATES_TOPIC}: no action", throttle_duration_sec=2.0)
                return
            instruction = self.gate.state().instruction or self.instruction
            if instruction is None and self.needs_instruction:
                self._no_instruction()
                return
            try:
                obs = PolicyObservation(embedding=embedding, state=js, stamp_s=stamp_s, instruction=instruction)
                self.gate.used(stamp_s)
                self.observations += 1
                chunk, inference_s = replan_step(self.policy, self.schedule, obs)  # (n_action_steps, 7) from stamp_s
                if chunk is None:
                    return
                traj = action_chunk_to_trajectory(chunk, stamp_s=stamp_s)
            except (ValueError, RuntimeError) as e:
                if isinstance(e, ValueError) and instruction is None:  # conditioned, without saying so
                    self.needs_instruction = True
                    self._no_instruction()
                    return
                self.skipped["error"] += 1
                self.get_logger().error(f"policy step failed: {e}", throttle_duration_sec=2.0)
                return
            if safe_publish(self, self._chunk_pub, traj, "action chunk"):
                self.chunks_published += 1
                self.schedule.chunk_sent(chunk, ros_now_s(self) - stamp_s)
            self._latency.report("policy", inference_s, stamp_s)


def main(argv: list[str] | None = None) -> int:
    """`policy_node`."""
    return run_node("policy", PolicyNode, argv, num_threads=1)


if __name__ == "__main__":
    sys.exit(main())
