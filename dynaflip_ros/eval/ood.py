"""An OOD evaluation session in the sim cell: models x conditions x seeds, each perturbed
episode with its matched nominal twin, results appended episode by episode, resumable.

Order: seed-major (every model and condition of a seed before the next seed), so an interrupted
session holds complete matched sets. Each episode: `SimRunner.reset(seed, perturbation)`
(`sim.perturbations`), then the closed loop of `eval.closed_loop.run_episode` (lock-step: render
-> encoder -> policy every 0.1 s, chunks through the interpolator, servo loop and SafeArm to the
MuJoCo UR3), then one `OodEpisode` line in `episodes.jsonl` (`eval.ood_records`). The first
frame of the first episode of each model and condition is saved as the report's example.
"""
from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

from dynaflip_ros.eval.ood_records import (
    NOMINAL, EpisodeLog, OodEpisode, OodModel, OodSession, now_utc, read_episodes, read_session,
)
from dynaflip_ros.sim.perturbations import Perturbation, parse_condition


def repo_commit() -> str:
    """The git commit of this checkout ("unknown" outside a git checkout), with "+dirty" when
    tracked files differ from it."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def with_nominal(conditions: Sequence[Perturbation]) -> list[Perturbation]:
    """The session's conditions: nominal first (always, the matched control), then the others
    in the order given, duplicates removed."""
    out = {NOMINAL: Perturbation()}
    for c in conditions:
        out.setdefault(c.name, c)
    return list(out.values())


def frame_path(model: str, condition: str, seed: int) -> str:
    """Example frame path relative to the session directory."""
    safe = condition.replace(":", "_").replace("+", "__").replace("@", "_")
    return f"frames/{model}/{safe}_seed{seed}.png"


def camera_settings(env) -> dict:
    """The rendered camera's settings of the current episode: image size, vertical field of view
    (deg), pose of its optical frame in the UR base frame (position m, rotation matrix)."""
    t = env.camera_pose_optical()
    return {"image_hw": list(env.config.image_hw), "fovy_deg": float(env.config.camera_fovy_deg),
            "position_m": [round(float(v), 4) for v in t[:3, 3]],
            "rotation": [[round(float(v), 5) for v in row] for row in t[:3, :3]]}


def open_session(out_dir: Path, asked: OodSession) -> tuple[OodSession, set]:
    """Create the session directory and its session.json, or resume the one there (same
    identity, `OodSession.check_resume`). Returns (session, keys of finished episodes). Raises
    SessionFileError for a session of another version or identity."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / "session.json").exists():
        stored = read_session(out_dir)
        stored.check_resume(asked)
        done = {ep.key for ep in read_episodes(out_dir)}
        return stored, done
    (out_dir / "session.json").write_text(asked.to_json() + "\n")
    return asked, set()


def run_session(out_dir: str | Path, models: Mapping[str, tuple[object, object, OodModel]],
                conditions: Sequence[str], seeds: Sequence[int], *, max_duration_s: float = 15.0,
                replan_steps: int | None = None, sim_config=None, options: Mapping | None = None,
                progress: Callable[[str], None] = print, env=None) -> OodSession:
    """Run (or resume) the session in `out_dir`.

    models: name -> (encoder backend, policy, OodModel with directories and sha256), loaded and
    checked by the caller; conditions: canonical specs (NOMINAL first, `with_nominal`); seeds:
    episode seeds. options: what else the session identity holds (samples per chunk, ...).
    env: a `PickIntoSinkEnv` to run in (left open; default: a new one of `sim_config`, closed at
    the end). Returns the session. Raises SessionFileError (another session in out_dir) and the runner's
    errors; every episode finished before an error is on disk.
    """
    import imageio.v3 as iio

    from dynaflip_ros.configs.sim import SimConfig
    from dynaflip_ros.eval.closed_loop import run_episode
    from dynaflip_ros.episodes.record import latency_summary
    from dynaflip_ros.sim.pick_into_sink import PickIntoSinkEnv
    from dynaflip_ros.sim.rollout import SimRunner

    out = Path(out_dir)
    asked = OodSession(models={k: v[2] for k, v in models.items()}, conditions=list(conditions),
                       seeds=[int(s) for s in seeds], mode="lockstep",
                       options={"max_duration_s": max_duration_s, "replan_steps": replan_steps, **(options or {})},
                       commit=repo_commit(), created_utc=now_utc())
    session, done = open_session(out, asked)
    log = EpisodeLog(out)
    perts = {c: parse_condition(c) for c in session.conditions}
    total = len(session.seeds) * len(models) * len(perts)
    progress(f"[eval-ood] {out}: {len(models)} model(s) x {len(perts)} conditions x {len(session.seeds)} seeds = "
             f"{total} episodes; {len(done)} already done" + (" (resuming)" if done else ""))
    wins: dict[tuple[str, str], list[int]] = {}
    for ep in read_episodes(out):
        wins.setdefault((ep.model, ep.condition), []).append(ep.outcome == "success")
    own_env = env is None
    if own_env:
        env = PickIntoSinkEnv(sim_config or SimConfig())
    runner = SimRunner(env)
    k, t0 = len(done), time.perf_counter()
    try:
        for index, seed in enumerate(session.seeds):
            for name, (encoder, policy, model) in models.items():
                for cond, pert in perts.items():
                    if (name, cond, seed) in done:
                        continue
                    info = runner.reset(seed=seed, perturbation=pert)
                    frame = None
                    if not any(w for (m, c), w in wins.items() if m == name and c == cond):
                        frame = frame_path(name, cond, seed)
                        (out / frame).parent.mkdir(parents=True, exist_ok=True)
                        iio.imwrite(out / frame, env.camera.read().rgb)
                    record, samples = run_episode(runner, encoder, policy, episode=index,
                                                  max_duration_s=max_duration_s, replan_steps=replan_steps)
                    ep = OodEpisode(
                        model=name, condition=cond, families=pert.families, severity=pert.severity, seed=seed,
                        index=index, instruction=info.instruction, target=info.object_name,
                        objects=list(info.objects), outcome=record.outcome.value,
                        time_to_success_s=record.time_to_success_s, episode_sim_time_s=record.episode_sim_time_s,
                        latency_ms=latency_summary(samples),
                        models={"encoder": model.encoder_sha256, "policy": model.policy_sha256},
                        camera=camera_settings(env), scene=info.scene.get("perturbation", {}),
                        safety=record.safety, mode=session.mode, commit=asked.commit, frame=frame,
                        finished_utc=now_utc())
                    log.append(ep)
                    k += 1
                    w = wins.setdefault((name, cond), [])
                    w.append(ep.outcome == "success")
                    per_episode_s = (time.perf_counter() - t0) / max(1, k - len(done))
                    progress(f"[eval-ood {k}/{total}] {name} {cond} seed {seed}: {ep.outcome} "
                             f"({sum(w)}/{len(w)} so far; {per_episode_s:.0f} s/episode)")
    finally:
        if own_env:
            env.close()
    return session


def model_entry(encoder, policy, encoder_dir: str, policy_dir: str) -> OodModel:
    """The OodModel record of a loaded pair."""
    return OodModel(encoder_dir=str(encoder_dir), policy_dir=str(policy_dir),
                    encoder_sha256=encoder.manifest.weights_sha256,
                    policy_sha256=str(getattr(policy, "weights_sha256", "") or ""))
