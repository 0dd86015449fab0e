"""Property-based tests of the safety layer (hypothesis): what reaches the arm is always safe.

A stateful machine drives `SafeArm` over a recording arm and a fake clock with generated
streams: valid and just-too-fast steps, far steps, NaN / inf bursts, huge and non-numeric
values (Python ints beyond float64, strings, complex, masked arrays, bools, wrong shapes), bad
servo periods, timestamps past / future / repeated, the arm moved outside the layer, connect /
stop / rearm / disconnect interleavings, protective stops, and failing or NaN state reads.
An independent model of the specification (docs/safety.md) checks every command that reaches
the arm:

- finite, inside the joint limits, TCP inside the workspace box, dt in the accepted range;
- per step and per unit time: |q - ref| <= speed x min(dt, max_command_dt_s, elapsed since the
  previous forwarded command), where ref is the previous forwarded target while the stream is
  live and the arm's true pose otherwise (after connect / rearm / stop / watchdog / halt /
  disconnect / a stale stream); elapsed time is the clock's forward increments only;
- nothing reaches the arm before a successful connect, or after a protective stop was seen
  until a successful re-arm; a failed connect / re-arm never arms;
- the watchdog stops the arm exactly when more than `watchdog_timeout_s` passed since the last
  forwarded command of a live stream, once;
- nothing but `SafetyViolation` (or `ArmError` from a failing read) escapes for bad input.

CI runs the "ci" hypothesis profile (fixed seed, bounded examples; tests/conftest.py); a long
run: `./scripts/test.sh tests/test_robot_safety_properties.py --hypothesis-profile=safety-long`.
The number of generated commands is printed in the test summary.
"""
from __future__ import annotations

import logging
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, note
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from dynaflip_ros.configs.safety import SafetyConfig
from dynaflip_ros.robot.arm import ArmError, ArmNotConnectedError, ArmState
from dynaflip_ros.robot.commands import SafetyViolation, check_servo_period, joint_vector, real_scalar
from dynaflip_ros.robot.kinematics import forward_kinematics
from dynaflip_ros.robot.monotonic_clock import MonotonicClock
from dynaflip_ros.robot.safety import SafeArm

from arm_doubles import Q_READY, Q_UP, FakeClock

CFG = SafetyConfig()
SPEED = CFG.joint_speed_limit_rad_s  # (6,) rad/s
LO, HI = CFG.joint_lower_rad, CFG.joint_upper_rad
WMIN, WMAX = np.array(CFG.workspace_min_m), np.array(CFG.workspace_max_m)
TOL = 1e-9

@pytest.fixture(autouse=True)
def _quiet_safety_logs():
    """The machine halts and refuses thousands of times: keep those log lines out of the
    captured output (their volume, not their content, is the problem)."""
    logger = logging.getLogger("dynaflip_ros.robot")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)


# Counted over the whole module; printed by tests/conftest.py at the end of the session.
COUNTS = {"commands": 0, "reached_arm": 0, "refused": 0, "gripper_commands": 0, "steps": 0, "by_reason": {}}


def refused(reason: str) -> None:
    COUNTS["refused"] += 1
    COUNTS["by_reason"][reason] = COUNTS["by_reason"].get(reason, 0) + 1


class SpyClock(FakeClock):
    """A fake clock (seconds) that logs every reading it gives."""

    def __init__(self) -> None:
        super().__init__(0.0)
        self.reads: list[float] = []

    def __call__(self) -> float:
        self.reads.append(self.t)
        return self.t


class PropertyArm:
    """An `Arm` whose true pose follows every forwarded target at once (the worst case for a
    rate limiter: no lag hides a jump). `read_mode` makes state reads fail: "ok", "raise"
    (ArmError) or "nan" (NaN joints)."""

    def __init__(self) -> None:
        self.q = Q_READY.copy()
        self.connected = False
        self.protective_stop = False
        self.read_mode = "ok"
        self.commands: list[tuple[np.ndarray, float]] = []
        self.gripper_commands: list[float] = []
        self.stops = 0

    def connect(self) -> None:
        self.connected = True

    def state(self) -> ArmState:
        if not self.connected:
            raise ArmNotConnectedError("PropertyArm not connected")
        if self.read_mode == "raise":
            raise ArmError("state read failed (injected)")
        q = np.full(6, np.nan) if self.read_mode == "nan" else self.q.copy()
        return ArmState(q=q, dq=np.zeros(6), tcp_pose=np.zeros(7), gripper=0.0, stamp_s=0.0,
                        protective_stop=self.protective_stop)

    def servo_joint(self, q, dt_s) -> None:
        assert self.connected, "a target reached a disconnected arm"
        self.commands.append((np.array(q, dtype=float), dt_s))
        self.q = np.array(q, dtype=float)

    def set_gripper(self, closed_fraction) -> None:
        self.gripper_commands.append(closed_fraction)

    def stop(self) -> None:
        self.stops += 1

    def disconnect(self) -> None:
        self.connected = False


def tcp(q: np.ndarray) -> np.ndarray:
    return forward_kinematics(q, CFG.dh, CFG.tool_transform)[:3, 3]


# ---------------------------------------------------------------------------- input strategies
finite_offsets = st.floats(-0.05, 0.05, allow_nan=False)
bad_scalars = st.sampled_from([
    math.nan, math.inf, -math.inf, 1e6, -1e6, 10**400, -(10**400), 10**309, "0.1", "nan", None, True, False,
    1 + 2j, 0.1 + 0j, b"1", [0.1], object(), np.datetime64("2026-01-01"),
])
good_dts = st.sampled_from([0.002, 0.008, CFG.min_command_dt_s, CFG.max_command_dt_s, np.float32(0.008),
                            np.int64(0) + 0.004, Fraction(1, 125)])
bad_dts = st.sampled_from([0.0, -0.008, math.nan, math.inf, True, 1e300, 1e-300, 10**400, "0.008", None,
                           CFG.max_command_dt_s * 1.0001, CFG.min_command_dt_s * 0.999, 0.008 + 0j,
                           np.array([0.008])])
clock_steps = st.sampled_from([0.0, 0.0005, 0.002, 0.008, 0.008, 0.008, 0.02, CFG.watchdog_timeout_s,
                               CFG.watchdog_timeout_s + 1e-6, 0.2, 1.0, -0.001, -10.0])


@st.composite
def odd_containers(draw):
    """Joint targets that are not six real numbers."""
    kind = draw(st.sampled_from(["scalar_in_vector", "shape", "masked", "complex", "strings", "bools", "object",
                                 "nested", "none", "scalar"]))
    base = list(Q_READY)
    if kind == "scalar_in_vector":
        base[draw(st.integers(0, 5))] = draw(bad_scalars)
        return base
    if kind == "shape":
        n = draw(st.sampled_from([0, 1, 5, 7, 12]))
        return [0.1] * n if draw(st.booleans()) else np.zeros((6, 1))
    if kind == "masked":
        mask = draw(st.lists(st.booleans(), min_size=6, max_size=6).filter(any))
        return np.ma.masked_array(Q_READY, mask=mask)
    if kind == "complex":
        return Q_READY.astype(complex) + 1j * draw(st.sampled_from([0.0, 0.3]))
    if kind == "strings":
        return [str(v) for v in Q_READY]
    if kind == "bools":
        return [True] * 6
    if kind == "object":
        return np.array([object()] * 6, dtype=object)
    if kind == "nested":
        return [[v] for v in Q_READY]
    if kind == "none":
        return None
    return 0.5


# ---------------------------------------------------------------------------- the machine
class SafeArmMachine(RuleBasedStateMachine):
    """Generated command streams against SafeArm; the model below is the specification."""

    def __init__(self) -> None:
        super().__init__()
        self.arm = PropertyArm()
        self.clock = SpyClock()
        self.safe = SafeArm(self.arm, CFG, clock=self.clock)
        # Model of the specification.
        self.t = 0.0  # elapsed time: the forward increments of the readings SafeArm took
        self._n_reads = 0
        self.connected = False
        self.halted = False
        self.streaming = False  # a target was forwarded since the last stop / (re)arm / connect
        self.last_q: np.ndarray | None = None
        self.last_t: float | None = None  # model time of the last forwarded target

    # ------------------------------------------------------------------ model helpers
    def observe(self) -> None:
        """Advance the model time over the clock readings SafeArm took since the last call: a
        step back it never saw cannot count, one it saw adds nothing."""
        reads = self.clock.reads
        for prev, cur in zip(reads[max(self._n_reads - 1, 0):], reads[max(self._n_reads, 1):]):
            self.t += max(0.0, cur - prev)
        self._n_reads = len(reads)

    def live(self) -> bool:
        """The next step may be measured from the previous target (no break, not stale)."""
        return (self.connected and self.streaming and self.last_t is not None
                and self.t - self.last_t <= CFG.watchdog_timeout_s)

    def break_stream(self) -> None:
        self.streaming = False

    def halt(self) -> None:
        self.halted = True
        self.streaming = False

    def send(self, q, dt) -> None:
        """One servo_joint call, checked against the model."""
        COUNTS["commands"] += 1
        n_before = len(self.arm.commands)
        true_q = self.arm.q.copy()
        read_ok = self.arm.read_mode == "ok"
        try:
            self.safe.servo_joint(q, dt)
        except SafetyViolation as e:
            refused(e.reason)
            note(f"refused: {e}")
        except ArmNotConnectedError:
            assert not self.connected, "ArmNotConnectedError while the model is connected"
            refused("not_connected")
        except ArmError as e:
            self.observe()
            assert not self.live() and not read_ok, f"ArmError {e} without a failing anchor read"
            refused("state_read_failed")
        self.observe()  # the reading this command took (if it got that far)
        live = self.live()
        reached = len(self.arm.commands) - n_before
        assert reached in (0, 1)
        if self.safe.halted and not self.halted:
            # Only the anchor read of a valid command may see a protective stop and halt.
            assert (self.connected and not live and self.arm.read_mode != "raise" and self.arm.protective_stop
                    and reached == 0)
            self.halt()
            return
        if not reached:
            return
        COUNTS["reached_arm"] += 1
        q_f, dt_f = self.arm.commands[-1]
        assert self.connected, "a target reached the arm before a successful connect"
        assert not self.halted, "a target reached the arm while halted"
        assert np.all(np.isfinite(q_f)) and q_f.shape == (6,)
        assert np.all(q_f >= LO - TOL) and np.all(q_f <= HI + TOL), q_f
        p = tcp(q_f)
        assert np.all(p >= WMIN - TOL) and np.all(p <= WMAX + TOL), p
        assert isinstance(dt_f, float) and CFG.min_command_dt_s <= dt_f <= CFG.max_command_dt_s, dt_f
        ref = self.last_q if live else true_q
        horizon = min(dt_f, CFG.max_command_dt_s)
        if self.last_t is not None:
            horizon = min(horizon, self.t - self.last_t)
        bound = SPEED * horizon
        assert np.all(np.abs(q_f - ref) <= bound * (1 + 1e-9) + 1e-12), (
            f"step {q_f - ref} exceeds {bound} (live={live}, elapsed="
            f"{None if self.last_t is None else self.t - self.last_t})")
        self.last_q, self.last_t, self.streaming = q_f.copy(), self.t, True

    @initialize()
    def start_connected(self):
        self.connect()

    # ------------------------------------------------------------------ rules: commands
    @rule(offset=st.lists(finite_offsets, min_size=6, max_size=6), dt=good_dts)
    def near_step(self, offset, dt):
        self.send(self.arm.q + np.array(offset), dt)

    @rule(n=st.integers(1, 40), velocity=st.lists(st.floats(-1.2, 1.2), min_size=6, max_size=6),
          period=st.sampled_from([0.002, 0.008]), jitter=st.lists(st.sampled_from([0.0, 0.0, 0.0, -0.0005, 0.0005,
                                                                                   -0.002, 0.003]), min_size=40,
                                                                   max_size=40))
    def stream(self, n, velocity, period, jitter):
        """A servo stream at 500 / 125 Hz with jitter: targets along a velocity (up to ~1.5x the
        limit on the big joints), so some steps are rate-limited and most reach the arm."""
        v = np.array(velocity) * SPEED * 1.25  # rad/s, up to 1.5x the limit
        for k in range(n):
            self.send(self.arm.q + v * period, period)
            self.advance(period + jitter[k])

    @rule(factor=st.floats(0.9, 1.2), joint=st.integers(0, 5), sign=st.sampled_from([-1.0, 1.0]), dt=good_dts)
    def step_just_over_the_bound(self, factor, joint, sign, dt):
        step = np.zeros(6)
        step[joint] = sign * factor * SPEED[joint] * float(dt)
        self.send(self.arm.q + step, dt)

    @rule(offset=st.lists(st.floats(-1.5, 1.5), min_size=6, max_size=6), dt=good_dts)
    def far_step(self, offset, dt):
        self.send(self.arm.q + np.array(offset), dt)

    @rule(n=st.integers(1, 8), joint=st.integers(0, 5), value=st.sampled_from([math.nan, math.inf, -math.inf]))
    def non_finite_burst(self, n, joint, value):
        for _ in range(n):
            q = self.arm.q.copy()
            q[joint] = value
            self.send(q, 0.008)
            self.advance(0.008)

    @rule(q=odd_containers(), dt=good_dts)
    def odd_input(self, q, dt):
        self.send(q, dt)

    @rule(offset=st.lists(finite_offsets, min_size=6, max_size=6), dt=bad_dts)
    def bad_dt(self, offset, dt):
        self.send(self.arm.q + np.array(offset), dt)

    @rule(joint=st.integers(0, 5), beyond=st.floats(1e-9, 1.0), sign=st.sampled_from([-1.0, 1.0]))
    def beyond_joint_limit(self, joint, beyond, sign):
        q = self.arm.q.copy()
        q[joint] = sign * (HI[joint] + beyond)
        self.send(q, 0.008)

    @rule(offset=st.lists(st.floats(-0.05, 0.05), min_size=6, max_size=6))
    def outside_workspace(self, offset):
        self.send(Q_UP + np.array(offset), 0.008)

    @rule(value=st.one_of(st.floats(0.0, 1.0), st.floats(-0.5, 1.5), bad_scalars))
    def gripper(self, value):
        n = len(self.arm.gripper_commands)
        try:
            self.safe.set_gripper(value)
        except (SafetyViolation, ArmNotConnectedError):
            pass
        if len(self.arm.gripper_commands) > n:
            COUNTS["gripper_commands"] += 1
            g = self.arm.gripper_commands[-1]
            assert self.connected and not self.halted
            assert isinstance(g, float) and CFG.gripper_range[0] <= g <= CFG.gripper_range[1]

    # ------------------------------------------------------------------ rules: time
    def advance(self, dt: float) -> None:
        self.clock.t += dt

    @rule(dt=clock_steps)
    def clock_moves(self, dt):
        self.advance(dt)

    @rule()
    def watchdog(self):
        stops = self.arm.stops
        fired = self.safe.check_watchdog()
        self.observe()
        elapsed = None if self.last_t is None else self.t - self.last_t
        expect = self.connected and self.streaming and elapsed is not None and elapsed > CFG.watchdog_timeout_s
        if elapsed is None or abs(elapsed - CFG.watchdog_timeout_s) > 1e-9:  # at the boundary: rounding decides
            assert fired == expect, f"watchdog fired={fired}, expected {expect} (elapsed {elapsed})"
        assert self.arm.stops == stops + int(fired)
        if fired:
            self.break_stream()

    # ------------------------------------------------------------------ rules: the arm
    @precondition(lambda self: not self.live())
    @rule(offset=st.lists(st.floats(-0.5, 0.5), min_size=6, max_size=6))
    def moved_outside_the_layer(self, offset):
        """Freedrive / pendant / another client, while no live stream holds the arm."""
        self.arm.q = np.clip(self.arm.q + np.array(offset), LO, HI)

    @rule(fault=st.sampled_from(["reads_ok", "reads_ok", "reads_ok", "reads_raise", "reads_nan",
                                 "protective_stop_on", "protective_stop_off", "protective_stop_off"]))
    def arm_fault(self, fault):
        """State reads that fail (ArmError) or report NaN joints; the controller's protective stop."""
        if fault.startswith("reads_"):
            self.arm.read_mode = fault[len("reads_"):]
        else:
            self.arm.protective_stop = fault == "protective_stop_on"

    @rule()
    def check_protective_stop(self):
        expect = self.connected and not self.halted and self.arm.protective_stop
        try:
            entered = self.safe.check_protective_stop()
        except ArmError:
            assert self.arm.read_mode == "raise"
            return
        assert entered == expect
        if entered:
            self.halt()

    # ------------------------------------------------------------------ rules: lifecycle
    @rule(action=st.sampled_from(["connect", "connect", "rearm", "rearm", "rearm", "stop", "stop", "disconnect"]))
    def lifecycle(self, action):
        getattr(self, action)()

    def connect(self):
        self.break_stream()
        mode, pstop = self.arm.read_mode, self.arm.protective_stop
        try:
            self.safe.connect()
            ok = True
        except (SafetyViolation, ArmError):
            ok = False
        assert ok == (mode == "ok"), f"connect ok={ok} with reads {mode}"
        self.connected = ok
        if mode != "raise" and pstop:
            self.halted = True  # latched, also when the connect failed
        assert self.safe.halted == self.halted

    def stop(self):
        self.safe.stop()
        self.break_stream()

    def rearm(self):
        try:
            self.safe.rearm()
            ok = True
        except ArmNotConnectedError:
            assert not self.connected
            return
        except (SafetyViolation, ArmError):
            ok = False
        expect_ok = self.arm.read_mode == "ok" and not self.arm.protective_stop
        assert ok == expect_ok
        self.break_stream()
        self.halted = not ok
        assert self.safe.halted == self.halted

    def disconnect(self):
        self.safe.disconnect()
        self.connected = False
        self.break_stream()

    @invariant()
    def counters_add_up(self):
        COUNTS["steps"] += 1
        s = self.safe.stats
        assert s.accepted == len(self.arm.commands)
        assert s.commands >= s.accepted + s.rejected
        assert self.safe.halted == self.halted


TestSafeArmProperties = SafeArmMachine.TestCase


# ---------------------------------------------------------------------------- the converters
anything = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.complex_numbers(), st.text(max_size=4),
    st.binary(max_size=4), st.fractions(), st.lists(st.one_of(st.floats(), st.integers(), st.text(max_size=2)),
                                                     max_size=8),
    st.lists(st.integers(), min_size=6, max_size=6), st.lists(st.floats(), min_size=6, max_size=6),
)


@given(x=anything)
def test_joint_vector_returns_six_finite_floats_or_refuses(x):
    try:
        q = joint_vector(x)
    except SafetyViolation as e:
        assert e.reason in ("invalid", "non_finite")
        return
    assert q.shape == (6,) and q.dtype == np.float64 and np.all(np.isfinite(q))


@given(x=anything)
def test_real_scalar_and_servo_period_refuse_cleanly(x):
    for fn in (lambda v: real_scalar(v, "x"), lambda v: check_servo_period(v, 0.0005, 0.1)):
        try:
            v = fn(x)
        except SafetyViolation:
            continue
        assert isinstance(v, float) and not isinstance(x, bool)


@given(readings=st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=50))
def test_monotonic_clock_advances_by_forward_increments_only(readings):
    it = iter(readings)
    clock = MonotonicClock(lambda: next(it))
    out = [clock() for _ in readings]
    assert all(b >= a for a, b in zip(out, out[1:]))
    forward = sum(max(0.0, b - a) for a, b in zip(readings, readings[1:]))
    assert out[-1] - out[0] == pytest.approx(forward, rel=1e-9, abs=1e-6)
