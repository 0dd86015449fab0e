"""The evaluation record: one per-episode record and one report, for every way of evaluating.

Lock-step `dynaflip eval` (eval/closed_loop.py, simulation time, no ROS) and the ROS episode
manager (ros/nodes/episode_manager.py, the real-time graph) both build an `EvalReport` of
`EpisodeRecord`s here, print `format_episode` per episode and `format_summary` at the end, and
write the same JSON (`EvalReport.write_json`, the CLIs' `--out PATH`).

Summary keys (`EvalReport.summary()`): `episodes` (count), `success_rate` (0..1),
`success_ci95` (Wilson score interval of the success rate, 95 %; scipy.stats.binomtest(...)
.proportion_ci(method="wilson"), https://docs.scipy.org/doc/scipy/reference/generated/scipy.stats.binomtest.html),
`outcomes` (counts by outcome name) and `latency_ms` ({stage: {n, p50, p95, p99, mean, max}}
over all episodes' samples, milliseconds).

Latency stages, in pipeline order (docs/timing.md): capture (camera read / render),
image_transport (image stamp -> encoder receipt), encode (encoder forward pass),
embedding_transport (image stamp -> policy receipt), policy (policy inference), command (image
stamp -> action chunk received by the arm driver: capture to command, end to end). Lock-step
evaluation measures encode and policy only (wall-clock ms of the calls; transport is zero there).
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from dynaflip_ros.episodes.protocol import Outcome, json_safe

RESULTS_FORMAT = "dynaflip_ros.eval/2"

LATENCY_STAGES: tuple[str, ...] = (
    "capture", "image_transport", "encode", "embedding_transport", "policy", "command",
)


def latency_summary(samples_ms: Mapping[str, Iterable[float]]) -> dict[str, dict[str, float]]:
    """{stage: [ms, ...]} -> {stage: {"n", "p50", "p95", "p99", "mean", "max"}} (ms), stages in
    pipeline order (LATENCY_STAGES first, then any others alphabetically); empty stages omitted."""
    order = [s for s in LATENCY_STAGES if s in samples_ms] + sorted(set(samples_ms) - set(LATENCY_STAGES))
    out = {}
    for stage in order:
        v = np.asarray(list(samples_ms[stage]), dtype=float)
        if v.size == 0:
            continue
        p50, p95, p99 = np.percentile(v, [50, 95, 99])
        out[stage] = {"n": int(v.size), "p50": float(p50), "p95": float(p95), "p99": float(p99),
                      "mean": float(v.mean()), "max": float(v.max())}
    return out


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a success rate (scipy.stats.binomtest). (0, 1) for n == 0.
    Raises ValueError unless 0 <= successes <= n."""
    if not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes}/{n}")
    if n == 0:
        return 0.0, 1.0
    from scipy.stats import binomtest

    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def counter_delta(start: Any, end: Any) -> Any:
    """end - start for every integer counter of two (nested) counter dicts; other values from
    end. Used for per-episode shares of cumulative counters (SafeArm, servo loop)."""
    if isinstance(end, dict):
        start = start if isinstance(start, dict) else {}
        return {k: counter_delta(start.get(k), v) for k, v in end.items()}
    if isinstance(end, int) and not isinstance(end, bool) and isinstance(start, int) and not isinstance(start, bool):
        return end - start
    return end


@dataclass
class EpisodeRecord:
    """One evaluated episode.

    outcome: success | timeout | stopped | halted | error (protocol.Outcome).
    time_to_success_s: simulation seconds from the reset to the first success (None unless
    success). episode_sim_time_s: simulation seconds the episode ran; wall_time_s: wall-clock
    seconds it took. latency_ms: this episode's per-stage summary (`latency_summary`).
    models: {"encoder": weights sha256, "policy": weights sha256}. safety / driver: this
    episode's share of the SafeArm / driver counters. realtime_factor: simulation seconds per
    wall second (ROS graph only). control_steps: 10 Hz control steps (lock-step only).
    """

    episode: int
    seed: int | None
    outcome: Outcome
    object_name: str | None = None
    instruction: str | None = None
    condition: str | None = None
    time_to_success_s: float | None = None
    episode_sim_time_s: float | None = None
    wall_time_s: float | None = None
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    models: dict[str, str | None] = field(default_factory=dict)
    safety: dict[str, Any] | None = None
    driver: dict[str, Any] | None = None
    realtime_factor: float | None = None
    control_steps: int | None = None

    def __post_init__(self) -> None:
        self.outcome = Outcome(self.outcome)

    @property
    def success(self) -> bool:
        return self.outcome is Outcome.SUCCESS

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["outcome"] = self.outcome.value
        return d


@dataclass
class EvalReport:
    """A whole evaluation run. mode: "lockstep" (dynaflip eval) or "ros" (the ROS graph).
    models: {"encoder": sha256, "policy": sha256}; config: the run's settings; provenance:
    anything else worth keeping (encoder / policy info)."""

    mode: str
    models: dict[str, str | None] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    episodes: list[EpisodeRecord] = field(default_factory=list)
    created_utc: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat())
    wall_time_s: float | None = None
    _samples_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list), repr=False)

    def add(self, record: EpisodeRecord, samples_ms: Mapping[str, Iterable[float]] | None = None) -> None:
        """Append an episode; `samples_ms` ({stage: [ms]}) feed its `latency_ms` (when empty)
        and the run's latency summary."""
        samples = {k: list(v) for k, v in (samples_ms or {}).items()}
        if samples and not record.latency_ms:
            record.latency_ms = latency_summary(samples)
        if not record.models:
            record.models = dict(self.models)
        for stage, v in samples.items():
            self._samples_ms[stage].extend(v)
        self.episodes.append(record)

    @property
    def successes(self) -> int:
        return sum(e.success for e in self.episodes)

    def summary(self) -> dict[str, Any]:
        n, k = len(self.episodes), self.successes
        lo, hi = wilson_interval(k, n)
        counts = Counter(e.outcome.value for e in self.episodes)
        return {
            "episodes": n,
            "success_rate": k / n if n else 0.0,
            "success_ci95": [lo, hi],
            "outcomes": {o.value: counts[o.value] for o in Outcome if counts[o.value]},
            "latency_ms": latency_summary(self._samples_ms),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": RESULTS_FORMAT, "mode": self.mode, "created_utc": self.created_utc,
            "models": self.models, "config": self.config, "provenance": self.provenance,
            "wall_time_s": self.wall_time_s, "summary": self.summary(),
            "episodes": [e.to_dict() for e in self.episodes],
        }

    def write_json(self, path: str | Path) -> Path:
        """Write `to_dict()` as JSON (non-finite floats as null); creates the parent directory."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(json_safe(self.to_dict()), indent=2, allow_nan=False) + "\n")
        return path


def format_episode(record: EpisodeRecord, index: int, total: int, successes_so_far: int) -> str:
    """One line per finished episode (both evaluators print it)."""
    t = record.time_to_success_s
    sim = record.episode_sim_time_s
    wall = record.wall_time_s
    return (f"episode {index + 1}/{total} seed={record.seed} object={record.object_name!r}: "
            f"{record.outcome.value.upper()}"
            f"{f' at {t:.1f} s' if t is not None else ''}"
            f" (sim {sim if sim is not None else float('nan'):.1f} s, wall {wall if wall is not None else float('nan'):.1f} s)"
            f"; running success {successes_so_far}/{index + 1}")


def format_summary(report: Mapping[str, Any], path: str | Path | None = None) -> str:
    """Human-readable summary of `EvalReport.to_dict()` (what both evaluators print at the end)."""
    s = report["summary"]
    lo, hi = s["success_ci95"]
    k = round(s["success_rate"] * s["episodes"])
    outcomes = ", ".join(f"{name} {count}" for name, count in s["outcomes"].items()) or "none"
    lines = [
        f"evaluation ({report.get('mode')}): success {k}/{s['episodes']} ({100.0 * s['success_rate']:.1f} %, "
        f"Wilson 95 % CI {100 * lo:.0f}-{100 * hi:.0f} %); outcomes: {outcomes}",
        f"{'stage':<22}{'n':>7}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}",
    ]
    for stage, st in s["latency_ms"].items():
        lines.append(f"{stage:<22}{st['n']:>7}{st['p50']:>10.2f}{st['p95']:>10.2f}{st['p99']:>10.2f}")
    if path:
        lines.append(f"results: {path}")
    return "\n".join(lines)


def default_results_path(mode: str) -> Path:
    """outputs/eval/<mode>_<UTC time>.json (relative to the working directory)."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return Path("outputs") / "eval" / f"{mode}_{stamp}.json"
