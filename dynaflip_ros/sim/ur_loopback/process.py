"""The loopback controller as a process: the child's entry point (`child_main`, run as
`python -m dynaflip_ros.sim.ur_loopback._child`) and the parent-side handle
(`LoopbackURController`) that starts, commands and stops it.

Processes: the controller (core.py + server.py) runs in its own fresh interpreter so that its
2 ms / 8 ms cycle (absolute deadlines, server.py) does not compete with the caller's GIL. Parent
and child talk over a socketpair carrying `multiprocessing.connection` messages: the parent sends
(command, *args) tuples (inject, snapshot, trace, stop) and the child answers ("ok", result) or
("err", "Type: message"); at start the child sends ("ready", info) or ("error", reason).

Threads: in the child, the network loop owns everything; one daemon thread only watches the
parent pid (exit when the parent is gone). In the parent, `LoopbackURController` serialises its
request/reply exchanges with a lock, so several threads may share one handle. Lifetime: the child
exits on a stop command, on EOF of the command pipe, when the parent pid changes, and every live
handle is stopped at interpreter exit (atexit).
"""
from __future__ import annotations

import atexit
import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref

from dynaflip_ros.sim.ur_loopback.config import (
    DEFAULT_UR_VERSION,
    INJECT_KINDS,
    check_host,
    check_q0,
    check_version,
    cycle_rate_hz,
)
from dynaflip_ros.sim.ur_loopback.core import ControllerCore
from dynaflip_ros.sim.ur_loopback.server import ControllerServer


def child_main(fd: int, config: dict) -> int:
    """Entry of the controller process (`python -m dynaflip_ros.sim.ur_loopback._child`).

    fd: the child end of a socketpair carrying `multiprocessing.connection` messages;
    config: host, version, q0, with_gripper, physics, unlock_delay_s, log_level."""
    from multiprocessing.connection import Connection

    logging.basicConfig(level=config.get("log_level", logging.WARNING),
                        format="%(asctime)s loopback-ur %(levelname)s %(message)s")
    # Ctrl-C in a terminal reaches the whole process group: the parent stops us in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn = Connection(fd)
    server = None
    try:
        core = ControllerCore(config["version"], config["q0"], physics=config["physics"],
                              with_gripper=config["with_gripper"],
                              protective_stop_unlock_delay_s=config["unlock_delay_s"])
        server = ControllerServer(config["host"], core, with_gripper=config["with_gripper"],
                                  command_conn=conn)
        server.bind()
    except Exception as e:  # reported to start()
        try:
            conn.send(("error", f"{type(e).__name__}: {e}"))
        finally:
            if server is not None:
                server.close()
        return 1
    parent = os.getppid()

    def watch_parent() -> None:
        # exit when the parent dies even if the pipe is somehow kept open (belt and braces)
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch_parent, daemon=True).start()
    server.serve(on_ready=lambda: conn.send(("ready", {"host": config["host"], "ports": server.ports,
                                                       "pid": os.getpid()})))
    return 0


_LIVE: weakref.WeakSet[LoopbackURController] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for ctrl in list(_LIVE):
        try:
            ctrl.stop(timeout_s=2.0)
        except Exception:
            pass


class LoopbackURController:
    """A URSim substitute the real ur_rtde 1.6.5 client talks to, running in its own process.

    Serves on `host` (an IPv4 loopback address; use distinct 127.0.0.x hosts for parallel
    controllers): 29999 dashboard, 30003 script upload, 30004 RTDE, 63352 Robotiq URCap socket
    (with_gripper). Source of the behaviour: docs/ur_rtde_protocol.md, docs/hardware.md §1, §2.3.

    Args:
        host: loopback IPv4 address to bind (ValueError otherwise).
        ur_version: (major, minor, bugfix, build) answered to RTDE `v` and PolyscopeVersion;
            major 5 -> e-Series (500 Hz), 3 -> CB3 (125 Hz). Keep 5.x below 5.23 (docs/ur_rtde_protocol.md §3.3).
        q0: (6,) initial joints, rad (default: the sim cell's home pose, `DEFAULT_Q0_RAD`).
        with_gripper: serve the Robotiq URCap socket and simulate the 2F-85.
        physics: MuJoCo UR3 cell (True) or kinematic arm (False).
        protective_stop_unlock_delay_s: the dashboard refuses `unlock protective stop` for this
            long after the stop (a real UR: 5 s); 0 by default for fast tests.
        log_level: logging level of the controller process.

    Use as a context manager or call start()/stop(). The controller process exits when the parent
    dies (command-socket EOF, parent-pid watch) and is stopped at interpreter exit (atexit).
    """

    def __init__(self, host: str = "127.0.0.1", ur_version=DEFAULT_UR_VERSION, q0=None,
                 with_gripper: bool = True, physics: bool = True,
                 protective_stop_unlock_delay_s: float = 0.0, log_level: int = logging.WARNING) -> None:
        self.host = check_host(host)
        self.ur_version = check_version(ur_version)
        self.q0 = check_q0(q0)
        self.with_gripper = bool(with_gripper)
        self.physics = bool(physics)
        if not (math.isfinite(protective_stop_unlock_delay_s) and protective_stop_unlock_delay_s >= 0):
            raise ValueError("protective_stop_unlock_delay_s must be >= 0")
        self.unlock_delay_s = float(protective_stop_unlock_delay_s)
        self.log_level = int(log_level)
        self._proc: subprocess.Popen | None = None
        self._conn = None
        self._lock = threading.Lock()
        self.info: dict | None = None

    @property
    def rate_hz(self) -> float:
        """Controller cycle rate: 500 Hz (e-Series version) or 125 Hz (CB3 version)."""
        return cycle_rate_hz(self.ur_version)

    @property
    def running(self) -> bool:
        """True while the controller process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """Process id of the controller process (None when not started)."""
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout_s: float = 15.0) -> LoopbackURController:
        """Start the controller process; returns once every port listens.

        The process is `python -m dynaflip_ros.sim.ur_loopback._child` (a fresh interpreter, like
        a multiprocessing 'spawn' child but without re-importing the caller's __main__), talking
        over a socketpair. Raises RuntimeError with the reason (port in use, process died,
        timeout)."""
        from multiprocessing.connection import Connection

        if self.running:
            raise RuntimeError("LoopbackURController already started")
        parent_sock, child_sock = socket.socketpair()
        config = {"host": self.host, "version": list(self.ur_version), "q0": list(self.q0),
                  "with_gripper": self.with_gripper, "physics": self.physics,
                  "unlock_delay_s": self.unlock_delay_s, "log_level": self.log_level}
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "dynaflip_ros.sim.ur_loopback._child",
                 str(child_sock.fileno()), json.dumps(config)],
                pass_fds=(child_sock.fileno(),), env=env, stdin=subprocess.DEVNULL)
        finally:
            child_sock.close()
        conn = Connection(parent_sock.detach())
        self._proc, self._conn = proc, conn
        _LIVE.add(self)
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self._kill()
                raise RuntimeError(f"loopback UR controller on {self.host} not ready within {timeout_s} s")
            if conn.poll(min(left, 0.1)):
                try:
                    tag, payload = conn.recv()
                except (EOFError, OSError):
                    code = proc.wait(5.0)
                    self._kill()
                    raise RuntimeError(f"loopback UR controller on {self.host} died during start "
                                       f"(exit code {code})") from None
                if tag == "ready":
                    self.info = payload
                    return self
                self._kill()
                raise RuntimeError(f"loopback UR controller on {self.host} failed to start: {payload}")
            if proc.poll() is not None:
                code = proc.returncode
                self._kill()
                raise RuntimeError(f"loopback UR controller on {self.host} exited during start "
                                   f"(exit code {code})")

    def _call(self, *msg, timeout_s: float = 10.0):
        with self._lock:
            if not self.running or self._conn is None:
                raise RuntimeError("loopback UR controller is not running")
            self._conn.send(msg)
            if not self._conn.poll(timeout_s):
                raise RuntimeError(f"loopback UR controller did not answer {msg[0]!r} within {timeout_s} s")
            tag, payload = self._conn.recv()
        if tag == "err":
            if payload.startswith("ValueError"):
                raise ValueError(payload)
            raise RuntimeError(payload)
        return payload

    def inject(self, kind: str, **kw) -> None:
        """Inject an event. kinds:
        "protective_stop" (safety_mode 3; arm halts; unlock on the dashboard, then re-upload),
        "emergency_stop" (safety_mode 7, program stopped, robot_mode POWER_OFF),
        "clear_emergency_stop" (power_on=False: `power on` + `brake release` on the dashboard
        still needed; power_on=True goes straight back to RUNNING),
        "program_stop" (pendant stop: runtime_state STOPPED),
        "speed_slider" (fraction=0..1: target_speed_fraction, scales all motion),
        "silent" (on=True: new 30004/29999/63352 connections are accepted and never answered),
        "stream_pause" (duration_s: no U packages for that long),
        "drop_connections" (close every client socket),
        "gripper_object" (closure=0..1 or None: an object blocks the fingers at that closure),
        "remote_control" (on=bool: dashboard `is in remote control`).
        Raises ValueError on an unknown kind or bad argument, RuntimeError when not running."""
        if kind not in INJECT_KINDS:
            raise ValueError(f"unknown inject kind {kind!r}; one of {INJECT_KINDS}")
        self._call("inject", kind, dict(kw))

    def snapshot(self) -> dict:
        """Controller state: actual_q, actual_qd, target_q (6 lists, rad, rad/s), robot_mode,
        safety_mode, safety_status_bits, runtime_state, speed_scaling, target_speed_fraction,
        controller_time_s, script_running, n_servoj (servoJ command packages received),
        last_servoj {q, speed, acc, time, lookahead, gain, stamp (controller s)}, watchdog
        {armed, min_hz, tripped, trips}, teach_mode, gripper {pos 0..255, requested, activated,
        obj, ...} or None, errors (protocol anomalies), unsupported (commands acknowledged
        without effect), events, stats (cycles, sent_packages, late/dropped cycles, lateness
        percentiles, cpu_fraction of the controller process)."""
        return self._call("snapshot")

    def trace(self, clear: bool = True) -> dict:
        """Per-cycle record (numpy arrays, N rows): t_s (controller time, s), host_monotonic_s,
        commanded_q (N, 6) latest servoJ target (NaN while not servoing), actual_q (N, 6),
        target_q (N, 6) the controller's reference, runtime_state (N,), safety_mode (N,).
        clear: drop the returned rows from the controller's buffer (10 min max)."""
        return self._call("trace", bool(clear), timeout_s=30.0)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the controller process (idempotent)."""
        proc = self._proc
        if proc is None:
            return
        try:
            if proc.poll() is None:
                try:
                    with self._lock:
                        self._conn.send(("stop",))
                except OSError:
                    pass
                try:
                    proc.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    pass
        finally:
            self._kill()

    def _kill(self) -> None:
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(2.0)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(2.0)
        if self._conn is not None:
            self._conn.close()
        self._proc, self._conn = None, None
        _LIVE.discard(self)

    def __enter__(self) -> LoopbackURController:
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self._kill()
        except Exception:
            pass
