"""`dynaflip eval --modes`: the mode list, the per-mode view and the seed-by-seed comparison of
evaluation records (eval/modes.py), the CPU load generator, and the flags the modes refuse
before anything is loaded."""
from __future__ import annotations

import pytest

from dynaflip_ros.errors import UserError
from dynaflip_ros.eval.modes import MODES_FORMAT, format_modes, mode_entry, modes_record, paired, parse_modes


def _report(mode: str, outcomes: list[str], trips: list[int], seed0: int = 100) -> dict:
    from dynaflip_ros.episodes.record import EpisodeRecord, EvalReport

    report = EvalReport(mode=mode)
    for i, (o, t) in enumerate(zip(outcomes, trips)):
        report.add(EpisodeRecord(episode=i, seed=seed0 + i, outcome=o, safety={"watchdog_stops": t},
                                 realtime_factor=0.9 if mode != "lockstep" else None),
                   {"policy": [100.0 + i], "command": [150.0]})
    return report.to_dict()


def test_parse_modes():
    assert parse_modes("lockstep, realtime,ros") == ["lockstep", "realtime", "ros"]
    assert parse_modes("ros,lockstep") == ["ros", "lockstep"]
    for bad in ("", ",", "lockstep,gpu", "ros,ros"):
        with pytest.raises(UserError):
            parse_modes(bad)


def test_mode_entry_counts_successes_and_watchdog_trips():
    e = mode_entry(_report("ros", ["success", "timeout", "success", "safety_stop"], [0, 2, 0, 1]))
    assert e["successes"] == 2 and e["episodes"] == 4 and e["success_rate"] == 0.5
    assert e["watchdog_trips"] == 3 and e["watchdog_trips_by_episode"] == [0, 2, 0, 1]
    assert e["realtime_factor_median"] == pytest.approx(0.9) and e["latency_ms"]["policy"]["n"] == 4
    assert e["record"]["mode"] == "ros"


def test_paired_compares_seed_by_seed():
    a = _report("lockstep", ["success", "success", "timeout", "success", "timeout"], [0] * 5)
    b = _report("ros", ["success", "timeout", "timeout", "timeout", "success"], [0] * 5)
    p = paired(a, b)
    assert (p["n"], p["both"], p["only_a"], p["only_b"], p["neither"]) == (5, 1, 2, 1, 1)
    assert p["mcnemar_p"] == pytest.approx(1.0)  # 2 vs 1 discordant: no evidence
    assert paired(a, a)["mcnemar_p"] == 1.0
    shifted = _report("ros", ["success"] * 5, [0] * 5, seed0=103)
    assert paired(a, shifted)["n"] == 2  # only the seeds both ran


def test_modes_record_and_table():
    reports = {"lockstep": _report("lockstep", ["success"] * 3, [0] * 3),
               "realtime": _report("realtime", ["success", "timeout", "success"], [0, 1, 0]),
               "ros": _report("ros", ["timeout"] * 3, [1, 1, 0])}
    record = modes_record({"cpu_load": 1}, reports)
    assert record["format"] == MODES_FORMAT and record["config"]["cpu_load"] == 1
    assert list(record["modes"]) == ["lockstep", "realtime", "ros"]
    assert set(record["paired"]) == {"lockstep_vs_realtime", "lockstep_vs_ros", "realtime_vs_ros"}
    assert record["modes"]["ros"]["watchdog_trips"] == 2
    text = format_modes(record)
    assert "ros" in text and "3/3" in text and "lockstep_vs_ros: 3 seeds, both 0, only lockstep 3" in text


def test_cpu_load_runs_busy_processes_for_the_block():
    from dynaflip_ros.eval.cpu_load import CpuLoad

    with CpuLoad(1) as load:
        assert load.alive == 1
    assert load.alive == 0
    with CpuLoad(0) as none:
        assert none.alive == 0
    with pytest.raises(ValueError):
        CpuLoad(-1)


@pytest.mark.parametrize("extra, message", [
    (["--modes", "lockstep,gpu"], "unknown mode"),
    (["--modes", "lockstep", "--swap-pairs", "2", "--episodes", "2"], "regular episodes"),
    (["--modes", "lockstep", "--swap-pairs", "2"], "regular episodes"),
    (["--modes", "ros", "--objects", "1"], "do not reach the ROS graph"),
    (["--modes", "lockstep", "--cpu-load", "-1"], "--cpu-load must be >= 0"),
    (["--cpu-load", "1"], "--cpu-load applies to --modes"),
])
def test_modes_flags_are_refused_before_loading(tmp_path, capsys, extra, message):
    from dynaflip_ros.cli import main

    rc = main(["eval", "--sim", "--encoder", str(tmp_path / "none"), "--policy", str(tmp_path / "none"), *extra])
    assert rc == 2 and message in capsys.readouterr().err
