"""Record scripted-expert demonstrations of the MuJoCo pick-into-sink cell into a LeRobotDataset.

`record_sim_episodes` drives `PickIntoSinkEnv` with `ScriptedExpert` through `SimRunner` (SafeArm,
125 Hz servo loop, physics in lockstep) and writes every 10 Hz step with
`data.recorder.EpisodeRecorder` (source "sim", demonstrator "expert"; schema `data/schema.py`).
Single-threaded: the caller's thread runs the sim and the writer. Clock: simulation time.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path

import numpy as np

from dynaflip_ros.configs.sim import SimConfig
from dynaflip_ros.data import dataset_io, schema
from dynaflip_ros.data.dataset_io import DEFAULT_REPO_ID
from dynaflip_ros.data.recorder import EpisodeRecorder
from dynaflip_ros.errors import UserError
from dynaflip_ros.sim.action_noise import DEFAULT_PHASES, JointActionNoise
from dynaflip_ros.sim.expert import IKError, ScriptedExpert
from dynaflip_ros.sim.pick_into_sink import PickIntoSinkEnv
from dynaflip_ros.sim.rollout import SimRunner
from dynaflip_ros.task.instructions import instruction_paraphrases

log = logging.getLogger(__name__)
REGRASP_STREAM = 0x52E6
"""Mixed into the seed of `regrasp_offset`'s random stream."""
TAKEOVER_STREAM = 0x7A4E
"""Mixed into the seed of `takeover_time`'s random stream."""


def episode_extra(info) -> dict:
    """Per-episode metadata of a sim recording (`EpisodeInfo` -> JSON-safe dict): the target's
    pose, every object on the table (target first), the other objects in track-row order, the
    instruction's paraphrases (every unambiguous phrasing, `task.instructions`; the policy
    samples among them in training) and the scene randomisation drawn ({} when nominal)."""
    return {
        "object_pose": [float(v) for v in info.object_pose],
        "objects": list(info.objects),
        "distractors": list(info.distractors),
        "instruction_paraphrases": instruction_paraphrases(info.object_name, info.objects),
        "scene": info.scene,
    }


class RecipeMismatchError(ValueError, UserError):
    """A resumed recording asked for another recipe than the dataset's episodes were recorded with."""


def check_same_recipe(records: list[dict], action_noise_rad: float, action_noise_tau_s: float,
                      randomize_scene: bool, root, regrasp_fraction: float = 0.0,
                      action_noise_phases: tuple[str, ...] = DEFAULT_PHASES) -> None:
    """Refuse to append to a dataset whose expert episodes were recorded with another recipe: a
    resumed recording must not mix nominal and DART-perturbed (`action_noise_rad`, `_tau_s`),
    nominal and randomised-scene episodes, or another share of missed-grasp recoveries
    (`regrasp_fraction`), which a trainer could not tell apart. records: the dataset's sim
    expert episode records (`data.dataset_io.read_episode_records`). Raises RecipeMismatchError
    (a ValueError and UserError: exit 2 on the command line) naming the first differing episode."""
    want_noise = (float(action_noise_rad), float(action_noise_tau_s), tuple(action_noise_phases)) \
        if action_noise_rad > 0 else None
    want = (want_noise, bool(randomize_scene), float(regrasp_fraction))
    for r in records:
        extra = r.get("extra") or {}
        noise = (float(extra["action_noise_rad"]), float(extra.get("action_noise_tau_s", 0.0)),
                 tuple(extra.get("action_noise_phases", DEFAULT_PHASES))) if "action_noise_rad" in extra else None
        got = (noise, bool(extra.get("scene")), float(extra.get("regrasp_fraction", 0.0)))
        if got != want:
            def recipe(n, rand, regrasp):
                return (f"--action-noise-rad {n[0]} (tau {n[1]} s, phases {','.join(n[2])})" if n
                        else "no action noise") + (
                    ", --randomize-scene" if rand else ", nominal scenes") + (
                    f", --regrasp-fraction {regrasp:g}" if regrasp else "")
            raise RecipeMismatchError(
                f"{root}: episode {r.get('episode_index')} (seed {r.get('seed')}) was recorded with "
                f"{recipe(*got)}, this run asks for {recipe(*want)}; "
                f"record into another --out (one dataset, one recipe)")


def regrasp_offset(seed: int, fraction: float, offset_m: tuple[float, float]) -> np.ndarray | None:
    """The deliberate grasp offset of the episode `seed`: (2,) m in the base xy-plane, its length
    uniform in `offset_m` and its direction uniform, for a share `fraction` of seeds; None for
    the others. Deterministic per seed (its own random stream, so the scene's draws do not
    change)."""
    rng = np.random.default_rng([int(seed), REGRASP_STREAM])
    if not rng.random() < fraction:
        return None
    angle, length = rng.uniform(0.0, 2.0 * math.pi), rng.uniform(*offset_m)
    return length * np.array([math.cos(angle), math.sin(angle)])


def takeover_time(seed: int, window_s: tuple[float, float]) -> float:
    """The takeover time (s) of a seed's expert-takeover episode: uniform in window_s, drawn from
    the seed's own stream (`numpy.random.default_rng([seed, TAKEOVER_STREAM])`), so the scene,
    the action noise and the takeover never share draws."""
    rng = np.random.default_rng([int(seed), TAKEOVER_STREAM])
    return float(rng.uniform(float(window_s[0]), float(window_s[1])))


def record_sim_episodes(
    n_episodes: int,
    root: str | Path,
    seed: int = 0,
    image_hw: tuple[int, int] = (224, 224),
    only_success: bool = True,
    progress: bool = True,
    resume: bool = True,
    repo_id: str = DEFAULT_REPO_ID,
    max_episode_s: float = 15.0,
    sim_config=None,
    action_noise_rad: float = 0.0,
    action_noise_tau_s: float = 0.3,
    action_noise_phases: tuple[str, ...] = DEFAULT_PHASES,
    regrasp_fraction: float = 0.0,
    regrasp_offset_m: tuple[float, float] = (0.025, 0.05),
    driver=None,
    driver_info: dict | None = None,
    takeover_window_s: tuple[float, float] = (1.0, 6.0),
) -> dict:
    """Record `n_episodes` scripted-expert episodes of the MuJoCo pick-into-sink cell.

    Attempt i (0-based) resets the env with seed `seed + i` (the seed picks the target object and
    its pose), runs `ScriptedExpert` through `SimRunner.run_expert_episode` (SafeArm, 125 Hz
    servo loop, physics in lockstep) and records every 10 Hz step: image = camera RGB before the
    action, state = measured joints + gripper closure, action = the expert's target, the expert
    phase and the object's point tracks. Episodes the expert fails (`env.success()` False, or
    an unreachable IK waypoint) are discarded and counted when `only_success`, else kept with
    success False. With `resume`, an existing dataset at `root` is appended to and seeds whose
    expert episode it already holds are skipped.

    Args:
        n_episodes: attempts (seeds seed .. seed + n_episodes - 1), >= 1.
        root: dataset directory (LeRobotDataset v3.0, schema `data/schema.py`).
        image_hw: rendered and recorded image size (H, W).
        max_episode_s: simulated-time cap of one expert episode.
        sim_config: a `configs.sim.SimConfig` to start from (its image_hw is replaced).
        action_noise_rad / action_noise_tau_s / action_noise_phases: > 0: the expert's joint
            commands are perturbed, driven in those phases (default approach and descent) and
            decaying in the others (`sim.action_noise.JointActionNoise`, DART recovery data; the
            recorded action stays the expert's clean target, the recorded state is where the
            perturbed arm is); the episode records the three values.
        regrasp_fraction / regrasp_offset_m: that share of seeds (`regrasp_offset`) gets a first
            grasp aimed off the object, then the expert's re-planned pick
            (`SimRunner.run_expert_episode(regrasp_offset_m=...)`); the episode records the
            offset, whether it missed and `demonstration_start_frame` (frames before it are
            context for a learner, not action targets); every episode records the fraction.
        driver / driver_info / takeover_window_s: expert takeover (DAgger-style data from the
            learner's own states): a learner's policy (`eval.closed_loop.PolicyDriver`) drives
            each episode first, until a takeover time drawn per seed (`takeover_time`) uniformly
            in takeover_window_s (s) or until it commands the gripper closed, then the expert
            plans from there and finishes (`SimRunner.run_expert_episode(driver=...)`); the
            episode records takeover_s, driver_info (the learner's model sha256s) and
            `demonstration_start_frame` (the learner's frames are context, not targets).

    Returns a summary dict: episodes_attempted, episodes_kept, episodes_discarded,
    episodes_skipped_existing, ik_failures, frames_kept, regrasp_recovered / regrasp_held (kept
    episodes whose offset grasp missed and was re-planned / picked the object anyway),
    takeover_frames (kept frames the learner drove), seconds,
    dataset_episodes, dataset_frames, root. Raises ValueError on bad arguments; other errors of the sim propagate
    after the open episode is discarded (every episode committed before stays in the dataset).
    """
    from tqdm import tqdm

    if isinstance(n_episodes, bool) or not isinstance(n_episodes, int) or n_episodes < 1:
        raise ValueError(f"n_episodes must be an int >= 1, got {n_episodes!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    if not (math.isfinite(max_episode_s) and max_episode_s > 0):
        raise ValueError(f"max_episode_s must be finite and > 0, got {max_episode_s!r}")
    image_hw = (int(image_hw[0]), int(image_hw[1]))
    if not (math.isfinite(regrasp_fraction) and 0.0 <= regrasp_fraction <= 1.0):
        raise ValueError(f"regrasp_fraction must be in [0, 1], got {regrasp_fraction!r}")
    lo, hi = (float(v) for v in takeover_window_s)
    if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 <= lo <= hi):
        raise ValueError(f"takeover_window_s must be (lo, hi) with 0 <= lo <= hi, got {takeover_window_s!r}")
    if not (math.isfinite(action_noise_rad) and action_noise_rad >= 0):
        raise ValueError(f"action_noise_rad must be finite and >= 0, got {action_noise_rad!r}")

    cfg = dataclasses.replace(sim_config if sim_config is not None else SimConfig(), image_hw=image_hw)
    if cfg.expert.control_rate_hz != schema.RECORD_FPS:
        raise ValueError(
            f"the expert acts at {cfg.expert.control_rate_hz} Hz but episodes are recorded at "
            f"{schema.RECORD_FPS} Hz (data/schema.py); set expert.control_rate_hz = {schema.RECORD_FPS}"
        )

    t0 = time.perf_counter()
    summary = {
        "episodes_attempted": 0,
        "episodes_kept": 0,
        "episodes_discarded": 0,
        "episodes_skipped_existing": 0,
        "ik_failures": 0,
        "frames_kept": 0,
        "regrasp_recovered": 0,
        "regrasp_held": 0,
        "takeover_frames": 0,
    }
    with EpisodeRecorder(root, image_hw, fps=schema.RECORD_FPS, repo_id=repo_id, resume=resume) as rec:
        expert_records = [r for r in dataset_io.read_episode_records(rec.root)
                          if r.get("source") == "sim" and r.get("demonstrator") == "expert"]
        check_same_recipe(expert_records, action_noise_rad, action_noise_tau_s, cfg.randomization.enabled, root,
                          regrasp_fraction, action_noise_phases)
        done_seeds = {r["seed"] for r in expert_records}
        env = PickIntoSinkEnv(cfg)
        try:
            runner = SimRunner(env)
            expert = ScriptedExpert(cfg)
            noise = None
            if action_noise_rad > 0:
                noise = JointActionNoise(action_noise_rad, action_noise_tau_s, 1.0 / cfg.expert.control_rate_hz,
                                         tuple(action_noise_phases))

            def on_frame(frame, state, action, phase, point_tracks, point_valid) -> None:
                state_7 = np.concatenate([np.asarray(state.q, dtype=np.float64), [state.gripper]])  # (7,)
                rec.add_frame(frame.rgb, state_7, np.asarray(action), point_tracks, point_valid, int(phase))

            bar = tqdm(range(n_episodes), desc=f"record {Path(root).name}", unit="ep", disable=not progress)
            for i in bar:
                ep_seed = seed + i
                if ep_seed in done_seeds:
                    summary["episodes_skipped_existing"] += 1
                    continue
                summary["episodes_attempted"] += 1
                info = runner.reset(seed=ep_seed)
                offset = regrasp_offset(ep_seed, regrasp_fraction, regrasp_offset_m)
                takeover_s = None if driver is None else takeover_time(ep_seed, (lo, hi))
                rec.begin_episode(
                    info.instruction,
                    seed=ep_seed,
                    object_name=info.object_name,
                    source="sim",
                    demonstrator="expert",
                    extra={**episode_extra(info),
                           **({"action_noise_rad": float(action_noise_rad), "action_noise_tau_s": float(action_noise_tau_s),
                               "action_noise_phases": list(action_noise_phases)} if noise is not None else {}),
                           **({"regrasp_fraction": float(regrasp_fraction)} if regrasp_fraction > 0 else {}),
                           **({"regrasp_offset_m": [float(v) for v in offset]} if offset is not None else {}),
                           **({"takeover_s": takeover_s, "takeover_driver": dict(driver_info or {})}
                              if driver is not None else {})},
                )
                if noise is not None:
                    noise.reset(ep_seed)
                try:
                    result = runner.run_expert_episode(expert, on_frame=on_frame, max_duration_s=max_episode_s,
                                                       action_noise=noise, regrasp_offset_m=offset,
                                                       driver=driver, takeover_s=takeover_s)
                except IKError as e:
                    log.warning("seed %d: expert IK failed (%s); episode discarded", ep_seed, e)
                    rec.discard_episode()
                    summary["ik_failures"] += 1
                    summary["episodes_discarded"] += 1
                    continue
                except BaseException:
                    rec.discard_episode()
                    raise
                if only_success and not result.success:
                    rec.discard_episode()
                    summary["episodes_discarded"] += 1
                else:
                    outcome = {"duration_s": float(result.duration_s)}
                    if offset is not None:
                        outcome.update(demonstration_start_frame=int(result.demonstration_start_step),
                                       regrasp_missed=bool(result.regrasp_missed))
                        summary["regrasp_recovered" if result.regrasp_missed else "regrasp_held"] += 1
                    if driver is not None:
                        outcome["demonstration_start_frame"] = int(result.demonstration_start_step)
                        summary["takeover_frames"] += int(result.demonstration_start_step)
                    if dataclasses.is_dataclass(result.safety):
                        outcome["safety"] = dataclasses.asdict(result.safety)
                    rec.end_episode(bool(result.success), extra=outcome)
                    summary["episodes_kept"] += 1
                    summary["frames_kept"] += int(result.steps)
                bar.set_postfix(kept=summary["episodes_kept"], discarded=summary["episodes_discarded"])
            bar.close()
        finally:
            env.close()
        summary["dataset_episodes"] = rec.num_episodes
        summary["dataset_frames"] = rec.num_frames
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    summary["root"] = str(Path(root))
    return summary
