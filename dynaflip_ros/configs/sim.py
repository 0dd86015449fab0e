"""Parameters of the simulated Pick-into-Sink cell (MuJoCo) and of its scripted expert.

Frames: the MuJoCo world frame IS the UR `base` frame (DH base, docs/hardware.md); the table top
is the plane z = 0 and the robot base sits on it at the origin. Lengths in metres, angles in
radians unless the name says `_deg`. Defaults follow docs/hardware.md (UR3 CB3, camera placement).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from dynaflip_ros.configs.image import require_image_hw
from dynaflip_ros.configs.io import ConfigError
from dynaflip_ros.configs.validate import require_choice, require_finite, require_int, require_range, require_range_pair

# The objects of the original single-object cell (the first four of the catalogue,
# `task.catalogue`); the pinned-model test builds the cell with them.
ORIGINAL_OBJECT_NAMES: tuple[str, ...] = ("red cube", "green cylinder", "blue bar", "yellow ball")

# A flange-down "ready" configuration above the work area (rad), UR joint order.
DEFAULT_HOME_Q_RAD: tuple[float, ...] = (
    1.9075, -2.3552, 1.8802, -1.0958, -1.5708, 0.0,
)


@dataclass
class ExpertConfig:
    """Scripted pick-into-sink expert (sim/expert.py): Cartesian waypoints + mink IK.

    Heights are TCP heights above the table top (z of the UR base frame, m). Durations in s.
    """

    approach_height_m: float = 0.08      # TCP height above the object's grasp point before descending
    lift_height_m: float = 0.15          # TCP z after lifting (must clear the sink rim with the object)
    release_height_m: float = 0.14       # TCP z over the basin when the gripper opens
    retreat_height_m: float = 0.18       # TCP z after the release
    max_tcp_speed_m_s: float = 0.35      # Cartesian speed cap used to time each segment
    min_segment_s: float = 0.5           # shortest move segment
    grasp_close_s: float = 0.6           # dwell while the fingers close
    release_open_s: float = 0.5          # dwell while the fingers open
    grasp_depth_m: float = 0.0           # extra descent below the object's grasp height (m)
    control_rate_hz: float = 10.0        # rate of emitted actions (policy rate, data/schema.py)
    ik_max_iters: int = 60               # mink iterations per waypoint
    ik_tol_m: float = 1e-4               # position tolerance of a converged IK solution
    ik_tol_rad: float = 1e-3             # orientation tolerance
    max_joint_speed_fraction: float = 0.4  # planned joint speeds stay below this fraction of the limits

    def __post_init__(self) -> None:
        for name in ("approach_height_m", "lift_height_m", "release_height_m", "retreat_height_m",
                     "max_tcp_speed_m_s", "min_segment_s", "grasp_close_s", "release_open_s",
                     "control_rate_hz", "ik_tol_m", "ik_tol_rad"):
            require_finite("ExpertConfig", name, getattr(self, name), lo=0.0, lo_open=True)
        require_range("ExpertConfig", "max_joint_speed_fraction", self.max_joint_speed_fraction, 0.0, 1.0,
                      lo_open=True)
        require_int("ExpertConfig", "ik_max_iters", self.ik_max_iters, lo=1)
        require_range("ExpertConfig", "grasp_depth_m", self.grasp_depth_m, 0.0, 0.05, hi_open=True, unit="m")


@dataclass
class SceneRandomization:
    """Visual randomisation of the cell per episode (pre-training data; the OOD conditions reuse
    it). Drawn from the episode seed on a stream separate from the layout's, so a seed gives the
    same objects and poses with and without it. `enabled` False: the nominal scene.

    light_scale_range: factor on each light's diffuse intensity; light_direction_deg: max tilt
    of each light's direction; light_colour_jitter: max per-channel colour deviation (0..1);
    table_colour_jitter / floor_colour_jitter: max per-channel RGB deviation of the table /
    floor material (0..1); camera_position_m: max offset of the camera position along each axis;
    camera_rotation_deg: max rotation of the camera about each of its axes.
    """

    enabled: bool = False
    light_scale_range: tuple[float, float] = (0.55, 1.45)
    light_direction_deg: float = 25.0
    light_colour_jitter: float = 0.15
    table_colour_jitter: float = 0.25
    floor_colour_jitter: float = 0.3
    camera_position_m: float = 0.03
    camera_rotation_deg: float = 3.0

    def __post_init__(self) -> None:
        owner = "SceneRandomization"
        require_range_pair(owner, "light_scale_range", self.light_scale_range)
        require_finite(owner, "light_scale_range[0]", self.light_scale_range[0], lo=0.0)
        require_range(owner, "light_direction_deg", self.light_direction_deg, 0.0, 80.0, unit="deg")
        for name in ("light_colour_jitter", "table_colour_jitter", "floor_colour_jitter"):
            require_range(owner, name, getattr(self, name), 0.0, 1.0)
        require_range(owner, "camera_position_m", self.camera_position_m, 0.0, 0.2, unit="m")
        require_range(owner, "camera_rotation_deg", self.camera_rotation_deg, 0.0, 20.0, unit="deg")


@dataclass
class SimConfig:
    """The MuJoCo Pick-into-Sink cell (sim/cell.py, sim/pick_into_sink.py).

    Attributes (main ones):
        image_hw: rendered image (height, width) in pixels.
        seed: default episode seed when `reset()` gets none.
        timestep_s: physics step (0.002 s).
        camera_*: the fixed RGB-D camera looks at `camera_target_m` from `camera_range_m` away,
            `camera_tilt_deg` below horizontal, from azimuth `camera_azimuth_deg` (0 = camera on
            the +x side of the target looking towards -x); fovy like a D435 colour stream.
        objects: names of the catalogue objects built into the cell (`task.catalogue`; empty =
            the whole catalogue); unknown names raise ValueError when the cell is built.
        episode_split: catalogue split ("train" | "novel" | "any") nominal episodes draw objects
            from; objects_per_episode: (min, max) objects placed on the table per episode.
        object_region_x_m / _y_m: where the objects' centres are sampled (UR base frame).
        min_object_gap_m: clearance between placed objects' footprint circles (room for the
            open fingers between them).
        object_yaw_range_rad: yaw sampling range.
        sink_center_xy_m, sink_inner_size_m (x, y), sink_wall_height_m: the basin on the table.
        tcp_offset_m: flange (tool0) -> TCP distance along tool0 z (between the fingertips).
        gripper_max_force_n: finger actuator force limit (grip force per finger).
        success_max_speed_m_s: the object counts as resting below this speed.
    """

    image_hw: tuple[int, int] = (224, 224)
    seed: int = 0
    timestep_s: float = 0.002
    camera_fovy_deg: float = 42.7
    camera_target_m: tuple[float, float, float] = (0.17, 0.0, 0.04)
    camera_range_m: float = 0.8
    camera_tilt_deg: float = 55.0
    camera_azimuth_deg: float = 0.0
    camera_znear_m: float = 0.05
    camera_zfar_m: float = 5.0
    shadows: bool = False
    reflections: bool = False
    objects: tuple[str, ...] = ()
    episode_split: str = "train"
    objects_per_episode: tuple[int, int] = (2, 4)
    object_region_x_m: tuple[float, float] = (0.17, 0.37)
    object_region_y_m: tuple[float, float] = (-0.25, -0.03)
    min_object_gap_m: float = 0.03
    object_yaw_range_rad: tuple[float, float] = (-math.pi, math.pi)
    sink_center_xy_m: tuple[float, float] = (0.20, 0.16)
    sink_inner_size_m: tuple[float, float] = (0.16, 0.16)
    sink_wall_height_m: float = 0.07
    tcp_offset_m: float = 0.15
    gripper_max_force_n: float = 20.0
    home_q_rad: tuple[float, ...] = DEFAULT_HOME_Q_RAD
    settle_s: float = 0.1
    success_max_speed_m_s: float = 0.05
    expert: ExpertConfig = field(default_factory=ExpertConfig)
    randomization: SceneRandomization = field(default_factory=SceneRandomization)

    def __post_init__(self) -> None:
        self.image_hw = require_image_hw("SimConfig", "image_hw", self.image_hw)  # configs/image.py
        require_int("SimConfig", "seed", self.seed, lo=0)
        require_range("SimConfig", "timestep_s", self.timestep_s, 0.0, 0.01, lo_open=True, unit="s")
        require_range("SimConfig", "camera_fovy_deg", self.camera_fovy_deg, 10.0, 120.0, unit="deg")
        require_range("SimConfig", "camera_range_m", self.camera_range_m, 0.2, 3.0, unit="m")
        require_range("SimConfig", "camera_tilt_deg", self.camera_tilt_deg, 5.0, 90.0, unit="deg")
        if len(self.camera_target_m) != 3:
            raise ConfigError("SimConfig.camera_target_m must be (x, y, z)")
        require_finite("SimConfig", "camera_znear_m", self.camera_znear_m, lo=0.0, lo_open=True)
        require_finite("SimConfig", "camera_zfar_m", self.camera_zfar_m, lo=self.camera_znear_m, lo_open=True)
        if isinstance(self.objects, str) or len(set(self.objects)) != len(self.objects) or not all(
                isinstance(o, str) and o for o in self.objects):
            raise ConfigError(f"SimConfig.objects must be distinct object names (task.catalogue), got {self.objects!r}")
        self.objects = tuple(self.objects)
        require_choice("SimConfig", "episode_split", self.episode_split, ("train", "novel", "any"))
        lo_n, hi_n = self.objects_per_episode
        if not (isinstance(lo_n, int) and isinstance(hi_n, int) and 1 <= lo_n <= hi_n <= 4):
            raise ConfigError(f"SimConfig.objects_per_episode must be (min, max) ints with 1 <= min <= max <= 4, "
                              f"got {self.objects_per_episode!r}")
        self.objects_per_episode = (lo_n, hi_n)
        require_range("SimConfig", "min_object_gap_m", self.min_object_gap_m, 0.0, 0.2, unit="m")
        for name in ("object_region_x_m", "object_region_y_m", "object_yaw_range_rad"):
            require_range_pair("SimConfig", name, getattr(self, name))
        if len(self.sink_center_xy_m) != 2 or len(self.sink_inner_size_m) != 2:
            raise ConfigError("SimConfig.sink_center_xy_m and sink_inner_size_m must be (x, y) pairs")
        for i, v in enumerate(self.sink_inner_size_m):
            require_finite("SimConfig", f"sink_inner_size_m[{i}]", v, lo=0.1)
        require_range("SimConfig", "sink_wall_height_m", self.sink_wall_height_m, 0.03, 0.2, unit="m")
        require_range("SimConfig", "tcp_offset_m", self.tcp_offset_m, 0.05, 0.3, unit="m")
        require_range("SimConfig", "gripper_max_force_n", self.gripper_max_force_n, 1.0, 235.0,
                      unit="N (the 2F-85 range)")
        if len(self.home_q_rad) != 6:
            raise ConfigError(f"SimConfig.home_q_rad must be 6 joint angles (rad), got {self.home_q_rad!r}")
        for i, v in enumerate(self.home_q_rad):
            require_finite("SimConfig", f"home_q_rad[{i}]", v)
        self.home_q_rad = tuple(float(v) for v in self.home_q_rad)
        require_range("SimConfig", "settle_s", self.settle_s, 0.0, 2.0, unit="s")
        require_finite("SimConfig", "success_max_speed_m_s", self.success_max_speed_m_s, lo=0.0, lo_open=True)
        if isinstance(self.expert, dict):
            self.expert = ExpertConfig(**self.expert)
        if isinstance(self.randomization, dict):
            self.randomization = SceneRandomization(**self.randomization)
