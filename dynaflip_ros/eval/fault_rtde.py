"""The fault-injection scenarios against the loopback UR controller (`dynaflip fault-inject
--target rtde`): the real ur_rtde 1.6.5 client (`robot.ur_rtde_arm.URRtdeArm`, its worker process)
against `sim.ur_loopback.LoopbackURController` (a UR controller substitute in its own process),
in real time at the controller rate.

`RtdeBench` = controller + URRtdeArm + tapped SafeArm + interpolator + ServoLoop on
`time.monotonic()` (the servo thread is started on demand, SCHED_FIFO at the config's
rt_priority). Each scenario gets a fresh controller on its own loopback IP (`loopback_host`),
because ur_rtde's dashboard and script ports are fixed. The controller's own trace (what
ur_rtde delivered, what the simulated joints did) is the ground truth. Figures with timing
bounds (ms) vary from run to run with the machine's load.

Scenarios: `fuzz`, `stale`, `worker_stale`, `protective_stop`, `silent_peer`, `speed_slider`; registered in
`eval.fault_scenarios.RTDE_SCENARIOS`.
"""
from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from dynaflip_ros.configs.safety import SafetyConfig
from dynaflip_ros.eval.fault_bench import ArmTap, Bench, Figure, p99
from dynaflip_ros.robot.kinematics import UR3_MAX_JOINT_SPEED_RAD_S, forward_kinematics

# e-Series / CB3 software versions the loopback controller reports (docs/ur_rtde_protocol.md §3.3: keep 5.x < 5.23).
LOOPBACK_VERSIONS: dict[str, tuple[int, int, int, int]] = {"e-series": (5, 11, 1, 108318), "cb3": (3, 15, 7, 106331)}


def rtde_unavailable_reason() -> str:
    """"" when the loopback RTDE scenarios can run here, else why not (missing ur_rtde)."""
    import importlib.util

    for mod in ("rtde_control", "rtde_receive", "dashboard_client"):
        if importlib.util.find_spec(mod) is None:
            return f"python module {mod!r} missing (pip install ur-rtde==1.6.5)"
    return ""


def loopback_host(base: str, index: int) -> str:
    """The `index`-th private loopback IP after `base` (127.x.y.z + index): each scenario gets a
    fresh controller on its own IP, because ur_rtde's dashboard and script ports are fixed."""
    import ipaddress

    ip = ipaddress.IPv4Address(base) + int(index)
    if not ip.is_loopback:
        raise ValueError(f"{ip} is not a loopback address")
    return str(ip)


class RtdeBench(Bench):
    """LoopbackURController (own process) + URRtdeArm (ur_rtde in its worker process) + tapped
    SafeArm + interpolator + ServoLoop on the monotonic clock (thread started on demand)."""

    def __init__(self, safety: SafetyConfig, host: str, ur_type: str = "e-series", **arm_kw: Any) -> None:
        from dynaflip_ros.configs.robot import URRtdeConfig
        from dynaflip_ros.robot.interpolation import ActionChunkInterpolator
        from dynaflip_ros.robot.safety import SafeArm
        from dynaflip_ros.robot.servo_loop import ServoLoop
        from dynaflip_ros.robot.ur_rtde_arm import URRtdeArm
        from dynaflip_ros.sim.ur_loopback import LoopbackURController

        self.ctrl = LoopbackURController(host=host, ur_version=LOOPBACK_VERSIONS[ur_type], with_gripper=False)
        self.ctrl.start(timeout_s=30.0)
        self.arm = None
        try:
            self.rtde_cfg = URRtdeConfig(robot_ip=host, ur_type=ur_type, gripper="none", **arm_kw)
            self.arm = URRtdeArm(self.rtde_cfg)
            self.arm.connect()
            self.cfg = safety
            self.period_s = 1.0 / self.rtde_cfg.controller_rate_hz
            self.tap = ArmTap(self.arm, clock=time.monotonic)
            self.safe = SafeArm(self.tap, safety, clock=time.monotonic)
            self.safe.connect()
            self.interp = ActionChunkInterpolator(n_dims=7)
            self.loop = ServoLoop(self.safe, self.interp, rate_hz=self.rtde_cfg.controller_rate_hz,
                                  speed_scaling=lambda: self.arm.speed_scaling,
                                  end_hold_s=self.rtde_cfg.settle_hold_s())  # as ur3_driver (lead 0)
            self.loop.reanchor()
        except BaseException:
            self.close()
            raise

    def now(self) -> float:
        return time.monotonic()

    def start_loop(self) -> None:
        """Start the servo thread (SCHED_FIFO at the config's rt_priority, as on the robot PC)."""
        self.loop.start(rt_priority=self.rtde_cfg.rt_priority)

    def q(self) -> np.ndarray:
        return np.asarray(self.arm.state().q, dtype=float)

    def wait(self, duration_s: float) -> None:
        time.sleep(duration_s)

    def close(self) -> None:
        try:
            if getattr(self, "loop", None) is not None:
                self.loop.stop(stop_arm=False)
            if self.arm is not None:
                self.arm.disconnect()
        finally:
            self.ctrl.stop()


def _first_after(times: np.ndarray, mask: np.ndarray, t: float) -> float:
    """First time in `times` at or after t where mask holds (NaN if none)."""
    idx = np.nonzero(mask & (times >= t))[0]
    return float(times[idx[0]]) if idx.size else math.nan


def _speed_peak_ratio(trace: dict) -> float:
    """Max |dq/dt| of the controller's measured joints over the UR3 datasheet speed."""
    q, t = trace["actual_q"], trace["t_s"]
    if len(t) < 2:
        return 0.0
    dq = np.abs(np.diff(q, axis=0)) / np.maximum(np.diff(t), 1e-9)[:, None]
    return float(np.max(dq / np.asarray(UR3_MAX_JOINT_SPEED_RAD_S)[None, :]))


def rtde_fuzz(n_commands: int = 10_000, safety: SafetyConfig | None = None, ur_type: str = "e-series",
              host: str = "127.0.2.41", seed: int = 1, rt_priority: int = 0) -> list[Figure]:
    """10,000 fuzzed commands through SafeArm -> URRtdeArm -> ur_rtde -> loopback controller at
    the controller rate (real time). Checked at the controller: every servoJ target it received
    (its trace) must be finite, inside the joint limits and the workspace box; the measured joint
    speed must stay under the datasheet; plus the exact step check on what reached URRtdeArm."""
    cfg = safety or SafetyConfig()
    bench = RtdeBench(cfg, host, ur_type, rt_priority=rt_priority)
    rng = np.random.default_rng(seed)
    limits = np.array(cfg.joint_limits_rad)
    try:
        bench.ctrl.trace(clear=True)
        t_next = time.monotonic()
        for i in range(n_commands):
            bench.fuzz_once(rng, limits)
            bench.safe.check_watchdog()
            t_next += bench.period_s
            delay = t_next - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if i % 2000 == 1999:  # a pause: the watchdog stops the stream, the next command re-anchors
                time.sleep(2 * cfg.watchdog_timeout_s)
                bench.safe.check_watchdog()
                t_next = time.monotonic()
        time.sleep(0.2)
        trace = bench.ctrl.trace(clear=True)
        snap = bench.ctrl.snapshot()
        n_tap_bad = bench.tap.violations(cfg)
        n_fwd = len(bench.tap.commands)
    finally:
        bench.close()
    cq = trace["commanded_q"]
    rows = cq[~np.isnan(cq).any(axis=1)]
    uniq = rows[np.r_[True, np.any(np.diff(rows, axis=0) != 0, axis=1)]] if len(rows) else rows
    lo, hi = np.asarray(cfg.joint_lower_rad), np.asarray(cfg.joint_upper_rad)
    wmin, wmax = np.asarray(cfg.workspace_min_m), np.asarray(cfg.workspace_max_m)
    ctrl_bad = 0
    for q in uniq:
        p = forward_kinematics(q, cfg.dh, cfg.tool_transform)[:3, 3]
        if np.any(q < lo) or np.any(q > hi) or np.any(p < wmin - 1e-9) or np.any(p > wmax + 1e-9):
            ctrl_bad += 1
    n_bad = n_tap_bad + ctrl_bad
    peak = _speed_peak_ratio(trace)
    return [
        Figure("rtde", "limit violations", n_bad,
               f"{n_bad} / {n_commands} commands ({n_fwd} reached ur_rtde, {len(uniq)} distinct servoJ targets checked "
               f"at the controller, {snap['n_servoj']} servoJ cycles)", "0", n_bad == 0,
               {"tap_violations": n_tap_bad, "controller_violations": ctrl_bad, "protocol_errors": snap["errors"]}),
        Figure("rtde", "measured joint speed peak", peak,
               f"{peak:.2f} x the UR3 datasheet speed (configured: {cfg.speed_scale:.2f} x)", "<= 1.0 x", peak <= 1.0),
    ]


def rtde_stale_command(trials: int = 10, safety: SafetyConfig | None = None, ur_type: str = "e-series",
                       host: str = "127.0.2.42", rt_priority: int = 0) -> list[Figure]:
    """Three ways commands go stale while the arm moves, timed at the controller (host
    monotonic clock, same machine): (1) the action stream ends (policy died): SafeArm's watchdog
    -> servoStop; (2) the node freezes (servo loop stops, nothing reaches the worker): the
    worker's stale-command stop; (3) the RTDE worker dies (SIGKILL): the controller's own RTDE
    watchdog stops the program. Each: last command that reached the arm -> the controller stops
    servoing (its servo target cleared or the program stopped)."""
    cfg = safety or SafetyConfig()
    out: dict[str, list[float]] = {"stream": [], "frozen": [], "dead": []}
    bench = RtdeBench(cfg, host, ur_type, rt_priority=rt_priority)
    try:
        bench.start_loop()
        for k in range(trials):
            kind = "stream" if k < trials - 3 else "frozen"
            if bench.safe.halted:  # e.g. the controller watchdog stopped the program
                bench.arm.rearm()
                bench.loop.rearm()
            bench.sine_chunk(0.5 + 0.011 * k, amp_rad=0.2, freq_hz=0.8, joint=k % 3)
            time.sleep(0.3)
            bench.ctrl.trace(clear=True)
            t_cut = time.monotonic()
            if kind == "stream":
                bench.interp.reset(None)  # the chunk is cut off mid-motion: nothing more to follow
            else:
                bench.loop.stop(stop_arm=False)  # node frozen: neither targets nor stops reach the worker
            time.sleep(0.3)
            trace = bench.ctrl.trace(clear=True)
            if kind == "stream":
                stops = [s for s in bench.tap.stop_times if s > t_cut]
                t_first_stop = stops[0] if stops else math.inf
                t_last = max(c for c in bench.tap.command_times if c <= t_first_stop)
            else:
                t_last = bench.tap.command_times[-1]
            stopped = np.isnan(trace["commanded_q"]).any(axis=1) | (trace["runtime_state"] != 2)
            t_stop = _first_after(trace["host_monotonic_s"], stopped, t_last)
            out[kind].append((t_stop - t_last) * 1e3 if math.isfinite(t_stop) else math.inf)
            bench.interp.reset(None)
            if not bench.loop.running:
                bench.start_loop()
            time.sleep(0.1)
            bench.loop.reanchor()
        # (3) the worker dies mid-motion.
        if bench.safe.halted:
            bench.arm.rearm()
            bench.loop.rearm()
        bench.sine_chunk(1.0, amp_rad=0.2, freq_hz=0.8, joint=1)
        time.sleep(0.3)
        bench.ctrl.trace(clear=True)
        bench.loop.stop(stop_arm=False)
        bench.arm._proc.kill()
        t_last = bench.tap.command_times[-1]
        time.sleep(0.4)
        trace = bench.ctrl.trace(clear=True)
        t_stop = _first_after(trace["host_monotonic_s"], trace["runtime_state"] != 2, t_last)
        out["dead"].append((t_stop - t_last) * 1e3 if math.isfinite(t_stop) else math.inf)
    finally:
        bench.close()
    wd_ms = 1e3 / bench.rtde_cfg.controller_watchdog_hz
    p_stream, p_frozen, p_dead = p99(out["stream"]), max(out["frozen"]), max(out["dead"])
    return [
        Figure("rtde", "stale-command stop", p_stream,
               f"{p_stream:.0f} ms (p99 of {len(out['stream'])}, action stream ended mid-motion; worker stale stop "
               f"{bench.rtde_cfg.worker_stale_command_s * 1e3:.0f} ms, SafeArm watchdog {cfg.watchdog_timeout_s * 1e3:.0f} ms)",
               "<= 100 ms", p_stream <= 100.0, {"ms": out["stream"]}),
        Figure("rtde", "frozen-node stop", p_frozen,
               f"{p_frozen:.0f} ms (max of {len(out['frozen'])}; worker stale-command stop "
               f"{bench.rtde_cfg.worker_stale_command_s * 1e3:.0f} ms)", "<= 100 ms", p_frozen <= 100.0,
               {"ms": out["frozen"]}),
        Figure("rtde", "dead-driver stop", p_dead,
               f"{p_dead:.0f} ms (RTDE worker SIGKILLed; controller watchdog {wd_ms:.0f} ms)",
               f"<= {wd_ms + 50:.0f} ms", p_dead <= wd_ms + 50.0, {"ms": out["dead"]}),
    ]


def rtde_worker_stale(trials: int = 5, safety: SafetyConfig | None = None, ur_type: str = "e-series",
                      host: str = "127.0.2.46", rt_priority: int = 0) -> list[Figure]:
    """The `ur3_driver` layout (servo core in the RTDE worker, `robot.ur_rtde_servo`): the
    action stream ends mid-motion (no dry hold) and the worker's SafeArm watchdog, at the
    driver's derived timeout, stops the arm. Timed at the controller: the last servoJ that
    reached it (its servoJ counter, polled from here on the host monotonic clock: early by at
    most one poll) -> the controller stops servoing (its trace: servo target cleared)."""
    from dynaflip_ros.configs.ros import Ur3DriverNodeConfig
    from dynaflip_ros.robot.arm_driver import ArmDriver
    from dynaflip_ros.robot.ur_rtde_servo import WorkerServoCore
    from dynaflip_ros.sim.ur_loopback import LoopbackURController

    cfg = safety or SafetyConfig()
    ctrl = LoopbackURController(host=host, ur_version=LOOPBACK_VERSIONS[ur_type], with_gripper=False)
    ctrl.start(timeout_s=30.0)
    dcfg = Ur3DriverNodeConfig(backend="ur_rtde", servo_rate_hz=500.0 if ur_type == "e-series" else 125.0,
                               safety=cfg, dry_hold_s=0.0,
                               ur_rtde={"robot_ip": host, "ur_type": ur_type, "gripper": "none", "rt_priority": rt_priority})
    out_ms: list[float] = []
    polls_ms: list[float] = []
    driver = None
    try:
        servo = WorkerServoCore(dcfg)
        driver = ArmDriver(servo.arm, dcfg, servo.clock, servo=servo)
        for k in range(trials):
            q = np.asarray(driver.safe.state().q)
            now = driver.clock()
            times = now + 0.05 * np.arange(1, 9)  # 0.4 s, still moving at its last action
            targets = np.tile(np.r_[q, 0.0], (8, 1))
            targets[:, k % 3] += 0.1 * np.sin(np.linspace(0.3, 1.5, 8))
            driver.queue_chunk(now, times, targets, now, now)  # ROS clock = loop clock here
            ctrl.trace(clear=True)
            last_n, t_last, t_prev = -1, time.monotonic(), time.monotonic()
            while time.monotonic() < now + 3.0:
                n_servoj = ctrl.snapshot()["n_servoj"]
                t = time.monotonic()
                polls_ms.append((t - t_prev) * 1e3)
                t_prev = t
                if n_servoj != last_n:
                    last_n, t_last = n_servoj, t
                elif t - t_last > 0.3:
                    break
            trace = ctrl.trace(clear=True)
            stopped = np.isnan(trace["commanded_q"]).any(axis=1) | (trace["runtime_state"] != 2)
            t_stop = _first_after(trace["host_monotonic_s"], stopped, t_last)
            out_ms.append((t_stop - t_last) * 1e3 if math.isfinite(t_stop) else math.inf)
            time.sleep(0.1)
    finally:
        if driver is not None:
            driver.close()
        ctrl.stop()
    worst = p99(out_ms)
    return [Figure("rtde", "worker-layout stale-command stop", worst,
                   f"{worst:.0f} ms (p99 of {len(out_ms)}; servo core in the RTDE worker, watchdog "
                   f"{dcfg.watchdog_timeout_s * 1e3:.0f} ms derived from {dcfg.servo_rate_hz:g} Hz; last servoJ "
                   f"polled every {float(np.median(polls_ms)):.1f} ms)", "<= 100 ms", worst <= 100.0, {"ms": out_ms})]


def rtde_protective_stop(trials: int = 3, safety: SafetyConfig | None = None, ur_type: str = "e-series",
                         host: str = "127.0.2.43", rt_priority: int = 0) -> list[Figure]:
    """A protective stop injected at the controller mid-motion while chunks keep arriving: the
    arm must not move (controller trace) and no servoJ may reach the controller until the
    re-arm (`URRtdeArm.rearm`: dashboard unlock + script re-upload, then ServoLoop.rearm); the
    first target after the re-arm must be the measured pose (no jump)."""
    cfg = safety or SafetyConfig()
    bench = RtdeBench(cfg, host, ur_type, rt_priority=rt_priority)
    motion, reached, jumps, servoj_while_stopped, rearm_s = [], 0, [], 0, []
    try:
        bench.start_loop()
        for k in range(trials):
            bench.sine_chunk(3.0, joint=k % 3, amp_rad=0.25, freq_hz=0.6)
            time.sleep(0.4)
            bench.ctrl.inject("protective_stop")
            time.sleep(0.15)  # the controller brings the arm to rest
            q_rest = np.asarray(bench.ctrl.snapshot()["actual_q"])
            n_servoj = bench.ctrl.snapshot()["n_servoj"]
            n_cmd = len(bench.tap.commands)
            for _ in range(10):  # 1 s of fresh policy chunks while stopped
                bench.sine_chunk(1.0, joint=(k + 1) % 3, amp_rad=0.3, freq_hz=1.0)
                time.sleep(0.1)
            snap = bench.ctrl.snapshot()
            motion.append(float(np.max(np.abs(np.asarray(snap["actual_q"]) - q_rest))))
            servoj_while_stopped += snap["n_servoj"] - n_servoj
            reached += len(bench.tap.commands) - n_cmd
            t0 = time.monotonic()
            bench.arm.rearm()
            bench.loop.rearm()
            rearm_s.append(time.monotonic() - t0)
            q_meas = bench.q()
            n_before = len(bench.tap.commands)
            bench.sine_chunk(1.0, joint=(k + 2) % 3, amp_rad=0.2, freq_hz=0.5)
            time.sleep(0.2)
            first = bench.tap.commands[n_before] if len(bench.tap.commands) > n_before else q_meas
            jumps.append(float(np.max(np.abs(first - q_meas))))
            bench.interp.reset(None)
            time.sleep(0.2)
            bench.loop.reanchor()
    finally:
        bench.close()
    m, jmp = max(motion), max(jumps)
    step_lim = float(np.max(np.asarray(cfg.joint_speed_limit_rad_s)) * bench.period_s)
    ok = m < 1e-3 and reached == 0 and servoj_while_stopped == 0
    return [
        Figure("rtde", "motion during protective stop", m,
               f"{m:.5f} rad max joint motion; {reached} commands reached ur_rtde, {servoj_while_stopped} servoJ "
               f"reached the controller ({trials} stops, re-arm {np.mean(rearm_s):.2f} s)",
               "< 1e-3 rad, 0 commands", ok),
        Figure("rtde", "jump after re-arm", jmp, f"{jmp:.5f} rad (first command vs measured pose)",
               f"<= one servo step ({step_lim:.4f} rad)", jmp <= step_lim + 1e-9),
    ]


def rtde_silent_peer(safety: SafetyConfig | None = None, ur_type: str = "e-series",
                     host: str = "127.0.2.44", rt_priority: int = 0) -> list[Figure]:
    """A peer that accepts TCP but never speaks RTDE (the case where ur_rtde blocks forever with
    the GIL held): URRtdeArm.connect must fail with ArmError within its timeout while this
    process stays responsive."""
    del rt_priority  # uniform scenario signature; no servo loop runs here
    from dynaflip_ros.configs.robot import URRtdeConfig
    from dynaflip_ros.robot.arm import ArmError
    from dynaflip_ros.robot.ur_rtde_arm import URRtdeArm
    from dynaflip_ros.sim.ur_loopback import LoopbackURController

    ctrl = LoopbackURController(host=host, ur_version=LOOPBACK_VERSIONS[ur_type], with_gripper=False, physics=False)
    ctrl.start(timeout_s=30.0)
    timeout_s = 3.0
    try:
        ctrl.inject("silent", on=True)
        arm = URRtdeArm(URRtdeConfig(robot_ip=host, ur_type=ur_type, gripper="none", connect_timeout_s=timeout_s))
        ticks: list[float] = []
        import threading

        done = threading.Event()

        def ticker() -> None:
            while not done.is_set():
                ticks.append(time.monotonic())
                time.sleep(0.01)

        threading.Thread(target=ticker, daemon=True).start()
        t0 = time.monotonic()
        msg = ""
        try:
            arm.connect()
            ok_err = False
        except ArmError as e:
            ok_err, msg = True, str(e)
        elapsed = time.monotonic() - t0
        done.set()
        arm.disconnect()
        gaps = np.diff(ticks) if len(ticks) > 1 else np.array([0.0])
    finally:
        ctrl.stop()
    frozen_ms = float(gaps.max() * 1e3)
    return [Figure("rtde", "silent-peer connect", elapsed,
                   f"ArmError after {elapsed:.2f} s, process never froze (max gap {frozen_ms:.0f} ms): {msg[:90]}",
                   f"ArmError within {timeout_s + 1:.0f} s, gaps < 200 ms",
                   ok_err and elapsed <= timeout_s + 1.0 and frozen_ms < 200.0)]


def rtde_speed_slider(safety: SafetyConfig | None = None, ur_type: str = "e-series",
                      host: str = "127.0.2.45", rt_priority: int = 0) -> list[Figure]:
    """The pendant's speed slider goes to 0 mid-motion and back to 100 %: the arm must stop
    following (the chunk timeline freezes) and resume from where it is, without catching up."""
    cfg = safety or SafetyConfig()
    bench = RtdeBench(cfg, host, ur_type, rt_priority=rt_priority)
    try:
        bench.start_loop()
        bench.sine_chunk(4.0, joint=0, amp_rad=0.25, freq_hz=0.4)
        time.sleep(0.8)
        bench.ctrl.trace(clear=True)
        time.sleep(0.4)
        before = bench.ctrl.trace(clear=True)
        bench.ctrl.inject("speed_slider", fraction=0.0)
        time.sleep(0.3)
        q_a = np.asarray(bench.ctrl.snapshot()["actual_q"])
        time.sleep(0.6)
        q_b = np.asarray(bench.ctrl.snapshot()["actual_q"])
        bench.ctrl.trace(clear=True)
        bench.ctrl.inject("speed_slider", fraction=1.0)
        time.sleep(0.5)
        after = bench.ctrl.trace(clear=True)
        lag = bench.loop.trajectory_lag_s
    finally:
        bench.close()
    paused = float(np.max(np.abs(q_b - q_a)))

    def peak_speed(tr: dict) -> float:
        dq = np.abs(np.diff(tr["actual_q"][:, 0])) / np.maximum(np.diff(tr["t_s"]), 1e-9)
        return float(dq.max()) if dq.size else 0.0

    v_before, v_after = peak_speed(before), peak_speed(after)
    ratio = v_after / max(v_before, 1e-6)
    return [
        Figure("rtde", "speed slider 0 %: motion", paused, f"{paused:.5f} rad in 0.6 s at slider 0 "
               f"(trajectory timeline {lag:.2f} s behind the wall clock)", "< 1e-3 rad", paused < 1e-3),
        Figure("rtde", "speed slider back to 100 %: catch-up", ratio,
               f"peak joint speed {v_after:.3f} rad/s after vs {v_before:.3f} rad/s before ({ratio:.2f} x)",
               "<= 1.3 x (no catch-up jump)", ratio <= 1.3),
    ]
