"""Where deployment loses success: the same seeds run lock-step, in real time in one process and
through the ROS 2 graph (`dynaflip eval --sim --modes lockstep,realtime,ros [--cpu-load N]`).

The three modes differ in one thing each: lock-step -> realtime adds time (inference, rendering
and physics share the CPU and the wall clock; the arm executes actions that were planned from
older images), realtime -> ros adds the graph (DDS transport, separate processes, the nodes'
executors); ros_combined is the graph without the encoder process (the policy node embeds the
images itself, `--combined-inference` of `dynaflip launch`). Each mode's evaluation record (`episodes.record.EvalReport.to_dict`) goes into one
file under `modes`, next to what the comparison needs (`mode_entry`): success rate with its Wilson
interval, SafeArm watchdog trips (per episode and in total), the executed actions' ages
(`robot.action_age`) and per-stage latency; `paired` compares two modes seed by seed (the
episodes either one of them alone succeeded in, with the exact McNemar test).

Pure functions over the records; the command line (`eval/cli.py`) runs the modes.
"""
from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from typing import Any

from dynaflip_ros.errors import UserError

MODES: tuple[str, ...] = ("lockstep", "realtime", "ros", "ros_combined")
"""ros_combined: the graph in its CPU-frugal layout (the encoder inside the policy process)."""
MODES_FORMAT = "dynaflip_ros.eval_modes/1"


def parse_modes(text: str) -> list[str]:
    """"lockstep,realtime,ros" -> ["lockstep", "realtime", "ros"] (order kept, each once).
    Raises UserError for an empty list, an unknown or a repeated mode."""
    modes = [m.strip() for m in str(text).split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if not modes or unknown:
        raise UserError(f"--modes: unknown mode(s) {unknown or [text]}; choose from {','.join(MODES)}")
    if len(set(modes)) != len(modes):
        raise UserError(f"--modes: a mode is repeated in {text!r}")
    return modes


def watchdog_trips(report: Mapping[str, Any]) -> list[int]:
    """SafeArm watchdog stops per regular episode of an evaluation record (0 when the episode
    carries no safety counters)."""
    return [int((e.get("safety") or {}).get("watchdog_stops", 0) or 0) for e in report.get("episodes", [])]


def mode_entry(report: Mapping[str, Any]) -> dict[str, Any]:
    """The comparison view of one mode's evaluation record: success_rate, success_ci95,
    successes, episodes, outcomes, watchdog_trips (total) and watchdog_trips_by_episode,
    action_age_ms, latency_ms, realtime_factor_median, and the record itself under `record`."""
    import numpy as np

    summary = report.get("summary", {})
    trips = watchdog_trips(report)
    rtf = [e["realtime_factor"] for e in report.get("episodes", []) if e.get("realtime_factor") is not None]
    return {
        "success_rate": summary.get("success_rate"), "success_ci95": summary.get("success_ci95"),
        "successes": int((summary.get("outcomes") or {}).get("success", 0)), "episodes": summary.get("episodes"),
        "outcomes": summary.get("outcomes"), "watchdog_trips": sum(trips), "watchdog_trips_by_episode": trips,
        "action_age_ms": summary.get("action_age_ms"), "latency_ms": summary.get("latency_ms"),
        "realtime_factor_median": float(np.median(rtf)) if rtf else None,
        "record": dict(report),
    }


def paired(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Seed-by-seed comparison of two evaluation records over the seeds both ran: n, both
    (succeeded in both), only_a, only_b, neither, and the exact two-sided McNemar p-value of the
    discordant pairs (binomial test, p = 0.5; 1.0 without discordant pairs)."""
    from dynaflip_ros.episodes.record import mcnemar_exact_p

    sa = {e["seed"]: e["outcome"] == "success" for e in a.get("episodes", [])}
    sb = {e["seed"]: e["outcome"] == "success" for e in b.get("episodes", [])}
    seeds = sorted(set(sa) & set(sb))
    only_a = sum(sa[s] and not sb[s] for s in seeds)
    only_b = sum(sb[s] and not sa[s] for s in seeds)
    both = sum(sa[s] and sb[s] for s in seeds)
    p = mcnemar_exact_p(only_a, only_b)
    return {"n": len(seeds), "both": both, "only_a": only_a, "only_b": only_b,
            "neither": len(seeds) - both - only_a - only_b, "mcnemar_p": float(p)}


def modes_record(config: Mapping[str, Any], reports: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The file `dynaflip eval --modes` writes: format, created_utc, config (incl. cpu_load),
    modes {mode: `mode_entry`}, paired {"a_vs_b": `paired`} for every pair of modes run (in the
    order given)."""
    names = list(reports)
    return {
        "format": MODES_FORMAT, "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        "config": dict(config), "modes": {m: mode_entry(reports[m]) for m in names},
        "paired": {f"{a}_vs_{b}": paired(reports[a], reports[b])
                   for i, a in enumerate(names) for b in names[i + 1:]},
    }


def _ms(latency: Mapping[str, Any] | None, stage: str) -> str:
    s = (latency or {}).get(stage)
    return f"{s['p50']:.0f}/{s['p95']:.0f}" if s else "-"


def _switch(age: Mapping[str, Any]) -> str:
    mean = age.get("switch_jump_mean_mrad")
    return "-" if mean is None else f"{mean:.1f}"


def format_modes(record: Mapping[str, Any], modes: Sequence[str] | None = None) -> str:
    """A table of the modes (success with its interval, watchdog trips, action age p50/p95 and
    the share of servo ticks with nothing to follow, policy and command latency p50/p95, the
    mean plan jump at a chunk switch) and the paired comparisons, for the terminal."""
    lines = [f"{'mode':9s} {'success':>22s} {'watchdog':>8s} {'age p50/p95 ms':>14s} {'dry':>5s} "
             f"{'policy ms':>10s} {'command ms':>10s} {'switch mrad':>11s}"]
    for m in modes or list(record["modes"]):
        e = record["modes"][m]
        lo, hi = e["success_ci95"] or (float("nan"), float("nan"))
        age = e.get("action_age_ms") or {}
        age_text = f"{age['p50']:.0f}/{age['p95']:.0f}" if age.get("p50") is not None else "-"
        dry = f"{age['dry_share']:.0%}" if age.get("dry_share") is not None else "-"
        lines.append(f"{m:9s} {e['successes']:>3d}/{e['episodes']:<3d} {e['success_rate']:4.0%} "
                     f"({lo:.0%}-{hi:.0%}) {e['watchdog_trips']:>8d} {age_text:>14s} {dry:>5s} "
                     f"{_ms(e['latency_ms'], 'policy'):>10s} {_ms(e['latency_ms'], 'command'):>10s} "
                     f"{_switch(age):>11s}")
    for name, p in record.get("paired", {}).items():
        a, b = name.split("_vs_")
        lines.append(f"{name}: {p['n']} seeds, both {p['both']}, only {a} {p['only_a']}, only {b} {p['only_b']}, "
                     f"neither {p['neither']} (McNemar p = {p['mcnemar_p']:.3g})")
    return "\n".join(lines)
