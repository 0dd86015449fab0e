"""Dashboard server (port 29999) of the loopback controller: one reply line per command line.

Source: docs/ur_rtde_protocol.md §5 (reply texts, ur_rtde's exact-match checks; replies end in
`\\n` only, never `\\r\\n`), §3.4 steps 2-3 (PolyscopeVersion, serial number, remote control),
§4.4 (unlock protective stop). Unknown commands get UR's `could not understand: '<cmd>'`.

`handle_command` reads and changes a `core.ControllerCore`; the network loop (server.py) splits
the socket stream into lines and dispatches each here. Threads: none; it runs on the controller
process's single network-loop thread, between control cycles.
"""
from __future__ import annotations

from dynaflip_ros.sim.ur_loopback.core import ControllerCore

GREETING = "Connected: Universal Robots Dashboard Server"
SERIAL_NUMBER = "20185500000"
ROBOT_MODE_NAMES = {
    -1: "NO_CONTROLLER", 0: "DISCONNECTED", 1: "CONFIRM_SAFETY", 2: "BOOTING", 3: "POWER_OFF",
    4: "POWER_ON", 5: "IDLE", 6: "BACKDRIVE", 7: "RUNNING", 8: "UPDATING_FIRMWARE",
}
SAFETY_MODE_NAMES = {
    1: "NORMAL", 2: "REDUCED", 3: "PROTECTIVE_STOP", 4: "RECOVERY", 5: "SAFEGUARD_STOP",
    6: "SYSTEM_EMERGENCY_STOP", 7: "ROBOT_EMERGENCY_STOP", 8: "VIOLATION", 9: "FAULT",
    10: "VALIDATE_JOINT_ID", 11: "UNDEFINED", 12: "AUTOMATIC_MODE_SAFEGUARD_STOP",
    13: "SYSTEM_THREE_POSITION_ENABLING_STOP",
}
RUNTIME_STATE_NAMES = {0: "STOPPING", 1: "STOPPED", 2: "PLAYING", 3: "PAUSING", 4: "PAUSED",
                       5: "RESUMING"}
UNLOCK_TOO_EARLY = ("Cannot unlock protective stop until 5s after occurrence. "
                    "Always inspect cause of protective stop before unlocking")


def handle_command(core: ControllerCore, line: str) -> tuple[str, bool]:
    """Answer one dashboard line. Returns (reply without newline, close_connection)."""
    cmd = line.strip()
    low = cmd.lower()
    v = core.version
    prog = core.program_name or "<unnamed>"
    if low == "polyscopeversion":
        return f"URSoftware {v[0]}.{v[1]}.{v[2]}.{v[3]} (Mar 07 2022)", False
    if low == "version":
        return f"{v[0]}.{v[1]}.{v[2]}.{v[3]}", False
    if low == "get serial number":
        return SERIAL_NUMBER, False
    if low == "is in remote control":
        return "true" if core.remote_control else "false", False
    if low == "get robot model":
        return "UR3", False
    if low == "stop":
        if core.runtime_state in (2, 3, 4):
            core.stop_program("dashboard stop")
        return "Stopped", False
    if low == "play":
        if core.safety_mode != 1 or core.robot_mode != 7 or core.loaded_program is None:
            return "Failed to execute: play", False
        core.play_loaded_program()
        return "Starting program", False
    if low == "pause":
        if core.runtime_state != 2:
            return "Failed to execute: pause", False
        core.pause_program()
        return "Pausing program", False
    if low == "unlock protective stop":
        if core.safety_mode == 3:
            if not core.unlock_protective_stop():
                return UNLOCK_TOO_EARLY, False
        return "Protective stop releasing", False
    if low.startswith("load installation "):
        return f"Loading installation: {cmd[len('load installation '):].strip()}", False
    if low.startswith("load "):
        name = cmd[5:].strip()
        core.loaded_program = name
        return f"Loading program: {name}", False
    if low == "running":
        return f"Program running: {'true' if core.runtime_state == 2 else 'false'}", False
    if low == "programstate":
        return f"{RUNTIME_STATE_NAMES.get(core.runtime_state, 'STOPPED')} {prog}", False
    if low == "robotmode":
        return f"Robotmode: {ROBOT_MODE_NAMES.get(core.robot_mode, 'UNKNOWN')}", False
    if low == "safetymode":
        return f"Safetymode: {SAFETY_MODE_NAMES.get(core.safety_mode, 'UNDEFINED')}", False
    if low == "safetystatus":
        return f"Safetystatus: {SAFETY_MODE_NAMES.get(core.safety_mode, 'UNDEFINED')}", False
    if low == "power on":
        core.power_on()
        return "Powering on", False
    if low == "power off":
        core.power_off()
        return "Powering off", False
    if low == "brake release":
        core.brake_release()
        return "Brake releasing", False
    if low == "close safety popup":
        return "closing safety popup", False
    if low == "restart safety":
        core.restart_safety()
        return "Restarting safety", False
    if low.startswith("popup "):
        return "showing popup", False
    if low == "close popup":
        return "closing popup", False
    if low.startswith("addtolog "):
        return "Added log message", False
    if low == "isprogramsaved":
        return f"True {prog}", False
    if low == "get loaded program":
        return (f"Loaded program: {core.loaded_program}" if core.loaded_program
                else "No program loaded"), False
    if low.startswith("setuserrole "):
        return "Setting user role: " + cmd[len("setUserRole "):].strip(), False
    if low == "get operational mode":
        return "NONE", False
    if low == "clear operational mode":
        return "No longer controlling the operational mode. ", False
    if low == "quit":
        return "Disconnected", True
    if low == "shutdown":
        return "Shutting down", False
    if low == "generate flight report" or low.startswith("generate support file"):
        return "Completed successfully:", False
    return f"could not understand: '{cmd}'", False
