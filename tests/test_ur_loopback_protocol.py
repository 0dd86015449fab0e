"""Loopback UR controller, in-process parts (no sockets, no ur_rtde): RTDE framing and recipes,
script splitting, dashboard replies, the register command protocol, the Robotiq interpreter.

Spec: docs/ur_rtde_protocol.md §2 (wire), §3.5-3.7 (commands), §4.3 (script tick), §5 (dashboard);
docs/hardware.md §2.3 (Robotiq URCap socket).
"""
from __future__ import annotations

import struct

import numpy as np
import pytest

from dynaflip_ros.robot.kinematics import forward_kinematics
from dynaflip_ros.sim.ur_loopback import arm_model
from dynaflip_ros.sim.ur_loopback import rtde_protocol as rp
from dynaflip_ros.sim.ur_loopback.config import check_host as _check_host
from dynaflip_ros.sim.ur_loopback.core import ControllerCore
from dynaflip_ros.sim.ur_loopback.dashboard import handle_command
from dynaflip_ros.sim.ur_loopback.robotiq_server import RobotiqGripper
from dynaflip_ros.sim.ur_loopback.script_emulation import parse_path, split_programs


def test_framing_and_example_bytes():
    # docs/ur_rtde_protocol.md §6: `V` reply and the 5.11.1.108318 version reply
    assert rp.pack_package(86, b"\x01") == bytes.fromhex("00045601")
    v = rp.pack_package(118, struct.pack(">IIII", 5, 11, 1, 108318))
    assert v == bytes.fromhex("0013 76 00000005 0000000B 00000001 0001A71E".replace(" ", ""))
    buf = bytearray(bytes.fromhex("0005560002") + bytes.fromhex("000376") + b"\x00\x08\x55")
    pk = rp.split_packages(buf)
    assert pk == [(86, b"\x00\x02"), (118, b"")]
    assert bytes(buf) == b"\x00\x08\x55"   # partial package kept
    with pytest.raises(rp.ProtocolError):
        rp.split_packages(bytearray(b"\x00\x01\x55"))


def test_output_recipe_types_and_sizes():
    names = rp.parse_names(b"timestamp,actual_q,robot_mode,joint_mode,payload_cog,runtime_state,")
    rec, reply = rp.output_setup_reply(1, names)
    assert rec.valid and reply[0] == 1
    assert reply[1:].decode() == "DOUBLE,VECTOR6D,INT32,VECTOR6INT32,VECTOR3D,UINT32"
    assert rec.size == 8 + 48 + 4 + 24 + 24 + 4
    data = rec.encode([1.5, list(range(6)), 7, [253] * 6, [0.0, 0.0, 0.06], 2])
    vals, exact = rec.decode(data)
    assert exact and vals["timestamp"] == 1.5 and vals["joint_mode"] == (253,) * 6
    bad, reply = rp.output_setup_reply(1, ["timestamp", "no_such_var"])
    assert not bad.valid and reply[0] == 0 and b"NOT_FOUND" in reply


def test_input_recipe_in_use_and_short_package():
    names = ["input_int_register_0", "input_double_register_0", "input_double_register_1"]
    assert rp.input_setup_types(names, set()) == ["INT32", "DOUBLE", "DOUBLE"]
    assert rp.input_setup_types(names, {"input_double_register_1"})[2] == "IN_USE"
    rec = rp.Recipe(1, names, ["INT32", "DOUBLE", "DOUBLE"])
    full = struct.pack(">idd", 11, 0.5, 0.25)
    vals, exact = rec.decode(full[:-8])          # docs/ur_rtde_protocol.md §3.8 quirk: too short
    assert not exact and vals == {"input_int_register_0": 11, "input_double_register_0": 0.5}


def test_split_programs_and_path():
    text = ("def rtde_control():\n  # int register offset\n0    global x = 1\n  def f():\n    a=1\n  end\n"
            "  movel(p[0.1, 0.2, 0.3, 0.0, 3.14, 0.0], a=1.2, v=0.25, r=0.0)\nend\ndef other")
    progs, rest = split_programs(text)
    assert len(progs) == 1 and progs[0].startswith("def rtde_control():") and progs[0].endswith("end")
    assert rest.strip() == "def other"
    path = parse_path(progs[0])
    assert path == [{"kind": "movel", "pose": True, "target": [0.1, 0.2, 0.3, 0.0, 3.14, 0.0],
                     "a": 1.2, "v": 0.25, "r": 0.0}]


def test_host_must_be_loopback():
    assert _check_host("127.0.0.3") == "127.0.0.3"
    for bad in ("0.0.0.0", "192.168.1.10", "localhost", "::1"):
        with pytest.raises(ValueError):
            _check_host(bad)


def test_rotvec_and_ik_roundtrip():
    q = np.array([0.3, -1.2, 1.4, -1.6, -1.5, 0.2])
    pose = arm_model.tcp_pose(q)
    t = forward_kinematics(q)
    np.testing.assert_allclose(arm_model.transform_from_ur_pose(pose), t, atol=1e-12)
    q_ik = arm_model.inverse_kinematics(pose, q + 0.05)
    assert q_ik is not None
    np.testing.assert_allclose(arm_model.tcp_pose(q_ik), pose, atol=1e-6)


@pytest.fixture()
def core():
    return ControllerCore((5, 11, 1, 108318), physics=False, with_gripper=True)


def _run(core, n):
    for _ in range(n):
        core.step()


def test_dashboard_replies(core):
    assert handle_command(core, "PolyscopeVersion")[0] == "URSoftware 5.11.1.108318 (Mar 07 2022)"
    assert handle_command(core, "get serial number")[0].isdigit()
    assert handle_command(core, "is in remote control")[0] == "true"
    assert handle_command(core, "robotmode")[0] == "Robotmode: RUNNING"
    assert handle_command(core, "programState")[0] == "STOPPED <unnamed>"
    assert handle_command(core, "stop")[0] == "Stopped"
    assert handle_command(core, "play")[0] == "Failed to execute: play"     # nothing loaded
    assert handle_command(core, "load /programs/x.urp")[0] == "Loading program: /programs/x.urp"
    assert handle_command(core, "play")[0] == "Starting program"
    assert handle_command(core, "running")[0] == "Program running: true"
    assert handle_command(core, "pause")[0] == "Pausing program"
    assert handle_command(core, "bogus")[0] == "could not understand: 'bogus'"
    assert handle_command(core, "quit") == ("Disconnected", True)


def _upload(core):
    core.start_script("def rtde_control():\n  # int register offset\n0    global a = 1\nend", "rtde_control")
    _run(core, 1)


def test_script_moveJ_done_and_protective_stop(core):
    _upload(core)
    assert core.runtime_state == 2 and core.out_int[0] == 1
    goal = np.array(core.arm.q) + 0.1
    core.apply_inputs({"input_int_register_0": 1, "input_int_register_1": 0,
                       **{f"input_double_register_{k}": float(v) for k, v in enumerate(goal)},
                       "input_double_register_6": 1.0, "input_double_register_7": 4.0})
    _run(core, 5)
    assert core.out_int[0] == 1            # still moving: no done
    _run(core, 500)
    assert core.out_int[0] == 2            # done once arrived
    np.testing.assert_allclose(core.arm.q, goal, atol=1e-9)
    core.apply_inputs({"input_int_register_0": 0})
    _run(core, 1)
    assert core.out_int[0] == 1
    core.apply_inputs({"input_int_register_0": 31})  # triggerProtectiveStop
    _run(core, 2)
    assert core.safety_mode == 3 and core.safety_status_bits & 0x4 and core.runtime_state == 4
    assert core.out_int[0] != 2
    q = core.arm.q.copy()
    core.apply_inputs({"input_int_register_0": 11,
                       **{f"input_double_register_{k}": float(v) for k, v in enumerate(q + 0.2)}})
    _run(core, 50)
    np.testing.assert_array_equal(core.arm.q, q)   # servo targets ignored while stopped
    assert handle_command(core, "unlock protective stop")[0] == "Protective stop releasing"
    assert core.safety_mode == 1 and core.runtime_state == 1


def test_unlock_refused_too_early():
    c = ControllerCore((5, 11, 1, 108318), physics=False, with_gripper=False,
                       protective_stop_unlock_delay_s=5.0)
    c.protective_stop("test")
    assert handle_command(c, "unlock protective stop")[0].startswith("Cannot unlock protective stop")
    assert c.safety_mode == 3


def test_servo_tracks_with_lookahead_lag(core):
    _upload(core)
    q0 = core.arm.q.copy()
    tgt = q0 + np.array([0.05, 0, 0, 0, 0, 0])
    core.apply_inputs({"input_int_register_0": 11,
                       **{f"input_double_register_{k}": float(v) for k, v in enumerate(tgt)},
                       "input_double_register_9": 0.1, "input_double_register_10": 300.0})
    _run(core, 50)                 # 0.1 s = one time constant: ~63 % of the step
    frac = (core.arm.q[0] - q0[0]) / 0.05
    assert 0.55 < frac < 0.7
    _run(core, 1000)
    assert abs(core.arm.q[0] - tgt[0]) < 1e-4
    assert core.n_servoj == 1 and core.last_servoj["lookahead"] == 0.1


def test_speed_slider_scales_motion(core):
    _upload(core)
    q0 = core.arm.q.copy()
    core.apply_inputs({"input_int_register_23": 22, "speed_slider_mask": 1, "speed_slider_fraction": 0.0})
    core.apply_inputs({"input_int_register_0": 9, **{f"input_double_register_{k}": 0.0 for k in range(6)},
                       "input_double_register_0": 0.5, "input_double_register_6": 5.0})
    _run(core, 100)
    np.testing.assert_allclose(core.arm.q, q0)    # slider 0: no motion
    core.slider = 1.0
    _run(core, 100)
    assert core.arm.q[0] - q0[0] > 0.05


def test_watchdog_trips(core):
    _upload(core)
    core.apply_inputs({"input_int_register_0": 35, "input_double_register_0": 50.0})
    _run(core, 2)
    assert core.watchdog["armed"]
    core._wd_last_write_s -= 0.05       # 50 ms without a command-register write (> 1/50 Hz)
    _run(core, 1)
    assert core.runtime_state == 1 and core.watchdog["tripped"]


def test_robotiq_activation_and_object():
    g = RobotiqGripper()
    assert g.handle_line("SET ACT 1") == ("ack", None)
    assert g.handle_line("GET STA") == ("STA 1", None)
    closure = 0.0
    for _ in range(300):
        closure = g.step_command(0.002)
        g.observe(0.002, closure, 0.0)
    assert g.handle_line("GET STA")[0] == "STA 3"
    assert g.handle_line("SET POS 255 SPE 255 FOR 100 GTO 1")[0] == "ack"
    assert g.handle_line("GET PRE")[0] == "PRE 255"
    meas = 0.0
    for _ in range(2000):   # an object stops the fingers at closure 0.5
        cmd = g.step_command(0.002)
        new = min(cmd, 0.5)
        g.observe(0.002, new, (new - meas) / 0.002)
        meas = new
    assert g.handle_line("GET OBJ")[0] == "OBJ 2"
    assert g.handle_line("GET POS")[0] == f"POS {round(3 + 227 * 0.5)}"
    assert g.handle_line("SET POS 300")[0] == "?"
    assert g.handle_line("GET XYZ")[0] == "?"


def test_trajectory_limiter_reports_speed_scaling(core):
    _upload(core)
    q0 = core.arm.q.copy()
    tgt = q0 + np.array([1.0, 0, 0, 0, 0, 0])       # 1 rad step: 10 rad/s asked, 3.14 allowed
    core.apply_inputs({"input_int_register_0": 11,
                       **{f"input_double_register_{k}": float(v) for k, v in enumerate(tgt)},
                       "input_double_register_9": 0.1, "input_double_register_10": 300.0})
    _run(core, 5)
    assert core.speed_scaling == pytest.approx(np.pi / ((1.0 - (core.motion.q_ref[0] - q0[0])) / 0.1), rel=0.05)
    assert core.arm.qd[0] == pytest.approx(np.pi)
    _run(core, 1000)
    assert core.speed_scaling == 1.0


def test_trace_buffer_chunks_and_limit():
    from dynaflip_ros.sim.ur_loopback.trace import TraceBuffer

    tb = TraceBuffer(max_rows=30_000)
    for i in range(45_000):
        tb.append(i * 0.002, float(i), None if i % 2 else np.full(6, i), np.zeros(6), np.ones(6), 2, 1)
    tr = tb.export(clear=True)
    n = len(tr["t_s"])
    assert 20_000 <= n <= 30_000 and tr["actual_q"].shape == (n, 6)
    assert tr["host_monotonic_s"][-1] == 44_999.0 and np.all(np.diff(tr["host_monotonic_s"]) == 1.0)
    odd = tr["host_monotonic_s"].astype(int) % 2 == 1
    assert np.all(np.isnan(tr["commanded_q"][odd])) and not np.any(np.isnan(tr["commanded_q"][~odd]))
    assert len(tb.export(clear=False)["t_s"]) == 0
