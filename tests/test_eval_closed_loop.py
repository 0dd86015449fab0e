"""Lock-step evaluation (dynaflip_ros/eval/closed_loop.py) with a tiny fake encoder and fake
policies on a real MuJoCo cell: outcomes (success, wrong_object, timeout, safety_stop), the
instruction in every observation, the instruction-swap pairs and their accounting, the report.

The fake policies hold the arm; an "oracle" reads the instruction, finds the object it names
among the objects on the table (`task.instructions.instruction_paraphrases`) and teleports that
object into the basin (`env.place_object`), so outcomes are decided within one 0.1 s step."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("mujoco")

from dynaflip_ros.configs.sim import SimConfig  # noqa: E402
from dynaflip_ros.episodes.protocol import Outcome  # noqa: E402
from dynaflip_ros.episodes.record import EvalReport, format_pair, format_summary  # noqa: E402
from dynaflip_ros.eval.closed_loop import evaluate_in_sim, run_episode, run_swap_pair, swap_targets  # noqa: E402
from dynaflip_ros.policies.base import ActionChunk  # noqa: E402
from dynaflip_ros.sim.pick_into_sink import PickIntoSinkEnv  # noqa: E402
from dynaflip_ros.sim.rollout import SimRunner  # noqa: E402
from dynaflip_ros.task.instructions import instruction_paraphrases, referring_expressions  # noqa: E402


class FakeEncoder:
    manifest = SimpleNamespace(weights_sha256="e" * 64)

    def embed(self, images: np.ndarray) -> np.ndarray:
        return np.zeros((len(images), 8), np.float32)  # (B, D)


class FakePolicy:
    """Holds the arm (every action = the current state). `pick(instruction)` -> the name of an
    object to teleport into the basin at the first chunk (None: nothing). Records the
    instructions it saw and the layout of the table at each reset."""

    weights_sha256 = "p" * 64

    def __init__(self, env: PickIntoSinkEnv, pick=None, on_first_chunk=None) -> None:
        self.env, self.pick, self.on_first_chunk = env, pick, on_first_chunk
        self.instructions: list[str | None] = []
        self.layouts: list[dict[str, np.ndarray]] = []
        self._first = True

    def reset(self, seed=None) -> None:
        self._first = True
        self.layouts.append({n: self.env.object_pose(n) for n in self.env.episode.objects})

    def observe(self, obs) -> None:
        self.instructions.append(obs.instruction)

    def predict_action_chunk(self, obs) -> ActionChunk:
        self.instructions.append(obs.instruction)
        if self._first:
            self._first = False
            name = self.pick(obs.instruction) if self.pick else None
            if name is not None:
                x, y = self.env.config.sink_center_xy_m
                self.env.place_object(name, x, y)
            if self.on_first_chunk is not None:
                self.on_first_chunk()
        return ActionChunk(np.tile(obs.state, (8, 1)), obs.stamp_s + 0.1, 0.1)  # (8, 7)


def named_object(env: PickIntoSinkEnv, instruction: str) -> str:
    """The object of the table that `instruction` names (exactly one)."""
    objects = env.episode.objects
    hits = [n for n in objects if instruction in instruction_paraphrases(n, objects)]
    assert len(hits) == 1, (instruction, objects)
    return hits[0]


@pytest.fixture(scope="module")
def env():
    e = PickIntoSinkEnv(SimConfig(image_hw=(16, 16)))
    yield e
    e.close()


@pytest.fixture()
def runner(env):
    env.arm.rearm()  # a test may leave a protective stop behind
    return SimRunner(env)


def test_success_and_the_instruction_reaches_the_policy(env, runner):
    info = runner.reset(seed=3)
    policy = FakePolicy(env, pick=lambda text: named_object(env, text))
    record, samples = run_episode(runner, FakeEncoder(), policy, episode=5, max_duration_s=2.0)
    assert record.outcome is Outcome.SUCCESS and record.time_to_success_s == pytest.approx(0.1, abs=0.01)
    assert record.episode == 5 and record.seed == 3 and record.target == info.object_name
    assert record.objects == list(info.objects) and record.objects[0] == info.object_name
    assert record.instruction == info.instruction and set(policy.instructions) == {info.instruction}
    assert record.control_steps == 1 and set(samples) == {"encode", "policy"}


def test_a_wrong_object_in_the_sink_ends_the_episode(env, runner):
    info = runner.reset(seed=4)
    x, y = env.config.sink_center_xy_m
    env.place_object(info.distractors[0], x, y)
    record, _ = run_episode(runner, FakeEncoder(), FakePolicy(env), max_duration_s=3.0)
    assert record.outcome is Outcome.WRONG_OBJECT and record.control_steps == 1
    assert record.time_to_success_s is None
    # the policy putting another object than the named one into the basin: wrong_object too
    info = runner.reset(seed=4)
    record, _ = run_episode(runner, FakeEncoder(), FakePolicy(env, pick=lambda text: info.distractors[-1]),
                            max_duration_s=3.0)
    assert record.outcome is Outcome.WRONG_OBJECT and record.episode_sim_time_s < 0.2


def test_timeout_and_safety_stop(env, runner):
    runner.reset(seed=5)
    record, _ = run_episode(runner, FakeEncoder(), FakePolicy(env), max_duration_s=0.5)
    assert record.outcome is Outcome.TIMEOUT and record.control_steps == 5
    runner.reset(seed=5)
    record, _ = run_episode(runner, FakeEncoder(), FakePolicy(env, on_first_chunk=env.arm.inject_protective_stop),
                            max_duration_s=3.0)
    assert record.outcome is Outcome.SAFETY_STOP and record.episode_sim_time_s < 0.5
    assert "protective" in record.safety["halt_reason"]


def test_swap_targets_are_drawn_by_the_seed_and_named_unambiguously():
    objects = ["red cube", "green cylinder", "green cube"]  # two green, two cubes
    a = swap_targets(11, objects)
    assert a == swap_targets(11, objects)  # deterministic
    assert len({t for t, _ in a}) == 2 and all(t in objects for t, _ in a)
    for target, text in a:
        assert text in instruction_paraphrases(target, objects)
        assert not any(text in instruction_paraphrases(o, objects) for o in objects if o != target)
    pairs = {tuple(t for t, _ in swap_targets(s, objects)) for s in range(40)}
    assert len(pairs) > 3  # the seed changes the choice
    with pytest.raises(ValueError, match="at least 2"):
        swap_targets(0, ["red cube"])
    assert referring_expressions("red cube", objects)  # the catalogue knows the names used


def test_swap_pair_same_layout_two_instructions(env, runner):
    oracle = FakePolicy(env, pick=lambda text: named_object(env, text))
    pair, samples = run_swap_pair(runner, FakeEncoder(), oracle, pair=2, seed=7, max_duration_s=2.0)
    assert [r.episode for r in pair.runs] == [4, 5] and len(samples) == 2
    assert pair.seed == 7 and all(sorted(r.objects) == sorted(pair.objects) for r in pair.runs)
    assert [r.objects[0] for r in pair.runs] == [r.target for r in pair.runs]  # the target first
    (t1, i1), (t2, i2) = swap_targets(7, pair.objects)
    assert [r.target for r in pair.runs] == [t1, t2] and [r.instruction for r in pair.runs] == [i1, i2]
    assert t1 != t2 and pair.correct and [r.outcome for r in pair.runs] == [Outcome.SUCCESS] * 2
    # both runs started from exactly the layout of the seed's own scene
    scene = env.reset(seed=7)
    reference = {n: env.object_pose(n) for n in scene.objects}
    for layout in oracle.layouts[-2:]:
        assert set(layout) == set(reference)
        for name, pose in layout.items():
            np.testing.assert_allclose(pose[:3], reference[name][:3], atol=1e-9)

    # a policy that ignores the instruction and always picks the same object: at most one run
    # succeeds, so the pair does not count
    blind = FakePolicy(env, pick=lambda text: sorted(env.episode.objects)[0])
    pair, _ = run_swap_pair(runner, FakeEncoder(), blind, pair=0, seed=7, max_duration_s=2.0)
    outcomes = sorted(r.outcome.value for r in pair.runs)
    assert not pair.correct and outcomes in (["success", "wrong_object"], ["wrong_object", "wrong_object"])
    text = format_pair(pair, 0, 1, 0)
    assert "swap pair 1/1 seed=7" in text and "not correct" in text and t1 in text


def test_evaluate_in_sim_report_rates_and_swap_accuracy(env, tmp_path):
    calls = []

    def pick(text):  # the named object, except in episode 1: nothing (a timeout)
        calls.append(text)
        return None if len(calls) == 2 else named_object(env, text)

    policy = FakePolicy(env, pick=pick)
    report = evaluate_in_sim(FakeEncoder(), policy, 3, seed=20, max_duration_s=0.5, env=env, swap_pairs=2)
    assert isinstance(report, EvalReport) and len(report.episodes) == 3 and len(report.pairs) == 2
    assert [e.seed for e in report.episodes] == [20, 21, 22] and [p.seed for p in report.pairs] == [20, 21]
    d = json.loads(report.write_json(tmp_path / "r.json").read_text())
    s = d["summary"]
    for key in ("success_rate", "wrong_object_rate", "timeout_rate", "safety_stop_rate",
                "success_ci95", "wrong_object_ci95", "timeout_ci95", "swap_accuracy", "swap_accuracy_ci95",
                "swap_pairs", "by_target"):
        assert key in s, key
    assert s["episodes"] == 3 and s["success_rate"] == pytest.approx(2 / 3) and s["timeout_rate"] == pytest.approx(1 / 3)
    assert s["wrong_object_rate"] == 0.0 and s["outcomes"] == {"success": 2, "timeout": 1}
    assert s["swap_pairs"] == 2 and s["swap_pairs_correct"] == 2 and s["swap_accuracy"] == 1.0
    assert s["swap_accuracy_ci95"][1] == 1.0 and s["swap_accuracy_ci95"][0] < 0.5
    assert sum(t["episodes"] for t in s["by_target"].values()) == 3
    assert set(s["by_target"]) == {e["target"] for e in d["episodes"]}
    for e in d["episodes"]:
        assert {"instruction", "target", "objects", "outcome"} <= set(e) and e["objects"][0] == e["target"]
    assert [p["correct"] for p in d["pairs"]] == [True, True] and len(d["pairs"][0]["runs"]) == 2
    assert d["config"] == {} and d["models"]["encoder"] == "e" * 64
    assert "instruction swap: 2/2 pairs correct" in format_summary(d)
    with pytest.raises(ValueError):
        evaluate_in_sim(FakeEncoder(), policy, 0, env=env)


class GripperPolicy(FakePolicy):
    """Holds the arm and commands the gripper by schedule: `closed(t_s)` -> 0 open / 1 closed."""

    def __init__(self, env, closed) -> None:
        super().__init__(env)
        self.closed = closed

    def predict_action_chunk(self, obs) -> ActionChunk:
        times = obs.stamp_s + 0.1 * np.arange(1, 9)
        actions = np.tile(obs.state, (8, 1))
        actions[:, 6] = [self.closed(t) for t in times]
        return ActionChunk(actions.astype(np.float32), obs.stamp_s + 0.1, 0.1)


def test_grasp_monitor_counts_closings_and_measures_the_first(env, runner):
    info = runner.reset(seed=6)
    expected = float(np.linalg.norm(env.tcp_position()[:2] - env.grasp_point(info.object_name)[:2]))
    record, _ = run_episode(runner, FakeEncoder(), GripperPolicy(env, lambda t: 1.0), max_duration_s=1.5)
    assert record.grasps == 1  # the arm held still: the TCP is where it was at the reset
    assert record.first_grasp_xy_error_m == pytest.approx(expected, abs=2e-3) and expected > 0.05
    runner.reset(seed=6)
    t0 = runner.now_s
    twice = GripperPolicy(env, lambda t: 1.0 if (t - t0) < 1.0 or (t - t0) > 2.5 else 0.0)
    record, _ = run_episode(runner, FakeEncoder(), twice, replan_steps=1, max_duration_s=4.0)
    assert record.grasps == 2 and record.first_grasp_xy_error_m == pytest.approx(expected, abs=2e-3)
    runner.reset(seed=6)
    record, _ = run_episode(runner, FakeEncoder(), FakePolicy(env), max_duration_s=1.0)
    assert record.grasps == 0 and record.first_grasp_xy_error_m is None
    report = EvalReport(mode="lockstep")
    report.add(record)
    assert report.summary()["first_grasp_xy_error_m"] is None


def test_grasp_monitor_keeps_the_error_at_the_end_of_the_approach():
    """approach_end_xy_error_m is the xy error lead_steps updates before the first closing; None
    when the closing came sooner; later updates change neither figure."""
    from dynaflip_ros.eval.closed_loop import GraspMonitor

    class Scene:
        x = 0.0

        def tcp_position(self):
            return np.array([self.x, 0.0, 0.3])

        def grasp_point(self):
            return np.array([0.0, 0.0, 0.0])

    scene, monitor = Scene(), GraspMonitor(lead_steps=6)
    for k in range(10):  # approach: 10, 9, ... 1 cm from the grasp point, gripper open
        scene.x = 0.01 * (10 - k)
        monitor.update(0.0, scene)
    scene.x = 0.004
    monitor.update(0.5, scene)  # closing: 6 updates earlier (k = 4) the TCP was 0.06 m away
    assert monitor.first_xy_error_m == pytest.approx(0.004)
    assert monitor.approach_end_xy_error_m == pytest.approx(0.06)
    scene.x = 0.2
    monitor.update(0.0, scene), monitor.update(0.5, scene)
    assert monitor.grasps == 2 and monitor.approach_end_xy_error_m == pytest.approx(0.06)
    early = GraspMonitor(lead_steps=6)
    for g in (0.0, 0.0, 0.5):
        early.update(g, scene)
    assert early.first_xy_error_m == pytest.approx(0.2) and early.approach_end_xy_error_m is None


def test_grasp_point_follows_the_object_pose(env, runner):
    from scipy.spatial.transform import Rotation

    runner.reset(seed=7, object_name="white mug")
    env.place_object("white mug", 0.3, -0.2, 0.7)
    pose = env.object_pose("white mug")
    offset = env.object_specs["white mug"].grasp_offset_m
    np.testing.assert_allclose(env.grasp_point("white mug"),
                               pose[:3] + Rotation.from_euler("z", 0.7).apply(offset), atol=1e-6)


def test_grasp_error_summary_splits_successes():
    from dynaflip_ros.episodes.record import EpisodeRecord, grasp_error_summary

    recs = [EpisodeRecord(episode=i, seed=i, outcome=o, grasps=g, first_grasp_xy_error_m=e,
                          approach_end_xy_error_m=a) for i, (o, g, e, a) in
            enumerate([("success", 1, 0.004, 0.01), ("success", 1, 0.006, None), ("timeout", 2, 0.03, 0.03),
                       ("timeout", 0, None, None)])]
    g = grasp_error_summary(recs)
    assert g["approach_end_median"] == pytest.approx(0.02)
    assert g["n"] == 3 and g["median"] == pytest.approx(0.006) and g["regrasped"] == 1
    assert g["n_success"] == 2 and g["median_success"] == pytest.approx(0.005)
    assert g["n_failure"] == 1 and g["median_failure"] == pytest.approx(0.03)
    text = format_summary({"mode": "lockstep", "summary": {**EvalReport(mode="lockstep").summary(),
                                                           "first_grasp_xy_error_m": g}})
    assert "first grasp, TCP to the target's grasp point (xy): median 0.6 cm" in text
    assert "0.6 s before that closing (the end of the approach): median 2.0 cm" in text
    assert recs[0].to_dict()["approach_end_xy_error_m"] == 0.01
