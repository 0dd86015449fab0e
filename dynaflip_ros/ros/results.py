"""Results of a closed-loop evaluation run through the ROS graph (ROS-free helpers).

The episode manager writes one JSON per run (`RESULTS_FORMAT`): config, encoder / policy
provenance, per-episode records, success summary and per-stage latency percentiles;
`dynaflip launch` prints `format_summary` of it at the end.
"""
from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import numpy as np

RESULTS_FORMAT = "dynaflip_ros.pick_into_sink.ros_eval/1"

# Stage names of /dynaflip/latency, in pipeline order (DESIGN.md, "Timing": measure latency per
# stage). capture: camera read (render / grab); image_transport: image stamp -> encoder receipt;
# encode: encoder forward pass; embedding_transport: image stamp -> policy receipt of the
# embedding; policy: policy inference; command: image stamp -> action chunk received by the arm
# driver (end to end, capture to command).
LATENCY_STAGES: tuple[str, ...] = (
    "capture", "image_transport", "encode", "embedding_transport", "policy", "command",
)


def latency_summary(samples_ms: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """{stage: [ms, ...]} -> {stage: {"n", "p50_ms", "p95_ms", "mean_ms", "max_ms"}}, stages in
    pipeline order (LATENCY_STAGES first, then any others alphabetically); empty stages omitted."""
    order = [s for s in LATENCY_STAGES if s in samples_ms] + sorted(set(samples_ms) - set(LATENCY_STAGES))
    out = {}
    for stage in order:
        v = np.asarray(samples_ms[stage], dtype=float)
        if v.size == 0:
            continue
        out[stage] = {"n": int(v.size), "p50_ms": float(np.percentile(v, 50)), "p95_ms": float(np.percentile(v, 95)),
                      "mean_ms": float(v.mean()), "max_ms": float(v.max())}
    return out


def format_summary(results: dict[str, Any]) -> str:
    """Human-readable summary of a results dict (what `dynaflip launch` prints at the end)."""
    s = results["summary"]
    lines = [
        f"Pick-into-Sink ({results.get('mode', 'sim')}): success {s['successes']}/{s['episodes']} "
        f"({100.0 * s['success_rate']:.1f} %), mean episode {s['mean_duration_s']:.1f} s",
        f"{'stage':<22}{'n':>7}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}",
    ]
    for stage, st in results["latency"].items():
        lines.append(f"{stage:<22}{st['n']:>7}{st['p50_ms']:>10.2f}{st['p95_ms']:>10.2f}{st['max_ms']:>10.2f}")
    if results.get("results_path"):
        lines.append(f"results: {results['results_path']}")
    return "\n".join(lines)


def default_results_path() -> Path:
    """outputs/ros_eval/pick_into_sink_<UTC time>.json (relative to the working directory)."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return Path("outputs") / "ros_eval" / f"pick_into_sink_{stamp}.json"


def counter_delta(start: Any, end: Any) -> Any:
    """end - start for every integer counter of two (nested) status dicts; other values from end."""
    if isinstance(end, dict):
        start = start if isinstance(start, dict) else {}
        return {k: counter_delta(start.get(k), v) for k, v in end.items()}
    if isinstance(end, int) and not isinstance(end, bool) and isinstance(start, int) and not isinstance(start, bool):
        return end - start
    return end
