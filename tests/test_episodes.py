"""The episode protocol, its state machine and the evaluation record (dynaflip_ros/episodes; ROS-free)."""
import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dynaflip_ros.episodes.gate import EpisodeGate, Transition
from dynaflip_ros.episodes.protocol import (
    PROTOCOL, CommandKind, EpisodeCommand, EpisodeStatus, Outcome, Phase, ProtocolError,
)
from dynaflip_ros.episodes.record import (
    LATENCY_STAGES, EpisodeRecord, EvalReport, SwapPairRecord, counter_delta, format_episode, format_pair,
    format_summary, latency_summary, wilson_interval,
)


class FakeClock:
    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# ---------------------------------------------------------------------------------- protocol
def test_command_and_status_round_trip():
    c = EpisodeCommand.reset(3, 7, object_name="red cube", instruction="Pick the red cube", condition="nominal",
                             stamp_s=12.5)
    assert EpisodeCommand.from_json(c.to_json()) == c and c.kind is CommandKind.RESET
    assert json.loads(c.to_json())["protocol"] == PROTOCOL
    assert EpisodeCommand.reset(4).seed == 4  # the seed defaults to the episode id
    s = EpisodeStatus(source="sim_cell", phase="running", episode=3, outcome="success", seed=7,
                      success_time_s=4.25, safety={"accepted": 10}, halted=False, episode_sim_time_s=5.0)
    back = EpisodeStatus.from_json(s.to_json())
    assert back == s and back.running and back.succeeded and back.phase is Phase.RUNNING


def test_non_finite_floats_travel_as_null():
    s = EpisodeStatus(source="x", phase="idle", sim_time_s=float("nan"))
    assert json.loads(s.to_json())["sim_time_s"] is None
    assert EpisodeStatus.from_json(s.to_json()).sim_time_s is None


@pytest.mark.parametrize("text, match", [
    ('{"cmd": "reset", "episode": 0, "seed": 3}', "protocol None"),  # the untyped version-1 form
    (json.dumps({"protocol": "dynaflip_ros.episode/1", "kind": "stop", "stamp_s": 0}), "episode/1"),
    (json.dumps({"protocol": "dynaflip_ros.episode/2", "kind": "stop", "stamp_s": 0}), "episode/2"),
    ("not json", "invalid JSON"),
    ("[1, 2]", "JSON object"),
    (json.dumps({"protocol": PROTOCOL, "kind": "jump", "stamp_s": 0}), "kind"),
    (json.dumps({"protocol": PROTOCOL, "kind": "reset", "stamp_s": 0}), "needs an episode"),
    (json.dumps({"protocol": PROTOCOL, "kind": "reset", "episode": -1, "stamp_s": 0}), ">= 0"),
    (json.dumps({"protocol": PROTOCOL, "kind": "reset", "episode": True, "stamp_s": 0}), "int"),
    (json.dumps({"protocol": PROTOCOL, "kind": "reset", "episode": 1, "seed": "3", "stamp_s": 0}), "seed"),
    (json.dumps({"protocol": PROTOCOL, "kind": "stop", "stamp_s": 0, "extra": 1}), "unknown field"),
    (json.dumps({"protocol": PROTOCOL, "kind": "stop"}), "missing field 'stamp_s'"),
])
def test_malformed_commands_are_refused_with_a_reason(text, match):
    with pytest.raises(ProtocolError, match=match):
        EpisodeCommand.from_json(text)


@pytest.mark.parametrize("patch, match", [
    ({"phase": "paused"}, "phase|Phase"),
    ({"outcome": "win"}, "Outcome"),
    ({"halted": 1}, "halted must be bool"),
    ({"safety": [1, 2]}, "safety must be mapping"),
    ({"reset_stamp_s": "now"}, "reset_stamp_s must be float"),
    ({"episode": -2}, "episode"),
])
def test_malformed_statuses_are_refused(patch, match):
    d = json.loads(EpisodeStatus(source="sim_cell", phase="running", episode=1).to_json())
    d.update(patch)
    with pytest.raises(ProtocolError, match=match):
        EpisodeStatus.from_json(json.dumps(d))


@given(st.dictionaries(st.sampled_from(["protocol", "kind", "episode", "seed", "stamp_s", "object_name", "x"]),
                       st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=True),
                                 st.text(max_size=5), st.just(PROTOCOL), st.sampled_from(["reset", "stop"]))))
def test_any_command_text_either_parses_whole_or_raises_protocol_error(d):
    """A follower fed arbitrary command JSON either gets a valid command or a ProtocolError,
    and its gate changes only on a valid one."""
    gate = EpisodeGate(clock=FakeClock())
    gate.follow(EpisodeStatus(source="sim_cell", phase="running", episode=0))
    before = gate.state()
    try:
        cmd = EpisodeCommand.from_json(json.dumps(d))
    except ProtocolError:
        assert gate.state() == before
        return
    assert cmd.kind in (CommandKind.RESET, CommandKind.STOP) and math.isfinite(cmd.stamp_s)
    if cmd.kind is CommandKind.RESET:
        assert isinstance(cmd.episode, int) and cmd.episode >= 0


# ---------------------------------------------------------------------------------- gate (owner)
def test_owner_gate_begin_succeed_end():
    clock = FakeClock(100.0)
    g = EpisodeGate(clock=clock)
    assert g.next_episode() == 0 and not g.state().running
    assert g.begin(0, 11, reset_stamp_s=5.0, object_name="red cube", instruction="Pick the red cube")
    assert not g.begin(0, 11, reset_stamp_s=6.0)  # the same episode again: idempotent
    assert g.state().reset_stamp_s == 5.0 and g.is_running(0, 11) and not g.is_running(0, 12)
    clock.t = 103.5
    assert g.succeed(2.0) and not g.succeed(3.0)  # only the first success counts
    status = g.status("sim_cell", 7.0, sim_time_s=9.0, halted=False)
    assert status.succeeded and status.running and status.success_time_s == 2.0
    assert status.episode_wall_time_s == pytest.approx(3.5) and status.object_name == "red cube"
    assert g.end(Outcome.STOPPED) and not g.end(Outcome.STOPPED)
    assert g.state().outcome is Outcome.SUCCESS  # a success stays a success when stopped
    assert g.next_episode() == 1
    g.begin(1, None, reset_stamp_s=8.0)
    assert g.end(Outcome.HALTED, "protective stop")
    s = g.state()
    assert s.outcome is Outcome.SAFETY_STOP and s.reason == "protective stop" and not s.running
    assert not g.succeed(1.0)  # no success outside an episode


def test_owner_gate_decides_wrong_object_once():
    g = EpisodeGate(clock=FakeClock())
    g.begin(0, 3, 1.0, object_name="red cube", objects=["red cube", "blue bar"], instruction="put the red cube in the sink")
    assert g.decide("wrong_object", 2.5) and not g.decide(Outcome.SUCCESS, 3.0)  # the first decision stays
    status = g.status("sim_cell", 5.0)
    assert status.outcome is Outcome.WRONG_OBJECT and status.success_time_s is None and status.decided
    assert status.objects == ("red cube", "blue bar") and status.running
    with pytest.raises(ValueError, match="success or wrong_object"):
        g.decide(Outcome.TIMEOUT, 1.0)
    g.end(Outcome.STOPPED)
    assert g.state().outcome is Outcome.WRONG_OBJECT
    follower = EpisodeGate(clock=FakeClock())
    follower.follow(EpisodeStatus(source="sim_cell", phase="running", episode=1, objects=["a", "b"], instruction="x"))
    assert follower.state().objects == ("a", "b") and follower.state().instruction == "x"


def test_outcomes_and_the_objects_field_on_the_wire():
    assert [o.value for o in Outcome] == ["success", "wrong_object", "timeout", "safety_stop", "stopped", "error"]
    assert Outcome.HALTED is Outcome.SAFETY_STOP and Outcome("safety_stop") is Outcome.HALTED
    for outcome in ("wrong_object", "safety_stop"):
        s = EpisodeStatus(source="sim_cell", phase="running", episode=0, outcome=outcome, objects=["x", "y"])
        back = EpisodeStatus.from_json(s.to_json())
        assert back == s and back.outcome.value == outcome and back.objects == ("x", "y") and back.decided
    assert not EpisodeStatus(source="s", phase="running", outcome=None).decided
    d = json.loads(EpisodeStatus(source="s", phase="idle").to_json())
    for bad in (["a", 1], "a,b"):
        with pytest.raises(ProtocolError, match="objects must be strlist"):
            EpisodeStatus.from_json(json.dumps({**d, "objects": bad}))
    with pytest.raises(ProtocolError, match="Outcome"):
        EpisodeStatus.from_json(json.dumps({**d, "outcome": "halted"}))  # the version-2 name
    with pytest.raises(ProtocolError, match="instruction"):
        EpisodeCommand.reset(0, instruction="  ")
    c = EpisodeCommand.reset(2, 5, instruction="drop the red block into the basin")
    assert EpisodeCommand.from_json(c.to_json()).instruction == "drop the red block into the basin"


def test_a_new_reset_replaces_the_running_episode():
    g = EpisodeGate(clock=FakeClock())
    g.begin(0, 0, 1.0)
    g.succeed(1.0)
    assert g.begin(1, 1, 2.0)
    s = g.state()
    assert s.running and s.episode == 1 and s.outcome is None and s.success_time_s is None


# ---------------------------------------------------------------------------------- gate (follower)
def _status(episode, phase, reset_stamp_s=0.0):
    return EpisodeStatus(source="sim_cell", phase=phase, episode=episode, reset_stamp_s=reset_stamp_s)


def test_follower_waits_for_the_acknowledged_reset():
    g = EpisodeGate(clock=FakeClock())
    assert g.follow(_status(0, "running", 5.0)) is Transition.START  # a late joiner starts
    assert g.admits(5.0) and not g.admits(4.0)
    g.used(6.0)
    assert not g.admits(6.0) and g.admits(6.1)  # only newer data
    assert g.expect(EpisodeCommand.reset(0, stamp_s=6.0)) is Transition.NONE  # duplicate
    assert g.expect(EpisodeCommand.reset(1, stamp_s=10.0)) is Transition.STOP
    assert not g.admits(11.0)
    assert g.follow(_status(0, "running", 5.0)) is Transition.NONE  # an old status in flight
    assert g.follow(_status(1, "running", 9.0)) is Transition.NONE  # older than the command
    assert g.expect(EpisodeCommand.reset(1, stamp_s=10.5)) is Transition.NONE  # re-sent
    assert g.follow(_status(1, "running", 10.2)) is Transition.START
    assert g.admits(10.2) and not g.admits(10.1)
    assert g.follow(_status(1, "idle", 10.2)) is Transition.STOP
    assert g.follow(_status(1, "running", 10.2)) is Transition.NONE  # a stopped episode stays stopped
    assert g.follow(_status(7, "idle")) is Transition.NONE
    assert g.expect(EpisodeCommand.stop()) is Transition.STOP and not g.state().running


# ---------------------------------------------------------------------------------- record
def test_latency_summary_percentiles_and_order():
    samples = {"policy": list(range(1, 101)), "capture": [10.0] * 5, "zeta_custom": [1.0], "encode": []}
    s = latency_summary(samples)
    assert list(s) == ["capture", "policy", "zeta_custom"]  # pipeline order, custom stages last, empty dropped
    assert s["policy"]["n"] == 100
    assert s["policy"]["p50"] == pytest.approx(np.percentile(np.arange(1, 101), 50))
    assert s["policy"]["p95"] == pytest.approx(95.05) and s["policy"]["p99"] == pytest.approx(99.01)
    assert s["policy"]["max"] == 100 and s["capture"]["mean"] == 10.0
    assert LATENCY_STAGES[0] == "capture" and LATENCY_STAGES[-1] == "command"


def test_wilson_interval_matches_the_closed_form():
    for k, n in ((16, 20), (0, 10), (10, 10), (14, 20)):
        z = 1.959963984540054
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        lo, hi = wilson_interval(k, n)
        assert lo == pytest.approx(centre - half, abs=1e-9) and hi == pytest.approx(centre + half, abs=1e-9)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert [round(100 * v) for v in wilson_interval(16, 20)] == [58, 92]
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_counter_delta():
    start = {"safety": {"accepted": 10, "halted": False}, "servo": {"jitter_ms": 1.5, "ticks": 100}}
    end = {"safety": {"accepted": 25, "halted": True}, "servo": {"jitter_ms": 2.5, "ticks": 350}, "new": 3}
    assert counter_delta(start, end) == {"safety": {"accepted": 15, "halted": True},
                                         "servo": {"jitter_ms": 2.5, "ticks": 250}, "new": 3}
    assert counter_delta(None, {"a": 1}) == {"a": 1}


def test_report_summary_keys_json_and_text(tmp_path):
    report = EvalReport(mode="lockstep", models={"encoder": "e" * 64, "policy": "p" * 64}, config={"episodes": 3})
    report.add(EpisodeRecord(0, 100, Outcome.SUCCESS, target="red cube", objects=("red cube", "blue bar"),
                             instruction="put the red cube in the sink", time_to_success_s=4.0,
                             episode_sim_time_s=4.0, wall_time_s=1.0), {"encode": [10.0, 12.0], "policy": [50.0]})
    report.add(EpisodeRecord(1, 101, "timeout", target="blue bar", episode_sim_time_s=15.0), {"encode": [14.0]})
    report.add(EpisodeRecord(2, 102, Outcome.HALTED, target="red cube"))
    s = report.summary()
    assert set(s) == {"episodes", "success_rate", "success_ci95", "wrong_object_rate", "wrong_object_ci95",
                      "timeout_rate", "timeout_ci95", "safety_stop_rate", "safety_stop_ci95", "outcomes", "by_target",
                      "swap_pairs", "swap_pairs_correct", "swap_accuracy", "swap_accuracy_ci95", "latency_ms", "action_age_ms",
                      "first_grasp_xy_error_m"}
    assert s["first_grasp_xy_error_m"] is None  # no episode recorded a grasp
    assert s["episodes"] == 3 and s["success_rate"] == pytest.approx(1 / 3)
    assert s["outcomes"] == {"success": 1, "timeout": 1, "safety_stop": 1}  # HALTED is safety_stop
    assert s["latency_ms"]["encode"]["n"] == 3 and s["latency_ms"]["encode"]["p50"] == 12.0
    assert s["swap_pairs"] == 0 and s["swap_accuracy"] is None and s["swap_accuracy_ci95"] is None
    assert report.episodes[0].latency_ms["encode"]["p50"] == 11.0  # per episode, from its own samples
    assert report.episodes[1].models == {"encoder": "e" * 64, "policy": "p" * 64}
    path = report.write_json(tmp_path / "sub" / "r.json")
    d = json.loads(path.read_text())
    assert d["summary"]["outcomes"]["timeout"] == 1 and d["episodes"][0]["outcome"] == "success"
    assert d["episodes"][0]["objects"] == ["red cube", "blue bar"] and d["episodes"][0]["target"] == "red cube"
    assert d["episodes"][0]["instruction"] == "put the red cube in the sink" and d["pairs"] == []
    text = format_summary(d, path)
    assert "3 episodes" in text and "success      1/3 (33.3 %, Wilson 95 % CI" in text and str(path) in text
    assert "timeout      1/3" in text and "wrong object 0/3 (0.0 %" in text and "instruction swap" not in text
    line = format_episode(report.episodes[0], 0, 3, 1)
    assert line.startswith("episode 1/3 seed=100 target='red cube' 'put the red cube in the sink': SUCCESS at 4.0 s")


def test_rates_per_target_with_wilson_intervals():
    report = EvalReport(mode="ros")
    outcomes = {"red cube": ["success"] * 3 + ["wrong_object"], "blue bar": ["timeout", "wrong_object"]}
    for target, results in outcomes.items():
        for o in results:
            report.add(EpisodeRecord(len(report.episodes), 0, o, target=target))
    s = report.summary()
    assert s["episodes"] == 6 and s["wrong_object_rate"] == pytest.approx(2 / 6)
    assert s["wrong_object_ci95"] == pytest.approx(list(wilson_interval(2, 6)))
    assert s["timeout_rate"] == pytest.approx(1 / 6) and s["safety_stop_rate"] == 0.0
    red, blue = s["by_target"]["red cube"], s["by_target"]["blue bar"]
    assert red["episodes"] == 4 and red["success_rate"] == 0.75 and red["wrong_object_rate"] == 0.25
    assert red["success_ci95"] == pytest.approx(list(wilson_interval(3, 4)))
    assert blue["success_rate"] == 0.0 and blue["timeout_rate"] == 0.5 and blue["outcomes"] == {
        "wrong_object": 1, "timeout": 1}
    text = format_summary(report.to_dict())
    assert "red cube" in text and "blue bar" in text
    empty = EvalReport(mode="lockstep").summary()
    assert empty["episodes"] == 0 and empty["success_rate"] is None and empty["success_ci95"] == [0.0, 1.0]
    assert "0 episodes" in format_summary(EvalReport(mode="lockstep").to_dict())


def test_swap_pair_accounting():
    def run(ep, target, outcome):
        return EpisodeRecord(ep, 9, outcome, target=target, instruction=f"put the {target} in the sink")

    report = EvalReport(mode="lockstep")
    pairs = [SwapPairRecord(0, 9, ["red cube", "blue bar"], [run(0, "red cube", "success"), run(1, "blue bar", "success")]),
             SwapPairRecord(1, 10, ["red cube", "blue bar"], [run(2, "red cube", "success"), run(3, "blue bar", "wrong_object")]),
             SwapPairRecord(2, 11, ["red cube", "blue bar"], [run(4, "red cube", "timeout"), run(5, "blue bar", "success")]),
             SwapPairRecord(3, 12, ["red cube", "blue bar"], [run(6, "red cube", "success")]),  # incomplete
             SwapPairRecord(4, 13, ["red cube", "blue bar"], [run(7, "red cube", "success"), run(8, "red cube", "success")])]
    for p in pairs:
        report.add_pair(p, [{"policy": [1.0]}] * len(p.runs))
    assert [p.correct for p in pairs] == [True, False, False, False, False]
    s = report.summary()
    assert s["swap_pairs"] == 5 and s["swap_pairs_correct"] == 1 and s["swap_accuracy"] == pytest.approx(0.2)
    assert s["swap_accuracy_ci95"] == pytest.approx(list(wilson_interval(1, 5)))
    assert s["episodes"] == 0 and s["latency_ms"]["policy"]["n"] == 9  # pair runs: latency only
    d = report.to_dict()["pairs"][1]
    assert d["targets"] == ["red cube", "blue bar"] and d["outcomes"] == ["success", "wrong_object"]
    assert d["correct"] is False and d["instructions"][0] == "put the red cube in the sink" and len(d["runs"]) == 2
    assert "instruction swap: 1/5 pairs correct (swap accuracy 20.0 %" in format_summary(report.to_dict())
    assert format_pair(pairs[0], 0, 5, 1).endswith("-> correct; running swap accuracy 1/1")
