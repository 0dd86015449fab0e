"""The measuring bench of the fault-injection suite (`dynaflip fault-inject`): what every scenario
drives and how it measures.

- `ArmTap` sits between SafeArm and an arm and records what reached the arm (targets, periods,
  the pose each step is measured from, stops, gripper commands, each with its time on `clock`).
- `SimBench`: PickIntoSinkEnv (MuJoCo UR3) + tapped SafeArm + ActionChunkInterpolator + ServoLoop
  ticked in lock-step simulation time (deterministic; single thread, `env.advance_period` per step).
  `Bench` is the part shared with `eval.fault_rtde.RtdeBench`.
- `fuzz_command` draws fuzzed servo commands; `limit_violations` checks commands that reached the
  arm against a SafetyConfig exactly (joint limits, workspace box by forward kinematics, speed
  over min(dt, max_command_dt_s, elapsed)).
- `Figure`: one measured line of the suite's output, with its bound.

Units: rad, rad/s, s, m. Times are on the bench's clock (simulation time for SimBench).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np

from dynaflip_ros.configs.safety import SafetyConfig
from dynaflip_ros.robot.arm import ArmState
from dynaflip_ros.robot.kinematics import forward_kinematics

# Flange-down "ready" pose (docs/hardware.md) and an upright pose whose TCP (z 0.69 m) is above
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


def p99(values: Iterable[float]) -> float:
    """99th percentile of `values` (NaN when empty)."""
    v = np.asarray(list(values), dtype=float)
    return float(np.percentile(v, 99)) if v.size else math.nan


# ---------------------------------------------------------------------------- benches
class Bench:
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


class SimBench(Bench):
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
        self.env.advance_period(self.period_s, self.loop.tick if tick else None)

    def close(self) -> None:
        self.env.close()
