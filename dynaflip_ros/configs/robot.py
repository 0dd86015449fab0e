"""Connection and servo settings of the real UR3 over RTDE (`robot.ur_rtde_arm.URRtdeArm`).

Ranges come from URScript's `servoj(q, a, v, t, lookahead_time, gain)`: lookahead_time in
[0.03, 0.2] s, gain in [100, 2000] (UR Script Manual, `servoj`; docs/hardware.md), and from the
controller rates: RTDE streams at up to 125 Hz on a CB3 and 500 Hz on an e-Series (docs/hardware.md).
ROS parameters: `ur3_driver.ur_rtde.*` (nested in `configs.ros.Ur3DriverNodeConfig`).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from dynaflip_ros.configs.io import ConfigError
from dynaflip_ros.configs.validate import require_choice, require_int, require_range

UR_TYPES: tuple[str, ...] = ("cb3", "e-series")
# Controller (RTDE / servo) rate by controller generation, Hz (docs/hardware.md).
CONTROLLER_RATE_HZ: dict[str, float] = {"cb3": 125.0, "e-series": 500.0}
GRIPPERS: tuple[str, ...] = ("robotiq_urcap", "none")


@dataclass(frozen=True)
class URRtdeConfig:
    """How to reach and servo a UR arm through ur_rtde 1.6.5.

    robot_ip: controller address (IPv4 / IPv6 literal or host name; "" = not configured, which
        `URRtdeArm.connect()` refuses).
    ur_type: "cb3" (125 Hz) or "e-series" (500 Hz).
    rtde_frequency_hz: RTDE output rate; 0 = the controller rate of `ur_type`.
    servo_lookahead_s: servoj lookahead_time, s, in [0.03, 0.2]: larger = smoother, more lag.
    servo_gain: servoj proportional gain in [100, 2000]: larger = stiffer tracking, more overshoot.
    connect_timeout_s: limit for the whole connection (probe + ur_rtde constructors + script
        upload); ur_rtde itself can block forever on a peer that accepts but never speaks RTDE,
        so it runs in a worker process that is killed when this expires.
    controller_watchdog_hz: minimum command rate the controller's RTDE watchdog
        (`RTDEControlInterface.setWatchdog`) enforces; below it the controller stops the program
        by itself (the last line of defence: the RTDE worker died). Keep 1/controller_watchdog_hz
        above worker_stale_command_s + 10 ms so a frozen node ends in a servoStop, not a stopped
        program. 0 disables it.
    worker_stale_command_s: the worker process stops the arm (servoStop) when it receives no
        servo target or request for this long (the node process froze or died). Keep it >=
        SafeArm's watchdog_timeout_s: a node that resumes after a stall that long then finds its
        stream stale and re-anchors at the measured pose, instead of resuming toward targets
        the stopped arm fell behind (checked by `configs.ros.Ur3DriverNodeConfig`).
    state_timeout_s: `state()` raises ArmError when the worker's last RTDE sample is older.
    command_timeout_s: limit for blocking requests to the worker (stop, re-arm, freedrive).
    gripper: "robotiq_urcap" (Robotiq 2F over the URCap socket, docs/hardware.md) or "none".
    gripper_port: URCap socket port (63352).
    gripper_speed / gripper_force: Robotiq SPE / FOR registers, 0..255.
    rt_priority: SCHED_FIFO priority requested for the worker's servo thread (0 = leave the
        scheduler alone; needs CAP_SYS_NICE or rtprio ulimit, see docker/compose.yaml).
    """

    robot_ip: str = ""
    ur_type: str = "cb3"
    rtde_frequency_hz: float = 0.0
    servo_lookahead_s: float = 0.1
    servo_gain: float = 300.0
    connect_timeout_s: float = 10.0
    controller_watchdog_hz: float = 10.0
    worker_stale_command_s: float = 0.06
    state_timeout_s: float = 0.5
    command_timeout_s: float = 5.0
    gripper: str = "robotiq_urcap"
    gripper_port: int = 63352
    gripper_speed: int = 255
    gripper_force: int = 100
    rt_priority: int = 0

    def __post_init__(self) -> None:
        owner = "URRtdeConfig"
        if not isinstance(self.robot_ip, str):
            raise ConfigError(f"{owner}.robot_ip must be a string, got {self.robot_ip!r}")
        if self.robot_ip and any(c.isspace() for c in self.robot_ip):
            raise ConfigError(f"{owner}.robot_ip must not contain spaces, got {self.robot_ip!r}")
        require_choice(owner, "ur_type", self.ur_type, UR_TYPES)
        if float(self.rtde_frequency_hz) != 0.0:
            require_range(owner, "rtde_frequency_hz", self.rtde_frequency_hz, 1.0, CONTROLLER_RATE_HZ[self.ur_type])
        require_range(owner, "servo_lookahead_s", self.servo_lookahead_s, 0.03, 0.2)
        require_range(owner, "servo_gain", self.servo_gain, 100.0, 2000.0)
        require_range(owner, "connect_timeout_s", self.connect_timeout_s, 0.5, 120.0)
        require_range(owner, "controller_watchdog_hz", self.controller_watchdog_hz, 0.0, 500.0)
        require_range(owner, "worker_stale_command_s", self.worker_stale_command_s, 0.01, 1.0)
        require_range(owner, "state_timeout_s", self.state_timeout_s, 0.01, 10.0)
        require_range(owner, "command_timeout_s", self.command_timeout_s, 0.1, 60.0)
        if self.controller_watchdog_hz > 0 and 1.0 / self.controller_watchdog_hz < self.worker_stale_command_s + 0.01:
            raise ConfigError(f"{owner}: 1 / controller_watchdog_hz ({1.0 / self.controller_watchdog_hz:.3f} s) must exceed "
                              f"worker_stale_command_s + 0.01 s ({self.worker_stale_command_s + 0.01:.3f} s)")
        require_choice(owner, "gripper", self.gripper, GRIPPERS)
        for name in ("gripper_port", "gripper_speed", "gripper_force", "rt_priority"):
            require_int(owner, name, getattr(self, name))
        require_range(owner, "gripper_port", self.gripper_port, 1, 65535, kind="")
        for name in ("gripper_speed", "gripper_force"):
            require_range(owner, name, getattr(self, name), 0, 255, kind="")
        require_range(owner, "rt_priority", self.rt_priority, 0, 99, kind="")

    @property
    def controller_rate_hz(self) -> float:
        """The RTDE / servo rate: rtde_frequency_hz, or 125 Hz (CB3) / 500 Hz (e-Series)."""
        return float(self.rtde_frequency_hz) or CONTROLLER_RATE_HZ[self.ur_type]

    def settle_hold_s(self, command_lead_s: float = 0.0) -> float:
        """How long the servo loop keeps a finished chunk's last target (`ServoLoop.end_hold_s`):
        servoj lags its targets by about the lookahead time, and targets are sent
        `command_lead_s` early, so the arm reaches the last one that much later (s)."""
        return float(command_lead_s) + float(self.servo_lookahead_s)

    @property
    def is_loopback(self) -> bool:
        """True for 127.0.0.0/8 / ::1 / localhost (e.g. the loopback test controller)."""
        if self.robot_ip == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.robot_ip).is_loopback
        except ValueError:
            return False
