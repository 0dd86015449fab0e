"""Closed-loop evaluation of encoder + policy in the simulated cell, without ROS (synchronous).

The same arm path as the robot (action chunk -> interpolator -> 125 Hz servo loop -> SafeArm ->
MuJoCo arm) with physics in lock-step on the simulation clock (`sim.rollout.SimRunner`), so a run
is deterministic for a seed and takes no real-time waits. Policy inference is instantaneous in
sim time here; the ROS graph (`dynaflip launch pick_into_sink --sim`) is the real-time check.

Per 10 Hz step: render -> encoder.embed -> policy.observe (history); every `replan_steps` steps
policy.predict_action_chunk -> SimRunner.apply_chunk; advance 0.1 s; the episode ends on
`env.success()` (object resting in the basin) or after `max_duration_s`.
"""
from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from typing import Callable, Optional

import numpy as np

from dynaflip_ros.episodes.protocol import Outcome
from dynaflip_ros.episodes.record import EpisodeRecord, EvalReport
from dynaflip_ros.inference.base import EncoderBackend
from dynaflip_ros.policies.base import PolicyObservation


def evaluate_in_sim(
    encoder: EncoderBackend,
    policy,
    n_episodes: int,
    seed: int = 100_000,
    max_duration_s: float = 15.0,
    replan_steps: Optional[int] = None,
    sim_config=None,
    on_episode: Optional[Callable[[EpisodeRecord, EvalReport], None]] = None,
    on_chunk: Optional[Callable[[int, float, np.ndarray, np.ndarray], None]] = None,
    report: EvalReport | None = None,
) -> EvalReport:
    """Run `n_episodes` closed-loop episodes (seeds seed, seed+1, ...) and return the report
    (`episodes.record.EvalReport`, mode "lockstep"; pass `report` to fill one that already
    carries config / models).

    encoder: an `inference.base.EncoderBackend` (uint8 (1, H, W, 3) -> (1, D)); policy: a
    `policies.diffusion.DiffusionPolicyRunner` (needs `observe`, `predict_action_chunk`, `reset`).
    replan_steps: 10 Hz steps between chunk requests (default: the chunk length).
    Seeds default to 10 000+ so evaluation never reuses the recording seeds (0..N).
    on_episode(record, report): called after every episode (the record is already in the report).
    on_chunk(episode, obs_stamp_s, times_s (H,), actions (H, 7)): called with every action chunk
        (times relative to the episode start; e.g. to replay a policy's chunks on another arm).
    Latency stages: encode and policy (wall-clock ms of the calls).
    Raises ValueError for n_episodes < 1.
    """
    from dynaflip_ros.configs.sim import SimConfig
    from dynaflip_ros.sim.pick_into_sink import PickIntoSinkEnv
    from dynaflip_ros.sim.rollout import SimRunner

    if n_episodes < 1:
        raise ValueError(f"n_episodes must be >= 1, got {n_episodes}")
    env = PickIntoSinkEnv(sim_config or SimConfig())
    runner = SimRunner(env)
    if report is None:
        report = EvalReport(mode="lockstep", models={
            "encoder": encoder.manifest.weights_sha256, "policy": getattr(policy, "weights_sha256", None)})
    wall0 = time.perf_counter()
    dt_s = 0.1
    try:
        for ep in range(n_episodes):
            info = runner.reset(seed=seed + ep)
            policy.reset(seed=seed + ep)
            t0 = runner.now_s
            ep_wall0 = time.perf_counter()
            samples_ms: dict[str, list[float]] = defaultdict(list)
            steps, since_plan, success, len_chunk = 0, None, False, 0
            while runner.now_s - t0 < max_duration_s - 1e-9:
                frame = env.camera.read()
                st = runner.safe.state()
                t_enc = time.perf_counter()
                emb = encoder.embed(frame.rgb[None])[0]  # (D,)
                samples_ms["encode"].append(1e3 * (time.perf_counter() - t_enc))
                obs = PolicyObservation(
                    embedding=emb, state=np.concatenate([st.q, [st.gripper]]).astype(np.float32),
                    stamp_s=runner.now_s,
                )
                if since_plan is None or since_plan >= (replan_steps or len_chunk):
                    t_pol = time.perf_counter()
                    chunk = policy.predict_action_chunk(obs)
                    samples_ms["policy"].append(1e3 * (time.perf_counter() - t_pol))
                    len_chunk = len(chunk.actions)
                    runner.apply_chunk(chunk.times_s(), chunk.actions)
                    if on_chunk is not None:
                        on_chunk(ep, obs.stamp_s - t0, np.asarray(chunk.times_s()) - t0, np.asarray(chunk.actions))
                    since_plan = 0
                else:
                    policy.observe(obs)
                runner.advance(dt_s)
                steps += 1
                since_plan += 1
                if env.success():
                    success = True
                    break
            duration_s = runner.now_s - t0
            record = EpisodeRecord(
                episode=ep, seed=info.seed, outcome=Outcome.SUCCESS if success else Outcome.TIMEOUT,
                object_name=info.object_name, instruction=info.instruction,
                time_to_success_s=duration_s if success else None, episode_sim_time_s=duration_s,
                wall_time_s=time.perf_counter() - ep_wall0, safety={**dataclasses.asdict(runner.safe.stats), "rejected": int(runner.safe.stats.rejected)},
                control_steps=steps,
            )
            report.add(record, samples_ms)
            if on_episode is not None:
                on_episode(record, report)
    finally:
        env.close()
    report.wall_time_s = time.perf_counter() - wall0
    return report
