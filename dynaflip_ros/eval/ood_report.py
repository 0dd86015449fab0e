"""The report of an OOD evaluation session (`dynaflip report SESSION_DIR`, files in eval/ood_records.py).

`write_report` reads `session.json` and `episodes.jsonl` and writes, into the session directory:

- `summary.json` (`summarize`, format SUMMARY_FORMAT): per model and condition the episode count,
  successes, success rate with its Wilson 95 % interval, the outcome counts, the median time to
  success and, for every perturbed condition, the drop against the nominal control of the same
  model on the seeds both ran (paired: Newcombe's interval, McNemar's exact test); and the
  episodes the session asked for that are not in the log yet (`missing`: an interrupted session
  is reported as far as it got, never silently short).
- `plots/success_by_condition.png`: success rate per condition (nominal first), Wilson error bars,
  one bar per model; `plots/severity_<family>.png` for every perturbation family run at two or
  more severities alone (conditions with that one family): success rate against severity, the
  nominal control at severity 0, one line per model.
- `report.html`: one self-contained page (no JavaScript, no external resources; relative links to
  the plots and the example frames under `frames/`).

Rates are fractions (0..1); drops are nominal rate - condition rate, so a positive drop means the
perturbation made the model worse.
"""
from __future__ import annotations

import dataclasses
import html
import math
import statistics
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote

from dynaflip_ros.data.dataset_io import atomic_write_bytes, atomic_write_json
from dynaflip_ros.episodes.record import mcnemar_exact_p, wilson_interval
from dynaflip_ros.eval.ood_records import (
    NOMINAL, OUTCOMES, OodEpisode, OodSession, SessionFileError, read_episodes, read_session,
)

SUMMARY_FORMAT = "dynaflip_ros.ood_summary/1"
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.html"
PLOTS_DIR = "plots"
SUCCESS_PLOT = "success_by_condition.png"


def paired_difference_interval(both: int, only_first: int, only_second: int, neither: int,
                               confidence: float = 0.95) -> tuple[float, float]:
    """Confidence interval of p1 - p2 for paired binary outcomes: Newcombe's hybrid score interval.

    Counts of the paired 2x2 table (n = their sum pairs): both (first and second succeeded),
    only_first, only_second, neither. p1 = (both + only_first) / n, p2 = (both + only_second) / n.
    With [l1, u1], [l2, u2] the Wilson score intervals of p1 and p2 (`wilson_interval`):

        L = (p1 - p2) - sqrt((p1 - l1)^2 - 2 phi (p1 - l1)(u2 - p2) + (u2 - p2)^2)
        U = (p1 - p2) + sqrt((p2 - l2)^2 - 2 phi (p2 - l2)(u1 - p1) + (u1 - p1)^2)

    phi: the correlation of the pair's two outcomes, continuity-corrected as Newcombe does: with
    A = both * neither - only_first * only_second and P the product of the four margins,
    phi = (A - n/2) / sqrt(P) if A > n/2, 0 if 0 <= A <= n/2, A / sqrt(P) if A < 0; 0 if a margin is 0.
    Method 10 of R. G. Newcombe, "Improved confidence intervals for the difference between binomial
    proportions based on paired data", Statistics in Medicine 17:2635-2650 (1998) (the paired
    companion of the independent-samples paper, Stat Med 17:873-890); the "Newcombe square-and-add"
    interval of M. W. Fagerland, S. Lydersen, P. Laake, "Recommended tests and confidence intervals
    for paired binomial proportions", Stat Med 33:2850-2875 (2014). Returns (L, U) within [-1, 1].
    Raises ValueError for a negative count or no pairs.
    """
    counts = (both, only_first, only_second, neither)
    if min(counts) < 0 or sum(counts) == 0:
        raise ValueError(f"need non-negative counts and at least one pair, got {counts}")
    n = sum(counts)
    first, second = both + only_first, both + only_second
    p1, p2 = first / n, second / n
    l1, u1 = wilson_interval(first, n, confidence)
    l2, u2 = wilson_interval(second, n, confidence)
    margins = first * (n - first) * second * (n - second)
    a = both * neither - only_first * only_second
    if margins == 0 or 0 <= a <= n / 2:
        phi = 0.0
    else:
        phi = (a - n / 2 if a > 0 else a) / math.sqrt(margins)
    low = p1 - p2 - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    high = p1 - p2 + math.sqrt(max(0.0, (p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2))
    return max(-1.0, low), min(1.0, high)  # the bounds stay in [-1, 1]; this only absorbs rounding


def paired_comparison(first: dict, second: dict) -> dict[str, Any]:
    """Paired success rates of two arms over the keys both ran.

    first, second: {key: succeeded} (key: an episode seed, or (training seed, episode seed)).
    Returns {"n_pairs", "rate_first", "rate_second", "difference" (rate_first - rate_second),
    "ci_low", "ci_high" (`paired_difference_interval`, 95 %), "both", "only_first", "only_second",
    "neither", "mcnemar_p" (`mcnemar_exact_p`)}; rates, difference and interval are None without
    common keys.
    """
    keys = sorted(set(first) & set(second))
    pairs = Counter((bool(first[k]), bool(second[k])) for k in keys)
    both, only_1, only_2, neither = pairs[True, True], pairs[True, False], pairs[False, True], pairs[False, False]
    out: dict[str, Any] = {"n_pairs": len(keys), "rate_first": None, "rate_second": None, "difference": None,
                           "ci_low": None, "ci_high": None, "both": both, "only_first": only_1,
                           "only_second": only_2, "neither": neither, "mcnemar_p": mcnemar_exact_p(only_1, only_2)}
    if keys:
        n = len(keys)
        out["rate_first"], out["rate_second"] = (both + only_1) / n, (both + only_2) / n
        out["difference"] = out["rate_first"] - out["rate_second"]
        out["ci_low"], out["ci_high"] = paired_difference_interval(both, only_1, only_2, neither)
    return out


def paired_drop(nominal: dict[int, bool], condition: dict[int, bool]) -> dict[str, Any]:
    """The drop of a condition against its nominal control over the seeds both ran
    (`paired_comparison` with the nominal arm first).

    nominal, condition: {seed: succeeded}. Returns {"n_pairs", "nominal_rate", "condition_rate",
    "drop" (nominal_rate - condition_rate), "ci_low", "ci_high" (`paired_difference_interval`, 95 %),
    "both", "only_nominal", "only_condition", "neither", "mcnemar_p" (`mcnemar_exact_p`)};
    rates, drop and interval are None without common seeds.
    """
    c = paired_comparison(nominal, condition)
    names = {"rate_first": "nominal_rate", "rate_second": "condition_rate", "difference": "drop",
             "only_first": "only_nominal", "only_second": "only_condition"}
    return {names.get(k, k): v for k, v in c.items()}


def _condition_stats(episodes: list[OodEpisode], families: list[str], severity: float | None) -> dict[str, Any]:
    """Counts, Wilson interval, outcomes, safety refusals and median time to success of one model's
    episodes of one condition."""
    n = len(episodes)
    successes = sum(e.outcome == "success" for e in episodes)
    ci = wilson_interval(successes, n) if n else (None, None)
    times = [e.time_to_success_s for e in episodes if e.outcome == "success" and e.time_to_success_s is not None]
    counts = Counter(e.outcome for e in episodes)
    return {"n": n, "successes": successes, "success_rate": successes / n if n else None,
            "ci_low": ci[0], "ci_high": ci[1], "families": list(families), "severity": severity,
            "outcomes": {o: counts.get(o, 0) for o in OUTCOMES}, "refused": sum(e.refused for e in episodes),
            "time_to_success_s_median": float(statistics.median(times)) if times else None}


def summarize(session: OodSession, episodes: list[OodEpisode]) -> dict[str, Any]:
    """The content of `summary.json` (module doc): {"format", "session", "models", "missing"}.

    "session": the session's models (directories, sha256), conditions, seeds, mode, options,
    commit and created_utc. "models": {model: {condition: stats}} in the session's order, stats
    {"n", "successes", "success_rate" (None when n is 0), "ci_low", "ci_high" (Wilson 95 %),
    "families", "severity" (from the condition's episodes; [] / 0 for nominal, None when no model
    ran it yet), "outcomes" ({outcome: count} for every OUTCOMES), "time_to_success_s_median"
    (s, None without successes), "refused" (episodes in which SafeArm refused a command,
    `OodEpisode.refused`)} plus "drop" (`paired_drop` against the same model's nominal
    episodes) for every condition but NOMINAL. "missing": [{"model", "condition", "seed"}, ...],
    each combination of the session without an episode, in session order.
    Raises SessionFileError for an episode outside the session or one logged twice.
    """
    by_key: dict[tuple[str, str, int], OodEpisode] = {}
    for e in episodes:
        if e.model not in session.models or e.condition not in session.conditions or e.seed not in session.seeds:
            raise SessionFileError(f"episode {e.key} is not part of the session (models {list(session.models)}, "
                                   f"conditions {session.conditions}, seeds {session.seeds})")
        if e.key in by_key:
            raise SessionFileError(f"episode {e.key} is logged twice")
        by_key[e.key] = e
    describe: dict[str, tuple[list[str], float | None]] = {NOMINAL: ([], 0.0)}
    for e in episodes:
        describe.setdefault(e.condition, (list(e.families), e.severity))
    models: dict[str, dict[str, Any]] = {}
    missing = []
    for model in session.models:
        success = {c: {s: by_key[model, c, s].outcome == "success" for s in session.seeds if (model, c, s) in by_key}
                   for c in session.conditions}
        models[model] = {}
        for c in session.conditions:
            ran = [by_key[model, c, s] for s in session.seeds if (model, c, s) in by_key]
            stats = _condition_stats(ran, *describe.get(c, ([], None)))
            if c != NOMINAL:
                stats["drop"] = paired_drop(success.get(NOMINAL, {}), success[c])
            models[model][c] = stats
            missing += [{"model": model, "condition": c, "seed": s} for s in session.seeds
                        if (model, c, s) not in by_key]
    facts = {"models": {k: dataclasses.asdict(v) for k, v in session.models.items()},
             "conditions": list(session.conditions), "seeds": list(session.seeds), "mode": session.mode,
             "options": dict(session.options), "commit": session.commit, "created_utc": session.created_utc}
    return {"format": SUMMARY_FORMAT, "session": facts, "models": models, "missing": missing}


def _ordered_conditions(summary: dict[str, Any]) -> list[str]:
    conditions = summary["session"]["conditions"]
    return [c for c in conditions if c == NOMINAL] + [c for c in conditions if c != NOMINAL]


def severity_families(summary: dict[str, Any]) -> dict[str, list[str]]:
    """{family: its single-family conditions, by severity} for every family run alone at >= 2 severities."""
    out: dict[str, list[str]] = {}
    first_model = next(iter(summary["models"].values()), {})
    for c, stats in first_model.items():  # families / severity are the same for every model
        if len(stats["families"]) == 1 and stats["severity"] is not None:
            out.setdefault(stats["families"][0], []).append(c)
    return {f: sorted(cs, key=lambda c: first_model[c]["severity"]) for f, cs in out.items()
            if len({first_model[c]["severity"] for c in cs}) >= 2}


def _error_bars(rows: list[dict[str, Any]]) -> list[list[float]]:
    return [[r["success_rate"] - r["ci_low"] for r in rows], [r["ci_high"] - r["success_rate"] for r in rows]]


def write_plots(summary: dict[str, Any], plots_dir: str | Path) -> list[str]:
    """The PNG plots of a summary (module doc) into plots_dir; returns their file names, success
    plot first. Conditions a model has no episode of yet are left out of its bars / line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots_dir = Path(plots_dir)
    plots_dir.mkdir(parents=True, exist_ok=True)
    conditions = _ordered_conditions(summary)
    models = list(summary["models"])
    width = 0.8 / max(1, len(models))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(conditions) * max(1, len(models)) ** 0.5 + 2), 4.5))
    for k, model in enumerate(models):
        xs = [i for i, c in enumerate(conditions) if summary["models"][model][c]["n"]]
        rows = [summary["models"][model][conditions[i]] for i in xs]
        ax.bar([i + (k - (len(models) - 1) / 2) * width for i in xs], [r["success_rate"] for r in rows], width,
               yerr=_error_bars(rows), capsize=3, label=model)
    ax.set_xticks(range(len(conditions)), conditions, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success rate (Wilson 95 % interval)")
    ax.set_title("success rate by condition")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(plots_dir / SUCCESS_PLOT, dpi=100)
    plt.close(fig)
    written = [SUCCESS_PLOT]
    for family, family_conditions in severity_families(summary).items():
        fig, ax = plt.subplots(figsize=(6, 4))
        for model in models:
            rows = summary["models"][model]
            points = [(0.0, rows[NOMINAL])] if NOMINAL in rows else []
            points += [(rows[c]["severity"], rows[c]) for c in family_conditions]
            points = [(x, r) for x, r in points if r["n"]]
            ax.errorbar([x for x, _ in points], [r["success_rate"] for _, r in points],
                        yerr=_error_bars([r for _, r in points]), marker="o", capsize=3, label=model)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel(f"{family} severity (0: nominal)")
        ax.set_ylabel("success rate (Wilson 95 % interval)")
        ax.set_title(f"success rate vs {family} severity")
        ax.legend(fontsize="small")
        fig.tight_layout()
        name = f"severity_{family}.png"
        fig.savefig(plots_dir / name, dpi=100)
        plt.close(fig)
        written.append(name)
    return written


def example_frames(session_dir: str | Path, session: OodSession,
                   episodes: list[OodEpisode]) -> list[tuple[str, str, str]]:
    """[(condition, model, frame path relative to session_dir)]: per condition (session order) and
    model, the frame of the model's lowest-index episode of it whose `frame` file exists inside
    the session directory."""
    root = Path(session_dir).resolve()
    out = []
    for condition in session.conditions:
        for model in session.models:
            runs = sorted((e for e in episodes if e.model == model and e.condition == condition and e.frame),
                          key=lambda e: e.index)
            for e in runs:
                path = (root / e.frame).resolve()
                if path.is_relative_to(root) and path.is_file():
                    out.append((condition, model, path.relative_to(root).as_posix()))
                    break
    return out


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def rate_text(stats: dict[str, Any]) -> str:
    """"successes/n rate % [low, high]" of a condition's stats ("no episodes" when n is 0)."""
    if not stats["n"]:
        return "no episodes"
    return f"{stats['successes']}/{stats['n']} {_pct(stats['success_rate'])} % [{_pct(stats['ci_low'])}, " \
           f"{_pct(stats['ci_high'])}]"


def drop_text(stats: dict[str, Any]) -> str:
    """"+drop pp [low, high], McNemar p = ..., n pairs" of a condition's stats ("control" for nominal)."""
    d = stats.get("drop")
    if d is None:
        return "control"
    if not d["n_pairs"]:
        return "no seed run by both"
    return f"{100 * d['drop']:+.1f} pp [{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}], " \
           f"McNemar p = {d['mcnemar_p']:.3g}, {d['n_pairs']} pairs"


def format_tables(summary: dict[str, Any]) -> str:
    """Plain-text tables of a summary, one per model: condition, n, success rate (95 % Wilson), episodes
    with a safety refusal, drop vs nominal."""
    conditions = _ordered_conditions(summary)
    width = max([len("condition")] + [len(c) for c in conditions])
    lines = []
    for model, rows in summary["models"].items():
        lines += [f"model {model}", f"  {'condition':<{width}}  {'n':>4}  {'success % [95 % CI]':<28}  refused  "
                                    "drop vs nominal"]
        lines += [f"  {c:<{width}}  {rows[c]['n']:>4}  {rate_text(rows[c]):<28}  {rows[c]['refused']:>7}  "
                  f"{drop_text(rows[c])}" for c in conditions]
    if summary["missing"]:
        lines.append(f"missing: {len(summary['missing'])} episodes not run yet (an interrupted session: "
                     f"resume it to complete the report)")
    return "\n".join(lines)


def _cell(text: Any) -> str:
    return f"<td>{html.escape(str(text))}</td>"


def _model_table(model: str, rows: dict[str, Any], conditions: list[str]) -> str:
    head = ["condition", "n", "successes", "success rate % (Wilson 95 %)",
            "drop vs nominal, pp (95 % paired interval, McNemar p)", "outcomes",
            "episodes with a safety refusal", "median time to success (s)"]
    out = [f"<h3>{html.escape(model)}</h3>", "<table>", "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head)
           + "</tr>"]
    for c in conditions:
        s = rows[c]
        rate = f"{_pct(s['success_rate'])} [{_pct(s['ci_low'])}, {_pct(s['ci_high'])}]" if s["n"] else "-"
        outcomes = ", ".join(f"{o} {k}" for o, k in s["outcomes"].items() if k) or "-"
        t = s["time_to_success_s_median"]
        out.append("<tr>" + "".join(_cell(v) for v in (c, s["n"], s["successes"], rate, drop_text(s), outcomes,
                                                         s["refused"], "-" if t is None else f"{t:.2f}")) + "</tr>")
    return "\n".join(out + ["</table>"])


def render_html(summary: dict[str, Any], plots: list[str], frames: list[tuple[str, str, str]]) -> str:
    """report.html of a summary: session facts, a table per model, the plots (file names under
    plots/), the example frames ((condition, model, relative path)) and the missing episodes."""
    facts = summary["session"]
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8"><title>OOD evaluation report</title>',
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:1.5em}"
             "td,th{border:1px solid #999;padding:0.25em 0.6em;text-align:left}figure{display:inline-block;"
             "margin:0.5em}img{max-width:100%}</style></head><body>", "<h1>OOD evaluation report</h1>", "<ul>"]
    for name, m in facts["models"].items():
        parts.append(f"<li>model {e(name)}: encoder {e(m['encoder_dir'])} ({e(m['encoder_sha256'][:12] or '?')}), "
                     f"policy {e(m['policy_dir'])} ({e(m['policy_sha256'][:12] or '?')})</li>")
    parts += [f"<li>mode {e(facts['mode'])}, commit {e(facts['commit'] or '?')}, {len(facts['seeds'])} seeds, "
              f"created {e(facts['created_utc'] or '?')}</li>",
              f"<li>options: {e(', '.join(f'{k}={v}' for k, v in facts['options'].items()) or 'none')}</li>", "</ul>",
              "<p>Drop = nominal rate - condition rate over the seeds both ran (positive: worse than nominal); "
              "interval: Newcombe's paired hybrid score interval; p: exact McNemar test.</p>", "<h2>Results</h2>"]
    conditions = _ordered_conditions(summary)
    parts += [_model_table(model, rows, conditions) for model, rows in summary["models"].items()]
    parts.append("<h2>Plots</h2>")
    parts += [f'<figure><img src="{e(quote(f"{PLOTS_DIR}/{p}"))}" alt="{e(p)}"></figure>' for p in plots]
    if frames:
        parts.append("<h2>Example frames</h2>")
        parts += [f'<figure><img src="{e(quote(path))}" alt="{e(c)}"><figcaption>{e(c)} ({e(model)})</figcaption>'
                  f"</figure>" for c, model, path in frames]
    if summary["missing"]:
        parts += ["<h2>Missing episodes</h2>", f"<p>{len(summary['missing'])} episodes of the session are not in "
                  "the log (an interrupted session); the numbers above cover the episodes that ran.</p>", "<table>",
                  "<tr><th>model</th><th>condition</th><th>seeds</th></tr>"]
        groups: dict[tuple[str, str], list[int]] = {}
        for m in summary["missing"]:
            groups.setdefault((m["model"], m["condition"]), []).append(m["seed"])
        parts += ["<tr>" + _cell(model) + _cell(c) + _cell(", ".join(map(str, seeds))) + "</tr>"
                  for (model, c), seeds in groups.items()]
        parts.append("</table>")
    return "\n".join(parts + ["</body></html>", ""])


def write_report(session_dir: str | Path) -> dict[str, Any]:
    """Write summary.json, plots/*.png and report.html of the session in session_dir (module doc);
    returns the summary (`summarize`). Raises FileNotFoundError without session.json,
    SessionFileError for a session or episode file of another format or a malformed one."""
    root = Path(session_dir)
    session = read_session(root)
    episodes = read_episodes(root)
    summary = summarize(session, episodes)
    atomic_write_json(root / SUMMARY_FILE, summary, indent=1)
    plots = write_plots(summary, root / PLOTS_DIR)
    frames = example_frames(root, session, episodes)
    atomic_write_bytes(root / REPORT_FILE, render_html(summary, plots, frames).encode("utf-8"))
    return summary
