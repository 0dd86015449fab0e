"""The evaluation record: one per-episode record and one report, for every way of evaluating.

Lock-step `dynaflip eval` (eval/closed_loop.py, simulation time, no ROS) and the ROS episode
manager (ros/nodes/episode_manager.py, the real-time graph) both build an `EvalReport` of
`EpisodeRecord`s here (and, for the instruction-swap check, `SwapPairRecord`s), print
`format_episode` / `format_pair` per episode / pair and `format_summary` at the end, and write
the same JSON (`EvalReport.write_json`, the CLIs' `--out PATH`).

Outcomes (`episodes.protocol.Outcome`): success (the named object rests in the basin),
wrong_object (another object reached the basin), timeout, safety_stop (the safety layer halted
the arm); stopped / error only when a run is interrupted.

Summary keys (`EvalReport.summary()`), over the regular episodes (`episodes`; swap-pair runs
count only in the swap keys): `episodes` (count); for each of success, wrong_object, timeout
and safety_stop `<outcome>_rate` (0..1; null without episodes) and `<outcome>_ci95` (Wilson
score interval, 95 %; scipy.stats.binomtest(...).proportion_ci(method="wilson"),
https://docs.scipy.org/doc/scipy/reference/generated/scipy.stats.binomtest.html);
`outcomes` (counts by outcome name); `by_target` ({target object: the same count, rates,
intervals and outcomes over the episodes whose instruction named it}); `swap_pairs` (pairs
run), `swap_pairs_correct` (pairs in which both runs succeeded), `swap_accuracy` (their share;
null without pairs) and `swap_accuracy_ci95`; `latency_ms` ({stage: {n, p50, p95, p99, mean,
max}} over all episodes' and pairs' samples, milliseconds). The record also lists every
episode (`episodes`: `EpisodeRecord.to_dict`, with instruction, target, objects and outcome)
and every swap pair (`pairs`: `SwapPairRecord.to_dict`).

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
import math
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from dynaflip_ros.episodes.protocol import Outcome, json_safe

RESULTS_FORMAT = "dynaflip_ros.eval/3"

RATE_OUTCOMES: tuple[Outcome, ...] = (Outcome.SUCCESS, Outcome.WRONG_OBJECT, Outcome.TIMEOUT, Outcome.SAFETY_STOP)
"""The outcomes with a `<name>_rate` and `<name>_ci95` in every summary."""

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


def append_json_line(path: str | Path, line: str) -> None:
    """Append `line` (one JSON document, no newline) and a newline to `path` (parents created),
    flushed and fsync'ed: a crash afterwards loses nothing of it."""
    import os

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def mcnemar_exact_p(only_first: int, only_second: int) -> float:
    """Two-sided exact McNemar p-value of paired binary outcomes: the binomial test of only_first
    successes in the only_first + only_second discordant pairs at probability 1/2
    (scipy.stats.binomtest). 1.0 without discordant pairs."""
    if only_first + only_second == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(only_first, only_first + only_second, 0.5).pvalue)


def holm_adjusted(p_values: dict[str, float]) -> dict[str, float]:
    """Holm-adjusted p-values of a family of tests (Holm 1979, "A simple sequentially rejective
    multiple test procedure"; statsmodels.stats.multitest.multipletests, method "holm"): rejecting
    where the adjusted p < alpha keeps the chance of any false rejection in the family at most alpha.

    p_values: {name: p} of the family, each in [0, 1]. Returns {name: adjusted p}, each >= its p,
    same keys; {} for an empty family. Raises ValueError for a p outside [0, 1]."""
    bad = {k: v for k, v in p_values.items() if not 0.0 <= v <= 1.0}
    if bad:
        raise ValueError(f"p-values must lie in [0, 1], got {bad}")
    if not p_values:
        return {}
    from statsmodels.stats.multitest import multipletests

    names = list(p_values)
    adjusted = multipletests([p_values[k] for k in names], method="holm")[1]
    return {k: float(a) for k, a in zip(names, adjusted)}


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


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float | None, float | None, float | None]:
    """(mean, low, high): mean +- t_{(1+c)/2, k-1} s / sqrt(k) of k values (Student t, s the sample
    standard deviation; scipy.stats.t). (None, None, None) without values; the interval is None
    for one value."""
    if not values:
        return None, None, None
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None, None
    from scipy.stats import t

    half = float(t.ppf((1 + confidence) / 2, len(values) - 1)) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def counter_delta(start: Any, end: Any) -> Any:
    """end - start for every integer counter of two (nested) counter dicts, element-wise in
    lists of equal length (histograms); other values from end. Used for per-episode shares of
    cumulative counters (SafeArm, servo loop, `robot.action_age`)."""
    if isinstance(end, dict):
        start = start if isinstance(start, dict) else {}
        return {k: counter_delta(start.get(k), v) for k, v in end.items()}
    if isinstance(end, list) and isinstance(start, list) and len(start) == len(end):
        return [counter_delta(a, b) for a, b in zip(start, end)]
    if isinstance(end, int) and not isinstance(end, bool) and isinstance(start, int) and not isinstance(start, bool):
        return end - start
    return end


@dataclass
class EpisodeRecord:
    """One evaluated episode.

    outcome: success | wrong_object | timeout | safety_stop | stopped | error (protocol.Outcome).
    target: the object the instruction names; objects: every object on the table (the target
    first); instruction: the sentence the policy was given.
    time_to_success_s: simulation seconds from the reset to the first success (None unless
    success). episode_sim_time_s: simulation seconds the episode ran; wall_time_s: wall-clock
    seconds it took. latency_ms: this episode's per-stage summary (`latency_summary`).
    models: {"encoder": weights sha256, "policy": weights sha256}. safety / driver: this
    episode's share of the SafeArm / driver counters. realtime_factor: simulation seconds per
    wall second (ROS graph only). control_steps: 10 Hz control steps (lock-step only).
    grasps: gripper closings in the episode; first_grasp_xy_error_m: horizontal distance (m)
    from the TCP to the target's grasp point when the first closing began (None without a
    closing); approach_end_xy_error_m: the same distance 0.6 s before that closing, where the
    scripted expert's approach ends above the object (None without a closing or when the
    episode closed sooner); all three lock-step and in-process real time only
    (`eval.closed_loop.GraspMonitor`). action_age: this episode's histogram of the executed
    actions' ages (`robot.action_age`: servo-tick counts per 50 ms bin, ticks with nothing to
    follow); action_age_ms its summary (`summarize_action_age`).
    """

    episode: int
    seed: int | None
    outcome: Outcome
    target: str | None = None
    objects: list[str] | None = None
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
    grasps: int | None = None
    first_grasp_xy_error_m: float | None = None
    approach_end_xy_error_m: float | None = None
    action_age: dict[str, Any] | None = None
    action_age_ms: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.outcome = Outcome(self.outcome)
        if self.action_age is not None and self.action_age_ms is None:
            self.action_age_ms = summarize_action_age(self.action_age)
        if self.objects is not None:
            self.objects = [str(o) for o in self.objects]

    @property
    def success(self) -> bool:
        return self.outcome is Outcome.SUCCESS

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["outcome"] = self.outcome.value
        return d


@dataclass
class SwapPairRecord:
    """One pair of the instruction-swap check: one seeded scene (`seed`, the same layout of
    `objects` both times) run twice, each run with an instruction naming another object of the
    table (`runs[i].target`, `runs[i].instruction`). `correct`: both runs succeeded, i.e. the
    policy put the named object into the basin both times."""

    pair: int
    seed: int
    objects: list[str]
    runs: list[EpisodeRecord] = field(default_factory=list)

    @property
    def correct(self) -> bool:
        return (len(self.runs) == 2 and all(r.success for r in self.runs)
                and self.runs[0].target != self.runs[1].target)

    def to_dict(self) -> dict[str, Any]:
        return {"pair": self.pair, "seed": self.seed, "objects": list(self.objects),
                "targets": [r.target for r in self.runs], "instructions": [r.instruction for r in self.runs],
                "outcomes": [r.outcome.value for r in self.runs], "correct": self.correct,
                "runs": [r.to_dict() for r in self.runs]}


def outcome_rates(records: Iterable[EpisodeRecord]) -> dict[str, Any]:
    """{"episodes": n, "<outcome>_rate": k / n (None for n == 0), "<outcome>_ci95": [lo, hi]
    (Wilson, 95 %) for every outcome of RATE_OUTCOMES, "outcomes": {name: count} (nonzero)}."""
    records = list(records)
    n = len(records)
    counts = Counter(r.outcome.value for r in records)
    out: dict[str, Any] = {"episodes": n}
    for o in RATE_OUTCOMES:
        k = counts[o.value]
        out[f"{o.value}_rate"] = k / n if n else None
        out[f"{o.value}_ci95"] = list(wilson_interval(k, n))
    out["outcomes"] = {o.value: counts[o.value] for o in Outcome if counts[o.value]}
    return out


@dataclass
class EvalReport:
    """A whole evaluation run. mode: "lockstep" (dynaflip eval) or "ros" (the ROS graph).
    models: {"encoder": sha256, "policy": sha256}; config: the run's settings; provenance:
    anything else worth keeping (encoder / policy info). episodes: the regular episodes;
    pairs: the instruction-swap pairs (`SwapPairRecord`)."""

    mode: str
    models: dict[str, str | None] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    episodes: list[EpisodeRecord] = field(default_factory=list)
    pairs: list[SwapPairRecord] = field(default_factory=list)
    created_utc: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat())
    wall_time_s: float | None = None
    _samples_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list), repr=False)

    def _take(self, record: EpisodeRecord, samples_ms: Mapping[str, Iterable[float]] | None) -> None:
        samples = {k: list(v) for k, v in (samples_ms or {}).items()}
        if samples and not record.latency_ms:
            record.latency_ms = latency_summary(samples)
        if not record.models:
            record.models = dict(self.models)
        for stage, v in samples.items():
            self._samples_ms[stage].extend(v)

    def add(self, record: EpisodeRecord, samples_ms: Mapping[str, Iterable[float]] | None = None) -> None:
        """Append an episode; `samples_ms` ({stage: [ms]}) feed its `latency_ms` (when empty)
        and the run's latency summary."""
        self._take(record, samples_ms)
        self.episodes.append(record)

    def add_pair(self, pair: SwapPairRecord,
                 samples_ms: Iterable[Mapping[str, Iterable[float]] | None] = ()) -> None:
        """Append a swap pair; `samples_ms`: one {stage: [ms]} per run (as in `add`)."""
        for record, samples in zip(pair.runs, list(samples_ms) or [None] * len(pair.runs)):
            self._take(record, samples)
        self.pairs.append(pair)

    @property
    def successes(self) -> int:
        return sum(e.success for e in self.episodes)

    @property
    def pairs_correct(self) -> int:
        return sum(p.correct for p in self.pairs)

    def summary(self) -> dict[str, Any]:
        by_target: dict[str, list[EpisodeRecord]] = defaultdict(list)
        for e in self.episodes:
            by_target[str(e.target)].append(e)
        n_pairs, k_pairs = len(self.pairs), self.pairs_correct
        return {
            **outcome_rates(self.episodes),
            "by_target": {t: outcome_rates(v) for t, v in sorted(by_target.items())},
            "swap_pairs": n_pairs,
            "swap_pairs_correct": k_pairs,
            "swap_accuracy": k_pairs / n_pairs if n_pairs else None,
            "swap_accuracy_ci95": list(wilson_interval(k_pairs, n_pairs)) if n_pairs else None,
            "latency_ms": latency_summary(self._samples_ms),
            "action_age_ms": action_age_summary(self.episodes),
            "first_grasp_xy_error_m": grasp_error_summary(self.episodes),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": RESULTS_FORMAT, "mode": self.mode, "created_utc": self.created_utc,
            "models": self.models, "config": self.config, "provenance": self.provenance,
            "wall_time_s": self.wall_time_s, "summary": self.summary(),
            "episodes": [e.to_dict() for e in self.episodes],
            "pairs": [p.to_dict() for p in self.pairs],
        }

    def write_json(self, path: str | Path) -> Path:
        """Write `to_dict()` as JSON (non-finite floats as null); creates the parent directory."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(json_safe(self.to_dict()), indent=2, allow_nan=False) + "\n")
        return path


def summarize_action_age(snapshot: Mapping[str, Any] | None) -> dict[str, float | int | None] | None:
    """A `robot.action_age.ActionAgeMonitor` snapshot (or the difference of two) ->
    {"n": ticks with an action, "dry_ticks",
    "dry_share": dry / all ticks, "mean", "p50", "p95", "max_bin"} in ms, "switches" and
    "switch_jump_mean_mrad" (the mean plan jump at a chunk switch, mrad); percentiles are the
    upper edge of the bin that holds them (conservative, `bin_ms` resolution; inf in the last
    bin). None for None or a snapshot without bins."""
    if not snapshot or not snapshot.get("bins"):
        return None
    bins = np.asarray(snapshot["bins"], dtype=np.int64)
    width = float(snapshot["bin_ms"])
    n, dry = int(bins.sum()), int(snapshot.get("dry_ticks", 0))
    edges = width * np.arange(1, len(bins) + 1, dtype=float)
    edges[-1] = math.inf

    def percentile(q: float) -> float | None:
        if n == 0:
            return None
        return float(edges[int(np.searchsorted(np.cumsum(bins), q * n, side="left"))])

    switches = int(snapshot.get("switch_n", 0))
    return {"n": n, "dry_ticks": dry, "dry_share": dry / (n + dry) if n + dry else None,
            "mean": snapshot.get("sum_us", 0) / 1e3 / n if n else None,
            "p50": percentile(0.5), "p95": percentile(0.95),
            "max_bin": float(edges[int(np.flatnonzero(bins)[-1])]) if n else None,
            "switches": switches,
            "switch_jump_mean_mrad": snapshot.get("switch_urad", 0) / 1e3 / switches if switches else None}


def action_age_summary(records: Iterable[EpisodeRecord]) -> dict[str, Any] | None:
    """`summarize_action_age` of the episodes' histograms added up (None when no episode has
    one)."""
    total = None
    for r in records:
        h = r.action_age
        if not h or not h.get("bins"):
            continue
        if total is None:
            total = {"bin_ms": h.get("bin_ms"), "bins": list(h["bins"])}
        else:
            total["bins"] = [a + b for a, b in zip(total["bins"], h["bins"])]
        for key in ("sum_us", "dry_ticks", "switch_n", "switch_urad"):
            total[key] = total.get(key, 0) + h.get(key, 0)
    return summarize_action_age(total)


def grasp_error_summary(records: Iterable[EpisodeRecord]) -> dict[str, Any] | None:
    """Median / 90th percentile of `first_grasp_xy_error_m` (m) over the episodes that closed the
    gripper, overall and for successes and the rest: {"n", "median", "p90", "n_success",
    "median_success", "n_failure", "median_failure", "regrasped", "approach_end_median",
    "approach_end_p90"} (regrasped: episodes with more than one closing; approach_end_*: of
    `approach_end_xy_error_m`, None when no episode has one); None when no episode recorded a
    grasp."""
    records = [r for r in records if r.first_grasp_xy_error_m is not None]
    if not records:
        return None

    def median(values: list[float]) -> float | None:
        return float(np.median(values)) if values else None

    err = [float(r.first_grasp_xy_error_m) for r in records]
    ok = [float(r.first_grasp_xy_error_m) for r in records if r.success]
    bad = [float(r.first_grasp_xy_error_m) for r in records if not r.success]
    end = [float(r.approach_end_xy_error_m) for r in records if r.approach_end_xy_error_m is not None]
    return {"n": len(err), "median": median(err), "p90": float(np.percentile(err, 90)),
            "n_success": len(ok), "median_success": median(ok), "n_failure": len(bad), "median_failure": median(bad),
            "regrasped": sum(1 for r in records if (r.grasps or 0) > 1),
            "approach_end_median": median(end), "approach_end_p90": float(np.percentile(end, 90)) if end else None}


def _run_text(record: EpisodeRecord) -> str:
    t = record.time_to_success_s
    sim, wall = record.episode_sim_time_s, record.wall_time_s
    return (f"target={record.target!r} {record.instruction!r}: {record.outcome.value.upper()}"
            f"{f' at {t:.1f} s' if t is not None else ''}"
            f" (sim {sim if sim is not None else float('nan'):.1f} s, wall {wall if wall is not None else float('nan'):.1f} s)")


def format_episode(record: EpisodeRecord, index: int, total: int, successes_so_far: int) -> str:
    """One line per finished episode (both evaluators print it)."""
    return (f"episode {index + 1}/{total} seed={record.seed} {_run_text(record)}"
            f"; running success {successes_so_far}/{index + 1}")


def format_pair(pair: SwapPairRecord, index: int, total: int, correct_so_far: int) -> str:
    """Lines for one finished swap pair (one per run, then the verdict)."""
    lines = [f"swap pair {index + 1}/{total} seed={pair.seed} objects={list(pair.objects)}"]
    lines += [f"  run {i + 1}: {_run_text(r)}" for i, r in enumerate(pair.runs)]
    lines.append(f"  -> {'correct' if pair.correct else 'not correct'}; running swap accuracy "
                 f"{correct_so_far}/{index + 1}")
    return "\n".join(lines)


def _rate_text(rates: Mapping[str, Any], outcome: str) -> str:
    n = rates["episodes"]
    k = rates["outcomes"].get(outcome, 0)
    lo, hi = rates[f"{outcome}_ci95"]
    pct = f"{100.0 * k / n:.1f} %" if n else "n/a"
    return f"{k}/{n} ({pct}, Wilson 95 % CI {100 * lo:.0f}-{100 * hi:.0f} %)"


def format_summary(report: Mapping[str, Any], path: str | Path | None = None) -> str:
    """Human-readable summary of `EvalReport.to_dict()` (what both evaluators print at the end)."""
    s = report["summary"]
    outcomes = ", ".join(f"{name} {count}" for name, count in s["outcomes"].items()) or "none"
    n = s["episodes"]
    lines = [f"evaluation ({report.get('mode')}): {n} episode{'' if n == 1 else 's'}; outcomes: {outcomes}"]
    if s["episodes"]:
        lines += [f"  {name:<13}{_rate_text(s, key)}" for name, key in
                  (("success", "success"), ("wrong object", "wrong_object"), ("timeout", "timeout"),
                   ("safety stop", "safety_stop"))]
        lines.append(f"{'target':<22}{'n':>4}{'success':>10}{'wrong obj':>11}{'timeout':>9}{'safety':>8}")
        for target, r in s["by_target"].items():
            lines.append(f"{target:<22}{r['episodes']:>4}" + "".join(
                f"{r['outcomes'].get(o, 0):>{w}}" for o, w in
                (("success", 10), ("wrong_object", 11), ("timeout", 9), ("safety_stop", 8))))
    if s.get("swap_pairs"):
        lo, hi = s["swap_accuracy_ci95"]
        lines.append(f"instruction swap: {s['swap_pairs_correct']}/{s['swap_pairs']} pairs correct "
                     f"(swap accuracy {100.0 * s['swap_accuracy']:.1f} %, Wilson 95 % CI {100 * lo:.0f}-{100 * hi:.0f} %)")
    g = s.get("first_grasp_xy_error_m")
    if g:
        cm = lambda v: "n/a" if v is None else f"{100 * v:.1f} cm"
        lines.append(f"first grasp, TCP to the target's grasp point (xy): median {cm(g['median'])}, p90 {cm(g['p90'])} "
                     f"over {g['n']} episodes; successes {cm(g['median_success'])} ({g['n_success']}), "
                     f"others {cm(g['median_failure'])} ({g['n_failure']}); closed more than once: {g['regrasped']}")
        if g.get("approach_end_median") is not None:
            lines.append(f"  0.6 s before that closing (the end of the approach): median {cm(g['approach_end_median'])}, "
                         f"p90 {cm(g['approach_end_p90'])}")
    age = s.get("action_age_ms")
    if age and age.get("n"):
        lines.append(f"executed actions' age (servo ticks since their image): p50 <= {age['p50']:.0f} ms, "
                     f"p95 <= {age['p95']:.0f} ms, mean {age['mean']:.0f} ms; nothing to follow in "
                     f"{100 * (age['dry_share'] or 0):.1f} % of {age['n'] + age['dry_ticks']} ticks")
    lines.append(f"{'stage':<22}{'n':>7}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}")
    for stage, st in s["latency_ms"].items():
        lines.append(f"{stage:<22}{st['n']:>7}{st['p50']:>10.2f}{st['p95']:>10.2f}{st['p99']:>10.2f}")
    if path:
        lines.append(f"results: {path}")
    return "\n".join(lines)


def default_results_path(mode: str) -> Path:
    """outputs/eval/<mode>_<UTC time>.json (relative to the working directory)."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return Path("outputs") / "eval" / f"{mode}_{stamp}.json"
