"""The fault-injection suite's own checks must be able to fail, and the sim scenarios must pass."""
from __future__ import annotations

import logging

import numpy as np

from dynaflip_ros.configs.safety import SafetyConfig
from dynaflip_ros.eval import fault_sim as fh
from dynaflip_ros.eval import fault_inject as fi
from dynaflip_ros.eval import fault_scenarios as fs

Q_READY = np.array([0.0, -np.pi / 2, np.pi / 2, -np.pi / 2, -np.pi / 2, 0.0])


def test_limit_checker_flags_every_kind_of_violation():
    cfg = SafetyConfig()
    ok = Q_READY + 0.001
    nan = Q_READY.copy()
    nan[2] = np.nan
    beyond = Q_READY.copy()
    beyond[2] = 3.5  # elbow limit is pi
    jump = Q_READY + 0.2  # far beyond speed * 8 ms
    cmds = np.array([ok, nan, beyond, fi.Q_UP, jump])
    refs = np.tile(Q_READY, (5, 1))
    bad = fi.limit_violations(cmds, np.full(5, 0.008), refs, cfg)
    assert bad.tolist() == [False, True, True, True, True]
    # A second admissible reference (measured pose after a stale stream) accepts the jump only if
    # the step from it is within the limit.
    alt = np.tile(Q_READY, (5, 1))
    alt[4] = jump - 0.001
    assert fi.limit_violations(cmds, np.full(5, 0.008), refs, cfg, alt_refs=alt).tolist() == [False, True, True, True, False]


def test_fuzz_generator_produces_every_kind():
    rng = np.random.default_rng(0)
    limits = np.array(SafetyConfig().joint_limits_rad)
    kinds = {fi.fuzz_command(rng, Q_READY, 0.008, limits)[0] for _ in range(2000)}
    assert kinds == set(fi.FUZZ_KINDS)


def test_sim_scenarios_pass():
    logging.disable(logging.WARNING)
    try:
        figures = fi.sim_fuzz(n_commands=3000) + fi.sim_stale_command(trials=8) + fi.sim_protective_stop(trials=2)
    finally:
        logging.disable(logging.NOTSET)
    names = {f.name for f in figures}
    assert {"limit violations", "stale-command stop", "motion during protective stop", "jump after re-arm"} <= names
    assert all(f.ok for f in figures), [f.line() for f in figures if not f.ok]
    stale = next(f for f in figures if f.name == "stale-command stop")
    assert 50.0 <= stale.value <= 100.0  # the 50 ms watchdog + one servo tick


def test_issue8_scenarios_pass():
    """The four holes of issue 8 as fault-injection scenarios on the MuJoCo arm (each figure
    missed its bound on the code before the fix: 0.475 rad jump, 186 commands after failed
    arming, 2.33 x the speed limit, OverflowError escaping, watchdog after 10.056 s)."""
    logging.disable(logging.WARNING)
    try:
        figures = [f for name in ("moved_outside", "failed_arming", "declared_dt", "bad_input")
                   for f in fs.SIM_SCENARIOS[name]()]
    finally:
        logging.disable(logging.NOTSET)
    assert len(figures) == 7
    assert all(f.ok for f in figures), [f.line() for f in figures if not f.ok]
    by_name = {f.name: f for f in figures}
    assert by_name["jump after an outside move (connect / rearm)"].value == 0.0
    assert by_name["commands after a failed connect / re-arm"].value == 0
    assert by_name["bad input refused"].value == len(fh.BAD_INPUTS)


def test_per_time_limit_check_flags_steps_faster_than_elapsed_time():
    cfg = SafetyConfig()
    step = cfg.joint_speed_limit_rad_s[0] * 0.008
    cmds = np.array([Q_READY, Q_READY + [step, 0, 0, 0, 0, 0], Q_READY + [2 * step, 0, 0, 0, 0, 0]])
    refs = np.array([Q_READY, cmds[0], cmds[1]])
    dts = np.full(3, 0.008)
    assert fi.limit_violations(cmds, dts, refs, cfg, times=np.array([0.0, 0.008, 0.016])).tolist() == [False] * 3
    # the third command arrives at the same instant as the second: no time for its step
    assert fi.limit_violations(cmds, dts, refs, cfg, times=np.array([0.0, 0.008, 0.008])).tolist() == [
        False, False, True]
