"""`TeleopConfig`: the one set of teleop recording settings, whatever the front end.

The same dataclass is filled, through the same path (`configs.io.from_dict`: defaults <- values
<- overrides, unknown keys refused, then `TeleopConfig.__post_init__` checks), from
- ROS parameters of the `teleop_recorder` node (`ros/params.load_node_config`; a params file
  section `teleop_recorder: ros__parameters: {...}`, e.g. config/real_cell.yaml),
- launch arguments over a params file (`ros/launch_args.teleop_overrides`),
- a YAML file (`load_teleop_config(path)`: flat keys, or a ROS params file's `teleop_recorder`
  section) and `dynaflip record --teleop` flags (`teleop.record.teleop_config_from_args`).
`teleop.session.SessionConfig` (the session loop's own tuning) is derived from it
(`teleop.record.session_config`), never set separately. `TeleopRecorderNodeConfig` is the old
name of this class (kept for importers). No state, no threads.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dynaflip_ros.configs.io import from_dict
from dynaflip_ros.configs.robot import UR_TYPES
from dynaflip_ros.configs.safety import SafetyConfig
from dynaflip_ros.data import schema

DEVICES = ("keyboard", "gamepad", "spacemouse", "freedrive")
DEFAULT_TASK = "Pick the red cube into the sink"


def check_command_rate_hz(command_rate_hz: float) -> None:
    """Raise ValueError unless the teleop rate is a multiple of the record rate
    (`data.schema.RECORD_FPS`, 10 Hz) between 1x and 50x (10 .. 500 Hz)."""
    ratio = command_rate_hz / schema.RECORD_FPS
    if not (math.isfinite(command_rate_hz) and abs(ratio - round(ratio)) < 1e-9 and 1 <= round(ratio) <= 50):
        raise ValueError(f"command_rate_hz must be a multiple of {schema.RECORD_FPS} Hz up to "
                         f"{50 * schema.RECORD_FPS} Hz, got {command_rate_hz!r}")


def check_episode_limits(episodes: int, max_episode_s: float, seed: int) -> None:
    """Raise ValueError unless episodes is an int >= 0, max_episode_s > 0 (s) and seed an int >= 0."""
    if not isinstance(episodes, int) or episodes < 0:
        raise ValueError(f"episodes must be an int >= 0, got {episodes!r}")
    if not (math.isfinite(max_episode_s) and max_episode_s > 0):
        raise ValueError(f"max_episode_s must be > 0, got {max_episode_s!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")


@dataclass
class TeleopConfig:
    """Teleop recording settings (ROS parameter names = field names).

    Attributes:
        device: keyboard | gamepad | spacemouse | freedrive | replay:FILE (motion; episode events
            come from the device, and under ROS from the /teleop_recorder/{start,stop,discard,rerecord}
            services).
        sim: MuJoCo cell (true) or the real UR3 at robot_ip.
        robot_ip, ur_type ("cb3" | "e-series"), camera_serial (RealSense, "" = the only one).
        out: dataset directory (required); resume: append to an existing dataset.
        image_hw: recorded image (H, W) px; task: instruction ("" = the sim scene's, or the
            default task on the real cell); episodes: saved episodes before the session ends (0 = never).
        command_rate_hz: teleop rate (Hz, a multiple of 10 Hz); max_episode_s: auto-save length (s).
        realtime: run a replay in real time (sim); rosbag_dir: raw MCAP log ("" = none).
        seed: first sim scene seed; operator / note: episode metadata.
        status_rate_hz: /teleop_recorder/status publish rate (ROS node only).
        exit_when_done: shut the node down when the session ends (ROS node only).
        safety: the SafeArm limits (`configs.safety.SafetyConfig`, params `safety.*`); on the real
            cell its robot_model is set from ur_type (cb3 -> "ur3_cb3", e-series -> "ur3e").
        cell_params_file: the real cell's params file whose `camera.realsense` and
            `ur3_driver.ur_rtde` sections configure camera and arm, so demos are recorded with
            the deployment's camera settings ("" = the package's config/real_cell.yaml;
            record_teleop.launch.py passes its params_file).
        repo_id: LeRobot repo id stored with a new dataset ("" = the dataset default).
        encoder / policy: model dirs whose manifest sha256 is logged with every episode ("" = none).
    Raises ValueError on an invalid value.
    """

    device: str = "gamepad"
    sim: bool = True
    robot_ip: str = ""
    ur_type: str = "cb3"
    camera_serial: str = ""
    out: str = ""
    resume: bool = False
    image_hw: tuple[int, int] = (224, 224)
    task: str = ""
    episodes: int = 0
    command_rate_hz: float = 50.0
    max_episode_s: float = 300.0
    realtime: bool = False
    rosbag_dir: str = ""
    seed: int = 0
    operator: str = ""
    note: str = ""
    status_rate_hz: float = 2.0
    exit_when_done: bool = True
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    cell_params_file: str = ""
    repo_id: str = ""
    encoder: str = ""
    policy: str = ""

    def __post_init__(self) -> None:
        name = type(self).__name__
        if not (self.device in DEVICES or (self.device.startswith("replay:") and len(self.device) > 7)):
            raise ValueError(f"{name}.device must be one of {DEVICES} or replay:FILE, got {self.device!r}")
        if self.ur_type not in UR_TYPES:
            raise ValueError(f"{name}.ur_type must be one of {UR_TYPES}, got {self.ur_type!r}")
        if not self.sim and not self.robot_ip:
            raise ValueError(f"{name}.robot_ip is required when sim is false")
        hw = tuple(self.image_hw)
        if len(hw) != 2 or not all(isinstance(v, int) and 16 <= v <= 4096 for v in hw):
            raise ValueError(f"{name}.image_hw must be two ints in [16, 4096], got {self.image_hw!r}")
        self.image_hw = hw
        if not isinstance(self.episodes, int) or self.episodes < 0:
            raise ValueError(f"{name}.episodes must be an int >= 0, got {self.episodes!r}")
        if not (math.isfinite(self.status_rate_hz) and 0 < self.status_rate_hz <= 50):
            raise ValueError(f"{name}.status_rate_hz must be in (0, 50], got {self.status_rate_hz!r}")
        check_command_rate_hz(self.command_rate_hz)
        check_episode_limits(self.episodes, self.max_episode_s, self.seed)


TeleopRecorderNodeConfig = TeleopConfig  # the ROS node's name for it (ros/launch_args.py, tests)


def teleop_config(values: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None,
                  where: str = "teleop") -> TeleopConfig:
    """TeleopConfig from its defaults <- `values` (a YAML / params-file section) <- `overrides`
    (command-line flags), built by `configs.io.from_dict`. Raises ConfigError (a ValueError)
    naming `where` on an unknown key or an invalid value."""
    return from_dict(TeleopConfig, {**(values or {}), **(overrides or {})}, where)


def load_teleop_config(path: str | Path, overrides: dict[str, Any] | None = None,
                       node_name: str = "teleop_recorder") -> TeleopConfig:
    """TeleopConfig from a YAML file: a ROS params file (its `node_name` section, dotted or
    nested keys) or a flat mapping of TeleopConfig fields; then `overrides`. Raises
    LaunchArgumentError / ConfigError (ValueErrors) on a missing file or a bad value."""
    from dynaflip_ros.configs.params_file import node_parameters, read_params_file

    doc = read_params_file(path)
    is_params_file = any(isinstance(v, dict) and "ros__parameters" in v for v in doc.values())
    values = _unflatten(node_parameters(doc, node_name)) if is_params_file else doc
    return teleop_config(values, overrides, f"{node_name} of {path}" if is_params_file else str(path))


def _unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """{"safety.speed_scale": 0.5} -> {"safety": {"speed_scale": 0.5}} (params-file dotted keys)."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out
