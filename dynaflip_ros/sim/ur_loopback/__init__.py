"""Loopback UR controller: a URSim substitute (no Docker) that the real ur_rtde 1.6.5 client
(RTDEReceiveInterface, RTDEControlInterface, RTDEIOInterface, DashboardClient) and a Robotiq
URCap client drive, backed by the project's MuJoCo UR3 cell.

    from dynaflip_ros.sim.ur_loopback import LoopbackURController
    with LoopbackURController(host="127.0.0.2", ur_version=(5, 11, 1, 108318)) as ctrl:
        ...  # rtde_control.RTDEControlInterface("127.0.0.2") etc.
        ctrl.inject("protective_stop"); ctrl.snapshot(); ctrl.trace()

CLI: `python -m dynaflip_ros.sim.ur_loopback --robot-ip 127.0.0.1 --ur-version 5.11.1.108318`.
Spec: docs/ur_rtde_protocol.md (protocol); the UR3 model of `sim/cell.py`; Robotiq's URCap
socket protocol (port 63352, `SET`/`GET` variables, Robotiq 2F-85 instruction manual).
Importing this package does not import MuJoCo (the controller process does).

Modules: config.py (ports, defaults, argument validators), core.py (controller state, one cycle
per `step()`), server.py (the selectors network loop), client.py (one client socket),
rtde_session.py (RTDE requests and output schedule), rtde_protocol.py (RTDE wire format),
dashboard.py (29999), script_emulation.py (the uploaded rtde_control script), robotiq_server.py
(63352), arm_model.py (motion generator + MuJoCo / kinematic arm), trace.py (per-cycle trace),
process.py (child entry + parent handle), cli.py (command line).
"""
from dynaflip_ros.sim.ur_loopback.config import DEFAULT_Q0_RAD, DEFAULT_UR_VERSION, INJECT_KINDS
from dynaflip_ros.sim.ur_loopback.process import LoopbackURController

__all__ = ["DEFAULT_Q0_RAD", "DEFAULT_UR_VERSION", "INJECT_KINDS", "LoopbackURController"]
