"""Grippers of the real cell behind one interface: the Robotiq 2F-85 over its URCap socket.

The common way to run a Robotiq 2F on a UR arm is the Robotiq URCap: the gripper is wired to
the UR tool connector and the URCap serves an ASCII protocol on TCP port 63352 of the controller
(`SET <VAR> <int>` -> `ack`, `GET <VAR>` -> `<VAR> <int>`; docs/hardware.md §2.3). Position 0 = open,
255 = closed; a real unit reads about 3 (open) .. 230 (fingers touching).

`RobotiqURCapGripper.command()` never blocks: the servo loop calls it at up to 500 Hz, so the
latest target is handed to a worker thread that owns the socket (latest wins) and that also
polls the position for `position()`.
"""
from __future__ import annotations

import logging
import math
import socket
import threading
import time
from typing import Protocol, runtime_checkable

from dynaflip_ros.errors import UserError
from dynaflip_ros.robot.arm import ArmError

log = logging.getLogger(__name__)


class GripperError(RuntimeError, UserError):
    """The gripper (or its socket) failed; the message says what to check."""


@runtime_checkable
class Gripper(Protocol):
    def connect(self) -> None:
        """Open the connection and activate the gripper. Raises GripperError."""

    def command(self, closed_fraction: float) -> None:
        """Request a closure 0 (open) .. 1 (closed); returns at once (non-blocking)."""

    def position(self) -> float:
        """Last measured closure 0 .. 1 (NaN before the first reading)."""

    def close(self) -> None:
        """Stop the worker and close the connection; idempotent."""


def gripper_from_config(config) -> "RobotiqURCapGripper | None":
    """The gripper a `configs.robot.URRtdeConfig` names, not yet connected: "robotiq_urcap" ->
    `RobotiqURCapGripper(robot_ip, gripper_port, gripper_speed, gripper_force)`, "none" -> None."""
    if config.gripper != "robotiq_urcap":
        return None
    return RobotiqURCapGripper(config.robot_ip, config.gripper_port, speed=config.gripper_speed,
                               force=config.gripper_force)


def command_gripper(gripper: Gripper, closed_fraction: float) -> None:
    """`gripper.command(closed_fraction)` for an `Arm`: a GripperError becomes
    `robot.arm.ArmError("gripper: ...")` (the arm's error type)."""
    try:
        gripper.command(closed_fraction)
    except GripperError as e:
        raise ArmError(f"gripper: {e}") from e


class RobotiqURCapGripper:
    """Robotiq 2F-85 / 2F-140 through the URCap socket server (docs/hardware.md §2.3).

    Args:
        host: UR controller address (the URCap server runs on the controller).
        port: URCap socket port (63352).
        speed / force: SPE / FOR registers 0..255 (speed ~20..150 mm/s, force ~20..235 N).
        timeout_s: socket timeout for connect and for each request.
        activation_timeout_s: limit for `SET ACT 1` -> `STA 3` (a real unit takes ~1-3 s).
        poll_rate_hz: position readback rate of the worker thread.
        deadband: commands closer than this (fraction) to the last one sent are not resent.
    Raises GripperError from connect() when the socket or the activation fails.
    """

    def __init__(self, host: str, port: int = 63352, speed: int = 255, force: int = 100,
                 timeout_s: float = 2.0, activation_timeout_s: float = 5.0, poll_rate_hz: float = 10.0,
                 deadband: float = 0.5 / 255.0) -> None:
        for name, v in (("speed", speed), ("force", force)):
            if not isinstance(v, int) or not 0 <= v <= 255:
                raise ValueError(f"RobotiqURCapGripper.{name} must be an int in [0, 255], got {v!r}")
        self.host, self.port = host, int(port)
        self.speed, self.force = speed, force
        self.timeout_s = float(timeout_s)
        self.activation_timeout_s = float(activation_timeout_s)
        self.poll_period_s = 1.0 / float(poll_rate_hz)
        self.deadband = float(deadband)
        self._sock: socket.socket | None = None
        self._rfile = None
        self._io_lock = threading.Lock()
        self._cond = threading.Condition()
        self._target: float | None = None
        self._sent: float | None = None
        self._position = math.nan
        self._error: str = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ protocol
    def _request(self, line: str) -> str:
        with self._io_lock:
            if self._sock is None:
                raise GripperError("gripper socket is not connected")
            try:
                self._sock.sendall((line + "\n").encode("ascii"))
                reply = self._rfile.readline()
            except (OSError, socket.timeout) as e:
                raise GripperError(f"Robotiq URCap socket {self.host}:{self.port}: {line!r} failed: {e}") from e
        if not reply:
            raise GripperError(f"Robotiq URCap socket {self.host}:{self.port} closed the connection")
        return reply.decode("ascii", "replace").strip()

    def _set(self, **values: int) -> None:
        line = "SET " + " ".join(f"{k} {int(v)}" for k, v in values.items())
        reply = self._request(line)
        if reply != "ack":
            raise GripperError(f"Robotiq URCap: {line!r} -> {reply!r} (expected 'ack')")

    def _get(self, var: str) -> int:
        reply = self._request(f"GET {var}")
        parts = reply.split()
        if len(parts) != 2 or parts[0] != var:
            raise GripperError(f"Robotiq URCap: 'GET {var}' -> {reply!r} (expected '{var} <int>')")
        try:
            return int(parts[1])
        except ValueError as e:
            raise GripperError(f"Robotiq URCap: 'GET {var}' -> {reply!r}: not an integer") from e

    # ------------------------------------------------------------------ Gripper
    def connect(self) -> None:
        if self._thread is not None:
            return
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
        except OSError as e:
            raise GripperError(
                f"cannot reach the Robotiq URCap socket at {self.host}:{self.port}: {e} "
                "(is the Robotiq URCap installed and the gripper plugged into the tool connector?)") from e
        sock.settimeout(self.timeout_s)
        self._sock, self._rfile = sock, sock.makefile("rb")
        try:
            if self._get("ACT") != 1 or self._get("STA") != 3:
                self._set(ACT=0)
                self._set(ATR=0)
                self._set(ACT=1)
                deadline = time.monotonic() + self.activation_timeout_s
                while self._get("STA") != 3:
                    if time.monotonic() > deadline:
                        raise GripperError(
                            f"Robotiq gripper did not finish activation (STA 3) within {self.activation_timeout_s} s")
                    time.sleep(0.05)
            self._set(SPE=self.speed, FOR=self.force)
            self._position = self._get("POS") / 255.0
        except GripperError:
            self._close_socket()
            raise
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="robotiq_gripper", daemon=True)
        self._thread.start()
        log.info("Robotiq gripper active at %s:%d (speed %d, force %d)", self.host, self.port, self.speed, self.force)

    def command(self, closed_fraction: float) -> None:
        f = float(closed_fraction)
        if not math.isfinite(f) or not 0.0 <= f <= 1.0:
            raise ValueError(f"gripper closed_fraction must be finite in [0, 1], got {closed_fraction!r}")
        if self._error:
            raise GripperError(self._error)
        with self._cond:
            self._target = f
            self._cond.notify()

    def position(self) -> float:
        return self._position

    @property
    def error(self) -> str:
        """The worker's last failure ("" while healthy)."""
        return self._error

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(2.0 * self.timeout_s + 1.0)
            self._thread = None
        self._close_socket()

    # ------------------------------------------------------------------ worker
    def _run(self) -> None:
        next_poll = time.monotonic()
        while not self._stop.is_set():
            with self._cond:
                self._cond.wait(timeout=max(0.0, next_poll - time.monotonic()))
                target = self._target
            if self._stop.is_set():
                break
            try:
                if target is not None and (self._sent is None or abs(target - self._sent) > self.deadband):
                    self._set(POS=int(round(target * 255.0)), GTO=1)
                    self._sent = target
                if time.monotonic() >= next_poll:
                    self._position = self._get("POS") / 255.0
                    next_poll = time.monotonic() + self.poll_period_s
            except GripperError as e:
                self._error = str(e)
                log.error("gripper worker stopped: %s", e)
                break

    def _close_socket(self) -> None:
        with self._io_lock:
            if self._sock is not None:
                try:
                    self._sock.close()
                except OSError:
                    pass
            self._sock, self._rfile = None, None
