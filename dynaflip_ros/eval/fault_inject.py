"""The fault-injection suite behind `dynaflip fault-inject` (issue 3, item 6).

Every scenario drives an arm through the production safety path (SafeArm, and the ServoLoop
where the scenario is about timing) and measures what reached **the arm**, not what our code
intended: an `ArmTap` between SafeArm and the arm records every forwarded command, and against
the loopback RTDE controller the controller's own trace (what ur_rtde actually sent, what the
simulated joints did) is the ground truth.

Targets:
- "sim": the MuJoCo UR3 of `sim.pick_into_sink.PickIntoSinkEnv` in lock-step simulation time
  (deterministic);
- "rtde": the real ur_rtde 1.6.5 client (`robot.ur_rtde_arm.URRtdeArm`, worker process) against
  `sim.ur_loopback.LoopbackURController` (a UR controller substitute in its own process), in
  real time at the controller rate.

Each scenario returns `Figure`s: one line each, e.g. `limit violations: 0 / 10000 commands`,
`stale-command stop: 38 ms (p99)`, with a bound; `eval.fault_scenarios` registers the scenarios
of this module and of `eval.fault_holes` (the issue-8 holes), and the CLI exits non-zero when any
figure misses its bound.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np

from dynaflip_ros.configs.safety import SafetyConfig
from dynaflip_ros.robot.arm import ArmState
from dynaflip_ros.robot.kinematics import UR3_MAX_JOINT_SPEED_RAD_S, forward_kinematics

log = logging.getLogger(__name__)

# Flange-down "ready" pose (HARDWARE.md §1.8) and an upright pose whose TCP (z 0.69 m) is above
# the default workspace ceiling (0.6 m).
Q_UP = np.array([0.0, -np.pi / 2, 0.0, -np.pi / 2, 0.0, 0.0])

FUZZ_KINDS: tuple[str, ...] = ("near", "far", "nan", "inf", "huge", "limit", "workspace", "bad_dt", "shape")
FUZZ_PROBS: tuple[float, ...] = (0.4, 0.2, 0.05, 0.05, 0.05, 0.08, 0.1, 0.04, 0.03)


@dataclass
class Figure:
    """One measured figure of the suite: `text` is the printed value, `bound` the pass rule."""

    target: str
    name: str
    value: float
    text: str
    bound: str
    ok: bool
    details: dict = field(default_factory=dict)

    def line(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        return f"[{mark}] {self.target:>4}  {self.name}: {self.text}   (bound: {self.bound})"


# ---------------------------------------------------------------------------- fuzzing
def fuzz_command(rng: np.random.Generator, current_q: np.ndarray, period_s: float,
                 joint_limits_rad: np.ndarray) -> tuple[str, Any, Any]:
    """One fuzzed servo command (kind, q, dt_s) around `current_q` (6,) rad.

    Kinds (FUZZ_KINDS, drawn with FUZZ_PROBS): near (a small valid step), far (a step far beyond
    the speed limit), nan / inf (one joint), huge (1e6 rad noise), limit (one joint beyond its
    limit), workspace (around the upright pose, TCP above the workspace box), bad_dt (0, < 0,
    NaN, inf or 100 s), shape (a vector of the wrong length).
    """
    kind = str(rng.choice(FUZZ_KINDS, p=np.asarray(FUZZ_PROBS) / np.sum(FUZZ_PROBS)))
    cur = np.asarray(current_q, dtype=float)
    dt: Any = period_s
    if kind == "near":
        q: Any = cur + rng.normal(0.0, 0.003, 6)
    elif kind == "far":
        q = cur + rng.normal(0.0, 0.8, 6)
    elif kind in ("nan", "inf"):
        q = cur.copy()
        q[rng.integers(6)] = np.nan if kind == "nan" else rng.choice([np.inf, -np.inf])
    elif kind == "huge":
        q = cur + rng.normal(0.0, 1e6, 6)
    elif kind == "limit":
        q = cur.copy()
        j = int(rng.integers(6))
        q[j] = rng.choice([-1.0, 1.0]) * (joint_limits_rad[j, 1] + rng.uniform(1e-6, 1.0))
    elif kind == "workspace":
        q = Q_UP + rng.normal(0.0, 0.05, 6)
    elif kind == "bad_dt":
        q = cur + rng.normal(0.0, 0.003, 6)
        dt = float(rng.choice([0.0, -period_s, np.nan, np.inf, 100.0]))
    else:
        q = rng.normal(0.0, 1.0, int(rng.choice([0, 5, 7, 12])))
    return kind, q, dt


def limit_violations(commands: np.ndarray, dts: np.ndarray, refs: np.ndarray, cfg: SafetyConfig,
                     tol: float = 1e-9, alt_refs: np.ndarray | None = None,
                     times: np.ndarray | None = None) -> np.ndarray:
    """Which forwarded commands break a limit (bool (N,)).

    Args:
        commands: (N, 6) joint targets that reached the arm, rad.
        dts: (N,) their servo periods, s.
        refs: (N, 6) the pose each step is measured from (the previous command, or the measured
            pose after a stop), rad.
        cfg: the SafetyConfig the arm must respect.
        alt_refs: optional (N, 6) second admissible reference: the last measured pose read before
            the command (SafeArm re-anchors there when the stream went stale, i.e. no accepted
            command for longer than the watchdog timeout, without an explicit stop).
        times: optional (N,) times the commands reached the arm, s, on the clock SafeArm reads
            (exact only in lock-step simulation): the step is then also bounded by the time
            elapsed since the previous command (the per-time speed limit, docs/safety.md).
    A command violates when it is non-finite, outside the joint limits, puts the TCP outside the
    workspace box, or steps faster than `joint_speed_limit_rad_s` over min(dt, max_command_dt_s,
    elapsed) from its reference (from both references when alt_refs is given).
    """
    commands = np.asarray(commands, dtype=float).reshape(-1, 6)
    bad = ~np.all(np.isfinite(commands), axis=1)
    lo, hi = np.asarray(cfg.joint_lower_rad), np.asarray(cfg.joint_upper_rad)
    bad |= np.any((commands < lo - tol) | (commands > hi + tol), axis=1)
    wmin, wmax = np.asarray(cfg.workspace_min_m), np.asarray(cfg.workspace_max_m)
    for i, q in enumerate(commands):
        if bad[i]:
            continue
        p = forward_kinematics(q, cfg.dh, cfg.tool_transform)[:3, 3]
        if np.any(p < wmin - tol) or np.any(p > wmax + tol):
            bad[i] = True
    speed = np.asarray(cfg.joint_speed_limit_rad_s)
    horizon = np.minimum(np.asarray(dts, dtype=float), cfg.max_command_dt_s)
    if times is not None and len(horizon) > 1:
        horizon[1:] = np.minimum(horizon[1:], np.maximum(np.diff(np.asarray(times, dtype=float)), 0.0))
    max_step = speed[None, :] * horizon[:, None]
    too_fast = np.any(np.abs(commands - np.asarray(refs, dtype=float).reshape(-1, 6)) > max_step * (1 + 1e-9) + tol, axis=1)
    if alt_refs is not None:
        alt = np.asarray(alt_refs, dtype=float).reshape(-1, 6)
        too_fast &= np.any(np.abs(commands - alt) > max_step * (1 + 1e-9) + tol, axis=1)
    return bad | too_fast


class ArmTap:
    """Wraps an Arm and records what reaches it: every servo target with the pose its step is
    measured from (the previous target, or the last measured pose read after a stop), every
    gripper command, every stop, and the time of each (on `clock`). Everything else is
    delegated. `nan_state = True` makes `state()` report NaN joints (a fault to inject)."""

    def __init__(self, arm: Any, clock: Callable[[], float]) -> None:
        self._arm = arm
        self._clock = clock
        self.nan_state = False  # fault: state() reports NaN joints (a broken encoder reading)
        self.commands: list[np.ndarray] = []
        self.dts: list[float] = []
        self.refs: list[np.ndarray] = []
        self.measured_refs: list[np.ndarray] = []
        self.command_times: list[float] = []
        self.stop_times: list[float] = []
        self.gripper_commands: list[float] = []
        self._ref: np.ndarray | None = None
        self._after_stop = True
        self._last_measured: np.ndarray | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._arm, name)

    def state(self) -> ArmState:
        st = self._arm.state()
        if self.nan_state:
            return dataclasses.replace(st, q=np.full(6, np.nan))
        self._last_measured = np.asarray(st.q, dtype=float).copy()
        return st

    def servo_joint(self, q: np.ndarray, dt_s: float) -> None:
        q = np.asarray(q, dtype=float).copy()
        if self._after_stop or self._ref is None:
            ref = self._last_measured if self._last_measured is not None else q
        else:
            ref = self._ref
        self._arm.servo_joint(q, dt_s)
        self.commands.append(q)
        self.dts.append(float(dt_s))
        self.refs.append(np.asarray(ref, dtype=float).copy())
        self.measured_refs.append(np.asarray(self._last_measured if self._last_measured is not None else ref,
                                             dtype=float).copy())
        self.command_times.append(self._clock())
        self._ref = q
        self._after_stop = False

    def set_gripper(self, closed_fraction: float) -> None:
        self._arm.set_gripper(closed_fraction)
        self.gripper_commands.append(closed_fraction)

    def stop(self) -> None:
        self._arm.stop()
        self.stop_times.append(self._clock())
        self._after_stop = True

    def violations(self, cfg: SafetyConfig, per_time: bool = False) -> int:
        """Forwarded commands that break a limit; per_time also bounds each step by the time
        elapsed since the previous one on the tap's clock (exact in lock-step simulation)."""
        if not self.commands:
            return 0
        return int(limit_violations(np.array(self.commands), np.array(self.dts), np.array(self.refs), cfg,
                                    alt_refs=np.array(self.measured_refs),
                                    times=np.array(self.command_times) if per_time else None).sum())


def _p99(values: Iterable[float]) -> float:
    v = np.asarray(list(values), dtype=float)
    return float(np.percentile(v, 99)) if v.size else math.nan


# ---------------------------------------------------------------------------- sim scenarios
class _Bench:
    """Tapped SafeArm + interpolator + ServoLoop over some arm; subclasses provide `now()`."""

    interp: Any
    loop: Any

    def now(self) -> float:
        raise NotImplementedError

    def q(self) -> np.ndarray:
        raise NotImplementedError

    def fuzz_once(self, rng: np.random.Generator, joint_limits_rad: np.ndarray) -> str:
        """Send one fuzzed command (`fuzz_command` around the last forwarded target) through
        SafeArm; a refusal is expected and swallowed. Returns the fuzz kind."""
        from dynaflip_ros.robot.safety import SafetyViolation

        cur = self.tap.commands[-1] if self.tap.commands else self.q()
        kind, q, dt = fuzz_command(rng, cur, self.period_s, joint_limits_rad)
        try:
            self.safe.servo_joint(q, dt)
        except SafetyViolation:
            pass
        return kind

    def sine_chunk(self, duration_s: float, amp_rad: float = 0.15, freq_hz: float = 0.5,
                   joint: int = 0) -> None:
        """Queue a smooth joint-`joint` sine (waypoints every 20 ms) starting at the current target."""
        now = self.loop.to_trajectory_time(self.now())
        start = self.interp.last_target
        if start is None:
            start = np.concatenate([self.q(), [0.0]])
        t = np.arange(1, int(duration_s / 0.02) + 1) * 0.02
        targets = np.tile(start, (t.size, 1))
        targets[:, joint] += amp_rad * np.sin(2 * np.pi * freq_hz * t)
        self.interp.add_chunk(now + t, targets, now_s=now)


class SimBench(_Bench):
    """A PickIntoSinkEnv + tapped SafeArm + interpolator + ServoLoop ticked in lock-step."""

    def __init__(self, safety: SafetyConfig, rate_hz: float = 125.0, seed: int = 0) -> None:
        from dynaflip_ros.configs.sim import SimConfig
        from dynaflip_ros.robot.interpolation import ActionChunkInterpolator
        from dynaflip_ros.robot.safety import SafeArm
        from dynaflip_ros.robot.servo_loop import ServoLoop
        from dynaflip_ros.sim.pick_into_sink import PickIntoSinkEnv

        self.env = PickIntoSinkEnv(SimConfig(image_hw=(64, 64)))
        self.env.reset(seed=seed)
        self.cfg = safety
        self.period_s = 1.0 / rate_hz
        self.tap = ArmTap(self.env.arm, clock=lambda: self.env.sim_time_s)
        self.safe = SafeArm(self.tap, safety, clock=lambda: self.env.sim_time_s)
        self.safe.connect()
        self.interp = ActionChunkInterpolator(n_dims=7)
        self.loop = ServoLoop(self.safe, self.interp, rate_hz=rate_hz, clock=lambda: self.env.sim_time_s)
        self.loop.reanchor()

    def now(self) -> float:
        return self.env.sim_time_s

    def q(self) -> np.ndarray:
        return np.asarray(self.env.arm.read_state().q, dtype=float)

    def dq(self) -> np.ndarray:
        return np.asarray(self.env.arm.read_state().dq, dtype=float)

    def step(self, tick: bool = True) -> None:
        with self.env.lock:
            if tick:
                self.loop.tick(self.env.sim_time_s)
            self.env.step(self.period_s)

    def close(self) -> None:
        self.env.close()


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
    p99 = _p99(stop_ms)
    return [
        Figure("sim", "stale-command stop", p99, f"{p99:.0f} ms (p99 of {trials}; watchdog {cfg.watchdog_timeout_s * 1e3:.0f} ms)",
               "<= 100 ms", p99 <= 100.0, {"stop_ms": stop_ms}),
        Figure("sim", "stale-command standstill", _p99(still_ms), f"{_p99(still_ms):.0f} ms (p99, joint speeds < 0.01 rad/s)",
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


# ---------------------------------------------------------------------------- RTDE scenarios
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


class _RtdeBench(_Bench):
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
    bench = _RtdeBench(cfg, host, ur_type, rt_priority=rt_priority)
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
    bench = _RtdeBench(cfg, host, ur_type, rt_priority=rt_priority)
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
    p_stream, p_frozen, p_dead = _p99(out["stream"]), max(out["frozen"]), max(out["dead"])
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


def rtde_protective_stop(trials: int = 3, safety: SafetyConfig | None = None, ur_type: str = "e-series",
                         host: str = "127.0.2.43", rt_priority: int = 0) -> list[Figure]:
    """A protective stop injected at the controller mid-motion while chunks keep arriving: the
    arm must not move (controller trace) and no servoJ may reach the controller until the
    re-arm (`URRtdeArm.rearm`: dashboard unlock + script re-upload, then ServoLoop.rearm); the
    first target after the re-arm must be the measured pose (no jump)."""
    cfg = safety or SafetyConfig()
    bench = _RtdeBench(cfg, host, ur_type, rt_priority=rt_priority)
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
    bench = _RtdeBench(cfg, host, ur_type, rt_priority=rt_priority)
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
