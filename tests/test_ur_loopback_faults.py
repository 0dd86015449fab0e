"""Loopback UR controller: fault injection seen through the real ur_rtde 1.6.5 client, the
Robotiq URCap socket, process lifecycle and argument errors.

Spec: docs/ur_rtde_protocol.md §3.1 (2.5 s receive timeout), §4.4 (e-stop), docs/hardware.md §2.3
(Robotiq socket). Controllers on 127.0.0.5 (physics) and 127.0.0.6 (used for lifecycle checks).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from dynaflip_ros.sim.ur_loopback import LoopbackURController

rtde_receive = pytest.importorskip("rtde_receive", reason="ur_rtde (PyPI ur-rtde 1.6.5) not installed")
import dashboard_client
import rtde_control

HOST = "127.0.0.5"


@pytest.fixture(scope="module")
def ctrl():
    with LoopbackURController(host=HOST, ur_version=(5, 11, 1, 108318), with_gripper=True) as c:
        yield c


from waiting import wait_until as _wait  # timeout: a hang guard only (tests/waiting.py)


class _Gripper:
    """Minimal URCap socket client (docs/hardware.md §2.3)."""

    def __init__(self, host):
        self.sock = socket.create_connection((host, 63352), timeout=2.0)
        self.f = self.sock.makefile("rw", newline="\n")

    def cmd(self, line: str) -> str:
        self.f.write(line + "\n")
        self.f.flush()
        return self.f.readline().rstrip("\n")

    def get(self, var: str) -> int:
        name, value = self.cmd(f"GET {var}").split()
        assert name == var
        return int(value)

    def close(self):
        self.sock.close()


def test_robotiq_activation_move_and_object(ctrl):
    g = _Gripper(HOST)
    try:
        assert g.cmd("SET ACT 0") == "ack" and g.get("STA") == 0
        assert g.cmd("SET ATR 0") == "ack"
        assert g.cmd("SET ACT 1") == "ack"
        assert g.get("STA") == 1                      # activating
        assert _wait(lambda: g.get("STA") == 3)
        assert g.get("ACT") == 1 and g.get("POS") <= 5  # open reads ~3
        assert g.cmd("SET POS 255 SPE 255 FOR 100 GTO 1") == "ack"
        assert g.get("PRE") == 255
        t0 = time.monotonic()
        assert _wait(lambda: g.get("OBJ") != 0)
        close_s = time.monotonic() - t0
        assert g.get("OBJ") == 3 and 220 <= g.get("POS") <= 230       # fingers touch at ~230
        assert close_s > 0.3            # 150 mm/s over 85 mm: not at once (a loaded machine only adds)
        assert g.cmd("SET POS 0") == "ack"
        assert _wait(lambda: g.get("OBJ") == 3) and g.get("POS") <= 5
        ctrl.inject("gripper_object", closure=0.4)                    # an object 51 mm wide
        assert g.cmd("SET POS 255") == "ack"
        assert _wait(lambda: g.get("OBJ") != 0)
        assert g.get("OBJ") == 2 and abs(g.get("POS") - (3 + 227 * 0.4)) <= 3
        snap = ctrl.snapshot()["gripper"]
        assert snap["activated"] and snap["obj"] == 2 and snap["requested"] == 255
        ctrl.inject("gripper_object", closure=None)
        assert g.cmd("SET POS 0") == "ack" and _wait(lambda: g.get("OBJ") == 3)
        n_err = len(ctrl.snapshot()["errors"])
        assert g.cmd("GET NOPE") == "?"
        assert len(ctrl.snapshot()["errors"]) == n_err + 1
    finally:
        g.close()


def test_silent_mode_hangs_client_constructor(ctrl):
    ctrl.inject("silent", on=True)
    code = f"import rtde_receive; rtde_receive.RTDEReceiveInterface({HOST!r}); print('CONNECTED')"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            proc.communicate(timeout=4.0)  # a hang for 4 s is what is tested
    finally:
        proc.kill()
        out, _ = proc.communicate()
        ctrl.inject("silent", on=False)
    assert b"CONNECTED" not in out
    r = rtde_receive.RTDEReceiveInterface(HOST)     # new connections answered again
    try:
        assert r.isConnected()
    finally:
        r.disconnect()


def test_stream_pause_and_drop_connections(ctrl):
    r = rtde_receive.RTDEReceiveInterface(HOST)
    try:
        ctrl.inject("stream_pause", duration_s=0.5)
        time.sleep(0.8)                             # outlast the pause: the silence is what is tested
        assert r.isConnected()                      # < 2.5 s without data: tolerated
        ts = r.getTimestamp()
        assert _wait(lambda: r.getTimestamp() > ts)  # data flows again
        ctrl.inject("stream_pause", duration_s=3.5)
        assert _wait(lambda: not r.isConnected())   # ur_rtde's 2.5 s read timeout
    finally:
        r.disconnect()
    r = rtde_receive.RTDEReceiveInterface(HOST)
    d = dashboard_client.DashboardClient(HOST)
    d.connect()
    try:
        ctrl.inject("drop_connections")
        assert _wait(lambda: not r.isConnected())
        assert ctrl.snapshot()["stats"]["connections"]["rtde"] == 0
    finally:
        r.disconnect()
        d.disconnect()


def test_emergency_stop_and_power_cycle(ctrl):
    r = rtde_receive.RTDEReceiveInterface(HOST)
    c = rtde_control.RTDEControlInterface(HOST)
    d = dashboard_client.DashboardClient(HOST)
    d.connect()
    try:
        q0 = r.getActualQ()
        ctrl.inject("emergency_stop")
        assert _wait(r.isEmergencyStopped)
        assert r.getSafetyMode() == 7 and r.getRobotMode() == 3 and r.getRuntimeState() == 1
        assert c.moveJ([x + 0.05 for x in q0], 1.0, 1.0) is False
        ctrl.inject("clear_emergency_stop")
        assert _wait(lambda: r.getSafetyMode() == 1)
        assert r.getRobotMode() == 3                # still powered off
        d.powerOn()
        assert _wait(lambda: r.getRobotMode() == 5)
        d.brakeRelease()
        assert _wait(lambda: r.getRobotMode() == 7)
        assert c.reuploadScript() and _wait(lambda: r.getRuntimeState() == 2)
        assert c.moveJ([x + 0.05 for x in q0], 1.0, 2.0)
        ctrl.inject("program_stop")
        assert _wait(lambda: r.getRuntimeState() == 1)
        assert c.moveJ(q0, 1.0, 2.0) is False
    finally:
        c.disconnect()
        r.disconnect()
        d.disconnect()
    snap = ctrl.snapshot()
    assert [e for e in snap["errors"] if "NOPE" not in e] == []


def test_remote_control_off_refuses_control_interface(ctrl):
    ctrl.inject("remote_control", on=False)
    try:
        with pytest.raises(RuntimeError, match="remote control"):
            rtde_control.RTDEControlInterface(HOST)   # non-localhost host: checked (docs/ur_rtde_protocol.md §3.4)
    finally:
        ctrl.inject("remote_control", on=True)


def test_bad_arguments():
    with pytest.raises(ValueError):
        LoopbackURController(host="0.0.0.0")
    with pytest.raises(ValueError):
        LoopbackURController(host="127.0.0.9", ur_version=(4, 0, 0, 0))
    with pytest.raises(ValueError):
        LoopbackURController(host="127.0.0.9", q0=[0.0, 0.0, 4.0, 0.0, 0.0, 0.0])
    c = LoopbackURController(host="127.0.0.9")
    with pytest.raises(ValueError):
        c.inject("meteor_strike")
    with pytest.raises(RuntimeError, match="not running"):
        c.snapshot()


def test_port_in_use_and_process_cleanup(ctrl):
    with pytest.raises(RuntimeError, match="cannot bind 127.0.0.5:"):
        LoopbackURController(host=HOST, physics=False).start()
    # a controller never outlives its parent, even one killed with SIGKILL
    script = textwrap.dedent("""
        import sys, time
        from dynaflip_ros.sim.ur_loopback import LoopbackURController
        c = LoopbackURController(host="127.0.0.6", physics=False).start()
        print(c.pid, flush=True)
        time.sleep(60)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        child_pid = int(parent.stdout.readline())
        os.kill(child_pid, 0)                       # alive
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(5)

        def gone():
            try:
                os.kill(child_pid, 0)
            except ProcessLookupError:
                return True
            # a zombie reparented to init counts as gone once reaped; check its state
            try:
                with open(f"/proc/{child_pid}/stat") as f:
                    return f.read().split()[2] == "Z"
            except FileNotFoundError:
                return True
            return False

        assert _wait(gone)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_cli_help_and_serve_until_ctrl_c():
    out = subprocess.run([sys.executable, "-m", "dynaflip_ros.sim.ur_loopback", "--help"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "example:" in out.stdout and "--ur-version" in out.stdout
    proc = subprocess.Popen([sys.executable, "-m", "dynaflip_ros.sim.ur_loopback", "--robot-ip", "127.0.0.7",
                             "--ur-version", "5.11.1.108318", "--kinematic", "--status-period-s", "0.5"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert "serving on 127.0.0.7" in proc.stdout.readline()
        r = rtde_receive.RTDEReceiveInterface("127.0.0.7")
        assert r.getRobotMode() == 7
        r.disconnect()
        assert "robot_mode=7" in proc.stdout.readline()      # periodic status line
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=15)
        assert proc.returncode == 0 and "stopped" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    bad = subprocess.run([sys.executable, "-m", "dynaflip_ros.sim.ur_loopback", "--robot-ip", "10.0.0.1"],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "loopback" in bad.stderr
