"""An OOD evaluation session in the sim cell: models x conditions x seeds, each perturbed
episode with its matched nominal twin, results appended episode by episode, resumable
(docs/ood.md). `run_session`: lock-step in this process; `run_session_ros`: through the ROS 2
graph, one launch per model and condition; `SessionLog`: the bookkeeping both (and the real
cell's `ood_session` node) share.

Lock-step order: seed-major (every model and condition of a seed before the next seed), so an interrupted
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


def condition_slug(condition: str) -> str:
    """A file-name form of a condition spec: "distractors@novel:1+lighting:0.5" ->
    "distractors_novel_1__lighting_0.5"."""
    return condition.replace(":", "_").replace("+", "__").replace("@", "_")


def frame_path(model: str, condition: str, seed: int) -> str:
    """Example frame path relative to the session directory."""
    return f"frames/{model}/{condition_slug(condition)}_seed{seed}.png"


def camera_settings(env) -> dict:
    """The rendered camera's settings of the current episode: image size, vertical field of view
    (deg), pose of its optical frame in the UR base frame (position m, rotation matrix)."""
    t = env.camera_pose_optical()
    return {"image_hw": list(env.config.image_hw), "fovy_deg": float(env.config.camera_fovy_deg),
            "position_m": [round(float(v), 4) for v in t[:3, 3]],
            "rotation": [[round(float(v), 5) for v in row] for row in t[:3, :3]]}


def open_session(out_dir: Path, asked: OodSession) -> tuple[OodSession, list[OodEpisode]]:
    """Create the session directory and its session.json, or resume the one there (same
    identity, `OodSession.check_resume`). Returns (session, its finished episodes). Raises
    SessionFileError for a session of another version or identity."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / "session.json").exists():
        stored = read_session(out_dir)
        stored.check_resume(asked)
        return stored, read_episodes(out_dir)
    (out_dir / "session.json").write_text(asked.to_json() + "\n")
    return asked, []


class SessionLog:
    """The running session's bookkeeping: finished keys, `episodes.jsonl`, example frames,
    progress lines. One owner (the thread running the session)."""

    def __init__(self, out: Path, asked: OodSession, progress: Callable[[str], None]) -> None:
        self.out, self.progress, self.commit = out, progress, asked.commit
        self.session, finished = open_session(out, asked)
        self.done = {ep.key for ep in finished}
        self.log = EpisodeLog(out)
        self.wins: dict[tuple[str, str], list[bool]] = {}
        for ep in finished:
            self.wins.setdefault((ep.model, ep.condition), []).append(ep.outcome == "success")
        s = self.session
        self.total = len(s.seeds) * len(s.models) * len(s.conditions)
        self._resumed, self._t0 = len(self.done), time.perf_counter()
        progress(f"[eval-ood] {out}: {len(s.models)} model(s) x {len(s.conditions)} conditions x {len(s.seeds)} "
                 f"seeds = {self.total} episodes ({s.mode}); {len(self.done)} already done"
                 + (" (resuming)" if self.done else ""))

    def wants_frame(self, model: str, condition: str, seed: int) -> str | None:
        """The example-frame path (relative to the session dir) of this episode when (model,
        condition) has no episode yet, else None."""
        return None if self.wins.get((model, condition)) else frame_path(model, condition, seed)

    def example_frame(self, model: str, condition: str, seed: int, env) -> str | None:
        """Save the current frame of `env` when (model, condition) has no episode yet; its path."""
        path = self.wants_frame(model, condition, seed)
        if path is None:
            return None
        import imageio.v3 as iio

        (self.out / path).parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(self.out / path, env.camera.read().rgb)
        return path

    def add(self, model: str, condition: str, pert: Perturbation, seed: int, info, camera: Mapping, record: Mapping,
            frame: str | None) -> None:
        """Append the episode: `info` the EpisodeInfo of its scene, `camera` the camera's settings
        (`camera_settings`), `record` its `EpisodeRecord.to_dict()` (outcome, times, latency_ms, safety)."""
        m = self.session.models[model]
        ep = OodEpisode(
            model=model, condition=condition, families=pert.families, severity=pert.severity, seed=seed,
            index=self.session.seeds.index(seed), instruction=info.instruction, target=info.object_name,
            objects=list(info.objects), outcome=str(record["outcome"]), time_to_success_s=record.get("time_to_success_s"),
            episode_sim_time_s=float(record.get("episode_sim_time_s") or 0.0), latency_ms=record.get("latency_ms") or {},
            models={"encoder": m.encoder_sha256, "policy": m.policy_sha256}, camera=dict(camera),
            scene=info.scene.get("perturbation", {}), safety=record.get("safety") or {}, mode=self.session.mode,
            commit=self.commit, frame=frame, finished_utc=now_utc())
        self.log.append(ep)
        self.done.add(ep.key)
        w = self.wins.setdefault((model, condition), [])
        w.append(ep.outcome == "success")
        per_episode_s = (time.perf_counter() - self._t0) / max(1, len(self.done) - self._resumed)
        self.progress(f"[eval-ood {len(self.done)}/{self.total}] {model} {condition} seed {seed}: {ep.outcome} "
                      f"({sum(w)}/{len(w)} so far; {per_episode_s:.0f} s/episode)")


def requested_session(models: Mapping[str, OodModel], conditions, seeds, mode: str, options: Mapping) -> OodSession:
    """The session a run asks for (checked against a stored one on resume), with this checkout's commit."""
    return OodSession(models=dict(models), conditions=list(conditions), seeds=[int(s) for s in seeds], mode=mode,
                      options=dict(options), commit=repo_commit(), created_utc=now_utc())


def run_session(out_dir: str | Path, models: Mapping[str, tuple[object, object, OodModel]],
                conditions: Sequence[str], seeds: Sequence[int], *, max_duration_s: float = 15.0,
                replan_steps: int | None = None, sim_config=None, options: Mapping | None = None,
                progress: Callable[[str], None] = print, env=None) -> OodSession:
    """Run (or resume) a lock-step session in `out_dir`.

    models: name -> (encoder backend, policy, OodModel with directories and sha256), loaded and
    checked by the caller; conditions: canonical specs (NOMINAL first, `with_nominal`); seeds:
    episode seeds. options: what else the session identity holds (samples per chunk, ...).
    env: a `PickIntoSinkEnv` to run in (left open; default: a new one of `sim_config`, closed at
    the end). Returns the session. Raises SessionFileError (another session in out_dir) and the
    runner's errors; every episode finished before an error is on disk.
    """
    from dynaflip_ros.configs.sim import SimConfig
    from dynaflip_ros.episodes.record import latency_summary
    from dynaflip_ros.eval.closed_loop import run_episode
    from dynaflip_ros.sim.pick_into_sink import PickIntoSinkEnv
    from dynaflip_ros.sim.rollout import SimRunner

    asked = requested_session({k: v[2] for k, v in models.items()}, conditions, seeds, "lockstep",
                              {"max_duration_s": max_duration_s, "replan_steps": replan_steps, **(options or {})})
    log = SessionLog(Path(out_dir), asked, progress)
    perts = {c: parse_condition(c) for c in log.session.conditions}
    own_env = env is None
    if own_env:
        env = PickIntoSinkEnv(sim_config or SimConfig())
    runner = SimRunner(env)
    try:
        for index, seed in enumerate(log.session.seeds):
            for name, (encoder, policy, _model) in models.items():
                for cond, pert in perts.items():
                    if (name, cond, seed) in log.done:
                        continue
                    info = runner.reset(seed=seed, perturbation=pert)
                    frame = log.example_frame(name, cond, seed, env)
                    record, samples = run_episode(runner, encoder, policy, episode=index,
                                                  max_duration_s=max_duration_s, replan_steps=replan_steps)
                    log.add(name, cond, pert, seed, info, camera_settings(env),
                            {**record.to_dict(), "latency_ms": latency_summary(samples)}, frame)
    finally:
        if own_env:
            env.close()
    return log.session


Launch = Callable[[str, str, list, Path, Path], None]
"""launch(model, condition, seeds, episodes_path, results_path): run the ROS graph of that model
with the episode manager on those seeds under that condition, appending one `EpisodeRecord` JSON
line per finished episode to episodes_path (`EpisodeManagerNodeConfig`). Raises on failure."""


def run_session_ros(out_dir: str | Path, models: Mapping[str, OodModel], conditions: Sequence[str],
                    seeds: Sequence[int], launch: Launch, *, max_duration_s: float = 20.0,
                    options: Mapping | None = None, sim_config=None,
                    progress: Callable[[str], None] = print) -> OodSession:
    """Run (or resume) a session through the ROS 2 graph: one launch per model and condition
    (`launch`) on the seeds not done yet. The episode manager's lines (`ros/<model>/<condition>.jsonl`)
    become `OodEpisode`s as the launch ends, and on a resume before it starts, so a crash loses
    no finished episode. The scene facts of each episode (instruction, objects, camera, what the
    perturbation drew) and the example frames come from the same seed and condition reset in a
    local cell (deterministic, the sim cell node's scene). Raises SessionFileError, and what
    `launch` raises after the finished episodes are recorded."""
    from dynaflip_ros.configs.sim import SimConfig
    from dynaflip_ros.eval.ood_records import read_json_lines
    from dynaflip_ros.sim.pick_into_sink import PickIntoSinkEnv

    out = Path(out_dir)
    log = SessionLog(out, requested_session(models, conditions, seeds, "ros",
                                 {"max_duration_s": max_duration_s, **(options or {})}), progress)
    env = PickIntoSinkEnv(sim_config or SimConfig())
    try:
        for name in log.session.models:
            for cond in log.session.conditions:
                pert = parse_condition(cond)
                lines = out / "ros" / name / f"{condition_slug(cond)}.jsonl"

                def take() -> None:
                    for _i, rec in read_json_lines(lines):
                        seed = int(rec["seed"])
                        if (name, cond, seed) in log.done or seed not in log.session.seeds:
                            continue
                        info = env.reset(seed=seed, perturbation=pert)
                        log.add(name, cond, pert, seed, info, camera_settings(env), rec,
                                log.example_frame(name, cond, seed, env))

                take()
                todo = [s for s in log.session.seeds if (name, cond, s) not in log.done]
                if not todo:
                    continue
                lines.parent.mkdir(parents=True, exist_ok=True)
                try:
                    launch(name, cond, todo, lines, lines.with_name(lines.stem + "_results.json"))
                finally:
                    take()
    finally:
        env.close()
    return log.session


def model_entry(encoder, policy, encoder_dir: str, policy_dir: str) -> OodModel:
    """The OodModel record of a loaded pair."""
    return OodModel(encoder_dir=str(encoder_dir), policy_dir=str(policy_dir),
                    encoder_sha256=encoder.manifest.weights_sha256,
                    policy_sha256=str(getattr(policy, "weights_sha256", "") or ""))
