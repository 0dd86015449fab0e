"""The simulated Pick-into-Sink task: one MuJoCo world shared by the sim arm and the sim camera.

Per episode (`reset(seed, object_name)`): the UR3 starts at `SimConfig.home_q_rad` with the
gripper open; one target object (chosen by the seed unless given) is placed on the table at a
seeded random position in `object_region_*` with a random yaw; the other objects stay parked out
of view (or are placed as distractors, `reset(..., distractors=n)`); the instruction names the
object: "Pick the <object> into the sink". Success (`success()`): the target object rests inside
the basin (inside the inner footprint, below the rim, speed below `success_max_speed_m_s`).

Frames: world = UR `base` frame (table top z = 0). Point tracks are in the camera's OpenCV
optical frame (+x right, +y down, +z forward): R_optical = R_mujoco_cam · diag(1, -1, -1).
Simulation time is kept monotonic across resets (it is the clock of the arm, the camera and
SafeArm); `EpisodeInfo.start_time_s` marks the episode start.

The world's lock: the env owns `lock` (an RLock over model + data). Only the env (and subclasses
such as `calibration.sim_scene`) and its own components (`sim.arm.SimArm`,
`sim.camera.SimCamera`, typed by `sim.mj_scene.MjScene`) take it. Everyone else goes through the
env's API: `advance_until` / `advance_period` (servo ticks + physics: the lock-step runners and
the real-time stepper), `exclusive(fn)` (several steps that must see no physics step in between,
e.g. a reset plus the driver's re-anchor) and `task_state()` (a consistent read).
Lock order: the world's lock, then the servo loop's tick lock, then SafeArm's lock (a servo tick
runs with the world held and reads the arm through SafeArm; so must every re-anchor).
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar

import numpy as np

from dynaflip_ros.configs.sim import ALL_OBJECT_NAMES, SimConfig
from dynaflip_ros.data.schema import N_TRACK
from dynaflip_ros.robot.arm import UR_JOINT_NAMES
from dynaflip_ros.sim import cell
from dynaflip_ros.sim.arm import SimArm
from dynaflip_ros.sim.camera import SimCamera

T = TypeVar("T")
OBJECT_NAMES: tuple[str, ...] = ALL_OBJECT_NAMES
_OPTICAL_FROM_MJ = np.diag([1.0, -1.0, -1.0])
_MIN_OBJECT_GAP_M = 0.02  # clearance between placed objects' bounding circles


def instruction_for(object_name: str) -> str:
    """The episode's language instruction."""
    return f"Pick the {object_name} into the sink"


@dataclass(frozen=True)
class EpisodeInfo:
    """What `reset()` chose.

    seed: episode seed; object_name: target object; instruction: "Pick the <object> into the sink";
    object_pose: (7,) initial target pose in the UR base frame (x, y, z m, qw, qx, qy, qz);
    object_yaw_rad: its yaw; distractors: names of the other objects placed on the table;
    start_time_s: simulation time at the start of the episode.
    """

    seed: int
    object_name: str
    instruction: str
    object_pose: np.ndarray
    object_yaw_rad: float
    distractors: tuple[str, ...]
    start_time_s: float


class PickIntoSinkEnv:
    """MuJoCo Pick-into-Sink cell (UR3 CB3 + parallel gripper, table, sink, objects, RGB-D camera).

    Attributes:
        config: the `SimConfig`; model / data: `mujoco.MjModel` / `mujoco.MjData`;
        lock: `threading.RLock` guarding model/data (physics, rendering, arm I/O);
        arm: `sim.arm.SimArm` (wrap it in `robot.safety.SafeArm` before commanding);
        camera: `sim.camera.SimCamera`; episode: the current `EpisodeInfo`.

    Raises ValueError (from SimConfig / MuJoCo) on an invalid configuration.
    """

    def __init__(self, config: SimConfig | None = None) -> None:
        import mujoco

        self._mj = mujoco
        self.config = config if config is not None else SimConfig()
        self.model = self._build_model()
        self.data = mujoco.MjData(self.model)
        # The world's lock (module docstring): taken only by the env, SimArm and SimCamera.
        self.lock = threading.RLock()
        m = self.model

        def jid(name: str) -> int:
            return mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, name)

        def aid(name: str) -> int:
            return mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_ACTUATOR, name)

        self.joint_names = UR_JOINT_NAMES
        self.arm_qpos_adr = np.array([m.jnt_qposadr[jid(n)] for n in UR_JOINT_NAMES])
        self.arm_position_actuators = [aid(n) for n in UR_JOINT_NAMES]
        self.arm_velocity_actuators = [aid(n + "_vel") for n in UR_JOINT_NAMES]
        self.finger_qpos_adr = [m.jnt_qposadr[jid(n)] for n in cell.FINGER_JOINT_NAMES]
        self.finger_actuators = [aid(n) for n in cell.FINGER_ACTUATOR_NAMES]
        self.finger_stroke_m = cell.FINGER_STROKE_M
        self.tcp_site_id = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, cell.TCP_SITE)
        self.flange_site_id = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, cell.FLANGE_SITE)
        self.camera_id = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, cell.CAMERA_NAME)
        self.object_specs = {name: cell.OBJECT_SPECS[name] for name in self.config.objects}
        self._obj_body = {n: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, s.body)
                          for n, s in self.object_specs.items()}
        self._obj_qadr = {n: m.jnt_qposadr[jid(s.body + "_free")] for n, s in self.object_specs.items()}
        self._obj_dadr = {n: m.jnt_dofadr[jid(s.body + "_free")] for n, s in self.object_specs.items()}
        self._finger_bodies = {mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, f"{side}_finger")
                               for side in ("left", "right")}
        self._track_points = {n: s.surface_points(N_TRACK, seed=0) for n, s in self.object_specs.items()}
        self._home_q = np.asarray(self.config.home_q_rad, dtype=float)
        self.arm = SimArm(self)
        self.camera = SimCamera(self, cell.CAMERA_NAME)
        self.episode: EpisodeInfo | None = None
        self._closed = False
        self.reset(self.config.seed)

    def _build_model(self):
        """Compile the cell's `mujoco.MjModel` from `self.config` (hook: subclasses may extend the
        cell's `mujoco.MjSpec`, e.g. `calibration.sim_scene` adds a ChArUco board and a wrist camera)."""
        return cell.build_model(self.config)

    # ------------------------------------------------------------------ episode
    def reset(self, seed: int | None = None, object_name: str | None = None,
              distractors: int | Sequence[str] = 0) -> EpisodeInfo:
        """Start an episode: arm at home, gripper open, target object placed by the seed.

        Args:
            seed: episode seed (default `config.seed`); the same seed gives the same episode.
            object_name: target object (one of `config.objects`); default: chosen by the seed.
            distractors: number of other objects (chosen by the seed) or their names, placed at
                random non-overlapping poses in the object region.
        Returns the `EpisodeInfo`. Raises ValueError on an unknown object or too many
        distractors for the region.
        """
        seed = self.config.seed if seed is None else int(seed)
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        cfg = self.config
        rng = np.random.default_rng(seed)
        drawn = cfg.objects[int(rng.integers(len(cfg.objects)))]
        target = drawn if object_name is None else object_name
        if target not in self.object_specs:
            raise ValueError(f"unknown object {target!r}; this cell has {list(self.object_specs)}")
        others = [n for n in cfg.objects if n != target]
        if isinstance(distractors, (int, np.integer)):
            if not 0 <= distractors <= len(others):
                raise ValueError(f"distractors must be in [0, {len(others)}], got {distractors}")
            names = [others[i] for i in rng.permutation(len(others))[:distractors]]
        else:
            names = list(distractors)
            bad = [n for n in names if n not in others]
            if bad:
                raise ValueError(f"distractors {bad} are not other objects of this cell {others}")
        with self.lock:
            m, d = self.model, self.data
            t_keep = float(d.time)
            self._mj.mj_resetData(m, d)
            d.time = t_keep
            d.qpos[self.arm_qpos_adr] = self._home_q
            self.arm.hold(self._home_q)
            self.arm.reset_gripper(0.0)
            for i, name in enumerate(cfg.objects):
                x, y, z = cell.parked_position(i)
                self._set_object_pose(name, x, y, z + self.object_specs[name].half_height_m, 0.0)
            placed: list[tuple[float, float, float]] = []
            yaw_t = self._place_random(target, rng, placed)
            for _attempt in range(50):  # re-draw the whole distractor layout until it fits
                layout = list(placed)
                if all(self._place_random(name, rng, layout, tries=50) is not None for name in names):
                    break
            else:
                raise ValueError(f"cannot place distractors {names} without overlap in the object region")
            self._mj.mj_forward(m, d)
            self.step(cfg.settle_s)
            self.episode = EpisodeInfo(
                seed=seed, object_name=target, instruction=instruction_for(target),
                object_pose=self.object_pose(target), object_yaw_rad=yaw_t,
                distractors=tuple(names), start_time_s=float(d.time))
            return self.episode

    def _radius(self, name: str) -> float:
        s = self.object_specs[name]
        return float(np.linalg.norm(s.size[:2])) if s.shape == "box" else float(s.size[0])

    def _place_random(self, name: str, rng: np.random.Generator, placed: list, tries: int = 200) -> float | None:
        """Place `name` at a random pose clear of `placed` (x, y, radius) entries; returns the yaw,
        or None when no clear spot was found in `tries` draws (the object is then not moved)."""
        cfg = self.config
        r = self._radius(name)
        for _ in range(tries):
            x = rng.uniform(*cfg.object_region_x_m)
            y = rng.uniform(*cfg.object_region_y_m)
            yaw = rng.uniform(*cfg.object_yaw_range_rad)
            if all(math.hypot(x - px, y - py) > r + pr + _MIN_OBJECT_GAP_M for px, py, pr in placed):
                break
        else:
            return None
        placed.append((x, y, r))
        self._set_object_pose(name, x, y, self.object_specs[name].half_height_m + 1e-4, yaw)
        return float(yaw)

    def place_object(self, name: str, x_m: float, y_m: float, yaw_rad: float = 0.0,
                     z_m: float | None = None) -> None:
        """Put object `name` at (x, y) on the table (or at height z_m) with yaw, at rest."""
        if name not in self.object_specs:
            raise ValueError(f"unknown object {name!r}; this cell has {list(self.object_specs)}")
        with self.lock:
            z = self.object_specs[name].half_height_m + 1e-4 if z_m is None else float(z_m)
            self._set_object_pose(name, float(x_m), float(y_m), z, float(yaw_rad))
            self._mj.mj_forward(self.model, self.data)

    def _set_object_pose(self, name: str, x: float, y: float, z: float, yaw: float) -> None:
        a, v = self._obj_qadr[name], self._obj_dadr[name]
        self.data.qpos[a:a + 3] = [x, y, z]
        self.data.qpos[a + 3:a + 7] = cell.yaw_quat_wxyz(yaw)  # w, x, y, z
        self.data.qvel[v:v + 6] = 0.0

    # ------------------------------------------------------------------ physics
    @property
    def sim_time_s(self) -> float:
        """Simulation time, seconds (monotonic across resets)."""
        return float(self.data.time)

    @property
    def timestep_s(self) -> float:
        return float(self.model.opt.timestep)

    def step(self, duration_s: float) -> int:
        """Advance physics by duration_s (rounded to whole timesteps); returns the step count.
        The arm's servoJ interpolation is applied before every step. Raises ValueError for a
        negative or non-finite duration."""
        if not (math.isfinite(duration_s) and duration_s >= 0):
            raise ValueError(f"duration_s must be finite and >= 0, got {duration_s!r}")
        n = int(round(duration_s / self.timestep_s))
        with self.lock:
            m, d = self.model, self.data
            for _ in range(n):
                self.arm.pre_step()
                self._mj.mj_step(m, d)
            if n:
                # mj_step leaves poses (xpos, site_xpos) at the pre-integration state: refresh them
                # so readers (TCP pose, point tracks, rendering) match qpos exactly.
                self._mj.mj_kinematics(m, d)
        return n

    # ------------------------------------------------------------------ the owner's API
    def advance_period(self, period_s: float, before_step: Callable[[float], None] | None = None) -> float:
        """One servo period with the world held: `before_step(sim_time_s)` (e.g. `ServoLoop.tick`)
        then physics for `period_s`. Returns the simulation time after it. Exceptions of
        `before_step` propagate before the physics step."""
        with self.lock:
            if before_step is not None:
                before_step(self.sim_time_s)
            self.step(period_s)
            return self.sim_time_s

    def advance_until(self, until_s: float, period_s: float,
                      before_step: Callable[[float], None] | None = None) -> tuple[int, int]:
        """Servo periods (`advance_period`) until simulation time `until_s` (1 ns tolerance), with
        the world held throughout. Returns (periods run, physics steps)."""
        periods = steps = 0
        with self.lock:
            while self.sim_time_s < until_s - 1e-9:
                if before_step is not None:
                    before_step(self.sim_time_s)
                steps += self.step(period_s)
                periods += 1
        return periods, steps

    def exclusive(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn(*args, **kwargs)` with the world held: no physics step, render or arm I/O of
        another thread in between (e.g. `reset` and then re-anchoring the driver at the new
        pose). fn may call the env, its arm and camera, the servo loop and SafeArm (lock order
        in the module docstring); it must not wait on another thread that needs the world."""
        with self.lock:
            return fn(*args, **kwargs)

    def task_state(self) -> tuple[EpisodeInfo, float, bool]:
        """(episode, simulation time s, success) read at one instant."""
        with self.lock:
            return self.episode, self.sim_time_s, self.success()

    # ------------------------------------------------------------------ task state
    @property
    def target_object(self) -> str:
        return self.episode.object_name

    def object_pose(self, name: str | None = None) -> np.ndarray:
        """(7,) pose of an object (default: the target) in the UR base frame: x, y, z, qw, qx, qy, qz."""
        name = self.target_object if name is None else name
        with self.lock:
            a = self._obj_qadr[name]
            return self.data.qpos[a:a + 7].copy()

    def object_velocity(self, name: str | None = None) -> np.ndarray:
        """(6,) linear (m/s, world) and angular (rad/s) velocity of an object's free joint."""
        name = self.target_object if name is None else name
        with self.lock:
            v = self._obj_dadr[name]
            return self.data.qvel[v:v + 6].copy()

    def in_basin(self, position: np.ndarray) -> bool:
        """Whether a point (3,) in the UR base frame is inside the basin's inner footprint and
        below its rim."""
        cfg = self.config
        cx, cy = cfg.sink_center_xy_m
        hx, hy = cfg.sink_inner_size_m[0] / 2, cfg.sink_inner_size_m[1] / 2
        p = np.asarray(position, dtype=float)
        return bool(abs(p[0] - cx) < hx and abs(p[1] - cy) < hy and 0.0 < p[2] < cfg.sink_wall_height_m)

    def success(self) -> bool:
        """The target object rests inside the sink basin (footprint, below the rim, slow)."""
        pose = self.object_pose()
        speed = float(np.linalg.norm(self.object_velocity()[:3]))
        return self.in_basin(pose[:3]) and speed < self.config.success_max_speed_m_s

    def gripper_contacts(self, name: str | None = None) -> int:
        """Number of active contacts between the finger pads and an object (default: target)."""
        name = self.target_object if name is None else name
        body = self._obj_body[name]
        with self.lock:
            d, m = self.data, self.model
            n = 0
            for i in range(d.ncon):
                b1, b2 = m.geom_bodyid[d.contact.geom[i]]
                if (b1 == body and b2 in self._finger_bodies) or (b2 == body and b1 in self._finger_bodies):
                    n += 1
            return n

    # ------------------------------------------------------------------ camera geometry
    def camera_pose_optical(self) -> np.ndarray:
        """(4, 4) pose of the camera's OpenCV optical frame in the UR base frame (T_base_optical)."""
        with self.lock:
            t = np.eye(4)
            t[:3, :3] = self.data.cam_xmat[self.camera_id].reshape(3, 3) @ _OPTICAL_FROM_MJ
            t[:3, 3] = self.data.cam_xpos[self.camera_id]
            return t

    def to_optical(self, points_base: np.ndarray) -> np.ndarray:
        """(N, 3) points in the UR base frame -> (N, 3) camera optical frame, metres."""
        t = self.camera_pose_optical()
        return (np.asarray(points_base) - t[:3, 3]) @ t[:3, :3]  # (N, 3)

    def object_points_base(self, name: str | None = None) -> np.ndarray:
        """(N_TRACK, 3) the fixed surface sample points of an object in the UR base frame."""
        name = self.target_object if name is None else name
        with self.lock:
            b = self._obj_body[name]
            r = self.data.xmat[b].reshape(3, 3)
            p = self.data.xpos[b].copy()
        return self._track_points[name] @ r.T + p  # (N_TRACK, 3)

    def point_tracks(self, name: str | None = None) -> np.ndarray:
        """(32, 3) float32 points on the target object (fixed body-frame surface samples) in the
        camera optical frame (+x right, +y down, +z forward), metres."""
        return self.to_optical(self.object_points_base(name)).astype(np.float32)

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Free the renderer (idempotent)."""
        if not self._closed:
            self.camera.disconnect()
            self._closed = True

    def __enter__(self) -> "PickIntoSinkEnv":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
