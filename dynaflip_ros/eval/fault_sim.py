"""The fault-injection scenarios on the MuJoCo arm (`dynaflip fault-inject --target sim`).

Each runs `eval.fault_bench.SimBench` (tapped SafeArm + ServoLoop over the MuJoCo UR3) in
lock-step simulation time, so its figures are deterministic up to the timing of the watchdog
against the simulated clock; each returns `Figure`s measured at the arm (docs/safety.md).

- `fuzz`: 10,000 fuzzed servo commands; limit violations at the arm, measured joint speed peak.
- `stale`: the SafeArm watchdog stop after the command stream stops.
- `protective_stop`: no motion while the arm reports a protective stop, no jump after re-arm.
The four safety holes of issue 8, each found by a property-based fuzz of `SafeArm`:
- `moved_outside`: a stale rate-limiter anchor after connect() / rearm() (the arm moved by hand);
- `failed_arming`: a connect() / rearm() that fails but still arms;
- `declared_dt`: a speed limit per call instead of per unit time;
- `bad_input`: input that escapes as another exception or slips through, and a clock that steps
  back.

Registered in `eval.fault_scenarios.SIM_SCENARIOS`.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from dynaflip_ros.configs.safety import SafetyConfig
from dynaflip_ros.eval.fault_bench import Figure, SimBench, p99
from dynaflip_ros.robot.arm import ArmError
from dynaflip_ros.robot.kinematics import UR3_MAX_JOINT_SPEED_RAD_S
from dynaflip_ros.robot.safety import SafeArm, SafetyViolation


def sim_fuzz(n_commands: int = 10_000, seed: int = 0, safety: SafetyConfig | None = None) -> list[Figure]:
    """10,000 fuzzed servo commands into SafeArm -> MuJoCo UR3, one per servo period of physics.
    Figures: limit violations among the commands that reached the arm (exact check against the
    configured limits), and the measured joint speed peak (physics: PD tracking of rate-limited
    random reversals overshoots the commanded speed a little) against the UR3 datasheet speed."""
    cfg = safety or SafetyConfig()
    bench = SimBench(cfg)
    rng = np.random.default_rng(seed)
    limits = np.array(cfg.joint_limits_rad)
    speed_lim = np.asarray(UR3_MAX_JOINT_SPEED_RAD_S, dtype=float)
    peak_ratio = 0.0
    q_min, q_max = np.full(6, np.inf), np.full(6, -np.inf)
    try:
        for i in range(n_commands):
            bench.fuzz_once(rng, limits)
            bench.step(tick=False)
            if i % 500 == 499:  # pause: let the watchdog stop the stream now and then
                for _ in range(int(round(2 * cfg.watchdog_timeout_s / bench.period_s))):
                    bench.safe.check_watchdog()
                    bench.step(tick=False)
            dq = bench.dq()
            peak_ratio = max(peak_ratio, float(np.max(np.abs(dq) / speed_lim)))
            qm = bench.q()
            q_min, q_max = np.minimum(q_min, qm), np.maximum(q_max, qm)
        n_bad = bench.tap.violations(cfg, per_time=True)
        n_fwd = len(bench.tap.commands)
        stats = bench.safe.stats
        within = bool(np.all(q_min >= limits[:, 0]) and np.all(q_max <= limits[:, 1]))
    finally:
        bench.close()
    return [
        Figure("sim", "limit violations", n_bad, f"{n_bad} / {n_commands} commands ({n_fwd} reached the arm, "
               f"{stats.rejected} refused, {stats.rate_limited} rate-limited)", "0", n_bad == 0,
               {"forwarded": n_fwd, "refused": stats.rejected, "rate_limited": stats.rate_limited}),
        Figure("sim", "measured joint speed peak", peak_ratio,
               f"{peak_ratio:.2f} x the UR3 datasheet speed (configured: {cfg.speed_scale:.2f} x), joints within limits: {within}",
               "<= 1.0 x and within limits", peak_ratio <= 1.0 and within, {"joints_within_limits": within}),
    ]


def sim_stale_command(trials: int = 20, safety: SafetyConfig | None = None) -> list[Figure]:
    """Stream a moving target, then stop feeding commands (the policy / node died): time from
    the last command that reached the arm to the stop reaching it (SafeArm watchdog, sim clock),
    and to standstill (all joint speeds < 0.01 rad/s)."""
    cfg = safety or SafetyConfig()
    bench = SimBench(cfg)
    stop_ms, still_ms = [], []
    try:
        for k in range(trials):
            bench.sine_chunk(0.6 + 0.013 * k, amp_rad=0.2, freq_hz=0.8, joint=k % 3)
            for _ in range(int((0.6 + 0.013 * k) / bench.period_s) + 1):
                bench.step()
            # The chunk ended mid-motion: the loop holds (no command); the watchdog must stop.
            bench.interp.reset(None)
            n_stops = len(bench.tap.stop_times)
            t_last = bench.tap.command_times[-1]
            t_end = bench.env.sim_time_s + 1.0
            t_still = None
            while bench.env.sim_time_s < t_end:
                bench.step()
                if len(bench.tap.stop_times) > n_stops and t_still is None and np.max(np.abs(bench.dq())) < 0.01:
                    t_still = bench.env.sim_time_s
                    break
            if len(bench.tap.stop_times) <= n_stops:
                stop_ms.append(math.inf)
                continue
            stop_ms.append((bench.tap.stop_times[n_stops] - t_last) * 1e3)
            still_ms.append(((t_still or t_end) - t_last) * 1e3)
            bench.loop.reanchor()
    finally:
        bench.close()
    stop_p99 = p99(stop_ms)
    return [
        Figure("sim", "stale-command stop", stop_p99,
               f"{stop_p99:.0f} ms (p99 of {trials}; watchdog {cfg.watchdog_timeout_s * 1e3:.0f} ms)",
               "<= 100 ms", stop_p99 <= 100.0, {"stop_ms": stop_ms}),
        Figure("sim", "stale-command standstill", p99(still_ms), f"{p99(still_ms):.0f} ms (p99, joint speeds < 0.01 rad/s)",
               "reported", True, {"still_ms": still_ms}),
    ]


def sim_protective_stop(trials: int = 5, safety: SafetyConfig | None = None) -> list[Figure]:
    """A protective stop mid-motion: the loop must halt, the arm must not move until re-armed
    (policy chunks keep arriving and are refused), and the first commands after the re-arm must
    start at the measured pose (no jump)."""
    cfg = safety or SafetyConfig()
    bench = SimBench(cfg)
    motion_while_stopped, jumps, refused, reached = [], [], 0, 0
    try:
        for k in range(trials):
            bench.sine_chunk(2.0, amp_rad=0.2, freq_hz=0.7, joint=k % 3)
            for _ in range(40):
                bench.step()
            bench.env.arm.inject_protective_stop()
            for _ in range(10):  # let the arm come to rest under the controller's hold
                bench.step()
            q_stopped = bench.q()
            n_cmd = len(bench.tap.commands)
            for j in range(125):  # 1 s of new chunks while stopped
                if j % 12 == 0:
                    bench.sine_chunk(1.0, amp_rad=0.3, freq_hz=1.0, joint=(k + 1) % 3)
                bench.step()
            motion_while_stopped.append(float(np.max(np.abs(bench.q() - q_stopped))))
            refused = bench.loop.stats.rejections_by_reason.get("halted", 0)
            reached += len(bench.tap.commands) - n_cmd
            bench.env.arm.rearm()
            bench.loop.rearm()
            q_before = bench.q()
            bench.sine_chunk(1.0, amp_rad=0.3, freq_hz=0.5, joint=(k + 2) % 3)
            n_before = len(bench.tap.commands)
            for _ in range(5):
                bench.step()
            first = bench.tap.commands[n_before] if len(bench.tap.commands) > n_before else q_before
            jumps.append(float(np.max(np.abs(first - q_before))))
    finally:
        bench.close()
    m, jmp = max(motion_while_stopped), max(jumps)
    step_lim = float(np.max(np.asarray(cfg.joint_speed_limit_rad_s)) * bench.period_s)
    return [
        Figure("sim", "motion during protective stop", m, f"{m:.5f} rad max joint motion, {reached} commands reached "
               f"the arm ({refused} refused), {trials} stops", "< 1e-3 rad and 0 commands", m < 1e-3 and reached == 0),
        Figure("sim", "jump after re-arm", jmp, f"{jmp:.5f} rad (first command vs measured pose)",
               f"<= one servo step ({step_lim:.4f} rad)", jmp <= step_lim + 1e-9),
    ]



def _stream_pose(bench: SimBench, q: np.ndarray, duration_s: float, dt_s: float) -> list[np.ndarray]:
    """Command the fixed pose q (6,) rad once per servo period for duration_s (sim time), refusals
    (SafetyViolation, ArmNotConnectedError) swallowed; returns the measured joints after each period."""
    measured = []
    def command(_sim_time_s: float) -> None:
        try:
            bench.safe.servo_joint(q, dt_s)
        except ArmError:
            pass

    for _ in range(int(round(duration_s / bench.period_s))):
        bench.env.advance_period(bench.period_s, command)
        measured.append(bench.q())
    return measured


def _move_outside(bench: SimBench, delta: np.ndarray, settle_s: float = 1.0) -> np.ndarray:
    """Another client (freedrive, the pendant) moves the arm by delta (6,) rad behind SafeArm's
    back, and it settles there for settle_s; returns the measured joints afterwards."""
    bench.env.exclusive(bench.env.arm.hold, bench.q() + delta)
    for _ in range(int(round(settle_s / bench.period_s))):
        bench.step(tick=False)
    return bench.q()


def sim_moved_outside(safety: SafetyConfig | None = None) -> list[Figure]:
    """Hole 1 (stale anchor): after connect() and after rearm(), the arm is moved outside SafeArm
    (wrist_3 +0.5 rad) and settles for 1 s; then its measured pose is commanded at 125 Hz with dt
    8 ms. The first target that reaches the arm must be the measured pose (within one servo
    step), and no joint may move while it is held (the old code swung the base back 0.137 rad)."""
    cfg = safety or SafetyConfig()
    jumps, motion = [], []
    for when in ("connect", "rearm"):
        bench = SimBench(cfg)  # connects SafeArm
        try:
            if when == "rearm":
                bench.env.arm.inject_protective_stop()
                bench.safe.check_protective_stop()
                bench.env.arm.rearm()
                bench.safe.rearm()
            q_meas = _move_outside(bench, np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.5]))
            n = len(bench.tap.commands)
            measured = _stream_pose(bench, q_meas, 0.4, bench.period_s)
            first = bench.tap.commands[n] if len(bench.tap.commands) > n else q_meas
            jumps.append(float(np.max(np.abs(first - q_meas))))
            motion.append(float(np.max(np.abs(np.array(measured) - q_meas))))
        finally:
            bench.close()
    step_lim = float(np.max(np.asarray(cfg.joint_speed_limit_rad_s)) * bench.period_s)
    jmp, mot = max(jumps), max(motion)
    return [
        Figure("sim", "jump after an outside move (connect / rearm)", jmp,
               f"{jmp:.5f} rad first target vs measured pose (connect {jumps[0]:.5f}, rearm {jumps[1]:.5f})",
               f"<= one servo step ({step_lim:.4f} rad)", jmp <= step_lim + 1e-9, {"jumps": jumps}),
        Figure("sim", "motion holding the measured pose after an outside move", mot,
               f"{mot:.5f} rad max joint motion in 0.4 s (connect {motion[0]:.5f}, rearm {motion[1]:.5f})",
               "< 5e-3 rad", mot < 5e-3, {"motion": motion}),
    ]


def sim_failed_arming(safety: SafetyConfig | None = None) -> list[Figure]:
    """Hole 2: connect() while the arm reports NaN joints, rearm() while it does, and connect()
    during an active protective stop: each must leave SafeArm unarmed, so after the reading
    recovers 0.5 s of commands must not reach the arm (until a successful connect / re-arm)."""
    cfg = safety or SafetyConfig()
    reached, refused_ok, cases = 0, 0, 0
    for case in ("connect_nan", "rearm_nan", "connect_protective_stop_nan"):
        bench = SimBench(cfg)
        try:
            q0 = bench.q()
            if case == "rearm_nan":
                bench.env.arm.inject_protective_stop()
                bench.safe.check_protective_stop()
                bench.env.arm.rearm()
            elif case == "connect_protective_stop_nan":
                bench.env.arm.inject_protective_stop()
            bench.tap.nan_state = True
            try:
                bench.safe.rearm() if case == "rearm_nan" else bench.safe.connect()
            except ArmError:  # SafetyViolation included
                refused_ok += 1
            cases += 1
            bench.tap.nan_state = False
            if case == "connect_protective_stop_nan":
                bench.env.arm.rearm()  # the stop clears on the controller; SafeArm keeps its latch
                bench.safe.connect()
            n = len(bench.tap.commands)
            _stream_pose(bench, q0 + np.array([0.05, 0, 0, 0, 0, 0]), 0.5, bench.period_s)
            reached += len(bench.tap.commands) - n
        finally:
            bench.close()
    return [Figure("sim", "commands after a failed connect / re-arm", reached,
                   f"{reached} commands reached the arm in 3 x 0.5 s after {refused_ok}/{cases} failed arming calls "
                   "(NaN joints at connect, at re-arm, protective stop + NaN at connect)", "0 and 3/3 refused",
                   reached == 0 and refused_ok == cases)]


def sim_declared_dt(safety: SafetyConfig | None = None) -> list[Figure]:
    """Hole 3 (speed per call, not per time): stream a base target 1 rad away at 125 Hz while
    declaring dt 0.1 s, then while calling twice per period (dt 2 ms); the MuJoCo base's peak
    measured speed must stay within the configured limit (PD tracking overshoot aside: bound
    1.1 x), and every forwarded step within speed x elapsed time (exact per-time check)."""
    cfg = safety or SafetyConfig()
    limit = float(np.asarray(cfg.joint_speed_limit_rad_s)[0])
    peaks, n_bad, n_fwd = [], 0, 0
    for mode in ("dt_0.1_at_125Hz", "two_calls_per_period"):
        bench = SimBench(cfg)
        try:
            target = bench.q() + np.array([1.0, 0, 0, 0, 0, 0])
            peak = 0.0
            def command(_sim_time_s: float, mode=mode, target=target) -> None:
                if mode == "dt_0.1_at_125Hz":
                    bench.safe.servo_joint(target, 0.1)
                else:
                    bench.safe.servo_joint(target, 0.002)
                    bench.safe.servo_joint(target, 0.002)

            for _ in range(int(round(0.6 / bench.period_s))):
                bench.env.advance_period(bench.period_s, command)
                peak = max(peak, abs(float(bench.dq()[0])))
            peaks.append(peak)
            n_bad += bench.tap.violations(cfg, per_time=True)
            n_fwd += len(bench.tap.commands)
        finally:
            bench.close()
    ratio = max(peaks) / limit
    return [
        Figure("sim", "base speed with a lying dt", ratio,
               f"{ratio:.2f} x the configured limit {limit:.2f} rad/s (dt 0.1 s at 125 Hz: {peaks[0]:.2f} rad/s; two "
               f"calls per period: {peaks[1]:.2f} rad/s)", "<= 1.1 x", ratio <= 1.1, {"peaks_rad_s": peaks}),
        Figure("sim", "per-time step violations", n_bad, f"{n_bad} / {n_fwd} forwarded steps exceed speed x elapsed time",
               "0", n_bad == 0),
    ]


# Inputs that are not commands (issue 8, hole 4): (what, q, dt_s, gripper or None).
BAD_INPUTS: tuple[tuple[str, Any, Any, Any], ...] = (
    ("python int >= 1e309 in q", [10**400] * 6, 0.008, None),
    ("python int >= 1e309 as dt", None, 10**400, None),
    ("python int >= 1e309 as gripper", None, 0.008, 10**400),
    ("strings in q", ["0.0"] * 6, 0.008, None),
    ("complex q", np.zeros(6, dtype=complex), 0.008, None),
    ("masked q", np.ma.masked_array(np.zeros(6), mask=[0, 0, 1, 0, 0, 0]), 0.008, None),
    ("bool q", [False] * 6, 0.008, None),
    ("dt=True", None, True, None),
    ("dt 1e300", None, 1e300, None),
    ("dt 1e-300", None, 1e-300, None),
    ("gripper True", None, 0.008, True),
    ("gripper string", None, 0.008, "1"),
)


def sim_bad_input(safety: SafetyConfig | None = None) -> list[Figure]:
    """Hole 4: every entry of BAD_INPUTS must be refused with SafetyViolation (no other exception
    may escape a servo tick) and reach nothing; and after the injected clock steps back 10 s the
    watchdog must still stop a dead stream within its timeout (old code: after 10.056 s)."""
    cfg = safety or SafetyConfig()
    bench = SimBench(cfg)
    refused, escaped, reached = 0, [], 0
    try:
        q_ok = bench.q()
        for what, q, dt, g in BAD_INPUTS:
            n, ng = len(bench.tap.commands), len(bench.tap.gripper_commands)
            try:
                if g is not None:
                    bench.safe.set_gripper(g)
                else:
                    bench.safe.servo_joint(q_ok if q is None else q, dt)
            except SafetyViolation:
                refused += 1
            except Exception as e:  # noqa: BLE001 - exactly what this figure counts
                escaped.append(f"{what}: {type(e).__name__}")
            reached += len(bench.tap.commands) - n + len(bench.tap.gripper_commands) - ng
            bench.step(tick=False)
        # The clock steps back 10 s in the middle of a stream that then dies.
        offset = {"s": 0.0}
        safe = SafeArm(bench.tap, cfg, clock=lambda: bench.env.sim_time_s + offset["s"])
        safe.connect()
        for _ in range(10):
            bench.env.advance_period(bench.period_s, lambda _t: safe.servo_joint(q_ok, bench.period_s))
        t_last = bench.env.sim_time_s - bench.period_s
        offset["s"] = -10.0
        t_stop = math.inf
        while bench.env.sim_time_s < t_last + 11.0:
            if safe.check_watchdog():
                t_stop = bench.env.sim_time_s
                break
            bench.step(tick=False)
        stop_ms = (t_stop - t_last) * 1e3
    finally:
        bench.close()
    n = len(BAD_INPUTS)
    ok_inputs = refused == n and not escaped and reached == 0
    return [
        Figure("sim", "bad input refused", refused, f"{refused}/{n} refused as SafetyViolation, {len(escaped)} other "
               f"exceptions escaped{': ' + '; '.join(escaped) if escaped else ''}, {reached} reached the arm",
               f"{n}/{n}, 0, 0", ok_inputs, {"escaped": escaped}),
        Figure("sim", "watchdog after the clock stepped back 10 s", stop_ms,
               f"{stop_ms:.0f} ms from the last command to the stop (watchdog {cfg.watchdog_timeout_s * 1e3:.0f} ms)",
               "<= 100 ms", stop_ms <= 100.0),
    ]
