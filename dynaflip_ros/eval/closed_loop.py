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

import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import numpy as np

from dynaflip_ros.inference.base import EncoderBackend
from dynaflip_ros.policies.base import PolicyObservation


@dataclass
class EpisodeOutcome:
    """One evaluated episode: seed, object, success, sim duration (s), 10 Hz steps, safety rejections."""

    seed: int
    object_name: str
    success: bool
    duration_s: float
    steps: int
    safety_rejections: int


@dataclass
class EvalSummary:
    """All episodes plus timing: mean encode / policy wall time per call (ms)."""

    episodes: list[EpisodeOutcome] = field(default_factory=list)
    encode_ms: list[float] = field(default_factory=list)
    policy_ms: list[float] = field(default_factory=list)
    wall_time_s: float = 0.0

    @property
    def success_rate(self) -> float:
        return float(np.mean([e.success for e in self.episodes])) if self.episodes else 0.0

    def to_dict(self) -> dict:
        return {
            "success_rate": self.success_rate,
            "n_episodes": len(self.episodes),
            "episodes": [asdict(e) for e in self.episodes],
            "encode_ms_p50": float(np.percentile(self.encode_ms, 50)) if self.encode_ms else None,
            "policy_ms_p50": float(np.percentile(self.policy_ms, 50)) if self.policy_ms else None,
            "wall_time_s": self.wall_time_s,
        }


def evaluate_in_sim(
    encoder: EncoderBackend,
    policy,
    n_episodes: int,
    seed: int = 100_000,
    max_duration_s: float = 15.0,
    replan_steps: Optional[int] = None,
    sim_config=None,
    on_episode: Optional[Callable[[EpisodeOutcome], None]] = None,
    on_chunk: Optional[Callable[[int, float, np.ndarray, np.ndarray], None]] = None,
) -> EvalSummary:
    """Run `n_episodes` closed-loop episodes (seeds seed, seed+1, ...) and return the summary.

    encoder: an `inference.base.EncoderBackend` (uint8 (1, H, W, 3) -> (1, D)); policy: a
    `policies.diffusion.DiffusionPolicyRunner` (needs `observe`, `predict_action_chunk`, `reset`).
    replan_steps: 10 Hz steps between chunk requests (default: the chunk length).
    Seeds default to 10 000+ so evaluation never reuses the recording seeds (0..N).
    on_chunk(episode, obs_stamp_s, times_s (H,), actions (H, 7)): called with every action chunk
        (times relative to the episode start; e.g. to replay a policy's chunks on another arm).
    Raises ValueError for n_episodes < 1.
    """
    from dynaflip_ros.configs.sim import SimConfig
    from dynaflip_ros.sim.pick_into_sink import PickIntoSinkEnv
    from dynaflip_ros.sim.rollout import SimRunner

    if n_episodes < 1:
        raise ValueError(f"n_episodes must be >= 1, got {n_episodes}")
    env = PickIntoSinkEnv(sim_config or SimConfig())
    runner = SimRunner(env)
    summary = EvalSummary()
    wall0 = time.perf_counter()
    dt_s = 0.1
    try:
        for ep in range(n_episodes):
            info = runner.reset(seed=seed + ep)
            policy.reset(seed=seed + ep)
            t0 = runner.now_s
            steps, since_plan, success, len_chunk = 0, None, False, 0
            while runner.now_s - t0 < max_duration_s - 1e-9:
                frame = env.camera.read()
                st = runner.safe.state()
                t_enc = time.perf_counter()
                emb = encoder.embed(frame.rgb[None])[0]  # (D,)
                summary.encode_ms.append(1e3 * (time.perf_counter() - t_enc))
                obs = PolicyObservation(
                    embedding=emb, state=np.concatenate([st.q, [st.gripper]]).astype(np.float32),
                    stamp_s=runner.now_s,
                )
                if since_plan is None or since_plan >= (replan_steps or len_chunk):
                    t_pol = time.perf_counter()
                    chunk = policy.predict_action_chunk(obs)
                    summary.policy_ms.append(1e3 * (time.perf_counter() - t_pol))
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
            outcome = EpisodeOutcome(
                seed=info.seed, object_name=info.object_name, success=success,
                duration_s=runner.now_s - t0, steps=steps,
                safety_rejections=int(runner.safe.stats.rejected),
            )
            summary.episodes.append(outcome)
            if on_episode is not None:
                on_episode(outcome)
    finally:
        env.close()
    summary.wall_time_s = time.perf_counter() - wall0
    return summary
