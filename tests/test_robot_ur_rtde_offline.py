"""URRtdeArm without a controller: config validation, stop classification, the socket probe and the
connect timeout against peers that accept TCP but do not (fully) speak RTDE — the case where
ur_rtde blocks forever holding the GIL (docs/environment.md, docs/ur_rtde_protocol.md §1). The node process must get a
clear ArmError within the timeout and nothing may stay blocked."""
from __future__ import annotations

import socket
import struct
import threading
import time

import numpy as np
import pytest

from dynaflip_ros.configs.robot import URRtdeConfig
from dynaflip_ros.robot.arm import ArmError, ArmNotConnectedError
from dynaflip_ros.robot.ur_rtde_arm import URRtdeArm, is_stopped, probe_controller, rotvec_to_quat_wxyz


@pytest.mark.parametrize("bad", [
    {"ur_type": "ur5"}, {"servo_lookahead_s": 0.01}, {"servo_lookahead_s": 0.3}, {"servo_gain": 50},
    {"servo_gain": 5000}, {"rtde_frequency_hz": 600.0, "ur_type": "e-series"}, {"rtde_frequency_hz": 200.0},
    {"gripper": "rg2"}, {"gripper_speed": 300}, {"connect_timeout_s": 0.0}, {"robot_ip": "1.2.3.4 x"},
    {"rt_priority": 120}, {"servo_gain": float("nan")},
])
def test_config_rejects_out_of_range(bad):
    with pytest.raises(ValueError):
        URRtdeConfig(**bad)


def test_config_controller_rate_by_type():
    assert URRtdeConfig(ur_type="cb3").controller_rate_hz == 125.0
    assert URRtdeConfig(ur_type="e-series").controller_rate_hz == 500.0
    assert URRtdeConfig(ur_type="e-series", rtde_frequency_hz=250.0).controller_rate_hz == 250.0
    assert URRtdeConfig(robot_ip="127.0.0.9").is_loopback and not URRtdeConfig(robot_ip="192.168.1.10").is_loopback


def test_stop_classification():
    assert not is_stopped(1, 0x1, 2, 7)          # normal, program playing, running
    assert not is_stopped(2, 0x2, 2, 7)          # reduced mode still executes
    assert is_stopped(3, 0x4, 2, 7)              # protective stop
    assert is_stopped(7, 0x80 | 0x40, 2, 7)      # robot emergency stop
    assert is_stopped(5, 0x10, 2, 7)             # safeguard stop
    assert is_stopped(1, 0x1, 1, 7)              # program stopped (pendant stop, watchdog)
    assert is_stopped(1, 0x1, 2, 5)              # robot idle (brakes)


def test_rotvec_to_quaternion():
    np.testing.assert_allclose(rotvec_to_quat_wxyz(np.zeros(3)), [1, 0, 0, 0])
    q = rotvec_to_quat_wxyz(np.array([0.0, 0.0, np.pi / 2]))
    np.testing.assert_allclose(q, [np.cos(np.pi / 4), 0, 0, np.sin(np.pi / 4)], atol=1e-12)
    q = rotvec_to_quat_wxyz(np.array([np.pi, 0.0, 0.0]))
    np.testing.assert_allclose(q, [0, 1, 0, 0], atol=1e-12)


class FakePeer:
    """TCP listeners on 30004 / 29999 of a private loopback IP. mode "silent": accept, never
    reply; "version_only": answer the RTDE version request and greet on the dashboard, then go
    silent (ur_rtde's constructor then blocks on the next handshake step)."""

    def __init__(self, host: str, mode: str) -> None:
        self.host, self.mode = host, mode
        self._socks: list[socket.socket] = []
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        for port in (30004, 29999):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
            s.listen(8)
            s.settimeout(0.1)
            self._socks.append(s)
            threading.Thread(target=self._serve, args=(s, port), daemon=True).start()

    def _serve(self, s: socket.socket, port: int) -> None:
        while not self._stop.is_set():
            try:
                c, _ = s.accept()
            except (socket.timeout, OSError):
                continue
            self._conns.append(c)
            if self.mode == "version_only":
                if port == 29999:
                    c.sendall(b"Connected: Universal Robots Dashboard Server\n")
                else:
                    threading.Thread(target=self._rtde, args=(c,), daemon=True).start()

    def _rtde(self, c: socket.socket) -> None:
        c.settimeout(5.0)
        try:
            head = c.recv(3)
            size, ptype = struct.unpack(">HB", head)
            c.recv(size - 3)
            if ptype == ord("V"):
                c.sendall(struct.pack(">HBB", 4, ord("V"), 1))
        except (OSError, struct.error):
            pass

    def close(self) -> None:
        self._stop.set()
        for s in self._socks + self._conns:
            s.close()


@pytest.mark.timeout(30)  # fails fast: a probe that waited out its 600 s timeout would hit this guard
def test_probe_refused_port_fails_fast():
    with pytest.raises(ArmError, match="nothing listens"):
        probe_controller("127.0.1.61", timeout_s=600.0)


def test_probe_silent_peer_times_out_with_a_clear_error():
    peer = FakePeer("127.0.1.62", "silent")
    try:
        t0 = time.monotonic()
        with pytest.raises(ArmError, match="did not answer the RTDE protocol"):
            probe_controller("127.0.1.62", timeout_s=0.5)
        assert time.monotonic() - t0 >= 0.5  # it waited its timeout (a hang is pytest-timeout's)
    finally:
        peer.close()


def test_connect_to_half_speaking_peer_kills_the_hung_worker():
    """The probe passes (version reply + dashboard greeting), then ur_rtde blocks inside its
    constructor: URRtdeArm.connect must return an ArmError after connect_timeout_s, kill the
    worker, and keep this process responsive throughout (a ticker thread keeps running)."""
    peer = FakePeer("127.0.1.63", "version_only")
    ticks = []
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.01)

    threading.Thread(target=ticker, daemon=True).start()
    arm = URRtdeArm(URRtdeConfig(robot_ip="127.0.1.63", connect_timeout_s=3.0, gripper="none"))
    try:
        t0 = time.monotonic()
        with pytest.raises(ArmError, match="did not connect"):
            arm.connect()
        elapsed = time.monotonic() - t0
        assert elapsed > 2.5  # it waited connect_timeout_s (3 s); a hang is pytest-timeout's
        assert not arm.connected
        gaps = np.diff([t for t in ticks if t0 <= t <= t0 + elapsed])
        # This process never froze: a GIL held through the blocked constructor would show one gap
        # as long as the whole connect; a loaded machine only delays the ticker a little.
        assert gaps.size >= 5 and gaps.max() < elapsed / 2
        with pytest.raises(ArmNotConnectedError):
            arm.state()
    finally:
        stop.set()
        arm.disconnect()
        peer.close()


def test_connect_requires_an_ip():
    with pytest.raises(ArmError, match="robot_ip is empty"):
        URRtdeArm(URRtdeConfig(gripper="none")).connect()


def test_driver_config_keeps_the_worker_stop_behind_the_safearm_watchdog():
    """A node resuming after a stall must re-anchor (SafeArm stale stream) whenever the worker
    has stopped the arm meanwhile: worker_stale_command_s >= SafeArm watchdog_timeout_s."""
    from dynaflip_ros.configs.ros import Ur3DriverNodeConfig

    Ur3DriverNodeConfig(backend="ur_rtde", ur_rtde={"robot_ip": "10.0.0.2"})  # defaults are consistent
    with pytest.raises(ValueError, match="worker_stale_command_s"):
        Ur3DriverNodeConfig(backend="ur_rtde", ur_rtde={"robot_ip": "10.0.0.2", "worker_stale_command_s": 0.03})
    Ur3DriverNodeConfig(backend="sim", ur_rtde={"worker_stale_command_s": 0.03})  # not used by the sim arm
