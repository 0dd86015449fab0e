"""Closed-loop evaluation of encoder + policy in the simulated cell, without ROS (synchronous).

The same arm path as the robot (action chunk -> interpolator -> 125 Hz servo loop -> SafeArm ->
MuJoCo arm) with physics in lock-step on the simulation clock (`sim.rollout.SimRunner`), so a run
is deterministic for a seed and takes no real-time waits. Policy inference is instantaneous in
sim time here; the ROS graph (`dynaflip launch pick_into_sink --sim`) is the real-time check.

Per 10 Hz step: render -> encoder.embed -> policy.observe (history); every `replan_steps` steps
policy.predict_action_chunk -> SimRunner.apply_chunk; advance 0.1 s. Every observation carries
the episode's instruction (`PolicyObservation.instruction`, "drop the red block into the
basin"; an image-only policy ignores it). The episode ends as soon as the task decides
(`env.outcome()`: `success` = the named object rests in the basin, `wrong_object` = another
object reached it), as `safety_stop` when SafeArm halts the arm, or as `timeout` after
`max_duration_s` (`episodes.protocol.Outcome`).

Instruction-swap check (`swap_pairs` > 0): pair p takes the seeded scene of seed + p (the
objects and their poses of `env.reset(seed + p)`), draws two different objects of its table as
targets with a random stream of that seed (`swap_targets`), and runs the scene twice, once per
target, each with an instruction from `task.instructions.sample_instruction` naming it; the
layout is restored exactly before each run, so only the instruction differs. A pair is correct
when both runs end in `success` (`episodes.record.SwapPairRecord`).
"""
from __future__ import annotations

import dataclasses
import time
from collections import defaultdict, deque
from typing import Callable, Optional, Sequence

import numpy as np

from dynaflip_ros.episodes.protocol import Outcome
from dynaflip_ros.episodes.record import EpisodeRecord, EvalReport, SwapPairRecord
from dynaflip_ros.inference.base import EncoderBackend
from dynaflip_ros.policies.base import PolicyObservation

CONTROL_PERIOD_S = 0.1
SWAP_STREAM = 0x5A4B
"""Mixed into the swap targets' random stream (`numpy.random.default_rng([seed, SWAP_STREAM])`),
so they do not follow the scene's own draws of the same seed."""

OnChunk = Callable[[int, float, np.ndarray, np.ndarray], None]


def load_encoder_and_policy(encoder_dir, policy_dir, *, backend: str = "onnxruntime", threads: int = 1,
                            seed: int | None = None, samples_per_chunk: int = 1):
    """(encoder backend, policy) of an exported encoder and a policy trained on it: a
    `DiffusionPolicyRunner`, or a `CheckpointEnsemble` for an ensemble directory
    (`policies.checkpoint_ensemble.load_policy`), with `threads` torch / ONNX Runtime threads and
    `samples_per_chunk` chunks averaged per prediction. Raises the loaders' errors
    (EncoderMismatchError when the policy was trained on another encoder; ValueError for
    samples_per_chunk outside 1..64)."""
    import torch

    from dynaflip_ros.inference.factory import load_encoder_backend
    from dynaflip_ros.policies.checkpoint_ensemble import load_policy

    torch.set_num_threads(threads)
    encoder = load_encoder_backend(str(encoder_dir), backend=backend, onnxruntime_options={"intra_op_num_threads": threads})
    policy = load_policy(str(policy_dir), encoder_sha256=encoder.manifest.weights_sha256, seed=seed,
                         samples_per_chunk=samples_per_chunk)
    return encoder, policy


class GraspMonitor:
    """Counts gripper closings and measures how far the first one was from the target.

    Fed the measured gripper position (0 open .. 1 closed) after every 0.1 s step: a closing
    begins when it rises to `closing_from` or more after having been at `open_below` or less
    (hysteresis, so the fingers settling on an object count once). At the first closing the
    horizontal distance (m) between the TCP and the named object's grasp point
    (`PickIntoSinkEnv.grasp_point`, the point the scripted expert grasps) is kept: a precision
    measure of the approach that does not need a success to be informative. So is the same
    distance `lead_steps` updates earlier (approach_end_xy_error_m; 6 steps = 0.6 s, where the
    scripted expert's approach has ended above the object and its descent not yet begun): a
    larger error there than at the closing means the descent corrected, the same means it did not.
    """

    def __init__(self, closing_from: float = 0.15, open_below: float = 0.05, lead_steps: int = 6) -> None:
        self.closing_from, self.open_below = float(closing_from), float(open_below)
        self.grasps = 0
        self.first_xy_error_m: float | None = None
        self.approach_end_xy_error_m: float | None = None
        self._open = True
        self._recent: deque[float] = deque(maxlen=int(lead_steps) + 1)  # xy errors (m), oldest first

    def update(self, gripper: float, env) -> None:
        if self.first_xy_error_m is None:
            self._recent.append(float(np.linalg.norm(env.tcp_position()[:2] - env.grasp_point()[:2])))
        if self._open and gripper >= self.closing_from:
            self._open = False
            self.grasps += 1
            if self.first_xy_error_m is None:
                self.first_xy_error_m = self._recent[-1]
                if len(self._recent) == self._recent.maxlen:
                    self.approach_end_xy_error_m = self._recent[0]
        elif gripper <= self.open_below:
            self._open = True


class PolicyDriver:
    """A learner's encoder + policy as a one-action-per-step driver (the takeover recording of
    `sim.rollout.SimRunner.run_expert_episode(driver=...)`).

    Per 0.1 s step `act(frame, state, t_s)` embeds the frame and either samples a new chunk
    (`policy.predict_action_chunk`, when the previous chunk is used up) or adds the observation
    to the policy's history (`policy.observe`), as `run_episode` does with whole chunks, and
    returns the chunk's action due at t_s + 0.1: (7,) joint targets (rad) + gripper (0..1).
    """

    def __init__(self, encoder: EncoderBackend, policy) -> None:
        self.encoder, self.policy = encoder, policy
        self._chunk: np.ndarray | None = None
        self._next = 0
        self._instruction: str | None = None

    def reset(self, seed: int | None = None, instruction: str | None = None) -> None:
        self.policy.reset(seed=seed)
        self._chunk, self._next, self._instruction = None, 0, instruction

    def act(self, frame, state, t_s: float) -> np.ndarray:
        emb = self.encoder.embed(frame.rgb[None])[0]  # (D,)
        obs = PolicyObservation(embedding=emb, state=np.concatenate([state.q, [state.gripper]]).astype(np.float32),
                                stamp_s=float(t_s), instruction=self._instruction)
        if self._chunk is None or self._next >= len(self._chunk):
            self._chunk, self._next = np.asarray(self.policy.predict_action_chunk(obs).actions), 0
        else:
            self.policy.observe(obs)
        action = self._chunk[self._next]
        self._next += 1
        return action


def run_episode(runner, encoder: EncoderBackend, policy, *, episode: int = 0, max_duration_s: float = 15.0,
                replan_steps: Optional[int] = None,
                on_chunk: Optional[OnChunk] = None) -> tuple[EpisodeRecord, dict[str, list[float]]]:
    """Run the episode `runner` (a `sim.rollout.SimRunner`) was just reset into, closed-loop.

    The policy is reset with the episode's seed first. Stops at the first decided
    `env.outcome()` (checked after every 0.1 s step), when SafeArm halts (`safety_stop`) or
    after `max_duration_s` simulation seconds (`timeout`). Returns the record (instruction,
    target, objects, outcome, times, this episode's SafeArm counters) and its latency samples
    ({"encode": [ms], "policy": [ms]}, wall clock). The record counts the gripper closings and
    the first one's distance from the target (`GraspMonitor`). `on_chunk(episode, obs_stamp_s, times_s
    (H,), actions (H, 7))` sees every action chunk (times relative to the episode start).
    Raises RuntimeError when the runner was not reset; a policy's errors propagate (a
    language-conditioned policy raises ValueError without an instruction, never the case here).
    """
    env, info = runner.env, runner.info
    if info is None:
        raise RuntimeError("SimRunner.reset() must be called before run_episode")
    policy.reset(seed=info.seed)
    t0 = runner.now_s
    wall0 = time.perf_counter()
    samples_ms: dict[str, list[float]] = defaultdict(list)
    steps, since_plan, len_chunk, outcome = 0, None, 0, None
    grasp = GraspMonitor()
    while outcome is None and runner.now_s - t0 < max_duration_s - 1e-9:
        frame = env.camera.read()
        st = runner.safe.state()
        t_enc = time.perf_counter()
        emb = encoder.embed(frame.rgb[None])[0]  # (D,)
        samples_ms["encode"].append(1e3 * (time.perf_counter() - t_enc))
        obs = PolicyObservation(embedding=emb, state=np.concatenate([st.q, [st.gripper]]).astype(np.float32),
                                stamp_s=runner.now_s, instruction=info.instruction)
        if since_plan is None or since_plan >= (replan_steps or len_chunk):
            t_pol = time.perf_counter()
            chunk = policy.predict_action_chunk(obs)
            samples_ms["policy"].append(1e3 * (time.perf_counter() - t_pol))
            len_chunk = len(chunk.actions)
            runner.apply_chunk(chunk.times_s(), chunk.actions, stamp_s=obs.stamp_s)
            if on_chunk is not None:
                on_chunk(episode, obs.stamp_s - t0, np.asarray(chunk.times_s()) - t0, np.asarray(chunk.actions))
            since_plan = 0
        else:
            policy.observe(obs)
        runner.advance(CONTROL_PERIOD_S)
        grasp.update(float(runner.safe.state().gripper), env)
        steps += 1
        since_plan += 1
        decided = env.outcome()
        if decided is not None:
            outcome = Outcome(decided)
        elif runner.safe.halted:
            outcome = Outcome.SAFETY_STOP
    duration_s = runner.now_s - t0
    outcome = outcome or Outcome.TIMEOUT
    stats = runner.safe.stats
    record = EpisodeRecord(
        episode=episode, seed=info.seed, outcome=outcome, target=info.object_name, objects=list(info.objects),
        instruction=info.instruction, time_to_success_s=duration_s if outcome is Outcome.SUCCESS else None,
        episode_sim_time_s=duration_s, wall_time_s=time.perf_counter() - wall0,
        safety={**dataclasses.asdict(stats), "rejected": int(stats.rejected),
                **({"halt_reason": runner.safe.halt_reason} if runner.safe.halted else {})},
        control_steps=steps, grasps=grasp.grasps, first_grasp_xy_error_m=grasp.first_xy_error_m,
        approach_end_xy_error_m=grasp.approach_end_xy_error_m, action_age=runner.action_age.snapshot())
    return record, dict(samples_ms)


def swap_targets(seed: int, objects: Sequence[str]) -> list[tuple[str, str]]:
    """The two (target, instruction) runs of the swap pair of the scene `seed` with `objects`
    on the table: two different objects drawn by the seed, each with an instruction naming it
    unambiguously among `objects` (`task.instructions.sample_instruction`). Deterministic per
    (seed, objects). Raises ValueError with fewer than two objects."""
    from dynaflip_ros.task.instructions import sample_instruction

    objects = list(objects)
    if len(objects) < 2:
        raise ValueError(f"an instruction-swap pair needs at least 2 objects on the table, got {objects}")
    rng = np.random.default_rng([int(seed), SWAP_STREAM])
    first, second = rng.choice(len(objects), size=2, replace=False)
    return [(objects[i], sample_instruction(objects[i], objects, rng)) for i in (int(first), int(second))]


def _yaw(pose_wxyz: np.ndarray) -> float:
    from dynaflip_ros.sim.cell_params import yaw_from_quat_wxyz

    return yaw_from_quat_wxyz(pose_wxyz[3:7])


def run_swap_pair(runner, encoder: EncoderBackend, policy, *, pair: int, seed: int, max_duration_s: float = 15.0,
                  replan_steps: Optional[int] = None,
                  on_chunk: Optional[OnChunk] = None) -> tuple[SwapPairRecord, list[dict[str, list[float]]]]:
    """One instruction-swap pair (module docstring) on the scene of `seed`: returns the pair
    record (two runs, episode ids 2 * pair and 2 * pair + 1) and each run's latency samples.
    Raises ValueError when the scene has fewer than two objects."""
    env = runner.env
    scene = runner.reset(seed=seed)
    objects = list(scene.objects)
    layout = {name: env.object_pose(name) for name in objects}  # (7,) x, y, z, qw, qx, qy, qz
    record = SwapPairRecord(pair=pair, seed=seed, objects=objects)
    samples = []
    for k, (target, instruction) in enumerate(swap_targets(seed, objects)):
        runner.reset(seed=seed, object_name=target, objects=objects, instruction=instruction)
        for name, pose in layout.items():  # the same layout for both runs, whichever is the target
            env.place_object(name, float(pose[0]), float(pose[1]), _yaw(pose), z_m=float(pose[2]))
        run, run_samples = run_episode(runner, encoder, policy, episode=2 * pair + k, max_duration_s=max_duration_s,
                                       replan_steps=replan_steps, on_chunk=on_chunk)
        record.runs.append(run)
        samples.append(run_samples)
    return record, samples


def evaluate_in_sim(
    encoder: EncoderBackend,
    policy,
    n_episodes: int,
    seed: int = 100_000,
    max_duration_s: float = 15.0,
    replan_steps: Optional[int] = None,
    sim_config=None,
    on_episode: Optional[Callable[[EpisodeRecord, EvalReport], None]] = None,
    on_chunk: Optional[OnChunk] = None,
    report: EvalReport | None = None,
    swap_pairs: int = 0,
    on_pair: Optional[Callable[[SwapPairRecord, EvalReport], None]] = None,
    env=None,
) -> EvalReport:
    """Run `n_episodes` closed-loop episodes (seeds seed, seed+1, ...; each scene's objects,
    target and instruction drawn by its seed), then `swap_pairs` instruction-swap pairs (pair p
    on the scene of seed + p), and return the report (`episodes.record.EvalReport`, mode
    "lockstep"; pass `report` to fill one that already carries config / models).

    encoder: an `inference.base.EncoderBackend` (uint8 (1, H, W, 3) -> (1, D)); policy: a
    `policies.diffusion.DiffusionPolicyRunner` (needs `observe`, `predict_action_chunk`,
    `reset(seed=...)`; gets the instruction in every observation).
    replan_steps: 10 Hz steps between chunk requests (default: the chunk length).
    Seeds default to 100 000+ so evaluation never reuses the recording seeds (0..N).
    on_episode(record, report) / on_pair(pair, report): called after every episode / pair
    (already in the report). on_chunk: see `run_episode` (swap runs use episode ids
    2 * pair + k). Latency stages: encode and policy (wall-clock ms of the calls).
    env: a `PickIntoSinkEnv` to run in (left open; default: a new one of `sim_config`, closed
    at the end).
    Raises ValueError for n_episodes < 0, swap_pairs < 0, or neither.
    """
    from dynaflip_ros.configs.sim import SimConfig
    from dynaflip_ros.sim.pick_into_sink import PickIntoSinkEnv
    from dynaflip_ros.sim.rollout import SimRunner

    if n_episodes < 0 or swap_pairs < 0 or n_episodes + swap_pairs < 1:
        raise ValueError(f"need n_episodes >= 0 and swap_pairs >= 0, at least one of them > 0; "
                         f"got {n_episodes}, {swap_pairs}")
    own_env = env is None
    if own_env:
        env = PickIntoSinkEnv(sim_config or SimConfig())
    runner = SimRunner(env)
    if report is None:
        report = EvalReport(mode="lockstep", models={
            "encoder": encoder.manifest.weights_sha256, "policy": getattr(policy, "weights_sha256", None)})
    wall0 = time.perf_counter()
    options = {"max_duration_s": max_duration_s, "replan_steps": replan_steps, "on_chunk": on_chunk}
    try:
        for ep in range(n_episodes):
            runner.reset(seed=seed + ep)
            record, samples = run_episode(runner, encoder, policy, episode=ep, **options)
            report.add(record, samples)
            if on_episode is not None:
                on_episode(record, report)
        for p in range(swap_pairs):
            pair, samples = run_swap_pair(runner, encoder, policy, pair=p, seed=seed + p, **options)
            report.add_pair(pair, samples)
            if on_pair is not None:
                on_pair(pair, report)
    finally:
        if own_env:
            env.close()
    report.wall_time_s = time.perf_counter() - wall0
    return report
