"""`dynaflip results` (eval/results.py): the encoder comparison from result files on disk, built
here from hand-written sessions whose counts are known."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from dynaflip_ros.cli import main
from dynaflip_ros.episodes.record import holm_adjusted
from dynaflip_ros.eval.embedding_shift import ShiftReport, shift_stats
from dynaflip_ros.eval.ood_records import NOMINAL, OodEpisode, OodModel, OodSession, read_session
from dynaflip_ros.eval.results import (
    BEGIN_MARKER, END_MARKER, render_markdown, replace_section, seed_mean_interval, summarize_our_task,
)
from dynaflip_ros.eval.results_files import EXTENSION_DIR, ResultsError, parse_model_name

SEEDS = [100000, 100001, 100002, 100003]
EXTENSION_SEEDS = [100010, 100011]
CONDITIONS = [NOMINAL, "lighting:0.1"]


def _episode(model: str, condition: str, index: int, success: bool) -> OodEpisode:
    return OodEpisode(
        model=model, condition=condition, families=[] if condition == NOMINAL else ["lighting"],
        severity=0.0 if condition == NOMINAL else 0.1, seed=SEEDS[index], index=index,
        instruction="drop the red cube into the basin", target="red_cube", objects=["red_cube"],
        outcome="success" if success else "timeout", time_to_success_s=3.0 if success else None,
        episode_sim_time_s=15.0, latency_ms={}, models={}, camera={}, scene={}, safety={}, mode="lockstep",
        commit="abc")


def _shift_report(shift_seeds) -> ShiftReport:
    """A report whose lighting:0.1 output shifts are 0.25 / 0.5 / 0.0 (mean 0.25), all retrieved."""
    nominal = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    stats = shift_stats(nominal, nominal + np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]]))
    return ShiftReport(encoder={"weights_sha256": "e" * 64}, seeds=list(shift_seeds), conditions=["lighting:0.1"],
                       stats={"output": {"lighting:0.1": stats}})


def _write_recipe(root, recipe: str, outcomes: dict[tuple[int, str], list[bool]], complete: bool = True,
                  seeds=SEEDS, fingerprint: str = "f" * 64, policy_steps: int = 5000, shift_seeds=(7, 8, 9),
                  extension: dict[int, list[bool]] | None = None):
    """outcomes: {(training seed, condition): [success per episode seed]} (shorter lists = missing episodes);
    shift_seeds: the embedding-shift report's seeds (None: no shift.json); extension: {training seed:
    [success per EXTENSION_SEEDS seed]} of a nominal extension session (None: none)."""
    d = root / "our_task" / recipe
    d.mkdir(parents=True)
    train_seeds = sorted({s for s, _ in outcomes})
    models = {f"{recipe}_s{s}": OodModel("enc", f"pol{s}", encoder_sha256="e" * 64) for s in train_seeds}
    session = OodSession(models=models, conditions=CONDITIONS, seeds=list(seeds), commit="c0ffee", created_utc="t")
    (d / "session.json").write_text(session.to_json())
    lines = [_episode(f"{recipe}_s{s}", c, i, ok).to_json() for (s, c), oks in outcomes.items() for i, ok in enumerate(oks)]
    (d / "episodes.jsonl").write_text("".join(line + "\n" for line in lines))
    if extension is not None:
        (d / EXTENSION_DIR).mkdir()
        ext = OodSession(models=models, conditions=[NOMINAL], seeds=EXTENSION_SEEDS, commit="c0ffee", created_utc="t")
        (d / EXTENSION_DIR / "session.json").write_text(ext.to_json())
        lines = [dataclasses.replace(_episode(f"{recipe}_s{s}", NOMINAL, 0, ok), seed=EXTENSION_SEEDS[i], index=i).to_json()
                 for s, oks in extension.items() for i, ok in enumerate(oks)]
        (d / EXTENSION_DIR / "episodes.jsonl").write_text("".join(line + "\n" for line in lines))
    run = {"recipe": recipe, "steps": 150, "retrieval": {"transition_to_language_top1": 0.1, "transition_to_flow_top1": 0.5}}
    (d / "encoder.json").write_text(json.dumps({"weights_sha256": "e" * 64, "config": {"run": run}}))
    for s in train_seeds:
        (d / f"policy_s{s}.json").write_text(json.dumps({"train": {
            "total_steps": policy_steps, "dataset_fingerprint": fingerprint,
            "final_eval": {"val_joint_rmse_rad": 0.05, "val_tcp_rmse_m": 0.015}}}))
    (d / "probe.json").write_text(json.dumps({"groups": {"joints": {"r2": 0.9}, "objects": {"r2": 0.4}}}))
    if shift_seeds is not None:
        (d / "shift.json").write_text(json.dumps(_shift_report(shift_seeds).to_dict()))
    if complete:
        (d / "complete").write_text("2026-12-05T22:00:00Z\n")


T, F = True, False
CONTROL = {(0, NOMINAL): [T, T, T, F], (0, "lighting:0.1"): [T, F, F, F],
           (1, NOMINAL): [T, T, T, T], (1, "lighting:0.1"): [T, T, F, F]}
OTHER = {(0, NOMINAL): [T, F, F, F], (0, "lighting:0.1"): [F, F, F, F],
         (1, NOMINAL): [T, T, F, F], (1, "lighting:0.1"): [T, F, F, F]}


def test_seed_mean_interval_is_the_student_t_interval():
    mean, low, high = seed_mean_interval([0.5, 0.7, 0.6])
    half = 4.302652729911275 * 0.1 / math.sqrt(3)  # t_{0.975, 2} * s / sqrt(k)
    assert mean == pytest.approx(0.6) and low == pytest.approx(0.6 - half) and high == pytest.approx(0.6 + half)
    assert seed_mean_interval([0.9, 1.0])[2] == 1.0  # clipped
    assert seed_mean_interval([0.4]) == (0.4, None, None)
    assert seed_mean_interval([]) == (None, None, None)


def test_model_names_carry_recipe_and_training_seed():
    assert parse_model_name("no_mismatched_negatives_s2") == ("no_mismatched_negatives", 2)
    with pytest.raises(ResultsError, match="not <recipe>_s<training seed>"):
        parse_model_name("dynaflip")


def test_summary_pools_seeds_and_pairs_with_the_control(tmp_path):
    _write_recipe(tmp_path, "dynaflip", CONTROL)
    _write_recipe(tmp_path, "tcn", OTHER)
    s = summarize_our_task(tmp_path / "our_task", recipes=["dynaflip", "tcn", "clip"])
    ctl, tcn = s["recipes"]["dynaflip"]["conditions"], s["recipes"]["tcn"]["conditions"]
    assert (ctl[NOMINAL]["successes"], ctl[NOMINAL]["n"]) == (7, 8)
    assert ctl["lighting:0.1"]["seed_rates"] == {0: 0.25, 1: 0.5}
    assert ctl["lighting:0.1"]["seed_mean"] == pytest.approx(0.375)
    assert (tcn[NOMINAL]["successes"], tcn[NOMINAL]["n"]) == (3, 8)
    v = tcn[NOMINAL]["vs_control"]  # tcn first: 3/8 - 7/8, pairs (seed, episode) matched
    assert v["n_pairs"] == 8 and v["difference"] == pytest.approx(-0.5)
    assert (v["both"], v["only_first"], v["only_second"], v["neither"]) == (3, 0, 4, 1)
    assert v["ci_low"] < -0.5 < v["ci_high"] < 0
    assert "vs_control" not in ctl[NOMINAL]
    assert s["missing"] == ["clip: no results (run `scripts/bench_encoders.sh clip`)"] + [
        f"{r}: no nominal_extension/ (more nominal episodes; run `scripts/bench_encoders.sh {r}`)" for r in ("dynaflip", "tcn")]
    assert s["warnings"] == [] and s["conditions"] == CONDITIONS


def test_holm_adjustment_is_the_step_down_procedure():
    # sorted p 0.01 < 0.03 < 0.04, family of 3: 3 * 0.01, max(0.03, 2 * 0.03), max(0.06, 1 * 0.04)
    adj = holm_adjusted({"a": 0.04, "b": 0.01, "c": 0.03})
    assert adj == pytest.approx({"a": 0.06, "b": 0.03, "c": 0.06})
    assert holm_adjusted({"a": 0.6, "b": 0.5}) == pytest.approx({"a": 1.0, "b": 1.0})  # capped at 1
    assert holm_adjusted({"a": 0.2}) == {"a": 0.2} and holm_adjusted({}) == {}
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        holm_adjusted({"a": 1.5})


def test_mcnemar_p_is_holm_adjusted_over_the_recipes_in_a_condition(tmp_path):
    _write_recipe(tmp_path, "dynaflip", CONTROL)
    _write_recipe(tmp_path, "tcn", OTHER)
    _write_recipe(tmp_path, "clip", CONTROL)  # identical to the control: p = 1
    s = summarize_our_task(tmp_path / "our_task", recipes=["dynaflip", "tcn", "clip"])
    for c in CONDITIONS:
        tcn, clip = (s["recipes"][r]["conditions"][c]["vs_control"] for r in ("tcn", "clip"))
        assert clip["mcnemar_p"] == 1.0 and clip["holm_p"] == 1.0
        assert tcn["holm_p"] == pytest.approx(min(1.0, 2 * tcn["mcnemar_p"]))  # the smaller of two p
    assert tcn["mcnemar_p"] < 1.0  # lighting: 2 discordant pairs, both the control's
    md = render_markdown(s, "dynaflip results")
    assert f"p = {tcn['mcnemar_p']:.2g} (Holm {tcn['holm_p']:.2g})" in md


def test_nominal_extension_pools_with_the_session_and_keeps_its_stages(tmp_path):
    _write_recipe(tmp_path, "dynaflip", CONTROL, extension={0: [T, T], 1: [T, F]})
    _write_recipe(tmp_path, "tcn", OTHER, extension={0: [F, F], 1: [T]})  # tcn_s1's second episode not run
    s = summarize_our_task(tmp_path / "our_task", recipes=["dynaflip", "tcn"])
    ctl, tcn = (s["recipes"][r]["conditions"] for r in ("dynaflip", "tcn"))
    assert (ctl[NOMINAL]["successes"], ctl[NOMINAL]["n"]) == (10, 12)
    assert ctl[NOMINAL]["stages"] == {"session": {"successes": 7, "n": 8}, "extension": {"successes": 3, "n": 4}}
    assert ctl["lighting:0.1"]["stages"] == {"session": {"successes": 3, "n": 8}}  # only nominal is extended
    assert ctl[NOMINAL]["seed_rates"] == {0: 5 / 6, 1: 5 / 6}
    v = tcn[NOMINAL]["vs_control"]  # 11 pairs: the session's 8 + the extension's 3 both ran
    assert v["n_pairs"] == 11 and (v["only_first"], v["only_second"]) == (0, 6)
    assert s["missing"] == ["tcn: tcn_s1 nominal episode seed 100011"]
    assert s["recipes"]["tcn"]["extension_seeds"] == EXTENSION_SEEDS
    md = render_markdown(s, "x")
    assert "| tcn | 3/8 (38 %, 14–69) | 1/3 (33 %, 6–79) | 4/11 (36 %, 15–65) |" in md  # session, extension, pooled
    assert "| 4 (nominal +2) |" in md  # episode seeds of the runs table


@pytest.mark.parametrize("change, message", [
    (dict(conditions=[NOMINAL, "lighting:0.1"]), "conditions"),
    (dict(seeds=[100003, 100010]), r"episode seeds \[100003\] are the session's too"),
    (dict(options={"samples_per_chunk": 4}), "mode / options"),
])
def test_an_extension_that_does_not_extend_the_session_is_refused(tmp_path, change, message):
    _write_recipe(tmp_path, "dynaflip", CONTROL, extension={0: [T, T], 1: [T, F]})
    d = tmp_path / "our_task" / "dynaflip" / EXTENSION_DIR
    (d / "session.json").write_text(dataclasses.replace(read_session(d), **change).to_json())
    with pytest.raises(ResultsError, match=message):
        summarize_our_task(tmp_path / "our_task", recipes=["dynaflip"])


def test_an_extension_of_other_weights_is_refused(tmp_path):
    _write_recipe(tmp_path, "dynaflip", CONTROL, extension={0: [T, T], 1: [T, F]})
    d = tmp_path / "our_task" / "dynaflip" / EXTENSION_DIR
    session = read_session(d)
    session.models["dynaflip_s1"] = dataclasses.replace(session.models["dynaflip_s1"], policy_sha256="0" * 64)
    (d / "session.json").write_text(session.to_json())
    with pytest.raises(ResultsError, match="weights sha256"):
        summarize_our_task(tmp_path / "our_task", recipes=["dynaflip"])


def test_unfinished_runs_and_protocol_mismatches_are_listed(tmp_path):
    _write_recipe(tmp_path, "dynaflip", CONTROL)
    short = dict(OTHER)
    short[1, "lighting:0.1"] = [T, F]  # two episodes not run yet
    _write_recipe(tmp_path, "tcn", short, complete=False, fingerprint="0" * 64, policy_steps=3000)
    s = summarize_our_task(tmp_path / "our_task", recipes=["dynaflip", "tcn"])
    assert "tcn: not complete (no complete file)" in s["missing"]
    assert "tcn: tcn_s1 lighting:0.1 episode seed 100002" in s["missing"]
    assert "tcn: tcn_s1 lighting:0.1 episode seed 100003" in s["missing"]
    assert s["recipes"]["tcn"]["conditions"]["lighting:0.1"]["vs_control"]["n_pairs"] == 6
    text = " ".join(s["warnings"])
    assert "demo data fingerprint" in text and "policy steps" in text


def test_markdown_has_the_three_tables_and_regenerates_identically(tmp_path):
    _write_recipe(tmp_path, "dynaflip", CONTROL, extension={0: [T, T], 1: [T, T]})
    _write_recipe(tmp_path, "tcn", OTHER, extension={0: [T, T], 1: [T, T]})  # the same as the control
    s = summarize_our_task(tmp_path / "our_task", recipes=["dynaflip", "tcn"])
    md = render_markdown(s, "dynaflip results", "img/results_our_task.png")
    assert "| dynaflip | 11/12 (92 %, 65–99) | 3/8 (38 %, 14–69) |" in md  # nominal: 7/8 + 4/4
    assert "| tcn | -33 (" in md and "p = 0.12" in md  # exact McNemar on 0 vs 4 discordant pairs: 0.125
    assert "| dynaflip | 7/8 (88 %, 53–98) | 4/4 (100 %, 51–100) | 11/12 (92 %, 65–99) |" in md  # by stage
    assert "Missing runs: none." in md
    assert "| tcn | 0.90 | – |" in md  # probe R² of joints; the gripper group absent from the file
    doc = "# Results\n\nhand-written text\n"
    once = replace_section(doc, md)
    assert once.startswith(doc.rstrip("\n")) and BEGIN_MARKER in once and END_MARKER in once
    twice = replace_section(once + "\nmore hand-written text\n", md)
    assert twice == once + "\nmore hand-written text\n"
    with pytest.raises(ResultsError, match="one results marker"):
        replace_section(f"x\n{BEGIN_MARKER}\n", md)


def test_training_compute_is_read_from_the_manifests(tmp_path):
    def write(recipe, runs, policy_times):
        d = tmp_path / "our_task" / recipe
        for name, run in runs.items():
            d.joinpath(name).write_text(json.dumps({"weights_sha256": "e" * 64, "config": {"run": run}}))
        for seed, (train_s, embed_s) in enumerate(policy_times):
            policy = json.loads(d.joinpath(f"policy_s{seed}.json").read_text())
            policy["train"] |= {"train_time_s": train_s, "embedding_time_s": embed_s}
            d.joinpath(f"policy_s{seed}.json").write_text(json.dumps(policy))

    for recipe in ("dynaflip", "imagenet", "tcn"):
        _write_recipe(tmp_path, recipe, CONTROL)
    write("dynaflip", {"encoder_pre.json": {"recipe": "dynaflip", "steps": 500, "seconds_per_step": 1.8},
                       "encoder.json": {"recipe": "dynaflip", "steps": 150, "seconds_per_step": 2.0}},
          [(1200.0, 240.0), (1260.0, 60.0)])
    write("imagenet", {"encoder.json": {"recipe": "imagenet", "steps": 0, "trained": False}}, [(600.0, 0.0), (600.0, 0.0)])
    write("tcn", {"encoder.json": {"recipe": "tcn", "steps": 150, "seconds_per_step": math.nan}}, [])  # no step timed
    md = render_markdown(summarize_our_task(tmp_path / "our_task", recipes=["dynaflip", "imagenet", "tcn"]),
                         "dynaflip results")
    # 500 x 1.8 s = 15 min, 150 x 2 s = 5 min, (1200 + 240 + 1260 + 60) s = 46 min over 2 seeds
    assert "| dynaflip | 15 | 5 | 46 (2) | 66 |" in md
    assert "| imagenet | – | – | 20 (2) | 20 |" in md  # an untrained encoder costs nothing
    assert "| tcn | – | – | – (2) | – |" in md  # its files lack the times (NaN, absent): no total is made up


def test_safety_refusals_are_counted_per_episode_and_condition(tmp_path):
    _write_recipe(tmp_path, "dynaflip", CONTROL)
    d = tmp_path / "our_task" / "dynaflip"
    lines = d.joinpath("episodes.jsonl").read_text().splitlines()
    episodes = [json.loads(line) for line in lines]
    for e, count in zip(episodes, [0, 0, 0, 0, 5, 1, 0, 0]):  # dynaflip_s0: 4 nominal, then 4 lighting episodes
        e["safety"] = {"rejected": count}
    d.joinpath("episodes.jsonl").write_text("".join(json.dumps(e) + "\n" for e in episodes))
    s = summarize_our_task(tmp_path / "our_task", recipes=["dynaflip"])
    cs = s["recipes"]["dynaflip"]["conditions"]
    assert (cs[NOMINAL]["refused"], cs["lighting:0.1"]["refused"]) == (0, 2)  # episodes, not refused commands
    md = render_markdown(s, "dynaflip results")
    assert "| dynaflip | 0/8 (0 %, 0–32) | 2/8 (25 %, 7–59) |" in md


def test_cli_writes_the_section_and_check_detects_stale_files(tmp_path, capsys):
    _write_recipe(tmp_path, "dynaflip", CONTROL)
    doc, img = tmp_path / "docs" / "results.md", tmp_path / "docs" / "img"
    doc.parent.mkdir()
    doc.write_text("# Results\n")
    args = ["results", "--results-dir", str(tmp_path), "--doc", str(doc), "--img-dir", str(img)]
    assert main(args) == 0
    assert "![success by recipe and condition](img/results_our_task.png)" in doc.read_text()
    assert (img / "results_our_task.png").stat().st_size > 1000
    assert main(args + ["--check"]) == 0
    _write_recipe(tmp_path, "tcn", OTHER)
    assert main(args + ["--check"]) == 1
    assert "out of date" in capsys.readouterr().out


def test_a_model_of_another_recipe_is_refused(tmp_path):
    _write_recipe(tmp_path, "tcn", OTHER)
    (tmp_path / "our_task" / "tcn").rename(tmp_path / "our_task" / "clip")
    with pytest.raises(ResultsError, match="belongs to recipe 'tcn'"):
        summarize_our_task(tmp_path / "our_task", recipes=["clip"])


def test_the_committed_results_document_matches_the_committed_result_files():
    # docs/results.md's generated section is what `dynaflip results` makes of results/ (regenerate it
    # with `dynaflip results` after adding result files)
    root = Path(__file__).resolve().parents[1]
    assert main(["results", "--check", "--results-dir", str(root / "results"), "--doc", str(root / "docs" / "results.md"),
                 "--img-dir", str(root / "docs" / "img")]) == 0


def _write_metaworld(root, recipe: str, outcomes: dict[tuple[str, int], list[bool]], episodes: int = 3):
    d = root / "metaworld" / recipe
    d.mkdir(parents=True)
    tasks = sorted({t for t, _ in outcomes})
    seeds = [100000 + k for k in range(episodes)]
    (d / "run.json").write_text(json.dumps({
        "tasks": tasks, "n_demos": 25, "episode_seeds": seeds, "training_seeds": sorted({s for _, s in outcomes}),
        "mlp": {"steps": 3000}, "image_hw": [128, 128], "max_steps": 500, "encoder_sha256": "a" * 64}))
    lines = [json.dumps({"task": t, "training_seed": s, "seed": seeds[i], "success": ok, "steps": 10})
             for (t, s), oks in outcomes.items() for i, ok in enumerate(oks)]
    (d / "episodes.jsonl").write_text("".join(x + "\n" for x in lines))


def test_metaworld_runs_are_compared_task_by_task(tmp_path):
    from dynaflip_ros.eval.results import summarize_metaworld

    _write_metaworld(tmp_path, "dynaflip", {("reach-v3", 0): [T, T, T], ("reach-v3", 1): [T, T, F]})
    _write_metaworld(tmp_path, "random", {("reach-v3", 0): [F, F, T], ("reach-v3", 1): [F]})
    s = summarize_metaworld(tmp_path / "metaworld", recipes=["dynaflip", "random", "tcn"])
    reach = s["recipes"]["random"]["conditions"]["reach-v3"]
    assert (reach["successes"], reach["n"]) == (1, 4) and reach["seed_rates"] == {0: 1 / 3, 1: 0.0}
    assert reach["vs_control"]["n_pairs"] == 4 and reach["vs_control"]["difference"] == pytest.approx(-0.75)
    assert "random: reach-v3 training seed 1 episode seed 100002" in s["missing"]
    assert any(m.startswith("tcn: no MetaWorld run") for m in s["missing"])
    doc = tmp_path / "results.md"
    assert main(["results", "--results-dir", str(tmp_path), "--doc", str(doc), "--img-dir", str(tmp_path / "img")]) == 0
    text = doc.read_text()
    assert "### Frozen-encoder MetaWorld benchmark" in text and "| random | 1/4 (25 %" in text
    assert (tmp_path / "img" / "results_metaworld.png").exists()


def test_embedding_shift_table_and_its_missing_runs(tmp_path):
    _write_recipe(tmp_path, "dynaflip", CONTROL)
    _write_recipe(tmp_path, "tcn", OTHER, shift_seeds=None)
    _write_recipe(tmp_path, "clip", OTHER, shift_seeds=(7, 8, 10))
    _write_recipe(tmp_path, "dynamo", OTHER)
    shift = json.loads((tmp_path / "our_task" / "dynamo" / "shift.json").read_text())
    shift["encoder"]["weights_sha256"] = "d" * 64  # not the encoder the policies ran on
    (tmp_path / "our_task" / "dynamo" / "shift.json").write_text(json.dumps(shift))
    s = summarize_our_task(tmp_path / "our_task", recipes=["dynaflip", "tcn", "clip", "dynamo"])
    assert any(w.startswith("dynamo: shift.json measured encoder dddddddddddd, not the one") for w in s["warnings"])
    assert s["recipes"]["dynaflip"]["shift"]["output"]["lighting:0.1"]["mean"] == pytest.approx(0.25)
    assert "tcn: no shift.json (run `scripts/bench_encoders.sh tcn`)" in s["missing"]
    assert any(w.startswith("clip: shift seeds [7, 8, 10]") for w in s["warnings"])  # another seed list
    md = render_markdown(s, "dynaflip results")
    assert "| recipe | view | lighting:0.1 |" in md
    assert "| dynaflip | output | 0.25 (" in md and "; 3/3 |" in md
    assert "| tcn | output |" not in md
    # paired differences to the control: dynamo's shifts are the control's (same seeds) -> 0; clip's seeds differ
    assert "Embedding shift minus dynaflip's" in md and "| dynamo | output | +0.00 (+0.00 to +0.00) |" in md
    assert "| clip | output | +" not in md


def test_shift_difference_is_paired_over_seeds():
    from dynaflip_ros.eval.results import shift_difference

    mean, low, high = shift_difference({"per_seed": [1.0, 2.0, 3.0]}, {"per_seed": [0.5, 1.5, 2.0]})
    half = 4.302652729911275 * (1 / 12) ** 0.5 / 3 ** 0.5  # differences 0.5, 0.5, 1.0: s = sqrt(1/12)
    assert mean == pytest.approx(2 / 3) and (low, high) == pytest.approx((2 / 3 - half, 2 / 3 + half))
    with pytest.raises(ValueError):
        shift_difference({"per_seed": [1.0]}, {"per_seed": [1.0, 2.0]})


def test_metaworld_pools_every_task_only_for_complete_runs(tmp_path):
    from dynaflip_ros.eval.results import ALL_TASKS, summarize_metaworld

    _write_metaworld(tmp_path, "dynaflip", {("reach-v3", 0): [T, T, T], ("drawer-open-v3", 0): [T, F, F],
                                            ("reach-v3", 1): [T, F, F], ("drawer-open-v3", 1): [F, F, F]})
    _write_metaworld(tmp_path, "imagenet", {("reach-v3", 0): [T, F, F], ("drawer-open-v3", 0): [T, T, T],
                                            ("reach-v3", 1): [F, F, F], ("drawer-open-v3", 1): [F, F, F]})
    _write_metaworld(tmp_path, "random", {("reach-v3", 0): [T, T, T], ("drawer-open-v3", 0): [T]})  # unfinished
    s = summarize_metaworld(tmp_path / "metaworld", recipes=["dynaflip", "imagenet", "random"])
    ctl, img = s["recipes"]["dynaflip"]["conditions"][ALL_TASKS], s["recipes"]["imagenet"]["conditions"][ALL_TASKS]
    assert (ctl["successes"], ctl["n"]) == (5, 12) and ctl["seed_rates"] == {0: 4 / 6, 1: 1 / 6}
    assert (img["successes"], img["n"]) == (4, 12)
    v = img["vs_control"]  # paired over (training seed, task, episode seed)
    assert v["n_pairs"] == 12 and (v["only_first"], v["only_second"]) == (2, 3)
    assert ALL_TASKS not in s["recipes"]["random"]["conditions"]


def test_the_plot_splits_baselines_and_ablations_into_panels_led_by_the_control():
    from dynaflip_ros.encoder.recipes import RECIPES
    from dynaflip_ros.eval.results_plot import plot_panels

    assert [r.name for r in RECIPES.values() if r.kind == "method"] == ["dynaflip"]
    everything = list(RECIPES)
    panels = plot_panels(everything, "dynaflip")
    assert [kind for kind, _ in panels] == ["baseline", "ablation"]
    assert panels[0][1] == ["dynaflip", "tcn", "clip", "dynamo", "imagenet", "random"]
    assert panels[1][1] == ["dynaflip", "area_only", "no_flow", "no_language", "no_aux", "no_mismatched_negatives"]
    assert plot_panels(["dynaflip", "random", "new_recipe"], "dynaflip") == [("baseline", ["dynaflip", "random", "new_recipe"])]
    assert plot_panels(["dynaflip", "no_aux"], "dynaflip") == [("ablation", ["dynaflip", "no_aux"])]
    assert plot_panels(["dynaflip"], "dynaflip") == [("baseline", ["dynaflip"])]
    assert plot_panels(["tcn", "no_aux"], "dynaflip") == [("baseline", ["tcn"]), ("ablation", ["no_aux"])]
