"""`TeleopRecorderNodeConfig`: parameters of the `teleop_recorder` ROS node (ros/nodes/teleop_recorder.py).

ROS parameters are these fields (`ros/params.py`), e.g.
`ros2 run dynaflip_ros teleop_recorder_node --ros-args -p device:=gamepad -p out:=/data/demos`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from dynaflip_ros.configs.robot import UR_TYPES
from dynaflip_ros.configs.safety import SafetyConfig

DEVICES = ("keyboard", "gamepad", "spacemouse", "freedrive")


@dataclass
class TeleopRecorderNodeConfig:
    """Attributes:
        device: keyboard | gamepad | spacemouse | freedrive | replay:FILE (motion; episode events
            come from the /teleop_recorder/{start,stop,discard,rerecord} services and the device).
        sim: MuJoCo cell (true) or the real UR3 at robot_ip.
        robot_ip, ur_type ("cb3" | "e-series"), camera_serial (RealSense, "" = the only one).
        out: dataset directory (required); resume: append to an existing dataset.
        image_hw: recorded image (H, W) px; task: instruction ("" = the sim scene's, or the
            default task on the real cell); episodes: saved episodes before the node exits (0 = never).
        command_rate_hz: teleop rate (a multiple of 10 Hz); max_episode_s: auto-save length.
        realtime: run a replay in real time (sim); rosbag_dir: raw MCAP log ("" = none).
        seed: first sim scene seed; operator / note: episode metadata.
        status_rate_hz: /teleop_recorder/status publish rate.
        exit_when_done: shut the node down when the session ends (quit / episodes reached).
        safety: the SafeArm limits (`configs.safety.SafetyConfig`, params `safety.*`); on the real
            cell its robot_model is set from ur_type (cb3 -> "ur3_cb3", e-series -> "ur3e").
        cell_params_file: the real cell's params file whose `camera.realsense` and
            `ur3_driver.ur_rtde` sections configure camera and arm, so demos are recorded with
            the deployment's camera settings ("" = the package's config/real_cell.yaml;
            record_teleop.launch.py passes its params_file).
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

    def __post_init__(self) -> None:
        if not (self.device in DEVICES or (self.device.startswith("replay:") and len(self.device) > 7)):
            raise ValueError(f"TeleopRecorderNodeConfig.device must be one of {DEVICES} or replay:FILE, got {self.device!r}")
        if self.ur_type not in UR_TYPES:
            raise ValueError(f"TeleopRecorderNodeConfig.ur_type must be one of {UR_TYPES}, got {self.ur_type!r}")
        if not self.sim and not self.robot_ip:
            raise ValueError("TeleopRecorderNodeConfig.robot_ip is required when sim is false")
        hw = tuple(self.image_hw)
        if len(hw) != 2 or not all(isinstance(v, int) and 16 <= v <= 4096 for v in hw):
            raise ValueError(f"TeleopRecorderNodeConfig.image_hw must be two ints in [16, 4096], got {self.image_hw!r}")
        self.image_hw = hw
        if not isinstance(self.episodes, int) or self.episodes < 0:
            raise ValueError(f"TeleopRecorderNodeConfig.episodes must be an int >= 0, got {self.episodes!r}")
        if not (math.isfinite(self.status_rate_hz) and 0 < self.status_rate_hz <= 50):
            raise ValueError(f"TeleopRecorderNodeConfig.status_rate_hz must be in (0, 50], got {self.status_rate_hz!r}")
