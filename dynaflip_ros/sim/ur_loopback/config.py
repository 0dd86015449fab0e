"""Configuration of the loopback UR controller: its ports, defaults and the validators of every
argument a caller passes (host, controller version, initial joints, injection kinds).

Pure functions and constants, no state, no threads; used by both the parent-side handle
(`process.LoopbackURController`, validates before starting the process) and the controller
process (`core.ControllerCore`, `server.ControllerServer`).

Sources: docs/ur_rtde_protocol.md §1 (ports), §4 (controller rates: 500 Hz e-Series, 125 Hz CB3,
i.e. a cycle period of 2 ms / 8 ms); UR3 joint limits from `robot.kinematics`.
"""
from __future__ import annotations

import ipaddress

import numpy as np

from dynaflip_ros.configs.sim import DEFAULT_HOME_Q_RAD
from dynaflip_ros.robot.kinematics import UR3_JOINT_LIMITS_RAD

DASHBOARD_PORT = 29999
SCRIPT_PORT = 30003
RTDE_PORT = 30004
ROBOTIQ_PORT = 63352
DEFAULT_UR_VERSION = (5, 11, 1, 108318)
# UR3 home inside the cell's workspace: the sim env's flange-down ready pose (configs/sim.py).
DEFAULT_Q0_RAD = tuple(DEFAULT_HOME_Q_RAD)
INJECT_KINDS = ("protective_stop", "emergency_stop", "clear_emergency_stop", "program_stop",
                "speed_slider", "silent", "stream_pause", "drop_connections", "gripper_object",
                "remote_control")
E_SERIES_RATE_HZ = 500.0   # controller cycle 2 ms (major version 5)
CB3_RATE_HZ = 125.0        # controller cycle 8 ms (major version 3)


def check_host(host: str) -> str:
    """The IPv4 loopback address `host` (127.x.y.z) in canonical form.

    Raises ValueError for anything else: the loopback controller never listens on a network
    interface."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError as e:
        raise ValueError(f"host must be a literal IPv4 loopback address (127.x.y.z), got {host!r}") from e
    if ip.version != 4 or not ip.is_loopback:
        raise ValueError(f"host must be an IPv4 loopback address (127.x.y.z), got {host!r}: "
                         "the loopback controller never listens on a network interface")
    return str(ip)


def check_version(v) -> tuple[int, int, int, int]:
    """(major, minor, bugfix, build) as 4 ints, major 3 (CB3) or 5 (e-Series).

    Raises ValueError otherwise."""
    try:
        t = tuple(int(x) for x in v)
    except (TypeError, ValueError) as e:
        raise ValueError(f"ur_version must be 4 integers (major, minor, bugfix, build), got {v!r}") from e
    if len(t) != 4 or min(t) < 0 or t[0] not in (3, 5):
        raise ValueError(f"ur_version must be (3|5, minor, bugfix, build), got {v!r}")
    return t  # type: ignore[return-value]


def check_q0(q0) -> tuple[float, ...]:
    """Initial joints (6,) rad (None -> `DEFAULT_Q0_RAD`) as a tuple of floats.

    Raises ValueError when not 6 finite angles inside the UR3 joint limits."""
    q = np.asarray(DEFAULT_Q0_RAD if q0 is None else q0, dtype=float)
    if q.shape != (6,) or not np.all(np.isfinite(q)):
        raise ValueError(f"q0 must be 6 finite joint angles (rad), got {q0!r}")
    if np.any(q < UR3_JOINT_LIMITS_RAD[:, 0]) or np.any(q > UR3_JOINT_LIMITS_RAD[:, 1]):
        raise ValueError(f"q0 outside the UR3 joint limits: {q0!r}")
    return tuple(float(x) for x in q)


def cycle_rate_hz(version: tuple[int, ...]) -> float:
    """Controller cycle rate of a (validated) version: 500 Hz e-Series (5.x), 125 Hz CB3 (3.x)."""
    return E_SERIES_RATE_HZ if version[0] >= 5 else CB3_RATE_HZ
