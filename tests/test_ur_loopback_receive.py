"""Loopback UR controller with the real ur_rtde 1.6.5 client: RTDEReceiveInterface getters and
stream rate (e-Series 5.11 -> 500 Hz, CB3 3.15 -> 125 Hz), DashboardClient, RTDEIOInterface.

The controller runs in its own process (ur_rtde's constructors hold the GIL, docs/ur_rtde_protocol.md §1) on a
dedicated loopback address per module so test files can run side by side.
Spec: docs/ur_rtde_protocol.md §3.2 (receive recipe), §3.9 (IO), §5 (dashboard).
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from dynaflip_ros.robot.kinematics import forward_kinematics
from dynaflip_ros.sim.ur_loopback import DEFAULT_Q0_RAD, LoopbackURController
from dynaflip_ros.robot.kinematics import matrix_to_rotvec

rtde_receive = pytest.importorskip("rtde_receive", reason="ur_rtde (PyPI ur-rtde 1.6.5) not installed")
import dashboard_client
import rtde_io
from waiting import wait_until

E_HOST, CB3_HOST = "127.0.0.2", "127.0.0.3"


@pytest.fixture(scope="module")
def eseries():
    with LoopbackURController(host=E_HOST, ur_version=(5, 11, 1, 108318)) as ctrl:
        yield ctrl


@pytest.fixture(scope="module")
def cb3():
    with LoopbackURController(host=CB3_HOST, ur_version=(3, 15, 7, 106331), with_gripper=False) as ctrl:
        yield ctrl


def _timestamps(r, duration_s: float) -> np.ndarray:
    ts, last = [], None
    t0 = time.monotonic()
    while time.monotonic() - t0 < duration_s:
        t = r.getTimestamp()
        if t != last:
            ts.append(t)
            last = t
        time.sleep(0.0003)
    return np.asarray(ts)


@pytest.mark.parametrize("which,rate_hz", [("eseries", 500.0), ("cb3", 125.0)])
def test_receive_getters_and_rate(request, which, rate_hz):
    ctrl = request.getfixturevalue(which)
    host = ctrl.host
    r = rtde_receive.RTDEReceiveInterface(host)
    try:
        assert r.isConnected()
        q = np.asarray(r.getActualQ())
        np.testing.assert_allclose(q, DEFAULT_Q0_RAD, atol=2e-3)
        # TCP pose = UR3 DH forward kinematics of the reported joints (flange, no TCP offset)
        t = forward_kinematics(q)
        pose = np.asarray(r.getActualTCPPose())
        np.testing.assert_allclose(pose[:3], t[:3, 3], atol=1e-6)
        np.testing.assert_allclose(pose[3:], matrix_to_rotvec(t[:3, :3]), atol=1e-6)
        assert r.getRobotMode() == 7 and r.getSafetyMode() == 1
        assert r.getSafetyStatusBits() == 1 and not r.isProtectiveStopped() and not r.isEmergencyStopped()
        assert r.getRuntimeState() == 1                 # no program yet
        assert r.getSpeedScaling() == 1.0 and r.getSpeedScalingCombined() == 1.0
        np.testing.assert_allclose(r.getTargetQ(), q, atol=2e-3)
        ts = _timestamps(r, 1.5)  # sampled for 1.5 s of wall time
        # package steps are whole periods (controller time follows the wall clock:
        # test_controller_time_follows_the_wall_clock, marker timing)
        steps = np.diff(ts)
        assert np.min(steps) == pytest.approx(1.0 / rate_hz, abs=1e-9)
        ratio = np.round(steps * rate_hz)
        np.testing.assert_allclose(steps * rate_hz, ratio, atol=1e-6)
    finally:
        r.disconnect()
    snap = ctrl.snapshot()
    stream = snap["stats"]["closed_streams"][-1]            # the connection just closed
    assert stream["frequency_hz"] == rate_hz     # the rate sent is wall-clock: test_controller_sends_at_the_nominal_rate
    assert snap["errors"] == []


def test_receive_explicit_recipe_and_unknown_variable(eseries):
    r = rtde_receive.RTDEReceiveInterface(E_HOST, 100.0, ["timestamp", "actual_q", "payload_cog"])
    try:
        ts = _timestamps(r, 0.5)
        assert np.min(np.diff(ts)) == pytest.approx(0.01, abs=1e-9)     # 100 Hz asked
        assert len(r.getActualQ()) == 6
    finally:
        r.disconnect()
    with pytest.raises(RuntimeError, match="not found"):
        rtde_receive.RTDEReceiveInterface(E_HOST, -1.0, ["timestamp", "no_such_variable"])
    errors = eseries.snapshot()["errors"]
    assert len(errors) == 1 and "no_such_variable" in errors[0]
    # (the anomaly above is deliberate; later tests check their own additions)


def test_dashboard_client(eseries):
    d = dashboard_client.DashboardClient(E_HOST)
    d.connect()
    try:
        assert d.isConnected()
        assert "5.11.1" in d.polyscopeVersion()
        assert d.getSerialNumber().isdigit()
        assert d.isInRemoteControl()
        assert d.robotmode() == "Robotmode: RUNNING"
        assert d.safetymode() == "Safetymode: NORMAL"
        assert d.getRobotModel() == "UR3"
        assert not d.running()
        d.stop()                                  # throws unless exactly "Stopped"
        d.loadURP("/programs/test.urp")
        d.play()
        assert d.running()
        assert eseries.snapshot()["runtime_state"] == 2
        d.pause()
        assert "PAUSED" in d.programState()
        d.stop()
        assert "STOPPED" in d.programState()
        d.unlockProtectiveStop()                  # "Protective stop releasing"
    finally:
        d.disconnect()


@pytest.mark.timing  # the controller keeps real time: needs an idle machine
@pytest.mark.parametrize("which", ["eseries", "cb3"])
def test_controller_time_follows_the_wall_clock(request, which):
    r = rtde_receive.RTDEReceiveInterface(request.getfixturevalue(which).host)
    try:
        host_t0 = time.monotonic()
        c0 = r.getTimestamp()
        time.sleep(0.5)
        assert abs((r.getTimestamp() - c0) - (time.monotonic() - host_t0)) < 0.05
    finally:
        r.disconnect()


@pytest.mark.timing  # packages per second of wall time: a loaded machine sends fewer without a bug
@pytest.mark.parametrize("which,rate_hz", [("eseries", 500.0), ("cb3", 125.0)])
def test_controller_sends_at_the_nominal_rate(request, which, rate_hz):
    ctrl = request.getfixturevalue(which)
    r = rtde_receive.RTDEReceiveInterface(ctrl.host)
    try:
        _timestamps(r, 1.5)
    finally:
        r.disconnect()
    st = ctrl.snapshot()["stats"]
    stream = st["closed_streams"][-1]
    print(f"{which}: {stream['n_variables']} variables, sent {stream['rate_hz']:.1f} pkg/s "
          f"(nominal {rate_hz}) over {stream['duration_s']:.1f} s, lateness p50 "
          f"{st['lateness_p50_ms']:.2f} ms p99 {st['lateness_p99_ms']:.2f} ms, "
          f"late cycles {st['late_cycles']}, cpu {st['cpu_fraction'] * 100:.0f}%")
    assert stream["rate_hz"] > 0.8 * rate_hz


def test_io_interface_speed_slider_and_outputs(eseries):
    io = rtde_io.RTDEIOInterface(E_HOST)
    r = rtde_receive.RTDEReceiveInterface(E_HOST)
    n_err = len(eseries.snapshot()["errors"])
    try:
        assert io.setSpeedSlider(0.3)
        assert io.setStandardDigitalOut(2, True)
        assert io.setInputIntRegister(20, 7)
        assert wait_until(lambda: r.getSpeedScalingCombined() == pytest.approx(0.3) and r.getActualDigitalOutputBits() & 0b100)
        snap = eseries.snapshot()
        assert snap["target_speed_fraction"] == pytest.approx(0.3)
        assert r.getTargetSpeedFraction() == pytest.approx(0.3)
        assert r.getSpeedScalingCombined() == pytest.approx(0.3)
        assert r.getActualDigitalOutputBits() & 0b100
        assert io.setSpeedSlider(1.0)
        assert wait_until(lambda: r.getSpeedScalingCombined() == pytest.approx(1.0))
    finally:
        io.disconnect()
        r.disconnect()
    assert len(eseries.snapshot()["errors"]) == n_err


def test_cb3_control_interface_at_125hz(cb3):
    """CB3 (3.15): no dashboard commands in the constructor, 125 Hz servo stream, moveJ."""
    import rtde_control

    r = rtde_receive.RTDEReceiveInterface(CB3_HOST)
    c = rtde_control.RTDEControlInterface(CB3_HOST)
    try:
        assert cb3.snapshot()["script_running"]
        q0 = np.asarray(r.getActualQ())
        cb3.trace(clear=True)
        n = 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < 0.5:
            ts = c.initPeriod()
            q = q0.copy()
            q[5] += 0.1 * (time.monotonic() - t0)
            assert c.servoJ(q.tolist(), 0.5, 0.5, 0.008, 0.1, 300)
            n += 1
            c.waitPeriod(ts)
        assert c.servoStop(10.0)
        assert n >= 1                               # 125 Hz * 0.5 s: ~62 on an idle machine
        tr = cb3.trace(clear=True)
        assert np.all(np.diff(tr["t_s"]) == pytest.approx(0.008))
        assert c.moveJ(q0.tolist(), 1.0, 2.0)
        np.testing.assert_allclose(r.getActualQ(), q0, atol=3e-3)
        assert cb3.snapshot()["errors"] == []
    finally:
        c.disconnect()
        r.disconnect()
