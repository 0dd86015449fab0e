"""The files of an OOD evaluation session (`dynaflip eval-ood`), one format each.

A session directory holds:

- `session.json` (`OodSession`): what the session runs: the models (name -> encoder / policy
  directories and their weights sha256), the conditions (canonical specs, "nominal" first), the
  episode seeds, the mode ("lockstep" or "ros") and the commit. Written before the first episode;
  a resumed session must ask for the same (`OodSession.check_resume`).
- `episodes.jsonl` (`OodEpisode`): one JSON line per finished episode, appended and flushed as
  each ends, so an interrupted session loses at most the episode in progress and resumes without
  redoing finished ones (key: model, condition, seed).
- `frames/<model>/<condition>_seed<seed>.png`: the first camera frame of the first episode of
  each model and condition (the report's example frames).
- `summary.json`, `report.html`, `plots/*.png`: the report (`eval.ood_report`).

Matching: every condition runs on the same seeds as the nominal control, and a seed gives the
same object layout under every condition (`sim.perturbations`), so each perturbed episode has a
nominal twin of the same model and seed.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dynaflip_ros.errors import UserError

SESSION_FORMAT = "dynaflip_ros.ood_session/1"
EPISODE_FORMAT = "dynaflip_ros.ood_episode/1"
NOMINAL = "nominal"
SESSION_FILE = "session.json"
EPISODES_FILE = "episodes.jsonl"
OUTCOMES = ("success", "wrong_object", "timeout", "safety_stop", "stopped", "error")


class SessionFileError(UserError, ValueError):
    """A session file that is not of this version or does not match the session asked for (the
    CLI reports it as one line, exit 2)."""


@dataclass
class OodModel:
    """One encoder / policy pair of a session: directories as given, weights sha256 as loaded."""

    encoder_dir: str
    policy_dir: str
    encoder_sha256: str = ""
    policy_sha256: str = ""


@dataclass
class OodSession:
    """`session.json`. conditions: canonical condition specs (`sim.perturbations.canonical`),
    NOMINAL first; seeds: episode seeds, the same for every model and condition; mode: "lockstep"
    | "ros"; options: run options that change results (max_duration_s, samples_per_chunk, ...)."""

    models: dict[str, OodModel]
    conditions: list[str]
    seeds: list[int]
    mode: str = "lockstep"
    options: dict[str, Any] = field(default_factory=dict)
    commit: str = ""
    created_utc: str = ""
    format: str = SESSION_FORMAT

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str, where: str = SESSION_FILE) -> "OodSession":
        """Raises SessionFileError for another format / version or missing fields."""
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise SessionFileError(f"{where}: not JSON ({e})") from None
        if not isinstance(d, dict) or d.get("format") != SESSION_FORMAT:
            raise SessionFileError(f"{where}: format {d.get('format') if isinstance(d, dict) else None!r}, "
                                   f"this version reads {SESSION_FORMAT!r} only (start a new session directory)")
        try:
            d["models"] = {k: OodModel(**v) for k, v in d["models"].items()}
            return cls(**d)
        except (KeyError, TypeError) as e:
            raise SessionFileError(f"{where}: malformed ({e})") from None

    def identity(self) -> dict[str, Any]:
        """What must not change when a session resumes: models (directories and sha256),
        conditions, seeds, mode and options."""
        return {"models": {k: dataclasses.asdict(v) for k, v in self.models.items()}, "conditions": self.conditions,
                "seeds": self.seeds, "mode": self.mode, "options": self.options}

    def check_resume(self, asked: "OodSession") -> None:
        """Raises SessionFileError when `asked` differs from this (the stored) session."""
        mine, theirs = self.identity(), asked.identity()
        diff = [k for k in mine if mine[k] != theirs[k]]
        if diff:
            raise SessionFileError(
                f"this directory holds a session with other {', '.join(diff)}: "
                + "; ".join(f"{k}: stored {mine[k]!r}, asked {theirs[k]!r}" for k in diff)
                + " (use a new --out directory, or ask for the same session to resume it)")


@dataclass
class OodEpisode:
    """One line of `episodes.jsonl`.

    model: the session's model name; condition: canonical spec ("nominal", "lighting:0.5",
    "distractors:1+lighting:0.5"); families: its perturbation families ([] for nominal);
    severity: the largest severity among them (0 for nominal); seed: episode seed (the matched
    key across conditions); index: the seed's position in the session's seed list.
    outcome: one of OUTCOMES; time_to_success_s: simulation seconds to success (None otherwise);
    latency_ms: per-stage summary ({"encode": {"p50", "p95", ...}, "policy": {...}});
    models: {"encoder": sha256, "policy": sha256}; camera: the rendered camera's settings
    (image_hw, fovy_deg, pose offsets); scene: what the perturbations drew; safety: SafeArm
    counters; frame: the example frame's path relative to the session directory, or None.
    """

    model: str
    condition: str
    families: list[str]
    severity: float
    seed: int
    index: int
    instruction: str
    target: str
    objects: list[str]
    outcome: str
    time_to_success_s: float | None
    episode_sim_time_s: float
    latency_ms: dict[str, Any]
    models: dict[str, str]
    camera: dict[str, Any]
    scene: dict[str, Any]
    safety: dict[str, Any]
    mode: str
    commit: str
    frame: str | None = None
    finished_utc: str = ""
    format: str = EPISODE_FORMAT

    @property
    def key(self) -> tuple[str, str, int]:
        return self.model, self.condition, self.seed

    @property
    def refused(self) -> bool:
        """SafeArm refused at least one command of the episode (its "rejected" counter > 0: workspace,
        joint limit, invalid, ...; the arm held, and stopped after the watchdog timeout)."""
        return (self.safety or {}).get("rejected", 0) > 0

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: dict, where: str = EPISODES_FILE) -> "OodEpisode":
        """Raises SessionFileError for another format / version, an unknown outcome or missing fields."""
        if not isinstance(d, dict) or d.get("format") != EPISODE_FORMAT:
            raise SessionFileError(f"{where}: format {d.get('format') if isinstance(d, dict) else None!r}, "
                                   f"this version reads {EPISODE_FORMAT!r} only")
        try:
            ep = cls(**d)
        except TypeError as e:
            raise SessionFileError(f"{where}: malformed episode ({e})") from None
        if ep.outcome not in OUTCOMES:
            raise SessionFileError(f"{where}: unknown outcome {ep.outcome!r}; one of {OUTCOMES}")
        return ep


def now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def read_json_lines(path: str | os.PathLike) -> list[tuple[int, dict]]:
    """(line number, object) of every JSON line of `path` ([] when it does not exist). A last
    line cut short by a crash (no newline, not JSON) is ignored; any other bad line raises
    SessionFileError with its line number."""
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text().split("\n")
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append((i, json.loads(line)))
        except json.JSONDecodeError:
            if i == len(lines):  # the unterminated last line of an interrupted write
                continue
            raise SessionFileError(f"{path}:{i}: not JSON") from None
    return out


def read_episodes(session_dir: str | os.PathLike) -> list[OodEpisode]:
    """Every finished episode of a session, in file order (`read_json_lines`). Raises
    SessionFileError for a bad line or an episode of another format version."""
    path = Path(session_dir) / EPISODES_FILE
    return [OodEpisode.from_dict(d, where=f"{path}:{i}") for i, d in read_json_lines(path)]


def read_session(session_dir: str | os.PathLike) -> OodSession:
    """`session.json` of a session directory. Raises FileNotFoundError / SessionFileError."""
    path = Path(session_dir) / SESSION_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: no OOD session here (dynaflip eval-ood --out DIR writes one)")
    return OodSession.from_json(path.read_text(), where=str(path))


class EpisodeLog:
    """Appends `OodEpisode` lines to `episodes.jsonl`, flushed and fsync'ed per line (a crash
    loses no finished episode). A last line cut short by a crash (no newline) is removed first."""

    def __init__(self, session_dir: str | os.PathLike) -> None:
        self.path = Path(session_dir) / EPISODES_FILE
        if self.path.exists() and self.path.stat().st_size:
            data = self.path.read_bytes()
            if not data.endswith(b"\n"):
                with open(self.path, "r+b") as f:
                    f.truncate(data.rfind(b"\n") + 1)

    def append(self, episode: OodEpisode) -> None:
        from dynaflip_ros.episodes.record import append_json_line

        append_json_line(self.path, episode.to_json())
