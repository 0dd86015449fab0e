"""The report of an OOD evaluation session (eval/ood_report.py) and `dynaflip report` (eval/report_cli.py).

Sessions are synthetic: session.json and episodes.jsonl written with the eval/ood_records.py
classes, outcomes chosen so that every count, rate and paired table is known.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from urllib.parse import quote

import imageio.v3 as iio
import numpy as np
import pytest

from dynaflip_ros.episodes.record import wilson_interval
from dynaflip_ros.errors import UserError
from dynaflip_ros.eval import report_cli
from dynaflip_ros.eval.ood_records import (
    NOMINAL, SESSION_FILE, EpisodeLog, OodEpisode, OodModel, OodSession, SessionFileError, read_episodes,
)
from dynaflip_ros.eval.ood_report import (
    SUCCESS_PLOT, paired_difference_interval, summarize, write_report,
)

SEEDS = list(range(100, 110))
CONDITIONS = [NOMINAL, "lighting:0.3", "lighting:0.8", "distractors:2"]
FAMILY = {NOMINAL: ([], 0.0), "lighting:0.3": (["lighting"], 0.3), "lighting:0.8": (["lighting"], 0.8),
          "distractors:2": (["distractors"], 2.0)}
ROBUST = "robust<2>"  # a name that must be escaped in HTML
# outcome per seed index 0..9; None: not run yet (the session was interrupted)
T, W, S = "timeout", "wrong_object", "safety_stop"
OUTCOMES = {
    "base": {
        NOMINAL: ["success"] * 9 + [T],
        "lighting:0.3": ["success"] * 7 + [W, T, T],
        "lighting:0.8": ["success"] * 3 + [T] * 6 + ["success"],
        "distractors:2": ["success"] * 3 + [S] * 3 + [None] * 4,
    },
    ROBUST: {
        NOMINAL: ["success"] * 10,
        "lighting:0.3": ["success"] * 10,
        "lighting:0.8": ["success"] * 4 + [T] + ["success"] * 5,
        "distractors:2": [S] * 10,
    },
}
NOMINAL_FRAME = "frames/base/nominal_seed100.png"
LIGHT_FRAME = "frames/base/lighting:0.8_seed101.png"  # index 0 of that condition names a frame that is absent


def _session(conditions=CONDITIONS, models=("base", ROBUST)) -> OodSession:
    return OodSession(models={m: OodModel(f"models/{m}/encoder", f"models/{m}/policy", "ab" * 32, "cd" * 32)
                              for m in models},
                      conditions=list(conditions), seeds=list(SEEDS), mode="lockstep",
                      options={"max_duration_s": 20.0}, commit="0123abc", created_utc="2025-01-02T03:04:05+00:00")


def _episode(model: str, condition: str, index: int, outcome: str, frame: str | None = None) -> OodEpisode:
    families, severity = FAMILY[condition]
    return OodEpisode(
        model=model, condition=condition, families=families, severity=severity, seed=SEEDS[index], index=index,
        instruction="put the apple in the sink", target="apple", objects=["apple", "banana"], outcome=outcome,
        time_to_success_s=2.0 + 0.5 * index if outcome == "success" else None, episode_sim_time_s=20.0,
        latency_ms={}, models={"encoder": "ab" * 32, "policy": "cd" * 32}, camera={}, scene={},
        safety={"rejected": 3, "rejected_workspace": 3} if outcome == S else {"rejected": 0},
        mode="lockstep", commit="0123abc", frame=frame)


def _episodes() -> list[OodEpisode]:
    frames = {("base", NOMINAL, 0): NOMINAL_FRAME, ("base", "lighting:0.8", 0): "frames/base/lighting:0.8_seed100.png",
              ("base", "lighting:0.8", 1): LIGHT_FRAME}
    return [_episode(m, c, i, o, frames.get((m, c, i)))
            for m, by_condition in OUTCOMES.items() for c, outcomes in by_condition.items()
            for i, o in enumerate(outcomes) if o is not None]


@pytest.fixture
def session_dir(tmp_path):
    d = tmp_path / "session"
    d.mkdir()
    (d / SESSION_FILE).write_text(_session().to_json())
    log = EpisodeLog(d)
    for e in _episodes():
        log.append(e)
    for frame in (NOMINAL_FRAME, LIGHT_FRAME):
        (d / frame).parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(d / frame, np.full((8, 12, 3), 128, np.uint8))
    return d


def test_counts_rates_wilson_bounds_and_outcomes():
    summary = summarize(_session(), _episodes())
    assert summary["format"] == "dynaflip_ros.ood_summary/1"
    assert summary["session"]["conditions"] == CONDITIONS and summary["session"]["seeds"] == SEEDS
    assert summary["session"]["mode"] == "lockstep" and summary["session"]["commit"] == "0123abc"
    assert summary["session"]["models"][ROBUST]["encoder_sha256"] == "ab" * 32
    assert list(summary["models"]) == ["base", ROBUST]
    for model, by_condition in OUTCOMES.items():
        assert list(summary["models"][model]) == CONDITIONS
        for c, outcomes in by_condition.items():
            ran = [o for o in outcomes if o is not None]
            s = summary["models"][model][c]
            k = ran.count("success")
            assert (s["n"], s["successes"]) == (len(ran), k)
            assert s["success_rate"] == pytest.approx(k / len(ran))
            assert (s["ci_low"], s["ci_high"]) == wilson_interval(k, len(ran))
            assert {o: n for o, n in s["outcomes"].items() if n} == {o: ran.count(o) for o in set(ran)}
            assert s["refused"] == ran.count(S)  # episodes with a refused command, not the commands
            assert (s["families"], s["severity"]) == FAMILY[c]
    base = summary["models"]["base"]
    assert base[NOMINAL]["time_to_success_s_median"] == pytest.approx(4.0)  # indices 0..8: 2.0 + 0.5 * 4
    assert base["lighting:0.8"]["time_to_success_s_median"] == pytest.approx(2.75)  # indices 0, 1, 2, 9
    assert summary["models"][ROBUST]["distractors:2"]["time_to_success_s_median"] is None
    assert "drop" not in base[NOMINAL]


def test_paired_drop_against_the_matched_nominal_control():
    models = summarize(_session(), _episodes())["models"]
    d = models["base"]["lighting:0.3"]["drop"]
    assert (d["n_pairs"], d["both"], d["only_nominal"], d["only_condition"], d["neither"]) == (10, 7, 2, 0, 1)
    assert (d["nominal_rate"], d["condition_rate"], d["drop"]) == pytest.approx((0.9, 0.7, 0.2))
    assert d["ci_low"] <= d["drop"] <= d["ci_high"]
    assert d["mcnemar_p"] == pytest.approx(0.5)  # 2 discordant pairs, both one way: 2 * 0.5^2
    d = models["base"]["lighting:0.8"]["drop"]
    assert (d["both"], d["only_nominal"], d["only_condition"], d["neither"]) == (3, 6, 1, 0)
    assert d["drop"] == pytest.approx(0.5) and d["ci_low"] <= 0.5 <= d["ci_high"]
    assert d["mcnemar_p"] == pytest.approx(0.125)  # P(X >= 6 | 7, 1/2) = 8/128, two-sided
    d = models["base"]["distractors:2"]["drop"]  # interrupted: only the 6 seeds both ran
    assert (d["n_pairs"], d["both"], d["only_nominal"]) == (6, 3, 3)
    assert (d["nominal_rate"], d["condition_rate"]) == pytest.approx((1.0, 0.5))
    d = models[ROBUST]["lighting:0.3"]["drop"]  # no discordant pair
    assert (d["drop"], d["mcnemar_p"], d["both"]) == (0.0, 1.0, 10) and d["ci_low"] < 0 < d["ci_high"]
    d = models[ROBUST]["distractors:2"]["drop"]  # 10/10 vs 0/10: every pair discordant, one way
    assert (d["only_nominal"], d["only_condition"], d["drop"]) == (10, 0, 1.0)
    assert -1.0 <= d["ci_low"] <= d["ci_high"] <= 1.0 and d["ci_low"] > 0.5
    assert d["mcnemar_p"] == pytest.approx(2 * 0.5 ** 10)


def test_newcombe_interval_matches_the_reference_example():
    """Cavo et al. (2012) complete response before / after consolidation therapy, the paired example
    of Fagerland, Lydersen & Laake (2014): 59 both, 6 only before, 16 only after, 80 neither. Expected
    interval -0.1186 to -0.0046 for p1 - p2 = -0.0621, as asserted by the tests of the authors' R
    package (github.com/ocbe-uio/contingencytables, tests for chapter 8,
    Newcombe_square_and_add_CI_paired_2x2); those digits were not re-read from the paper itself."""
    low, high = paired_difference_interval(59, 6, 16, 80)
    assert (round(low, 4), round(high, 4)) == (-0.1186, -0.0046)


def test_newcombe_interval_properties_on_every_small_table():
    """Brute force over every paired table of 1..8 pairs: the interval lies in [-1, 1], holds the
    estimate, and swapping the two members of each pair mirrors it."""
    for n in range(1, 9):
        for a in range(n + 1):
            for b in range(n + 1 - a):
                for c in range(n + 1 - a - b):
                    d = n - a - b - c
                    low, high = paired_difference_interval(a, b, c, d)
                    assert -1.0 <= low <= (b - c) / n <= high <= 1.0, (a, b, c, d)
                    assert paired_difference_interval(a, c, b, d) == pytest.approx((-high, -low), abs=1e-12)
    with pytest.raises(ValueError):
        paired_difference_interval(0, 0, 0, 0)


def test_missing_combinations_are_listed_and_bad_logs_refused():
    summary = summarize(_session(), _episodes())
    assert summary["missing"] == [{"model": "base", "condition": "distractors:2", "seed": s} for s in SEEDS[6:]]
    empty = summarize(_session(), [])
    assert len(empty["missing"]) == 2 * len(CONDITIONS) * len(SEEDS)
    s = empty["models"]["base"]["lighting:0.3"]
    assert (s["n"], s["success_rate"], s["ci_low"], s["drop"]["n_pairs"], s["drop"]["drop"]) == (0, None, None, 0, None)
    with pytest.raises(SessionFileError, match="twice"):
        summarize(_session(), _episodes() + [_episode("base", NOMINAL, 0, "success")])
    with pytest.raises(SessionFileError, match="not part of the session"):
        summarize(_session(conditions=CONDITIONS[:2]), _episodes())


def test_write_report_writes_summary_plots_and_html(session_dir):
    summary = write_report(session_dir)
    assert json.loads((session_dir / "summary.json").read_text()) == summary
    assert (session_dir / "plots" / SUCCESS_PLOT).stat().st_size > 0
    assert (session_dir / "plots" / "severity_lighting.png").stat().st_size > 0  # 0.3 and 0.8
    assert not (session_dir / "plots" / "severity_distractors.png").exists()  # one severity only
    page = (session_dir / "report.html").read_text()
    assert 'src="plots/success_by_condition.png"' in page and 'src="plots/severity_lighting.png"' in page
    assert f'src="{quote(NOMINAL_FRAME)}"' in page and f'src="{quote(LIGHT_FRAME)}"' in page
    assert "lighting:0.8_seed100" not in page  # named by an episode, absent on disk
    assert all(f"<td>{c}</td>" in page for c in CONDITIONS)
    assert "robust&lt;2&gt;" in page and ROBUST not in page
    assert "Missing episodes" in page and "106, 107, 108, 109" in page
    assert "<script" not in page and "http" not in page
    assert read_episodes(session_dir) == _episodes()  # the report leaves the log alone


def test_severity_plot_needs_two_severities_and_complete_sessions_list_nothing_missing(tmp_path):
    (tmp_path / SESSION_FILE).write_text(_session(conditions=CONDITIONS[:2], models=("base",)).to_json())
    log = EpisodeLog(tmp_path)
    for e in _episodes():
        if e.model == "base" and e.condition in CONDITIONS[:2]:
            log.append(e)
    summary = write_report(tmp_path)
    assert summary["missing"] == []
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [SUCCESS_PLOT]
    page = (tmp_path / "report.html").read_text()
    assert "Missing episodes" not in page and "severity_" not in page and "Example frames" not in page


def test_write_report_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_report(tmp_path)
    (tmp_path / SESSION_FILE).write_text(json.dumps({"format": "dynaflip_ros.ood_session/0"}))
    with pytest.raises(SessionFileError, match="format"):
        write_report(tmp_path)


def _report_verb(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dynaflip")
    report_cli.register(parser.add_subparsers(dest="verb"))
    return parser.parse_args(argv)


def test_report_verb_end_to_end(session_dir, capsys):
    args = _report_verb(["report", str(session_dir)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "model base" in out and f"model {ROBUST}" in out
    assert "lighting:0.8" in out and "4/10 40.0 % [" in out and "+50.0 pp [" in out and "control" in out
    assert "missing: 4 episodes" in out
    assert out.rstrip().endswith(f"report: {session_dir / 'report.html'}")
    (session_dir / SESSION_FILE).write_text("{not json")
    with pytest.raises(UserError, match="not JSON"):  # the CLI prints UserError as one line, exit 2
        args.func(args)
    with pytest.raises(FileNotFoundError):  # an OSError: one line, exit 2 as well
        args.func(_report_verb(["report", str(session_dir / "nowhere")]))


def test_importing_the_report_modules_leaves_matplotlib_alone():
    code = ("import sys, dynaflip_ros.eval.ood_report, dynaflip_ros.eval.report_cli; "
            "assert 'matplotlib' not in sys.modules and 'scipy' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
