"""SafeArm: nothing unsafe reaches the arm (docs/safety.md)."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from dynaflip_ros.configs.io import ConfigError, from_dict, load_yaml
from dynaflip_ros.configs.safety import SafetyConfig
from dynaflip_ros.robot.arm import Arm, ArmError, ArmNotConnectedError
from dynaflip_ros.robot.kinematics import UR3_JOINT_LIMITS_RAD, UR3_MAX_JOINT_SPEED_RAD_S, forward_kinematics
from dynaflip_ros.robot.safety import SafeArm, SafetyViolation

from arm_doubles import Q_READY, Q_UP, FakeClock, RecordingArm


def make(config: SafetyConfig | None = None, q0: np.ndarray = Q_READY):
    arm = RecordingArm(q0)
    clock = FakeClock()
    safe = SafeArm(arm, config or SafetyConfig(), clock=clock)
    safe.connect()
    return safe, arm, clock


def tcp(q: np.ndarray, cfg: SafetyConfig) -> np.ndarray:
    return forward_kinematics(q, cfg.dh, cfg.tool_transform)[:3, 3]


# ---------------------------------------------------------------------------- config
def test_config_defaults_and_yaml_roundtrip():
    cfg = SafetyConfig()
    np.testing.assert_allclose(cfg.joint_lower_rad, UR3_JOINT_LIMITS_RAD[:, 0])
    np.testing.assert_allclose(cfg.joint_speed_limit_rad_s, UR3_MAX_JOINT_SPEED_RAD_S * 0.5)
    assert load_yaml(SafetyConfig, "config/safety.yaml") == cfg
    tight = from_dict(SafetyConfig, {"joint_limits_rad": [[-1, 1]] * 6, "speed_scale": 0.25})
    assert tight.joint_limits_rad == ((-1.0, 1.0),) * 6


@pytest.mark.parametrize(
    "bad",
    [
        {"joint_limits_rad": [[-7.0, 1.0]] + [[-1, 1]] * 5},  # looser than the datasheet
        {"joint_limits_rad": [[1.0, -1.0]] * 6},
        {"joint_limits_rad": [[-1, 1]] * 5},
        {"max_joint_speed_rad_s": [4.0] * 6},  # above 180 deg/s on the big joints
        {"speed_scale": 0.0},
        {"speed_scale": float("nan")},
        {"workspace_min_m": [0.0, 0.0, 0.7]},  # min z above max z
        {"workspace_max_m": [0.5, 0.5]},
        {"tcp_offset_m": -0.1},
        {"watchdog_timeout_s": 0.0},
        {"min_command_dt_s": 0.2},  # above max_command_dt_s
        {"max_command_dt_s": 2.0},  # above the 1 s any layer accepts
        {"min_command_dt_s": 1e-6},  # below the 0.1 ms any layer accepts
        {"gripper_range": [0.5, 0.2]},
        {"robot_model": "ur5"},
        {"no_such_key": 1},
    ],
)
def test_config_rejects_bad_values(bad):
    with pytest.raises(ConfigError):
        from_dict(SafetyConfig, bad)


# ---------------------------------------------------------------------------- single commands
def test_implements_arm_and_anchors_at_the_first_command():
    safe, arm, clock = make()
    assert isinstance(safe, Arm)
    assert safe.last_commanded_q is None  # anchored lazily: the arm may move before the first command
    assert not safe.halted
    arm.q = Q_READY + 0.01
    clock.t = 1.0
    np.testing.assert_array_equal(safe.servo_joint(Q_READY + 0.01, 0.008), Q_READY + 0.01)
    np.testing.assert_array_equal(safe.last_commanded_q, Q_READY + 0.01)


def test_command_before_connect_raises():
    safe = SafeArm(RecordingArm(), SafetyConfig())
    with pytest.raises(ArmNotConnectedError):
        safe.servo_joint(Q_READY, 0.008)


def test_valid_small_step_is_forwarded_unchanged():
    safe, arm, _ = make()
    q = Q_READY + 0.005
    out = safe.servo_joint(q, 0.008)
    np.testing.assert_array_equal(out, q)
    assert len(arm.commands) == 1
    np.testing.assert_array_equal(arm.commands[0][0], q)
    assert arm.commands[0][1] == 0.008
    assert safe.stats.accepted == 1 and safe.stats.rate_limited == 0


@pytest.mark.parametrize(
    "q, reason, counter",
    [
        (np.full(6, np.nan), "non_finite", "rejected_nan"),
        (Q_READY + np.array([0, 0, 0, np.inf, 0, 0]), "non_finite", "rejected_nan"),
        (Q_READY + np.array([0, 0, 0, 0, -np.inf, 0]), "non_finite", "rejected_nan"),
        (np.array([0.0, -np.pi / 2, 3.3, -np.pi / 2, -np.pi / 2, 0.0]), "joint_limit", "rejected_joint_limit"),
        (np.array([7.0, -np.pi / 2, np.pi / 2, -np.pi / 2, -np.pi / 2, 0.0]), "joint_limit", "rejected_joint_limit"),
        (Q_UP, "workspace", "rejected_workspace"),
        (np.zeros(5), "invalid", "rejected_invalid"),
        (np.zeros((6, 1)), "invalid", "rejected_invalid"),
    ],
)
def test_unsafe_commands_never_reach_the_arm(q, reason, counter):
    safe, arm, _ = make()
    with pytest.raises(SafetyViolation) as ei:
        safe.servo_joint(q, 0.008)
    assert ei.value.reason == reason
    assert isinstance(ei.value, ArmError)
    assert arm.commands == []
    assert getattr(safe.stats, counter) == 1
    assert safe.last_commanded_q is None


@pytest.mark.parametrize("dt", [0.0, -0.008, float("nan"), float("inf"), "x", "0.008", True, None, 1e300, 1e-300,
                                10**400, 0.008 + 0j, 10.0])
def test_bad_dt_is_rejected(dt):
    safe, arm, _ = make()
    with pytest.raises(SafetyViolation, match="dt_s") as ei:
        safe.servo_joint(Q_READY, dt)
    assert ei.value.reason == "invalid"
    assert arm.commands == []


def test_workspace_box_uses_tcp_offset():
    # Q_READY: flange z = 0.314 m, flange pointing down -> TCP z = 0.164 m with a 0.15 m offset.
    cfg = SafetyConfig()
    np.testing.assert_allclose(tcp(Q_READY, cfg), [-0.29855, -0.11235, 0.1640], atol=1e-3)
    # A box floor at 0.2 m rejects the TCP (0.164) although the flange (0.314) is inside.
    high_floor = SafetyConfig(workspace_min_m=(-0.5, -0.5, 0.2))
    safe, arm, _ = make(high_floor, q0=Q_READY + np.array([0, 0, -0.3, 0, 0, 0]))
    with pytest.raises(SafetyViolation, match="workspace"):
        safe.servo_joint(Q_READY, 0.008)
    assert arm.commands == []
    no_tool = SafetyConfig(workspace_min_m=(-0.5, -0.5, 0.2), tcp_offset_m=0.0)
    safe, arm, _ = make(no_tool)
    safe.servo_joint(Q_READY, 0.008)
    assert len(arm.commands) == 1


def test_fast_step_is_rate_limited_along_the_same_direction():
    safe, arm, clock = make()
    cfg = safe.config
    dt = 0.008
    target = Q_READY + np.array([0.3, -0.1, 0.2, 0.05, 0.4, -0.6])
    out = safe.servo_joint(target, dt)
    step = out - Q_READY
    max_step = cfg.joint_speed_limit_rad_s * dt
    assert np.all(np.abs(step) <= max_step + 1e-12)
    # The binding joint moves by exactly its limit; the direction is kept.
    assert np.isclose(np.max(np.abs(step) / max_step), 1.0)
    direction = (target - Q_READY) / np.linalg.norm(target - Q_READY)
    np.testing.assert_allclose(step / np.linalg.norm(step), direction, atol=1e-12)
    assert safe.stats.rate_limited == 1
    # Repeating the same target once per period converges without ever exceeding the limit.
    prev = out
    for _ in range(200):
        clock.t += dt
        out = safe.servo_joint(target, dt)
        assert np.all(np.abs(out - prev) <= max_step + 1e-12)
        prev = out
    np.testing.assert_allclose(out, target)


def test_declared_dt_cannot_buy_a_large_jump():
    safe, arm, clock = make()
    target = Q_READY + np.array([1.0, 0, 0, 0, 0, 0])
    out = safe.servo_joint(target, safe.config.max_command_dt_s)  # the first command: dt bounds it
    limit = safe.config.joint_speed_limit_rad_s[0] * safe.config.max_command_dt_s
    assert abs(out[0] - Q_READY[0]) <= limit + 1e-12
    clock.t += 0.008  # then 8 ms later, still declaring 100 ms: 8 ms of motion
    out2 = safe.servo_joint(target, safe.config.max_command_dt_s)
    assert np.isclose(out2[0] - out[0], safe.config.joint_speed_limit_rad_s[0] * 0.008)


def test_rate_limited_path_leaving_the_workspace_is_rejected():
    # Rotating wrist_1 from -0.2 to +1.0 rad swings the TCP through a low point (z 0.149 m at
    # +0.4 rad) while both ends are above 0.18 m: with a 0.17 m floor the ends are inside the
    # box and the intermediate rate-limited targets are not.
    cfg = SafetyConfig(workspace_min_m=(-0.5, -0.5, 0.17))
    q_a = Q_READY + np.array([0.0, 0.0, 0.0, -0.2, 0.0, 0.0])
    q_b = Q_READY + np.array([0.0, 0.0, 0.0, 1.0, 0.0, 0.0])
    q_mid = Q_READY + np.array([0.0, 0.0, 0.0, 0.4, 0.0, 0.0])
    assert tcp(q_a, cfg)[2] > 0.17 and tcp(q_b, cfg)[2] > 0.17 and tcp(q_mid, cfg)[2] < 0.17
    safe, arm, clock = make(cfg, q0=q_a)
    for _ in range(300):
        clock.t += 0.008
        try:
            safe.servo_joint(q_b, 0.008)
        except SafetyViolation as e:
            assert e.reason == "workspace"
            break
    else:
        pytest.fail("the path through the floor was never refused")
    assert len(arm.commands) > 0
    for q, _dt in arm.commands:
        assert tcp(q, cfg)[2] >= cfg.workspace_min_m[2]


def test_gripper_validation():
    safe, arm, _ = make()
    safe.set_gripper(0.0)
    safe.set_gripper(1.0)
    safe.set_gripper(np.float32(0.5))
    for bad in (-0.01, 1.01, float("nan"), float("inf"), "half", None):
        with pytest.raises(SafetyViolation) as ei:
            safe.set_gripper(bad)
        assert ei.value.reason == "gripper"
    assert arm.gripper_commands == [0.0, 1.0, 0.5]
    assert safe.stats.rejected_gripper == 6


# ---------------------------------------------------------------------------- watchdog / stops
def test_watchdog_stops_once_after_timeout():
    safe, arm, clock = make()
    assert not safe.check_watchdog()  # idle (no stream yet): nothing to stop
    safe.servo_joint(Q_READY + 0.001, 0.008)
    timeout = safe.config.watchdog_timeout_s
    clock.t = timeout / 2
    assert not safe.check_watchdog()
    clock.t = timeout  # exactly the timeout: still fresh
    assert not safe.check_watchdog()
    assert arm.stops == 0
    clock.t = timeout + 1e-6
    assert safe.check_watchdog()
    assert arm.stops == 1 and safe.stats.watchdog_stops == 1
    clock.t = 5.0
    assert not safe.check_watchdog()  # stops once per stream
    assert arm.stops == 1


def test_watchdog_warning_names_the_refusals_since_the_last_forwarded_command(caplog):
    safe, arm, clock = make()
    timeout = safe.config.watchdog_timeout_s
    safe.servo_joint(Q_READY + 0.001, 0.008)
    for k in (1, 2):  # a stream whose commands all leave the workspace box goes stale
        clock.t = k * 0.008
        with pytest.raises(SafetyViolation):
            safe.servo_joint(Q_UP, 0.008)
    clock.t = timeout + 1e-6
    with caplog.at_level("WARNING", logger="dynaflip_ros.robot.safety"):
        assert safe.check_watchdog()
    (record,) = [r for r in caplog.records if "watchdog" in r.getMessage()]
    assert "2 command(s) refused since the last forwarded one, the last: [workspace]" in record.getMessage()

    # A forwarded command clears the count: a silent stream's warning mentions no refusal.
    caplog.clear()
    clock.t = 1.0
    safe.servo_joint(Q_READY + 0.002, 0.008)  # re-anchors after the stop, forwarded
    clock.t = 1.0 + timeout + 1e-6
    with caplog.at_level("WARNING", logger="dynaflip_ros.robot.safety"):
        assert safe.check_watchdog()
    (record,) = [r for r in caplog.records if "watchdog" in r.getMessage()]
    assert "refused" not in record.getMessage()
    assert arm.stops == 2


def test_fresh_commands_keep_the_watchdog_quiet():
    safe, arm, clock = make()
    for k in range(100):
        clock.t = k * 0.008
        safe.servo_joint(Q_READY + 1e-4 * k, 0.008)
        assert not safe.check_watchdog()
    assert arm.stops == 0


def test_reanchor_to_measured_pose_after_stop():
    safe, arm, clock = make()
    safe.servo_joint(Q_READY + 0.002, 0.008)
    safe.stop()
    # The arm decelerated / was pushed: the measured pose differs from the last command.
    arm.q = Q_READY + np.array([0.05, 0.0, 0.0, 0.0, 0.0, 0.0])
    clock.t += 0.008
    target = Q_READY + np.array([0.2, 0.0, 0.0, 0.0, 0.0, 0.0])
    out = safe.servo_joint(target, 0.008)
    max_step = safe.config.joint_speed_limit_rad_s[0] * 0.008
    # The step is measured from the measured pose, not from the stale last command.
    assert np.isclose(out[0], arm.q[0]) and np.isclose(out[0], Q_READY[0] + 0.05 + max_step)


def test_stale_stream_reanchors_without_watchdog_call():
    safe, arm, clock = make()
    safe.servo_joint(Q_READY + 0.002, 0.008)
    arm.q = Q_READY - 0.01  # moved while nobody commanded it
    clock.t = 1.0  # longer than the watchdog timeout since the last accepted command
    out = safe.servo_joint(Q_READY - 0.01 + 1e-4, 0.008)
    np.testing.assert_allclose(out, Q_READY - 0.01 + 1e-4)  # no rate limit against the stale target
    assert safe.stats.rate_limited == 0


def test_protective_stop_halts_until_rearm():
    safe, arm, clock = make()
    safe.servo_joint(Q_READY + 0.001, 0.008)
    arm.protective_stop = True
    assert safe.check_protective_stop()
    assert safe.halted and arm.stops == 1
    assert not safe.check_protective_stop()  # entered once
    n = len(arm.commands)
    with pytest.raises(SafetyViolation) as ei:
        safe.servo_joint(Q_READY, 0.008)
    assert ei.value.reason == "halted"
    with pytest.raises(SafetyViolation):
        safe.set_gripper(0.5)
    with pytest.raises(SafetyViolation):
        safe.rearm()  # still in protective stop
    assert len(arm.commands) == n
    arm.protective_stop = False
    arm.q = Q_READY + 0.03
    safe.rearm()
    assert not safe.halted
    clock.t += 0.008
    np.testing.assert_allclose(safe.servo_joint(Q_READY + 0.03, 0.008), Q_READY + 0.03)  # from the measured pose


def test_protective_stop_at_connect_halts():
    arm = RecordingArm()
    arm.protective_stop = True
    safe = SafeArm(arm, SafetyConfig(), clock=FakeClock())
    safe.connect()
    assert safe.halted
    with pytest.raises(SafetyViolation):
        safe.servo_joint(Q_READY, 0.008)
    assert arm.commands == []


def test_thread_safety_concurrent_commands():
    arm = RecordingArm(Q_READY)
    ticks = iter(np.arange(1, 10_000) * 0.008)  # each reading 8 ms later (read under SafeArm's lock)
    safe = SafeArm(arm, SafetyConfig(), clock=lambda: float(next(ticks)))
    safe.connect()
    errors = []

    def worker(seed):
        rng = np.random.default_rng(seed)
        for _ in range(300):
            try:
                safe.servo_joint(Q_READY + rng.normal(0, 0.05, 6), 0.008)
            except SafetyViolation:
                pass
            except Exception as e:  # pragma: no cover - would be a bug
                errors.append(e)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    check_forwarded(arm.commands, Q_READY, safe.config)


# ---------------------------------------------------------------------------- fuzz
def check_forwarded(commands, q0, cfg: SafetyConfig, anchors=None):
    """Every forwarded q: finite, inside the joint limits, TCP inside the box, step <= speed*dt."""
    lo, hi = cfg.joint_lower_rad, cfg.joint_upper_rad
    wmin, wmax = np.array(cfg.workspace_min_m), np.array(cfg.workspace_max_m)
    speed = cfg.joint_speed_limit_rad_s
    prev = np.array(q0, dtype=float)
    for i, (q, dt) in enumerate(commands):
        if anchors is not None and i in anchors:
            prev = anchors[i]
        assert q.shape == (6,) and np.all(np.isfinite(q)), i
        assert np.all(q >= lo) and np.all(q <= hi), (i, q)
        p = tcp(q, cfg)
        assert np.all(p >= wmin - 1e-12) and np.all(p <= wmax + 1e-12), (i, p)
        assert np.isfinite(dt) and dt > 0
        assert np.all(np.abs(q - prev) <= speed * min(dt, cfg.max_command_dt_s) * (1 + 1e-9) + 1e-15), (
            i, q - prev)
        prev = q


def test_fuzz_10000_random_commands_zero_violations_reach_the_arm():
    rng = np.random.default_rng(1234)
    cfg = SafetyConfig()
    arm = RecordingArm(Q_READY)
    clock = FakeClock()
    safe = SafeArm(arm, cfg, clock=clock)
    safe.connect()
    anchors: dict[int, np.ndarray] = {}
    kinds = ["near", "far", "nan", "inf", "huge", "limit", "workspace", "bad_dt", "stop", "pause", "shape"]
    probs = np.array([0.35, 0.2, 0.05, 0.05, 0.05, 0.07, 0.1, 0.04, 0.03, 0.03, 0.03])
    n_rejected = 0
    for _ in range(10_000):
        kind = rng.choice(kinds, p=probs / probs.sum())
        clock.t += 0.008
        dt = 0.008
        cur = arm.q.copy()
        if kind == "near":
            q = cur + rng.normal(0, 0.01, 6)
        elif kind == "far":
            q = cur + rng.normal(0, 0.8, 6)
        elif kind == "nan":
            q = cur.copy()
            q[rng.integers(6)] = np.nan
        elif kind == "inf":
            q = cur.copy()
            q[rng.integers(6)] = rng.choice([np.inf, -np.inf])
        elif kind == "huge":
            q = cur + rng.normal(0, 1e6, 6)
        elif kind == "limit":
            q = cur.copy()
            j = rng.integers(6)
            q[j] = rng.choice([-1, 1]) * (UR3_JOINT_LIMITS_RAD[j, 1] + rng.uniform(1e-6, 1.0))
        elif kind == "workspace":
            q = Q_UP + rng.normal(0, 0.05, 6)
        elif kind == "bad_dt":
            q = cur + rng.normal(0, 0.01, 6)
            dt = float(rng.choice([0.0, -0.008, np.nan, np.inf, 100.0]))
        elif kind == "stop":
            safe.stop()
            arm.q = arm.q + rng.normal(0, 0.002, 6)  # the arm settles somewhere near
            anchors[len(arm.commands)] = arm.q.copy()
            continue
        elif kind == "pause":
            clock.t += 0.5
            if safe.check_watchdog():
                arm.q = arm.q + rng.normal(0, 0.002, 6)
                anchors[len(arm.commands)] = arm.q.copy()
            continue
        else:  # shape
            q = rng.normal(0, 1, int(rng.choice([0, 5, 7, 12])))
        try:
            safe.servo_joint(q, dt)
        except SafetyViolation:
            n_rejected += 1
    s = safe.stats
    assert s.commands == s.accepted + s.rejected
    assert s.rejected == n_rejected
    assert s.rejected_nan > 0 and s.rejected_joint_limit > 0 and s.rejected_workspace > 0
    assert s.rejected_invalid > 0 and s.rate_limited > 0 and s.accepted > 3000
    assert len(arm.commands) == s.accepted
    check_forwarded(arm.commands, Q_READY, cfg, anchors)


def test_unusable_clock_refuses_commands_and_stops_a_live_stream():
    arm = RecordingArm(Q_READY)
    readings = iter([0.0, 0.008, float("nan")])
    safe = SafeArm(arm, SafetyConfig(), clock=lambda: next(readings))
    safe.connect()
    safe.servo_joint(Q_READY, 0.008)
    safe.servo_joint(Q_READY, 0.008)
    with pytest.raises(SafetyViolation) as ei:  # the NaN reading
        safe.servo_joint(Q_READY, 0.008)
    assert ei.value.reason == "clock" and len(arm.commands) == 2 and safe.stats.rejected_clock == 1
    assert safe.check_watchdog()  # the exhausted clock raises StopIteration: fail safe, stop
    assert arm.stops == 1
