"""Safety limits enforced by `robot.safety.SafeArm` (docs/safety.md).

The arm driver owns safety, not the policy: every joint target that can reach an arm (sim or real)
is checked against these limits first. Defaults are the UR3 datasheet limits
(`configs.ur3.UR3_JOINT_LIMITS_RAD`, `UR3_MAX_JOINT_SPEED_RAD_S`; docs/hardware.md) with the
joint speed scaled down by `speed_scale`, and a TCP workspace box for a table-top UR3 cell.
A config may only tighten the datasheet limits, never loosen them.

YAML: `config/safety.yaml`, loaded with `configs.io.load_yaml(SafetyConfig, path)`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dynaflip_ros.configs.io import ConfigError
from dynaflip_ros.configs.ur3 import (
    UR3_CB3_DH,
    UR3_JOINT_LIMITS_RAD,
    UR3_MAX_JOINT_SPEED_RAD_S,
    UR3E_DH,
    DHParams,
)
from dynaflip_ros.configs.validate import is_finite_number as _is_finite_number
from dynaflip_ros.configs.validate import require_choice, require_range

# The widest range of servo periods (servoJ `t`, seconds) any layer accepts: 10 kHz .. 1 Hz.
# `SafetyConfig.min_command_dt_s` / `max_command_dt_s` narrow it; the arms behind SafeArm and the
# RTDE worker use it as is (`robot.commands`; ur_rtde's servoJ blocks for `t`: a period of 1e300 s
# would block the worker forever).
SERVO_PERIOD_MIN_S = 1e-4
SERVO_PERIOD_MAX_S = 1.0

# Kinematic models the workspace check can use (forward kinematics of the DH table).
ROBOT_MODELS: dict[str, DHParams] = {"ur3_cb3": UR3_CB3_DH, "ur3e": UR3E_DH}

_DEFAULT_JOINT_LIMITS_RAD: tuple[tuple[float, float], ...] = tuple(
    (float(lo), float(hi)) for lo, hi in UR3_JOINT_LIMITS_RAD
)
_DEFAULT_MAX_JOINT_SPEED_RAD_S: tuple[float, ...] = tuple(float(v) for v in UR3_MAX_JOINT_SPEED_RAD_S)


def tool_transform(tcp_offset_m: float) -> np.ndarray:
    """(4, 4) flange -> TCP transform: a translation of `tcp_offset_m` (m) along the flange z axis."""
    t = np.eye(4)
    t[2, 3] = float(tcp_offset_m)
    return t


@dataclass(frozen=True)
class SafetyConfig:
    """Limits checked on every command before it reaches an `Arm`.

    Attributes:
        robot_model: kinematic model used for the TCP workspace check, one of `ROBOT_MODELS`
            ("ur3_cb3" or "ur3e").
        joint_limits_rad: 6 (lower, upper) joint position limits, rad, UR joint order. Must lie
            inside the datasheet limits `UR3_JOINT_LIMITS_RAD` (tightening only).
        max_joint_speed_rad_s: 6 joint speed limits, rad/s, at most the datasheet
            `UR3_MAX_JOINT_SPEED_RAD_S` (180 °/s base/shoulder/elbow, 360 °/s wrists).
        speed_scale: factor in (0, 1] applied to `max_joint_speed_rad_s` (0.5 for sim/teleop);
            the enforced limit is `joint_speed_limit_rad_s`.
        workspace_min_m, workspace_max_m: (x, y, z) corners of the axis-aligned box, UR `base`
            frame, metres, that the TCP must stay inside. The default box covers the whole UR3
            reach (0.5 m) at table height (z >= -0.05 m, i.e. at most 5 cm below the base plane)
            up to 0.6 m; tighten it to the cell layout.
        tcp_offset_m: flange -> TCP distance along the flange z axis, metres (0.15 m: between
            the fingertips of a Robotiq 2F-85, docs/hardware.md).
        watchdog_timeout_s: no accepted joint command within this time -> `Arm.stop()`.
        min_command_dt_s, max_command_dt_s: the range of servo periods a command may declare
            (s); outside it the command is refused. A command's allowed step is
            `joint_speed_limit_rad_s * min(dt_s, time elapsed since the last forwarded
            command)` (`robot.rate_limit`), so a caller can buy a large jump neither with a
            large dt_s nor by calling faster than it declares. The default range covers servo
            loops from 10 Hz to 2 kHz.
        gripper_range: (min, max) allowed gripper command, 0 = open .. 1 = closed.

    Raises:
        ConfigError (a ValueError): on a wrong length, non-finite value, inverted interval, or a limit looser
            than the datasheet.
    """

    robot_model: str = "ur3_cb3"
    joint_limits_rad: tuple[tuple[float, float], ...] = _DEFAULT_JOINT_LIMITS_RAD
    max_joint_speed_rad_s: tuple[float, ...] = _DEFAULT_MAX_JOINT_SPEED_RAD_S
    speed_scale: float = 0.5
    workspace_min_m: tuple[float, float, float] = (-0.5, -0.5, -0.05)
    workspace_max_m: tuple[float, float, float] = (0.5, 0.5, 0.6)
    tcp_offset_m: float = 0.15
    watchdog_timeout_s: float = 0.05
    min_command_dt_s: float = 0.0005
    max_command_dt_s: float = 0.1
    gripper_range: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        require_choice("", "robot_model", self.robot_model, sorted(ROBOT_MODELS))
        # Joint position limits: 6 finite (lo < hi) pairs inside the datasheet limits.
        limits = tuple(tuple(pair) for pair in self.joint_limits_rad)
        if len(limits) != 6 or any(len(p) != 2 for p in limits):
            raise ConfigError(f"joint_limits_rad must be 6 (lower, upper) pairs, got {limits!r}")
        for j, (lo, hi) in enumerate(limits):
            if not (_is_finite_number(lo) and _is_finite_number(hi)) or not lo < hi:
                raise ConfigError(f"joint_limits_rad[{j}] must be finite with lower < upper, got {(lo, hi)}")
            dlo, dhi = UR3_JOINT_LIMITS_RAD[j]
            if lo < dlo - 1e-9 or hi > dhi + 1e-9:
                raise ConfigError(
                    f"joint_limits_rad[{j}] = {(lo, hi)} is looser than the datasheet limits "
                    f"({dlo:.4f}, {dhi:.4f}) rad; a config may only tighten them"
                )
        object.__setattr__(self, "joint_limits_rad", tuple((float(lo), float(hi)) for lo, hi in limits))
        # Joint speed limits.
        speeds = tuple(self.max_joint_speed_rad_s)
        if len(speeds) != 6 or not all(_is_finite_number(v) and v > 0 for v in speeds):
            raise ConfigError(f"max_joint_speed_rad_s must be 6 finite positive values, got {speeds!r}")
        for j, v in enumerate(speeds):
            if v > UR3_MAX_JOINT_SPEED_RAD_S[j] + 1e-9:
                raise ConfigError(
                    f"max_joint_speed_rad_s[{j}] = {v} exceeds the datasheet "
                    f"{UR3_MAX_JOINT_SPEED_RAD_S[j]:.4f} rad/s"
                )
        object.__setattr__(self, "max_joint_speed_rad_s", tuple(float(v) for v in speeds))
        require_range("", "speed_scale", self.speed_scale, 0, 1, lo_open=True, kind="")
        # Workspace box.
        wmin, wmax = tuple(self.workspace_min_m), tuple(self.workspace_max_m)
        if len(wmin) != 3 or len(wmax) != 3:
            raise ConfigError(f"workspace_min_m / workspace_max_m must be (x, y, z), got {wmin!r}, {wmax!r}")
        if not all(_is_finite_number(v) for v in wmin + wmax):
            raise ConfigError(f"workspace box must be finite, got {wmin!r}, {wmax!r}")
        if not all(lo < hi for lo, hi in zip(wmin, wmax)):
            raise ConfigError(f"workspace_min_m must be < workspace_max_m on every axis, got {wmin!r}, {wmax!r}")
        object.__setattr__(self, "workspace_min_m", tuple(float(v) for v in wmin))
        object.__setattr__(self, "workspace_max_m", tuple(float(v) for v in wmax))
        require_range("", "tcp_offset_m", self.tcp_offset_m, 0, 0.5, kind="", unit="m")
        require_range("", "watchdog_timeout_s", self.watchdog_timeout_s, 0, 5, lo_open=True, kind="", unit="s")
        for name in ("min_command_dt_s", "max_command_dt_s"):
            require_range("", name, getattr(self, name), SERVO_PERIOD_MIN_S, SERVO_PERIOD_MAX_S, kind="", unit="s")
        if not self.min_command_dt_s < self.max_command_dt_s:
            raise ConfigError(
                f"min_command_dt_s ({self.min_command_dt_s}) must be < max_command_dt_s ({self.max_command_dt_s})")
        g = tuple(self.gripper_range)
        if (
            len(g) != 2
            or not all(_is_finite_number(v) for v in g)
            or not 0.0 <= g[0] < g[1] <= 1.0
        ):
            raise ConfigError(f"gripper_range must be (min, max) with 0 <= min < max <= 1, got {g!r}")
        object.__setattr__(self, "gripper_range", (float(g[0]), float(g[1])))

    # Derived arrays (fresh copies; callers may not mutate the config through them).
    @property
    def joint_lower_rad(self) -> np.ndarray:
        """(6,) lower joint limits, rad."""
        return np.array([lo for lo, _ in self.joint_limits_rad])

    @property
    def joint_upper_rad(self) -> np.ndarray:
        """(6,) upper joint limits, rad."""
        return np.array([hi for _, hi in self.joint_limits_rad])

    @property
    def joint_speed_limit_rad_s(self) -> np.ndarray:
        """(6,) enforced joint speed limit: max_joint_speed_rad_s * speed_scale, rad/s."""
        return np.array(self.max_joint_speed_rad_s) * self.speed_scale

    @property
    def dh(self) -> DHParams:
        """DH table of `robot_model`."""
        return ROBOT_MODELS[self.robot_model]

    @property
    def tool_transform(self) -> np.ndarray:
        """(4, 4) flange -> TCP transform: a translation of tcp_offset_m along flange z."""
        return tool_transform(self.tcp_offset_m)
