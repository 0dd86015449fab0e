"""The four holes a property-based fuzz found in SafeArm (issue 8), as minimal reproductions.

Each test failed on the code before the fix (SafeArm of commit 74f7412) and passes after it.
They use only the public SafeArm API, a recording arm and a fake clock (the MuJoCo versions are
the `dynaflip fault-inject` scenarios, tested in tests/test_eval_fault_inject.py).
"""
from __future__ import annotations

import numpy as np
import pytest

from dynaflip_ros.configs.safety import SafetyConfig
from dynaflip_ros.robot.arm import ArmError, ArmNotConnectedError
from dynaflip_ros.robot.safety import SafeArm, SafetyViolation
from arm_doubles import Q_READY, FakeClock, RecordingArm

CFG = SafetyConfig()
MAX_STEP_8MS = CFG.joint_speed_limit_rad_s * 0.008  # (6,) rad


def connected(q0=Q_READY):
    arm, clock = RecordingArm(q0), FakeClock()
    safe = SafeArm(arm, CFG, clock=clock)
    safe.connect()
    return safe, arm, clock


# ---------------------------------------------------------------------------- hole 1
def test_hole1_connect_then_arm_moved_outside_no_jump():
    """Connect, move wrist_3 +0.5 rad outside SafeArm (freedrive), wait 1 s, command the measured
    pose: the target must be the measured pose (before: 0.475 rad away, towards the old pose)."""
    safe, arm, clock = connected()
    moved = Q_READY + np.array([0, 0, 0, 0, 0, 0.5])
    arm.q = moved.copy()
    clock.t = 1.0
    out = safe.servo_joint(moved, 0.008)
    assert float(np.max(np.abs(out - moved))) <= 1e-12
    assert float(np.max(np.abs(arm.commands[-1][0] - moved))) <= 1e-12


def test_hole1_rearm_then_arm_moved_outside_no_jump():
    safe, arm, clock = connected()
    safe.servo_joint(Q_READY, 0.008)
    arm.protective_stop = True
    assert safe.check_protective_stop()
    arm.protective_stop = False
    safe.rearm()
    moved = Q_READY + np.array([0.3, 0, 0, 0, 0, 0])
    arm.q = moved.copy()  # jogged on the pendant after the re-arm
    clock.t = 1.0
    out = safe.servo_joint(moved, 0.008)
    np.testing.assert_allclose(out, moved, atol=1e-12)  # before: 0.275 rad short, towards the old pose


# ---------------------------------------------------------------------------- hole 2
def test_hole2_failed_connect_does_not_arm():
    arm, clock = RecordingArm(), FakeClock()
    arm.q = np.full(6, np.nan)
    safe = SafeArm(arm, CFG, clock=clock)
    with pytest.raises(SafetyViolation) as ei:
        safe.connect()
    assert ei.value.reason == "invalid"
    arm.q = Q_READY.copy()  # the reading recovers; SafeArm must still refuse until a good connect
    clock.t = 0.1
    with pytest.raises(ArmNotConnectedError):
        safe.servo_joint(Q_READY, 0.008)
    assert arm.commands == []
    safe.connect()
    clock.t = 0.2
    safe.servo_joint(Q_READY, 0.008)
    assert len(arm.commands) == 1


def test_hole2_failed_rearm_stays_halted():
    safe, arm, clock = connected()
    arm.protective_stop = True
    assert safe.check_protective_stop()
    arm.protective_stop = False
    arm.q = np.full(6, np.nan)
    with pytest.raises(SafetyViolation):
        safe.rearm()
    assert safe.halted
    arm.q = Q_READY.copy()
    clock.t = 0.1
    with pytest.raises(SafetyViolation) as ei:
        safe.servo_joint(Q_READY, 0.008)
    assert ei.value.reason == "halted"
    assert arm.commands == []


def test_hole2_protective_stop_at_a_failing_connect_latches_the_halt():
    arm, clock = RecordingArm(), FakeClock()
    arm.protective_stop = True
    arm.q = np.full(6, np.nan)
    safe = SafeArm(arm, CFG, clock=clock)
    with pytest.raises(SafetyViolation):
        safe.connect()
    assert safe.halted
    arm.q = Q_READY.copy()
    arm.protective_stop = False
    safe.connect()  # a later good connect does not clear the latched halt: only rearm() does
    with pytest.raises(SafetyViolation) as ei:
        safe.servo_joint(Q_READY, 0.008)
    assert ei.value.reason == "halted" and arm.commands == []


# ---------------------------------------------------------------------------- hole 3
def test_hole3_two_calls_at_the_same_instant_get_one_step():
    safe, arm, clock = connected()
    target = Q_READY + 1.0
    clock.t = 1.0
    safe.servo_joint(target, 0.002)
    safe.servo_joint(target, 0.002)  # same timestamp: no time elapsed, no further motion
    total = np.abs(arm.commands[-1][0] - Q_READY)
    assert np.all(total <= CFG.joint_speed_limit_rad_s * 0.002 * (1 + 1e-9))


def test_hole3_declared_dt_larger_than_the_call_period_is_not_trusted():
    safe, arm, clock = connected()
    target = Q_READY + np.array([1.0, 0, 0, 0, 0, 0])
    for k in range(1, 26):  # 125 Hz calls declaring 0.1 s
        clock.t = k * 0.008
        safe.servo_joint(target, 0.1)
    q = np.array([c[0] for c in arm.commands])
    speed = np.abs(np.diff(q[:, 0])) / 0.008
    assert speed.max() <= CFG.joint_speed_limit_rad_s[0] * (1 + 1e-9)  # before: 12.5x the limit


# ---------------------------------------------------------------------------- hole 4
@pytest.mark.parametrize("q", [
    [10**400] * 6,
    list(Q_READY[:5]) + [10**309],
    [str(v) for v in Q_READY],
    Q_READY.astype(complex),
    np.ma.masked_array(Q_READY, mask=[0, 0, 1, 0, 0, 0]),
    [True] * 6,
    [None] * 6,
], ids=["huge_ints", "one_huge_int", "strings", "complex", "masked", "bools", "none"])
def test_hole4_bad_joint_input_is_a_safety_violation(q):
    safe, arm, clock = connected()
    clock.t = 0.1
    with pytest.raises(SafetyViolation) as ei:
        safe.servo_joint(q, 0.008)
    assert ei.value.reason == "invalid"
    assert arm.commands == [] and safe.stats.rejected_invalid == 1


@pytest.mark.parametrize("dt", [10**400, True, 1e300, 1e-300], ids=["huge_int", "bool", "1e300", "1e-300"])
def test_hole4_bad_dt_is_a_safety_violation(dt):
    safe, arm, clock = connected()
    clock.t = 0.1
    with pytest.raises(SafetyViolation):
        safe.servo_joint(Q_READY, dt)
    assert arm.commands == []


@pytest.mark.parametrize("g", [10**400, True, "0.5"], ids=["huge_int", "bool", "string"])
def test_hole4_bad_gripper_input_is_a_safety_violation(g):
    safe, arm, _ = connected()
    with pytest.raises(SafetyViolation) as ei:
        safe.set_gripper(g)
    assert ei.value.reason == "gripper" and arm.gripper_commands == []


def test_hole4_clock_stepping_back_does_not_delay_the_watchdog():
    safe, arm, clock = connected()
    clock.t = 20.0
    safe.servo_joint(Q_READY, 0.008)
    clock.t = 10.0  # the injected clock steps back 10 s
    assert not safe.check_watchdog()
    clock.t = 10.0 + CFG.watchdog_timeout_s + 0.006  # 56 ms after the last command, on any clock
    assert safe.check_watchdog()
    assert arm.stops == 1


# ---------------------------------------------------------------------------- found by the property suite
def test_a_refused_command_does_not_leave_a_stale_measured_anchor():
    """The long property run found a fifth hole in the first fix: the measured pose read for a
    command that was then refused stayed the anchor; the arm was moved, and the next command was
    measured from where it used to be (0.49 rad off in one step)."""
    safe, arm, clock = connected()
    arm.fail_servo = True  # the anchored command is refused downstream
    clock.t = 1.0
    with pytest.raises(ArmError):
        safe.servo_joint(Q_READY, 0.008)
    arm.fail_servo = False
    moved = Q_READY + np.array([0, 0, 0, 0, 0, 0.5])
    arm.q = moved.copy()  # moved by hand while no stream holds it
    clock.t = 2.0
    np.testing.assert_allclose(safe.servo_joint(moved, 0.008), moved, atol=1e-12)
