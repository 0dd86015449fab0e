"""The simulated Pick-into-Sink task: one MuJoCo world shared by the sim arm and the sim camera.

Per episode (`reset(seed, object_name, objects, instruction)`): the UR3 starts at
`SimConfig.home_q_rad` with the gripper open; 2-4 objects of the catalogue's `episode_split`
(`SimConfig.objects_per_episode`; chosen by the seed unless given) are placed on the table at
seeded random, non-overlapping poses in `object_region_*` with random yaws; the others stay parked
out of view. One of them is the target; the instruction names it by colour, shape or both, in one
of several phrasings (`task.instructions.sample_instruction`: "drop the red block into the
basin"). Outcome (`outcome()`): "success" when the target rests inside the basin (inner
footprint, below the rim, slower than `success_max_speed_m_s`) and no other object is in it;
"wrong_object" as soon as another object is inside the basin; None while neither holds.
With `SimConfig.randomization.enabled`, lights, table / floor colours and the camera pose are
drawn per episode from a random stream of their own, so a seed gives the same layout either way.

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

import dataclasses
import math
import threading
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar

import numpy as np

from scipy.spatial.transform import Rotation

from dynaflip_ros.configs.sim import SimConfig
from dynaflip_ros.data import schema
from dynaflip_ros.robot.arm import UR_JOINT_NAMES
from dynaflip_ros.sim import cell
from dynaflip_ros.sim.arm import SimArm
from dynaflip_ros.sim.camera import SimCamera
from dynaflip_ros.task.catalogue import objects_in_split
from dynaflip_ros.task.instructions import sample_instruction

T = TypeVar("T")
_OPTICAL_FROM_MJ = np.diag([1.0, -1.0, -1.0])
_TARGET_POINTS = schema.TRACK_SLICES["target"].stop - schema.TRACK_SLICES["target"].start
OUTCOME_SUCCESS = "success"
OUTCOME_WRONG_OBJECT = "wrong_object"


@dataclass(frozen=True)
class EpisodeInfo:
    """What `reset()` chose.

    seed: episode seed; object_name: target object; instruction: the sentence naming it
    ("put the red cube in the sink"); object_pose: (7,) initial target pose in the UR base frame
    (x, y, z m, qw, qx, qy, qz); object_yaw_rad: its yaw; distractors: names of the other objects
    on the table (the order of the "others" rows of the point tracks); start_time_s: simulation
    time at the start of the episode; scene: the visual randomisation drawn ({} when off).
    """

    seed: int
    object_name: str
    instruction: str
    object_pose: np.ndarray
    object_yaw_rad: float
    distractors: tuple[str, ...]
    start_time_s: float
    scene: dict = dataclasses.field(default_factory=dict)

    @property
    def objects(self) -> tuple[str, ...]:
        """Every object on the table, the target first."""
        return (self.object_name, *self.distractors)


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
        self.object_names = cell.cell_objects(self.config)
        self.object_specs = {name: cell.OBJECT_SPECS[name] for name in self.object_names}
        self._obj_body = {n: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, s.body)
                          for n, s in self.object_specs.items()}
        self._obj_qadr = {n: m.jnt_qposadr[jid(s.body + "_free")] for n, s in self.object_specs.items()}
        self._obj_dadr = {n: m.jnt_dofadr[jid(s.body + "_free")] for n, s in self.object_specs.items()}
        self._finger_bodies = {mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, f"{side}_finger")
                               for side in ("left", "right")}
        self._track_points = {n: s.surface_points(_TARGET_POINTS, seed=0) for n, s in self.object_specs.items()}
        self._other_points = {n: s.surface_points(schema.POINTS_PER_OTHER_OBJECT, seed=1)
                              for n, s in self.object_specs.items()}
        self._pad_geoms = [mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, f"{side}_pad") for side in ("left", "right")]
        pad_rng = np.random.default_rng(2)
        self._pad_points = pad_rng.uniform(-1, 1, size=(schema.POINTS_PER_FINGER, 3)) * np.asarray(cell.FINGER_PAD_HALF_M)
        self._nominal = {"light_diffuse": m.light_diffuse.copy(), "light_dir": m.light_dir.copy(),
                         "light_castshadow": m.light_castshadow.copy(), "mat_rgba": m.mat_rgba.copy(),
                         "mat_texid": m.mat_texid.copy(), "mat_texrepeat": m.mat_texrepeat.copy(),
                         "cam_pos": m.cam_pos.copy(), "cam_quat": m.cam_quat.copy(),
                         "headlight_ambient": m.vis.headlight.ambient.copy(),
                         "headlight_diffuse": m.vis.headlight.diffuse.copy()}
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
              objects: int | Sequence[str] | None = None, instruction: str | None = None,
              perturbation=None) -> EpisodeInfo:
        """Start an episode: arm at home, gripper open, objects placed by the seed.

        Args:
            seed: episode seed (default `config.seed`); the same seed gives the same episode.
            object_name: the target (a cell object); default: drawn by the seed among the placed ones.
            objects: what is on the table: None = a seeded count in `config.objects_per_episode`
                drawn from `config.episode_split`; an int = that many (the target included); a
                sequence of names = exactly these (the target among them, or added when it is not).
            instruction: the sentence naming the target (default: `sample_instruction` by the
                seed, unambiguous in this scene). Given, it is used as is.
            perturbation: a `sim.perturbations.Perturbation` (OOD condition) applied to the
                seed's scene (layout first, then lights / textures / camera); None = nominal.
                What it drew is in `EpisodeInfo.scene["perturbation"]`.
        Returns the `EpisodeInfo`. Raises ValueError on an unknown object, a bad count, a
        layout that does not fit the object region, or a condition the cell cannot show.
        """
        seed = self.config.seed if seed is None else int(seed)
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        cfg = self.config
        rng = np.random.default_rng(seed)
        placed_names = self._choose_objects(rng, object_name, objects)
        if object_name is None:
            target = placed_names[int(rng.integers(len(placed_names)))]
        else:
            target = object_name
        others = [n for n in placed_names if n != target]
        if len(others) > schema.MAX_OTHER_OBJECTS:
            raise ValueError(f"at most {schema.MAX_OTHER_OBJECTS + 1} objects per episode, got {len(placed_names)}")
        text = sample_instruction(target, placed_names, rng) if instruction is None else str(instruction)
        if not text.strip():
            raise ValueError("instruction must not be empty")
        with self.lock:
            m, d = self.model, self.data
            t_keep = float(d.time)
            self._mj.mj_resetData(m, d)
            d.time = t_keep
            d.qpos[self.arm_qpos_adr] = self._home_q
            self.arm.hold(self._home_q)
            self.arm.reset_gripper(0.0)
            for i, name in enumerate(self.object_names):
                x, y, z = cell.parked_position(i)
                self._set_object_pose(name, x, y, z + self.object_specs[name].half_height_m, 0.0)
            for _attempt in range(100):  # re-draw the whole layout until every object fits
                layout: list[tuple[float, float, float]] = []
                yaws = [self._place_random(name, rng, layout, tries=50) for name in [target, *others]]
                if all(y is not None for y in yaws):
                    break
            else:
                raise ValueError(f"cannot place {[target, *others]} without overlap in the object region")
            scene = self._apply_scene(np.random.default_rng([seed, 0x5CE7E]))
            if perturbation is not None and perturbation.active:
                from dynaflip_ros.sim import perturbations as pt

                target, others, text, drawn = pt.apply_layout(self, perturbation, seed, target, others, text)
                drawn.update(pt.apply_visual(self, perturbation, seed))
                scene = {**scene, "perturbation": {"condition": perturbation.name, **drawn}}
            self._mj.mj_forward(m, d)
            self.step(cfg.settle_s)
            self.episode = EpisodeInfo(
                seed=seed, object_name=target, instruction=text,
                object_pose=self.object_pose(target), object_yaw_rad=float(yaws[0]),
                distractors=tuple(others), start_time_s=float(d.time), scene=scene)
            return self.episode

    def _choose_objects(self, rng: np.random.Generator, target: str | None,
                        objects: int | Sequence[str] | None) -> list[str]:
        """The names placed this episode (module docstring); the target first when given."""
        cfg = self.config
        if target is not None and target not in self.object_specs:
            raise ValueError(f"unknown object {target!r}; this cell has {list(self.object_specs)}")
        if objects is not None and not isinstance(objects, (int, np.integer)):
            names = list(dict.fromkeys(objects))
            bad = [n for n in names if n not in self.object_specs]
            if bad:
                raise ValueError(f"objects {bad} are not in this cell {list(self.object_specs)}")
            if target is not None and target not in names:
                names.insert(0, target)
            if not names:
                raise ValueError("objects must name at least one object")
            return names
        pool = [n for n in self.object_names
                if cfg.episode_split == "any" or n in objects_in_split(cfg.episode_split)]
        if target is not None:
            pool = [n for n in pool if n != target]
        lo, hi = cfg.objects_per_episode
        count = int(rng.integers(lo, hi + 1)) if objects is None else int(objects)
        extra = count - (target is not None)
        if not 1 <= count <= schema.MAX_OTHER_OBJECTS + 1 or extra > len(pool):
            raise ValueError(f"cannot place {count} objects: 1..{schema.MAX_OTHER_OBJECTS + 1} allowed, "
                             f"{len(pool) + (target is not None)} available in split {cfg.episode_split!r}")
        drawn = [pool[i] for i in rng.permutation(len(pool))[:extra]]
        return ([target] if target is not None else []) + drawn

    def _apply_scene(self, rng: np.random.Generator) -> dict:
        """Restore the nominal lights, materials and camera; with `config.randomization.enabled`
        draw new ones (`configs.sim.SceneRandomization`). Returns what was drawn ({} when off).
        Call with the world held."""
        m, nominal, r = self.model, self._nominal, self.config.randomization
        for key in ("light_diffuse", "light_dir", "light_castshadow", "mat_rgba", "mat_texid", "mat_texrepeat",
                    "cam_pos", "cam_quat"):
            getattr(m, key)[:] = nominal[key]
        m.vis.headlight.ambient[:] = nominal["headlight_ambient"]
        m.vis.headlight.diffuse[:] = nominal["headlight_diffuse"]
        if not r.enabled:
            return {}
        out: dict = {"lights": []}
        for i in range(m.nlight):
            scale = rng.uniform(*r.light_scale_range)
            colour = 1.0 + rng.uniform(-r.light_colour_jitter, r.light_colour_jitter, size=3)
            m.light_diffuse[i] = np.clip(nominal["light_diffuse"][i] * scale * colour, 0.0, 1.0)
            axis = rng.normal(size=3)
            tilt = Rotation.from_rotvec(axis / np.linalg.norm(axis) * np.radians(rng.uniform(0, r.light_direction_deg)))
            m.light_dir[i] = tilt.apply(nominal["light_dir"][i])
            out["lights"].append({"diffuse": m.light_diffuse[i].round(4).tolist(), "dir": m.light_dir[i].round(4).tolist()})
        for name, jitter in (("table", r.table_colour_jitter), ("floor", r.floor_colour_jitter)):
            mid = self._mj.mj_name2id(m, self._mj.mjtObj.mjOBJ_MATERIAL, name)
            m.mat_rgba[mid, :3] = np.clip(nominal["mat_rgba"][mid, :3] + rng.uniform(-jitter, jitter, size=3), 0.0, 1.0)
            out[f"{name}_rgb"] = m.mat_rgba[mid, :3].round(4).tolist()
        c = self.camera_id
        m.cam_pos[c] = nominal["cam_pos"][c] + rng.uniform(-r.camera_position_m, r.camera_position_m, size=3)
        turn = Rotation.from_euler("xyz", rng.uniform(-r.camera_rotation_deg, r.camera_rotation_deg, size=3), degrees=True)
        base = Rotation.from_quat(nominal["cam_quat"][c], scalar_first=True)
        m.cam_quat[c] = (base * turn).as_quat(scalar_first=True)
        out["camera_offset_m"] = (m.cam_pos[c] - nominal["cam_pos"][c]).round(4).tolist()
        out["camera_rotation_deg"] = float(np.degrees((base.inv() * (base * turn)).magnitude()).round(3))
        return out

    def _place_random(self, name: str, rng: np.random.Generator, placed: list, tries: int = 200) -> float | None:
        """Place `name` at a random pose clear of `placed` (x, y, radius) entries by
        `config.min_object_gap_m`; returns the yaw, or None when no clear spot was found in
        `tries` draws (the object is then not moved)."""
        cfg = self.config
        r = self.object_specs[name].radius_xy_m
        for _ in range(tries):
            x = rng.uniform(*cfg.object_region_x_m)
            y = rng.uniform(*cfg.object_region_y_m)
            yaw = rng.uniform(*cfg.object_yaw_range_rad)
            if all(math.hypot(x - px, y - py) > r + pr + cfg.min_object_gap_m for px, py, pr in placed):
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

    def task_state(self) -> tuple[EpisodeInfo, float, str | None]:
        """(episode, simulation time s, outcome: "success" | "wrong_object" | None) read at one
        instant (`outcome`)."""
        with self.lock:
            return self.episode, self.sim_time_s, self.outcome()

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

    def grasp_point(self, name: str | None = None) -> np.ndarray:
        """(3,) centre of an object's grasp part (default: the target) in the UR base frame (m):
        the point the scripted expert grasps (`task.catalogue.ObjectSpec.grasp_offset_m`: the
        mug's body, the T-block's stem)."""
        name = self.target_object if name is None else name
        pose = self.object_pose(name)
        return pose[:3] + Rotation.from_quat(pose[3:], scalar_first=True).apply(self.object_specs[name].grasp_offset_m)

    def tcp_position(self) -> np.ndarray:
        """(3,) position of the TCP (between the finger pads) in the UR base frame (m), as
        simulated now."""
        with self.lock:
            return self.data.site_xpos[self.tcp_site_id].copy()

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

    def outcome(self) -> str | None:
        """"wrong_object" when an object other than the target is inside the basin (module
        docstring), "success" when the target rests in it (footprint, below the rim, slower
        than `success_max_speed_m_s`) and nothing else is, None otherwise."""
        with self.lock:
            if any(self.in_basin(self.object_pose(n)[:3]) for n in self.episode.distractors):
                return OUTCOME_WRONG_OBJECT
            pose = self.object_pose()
            speed = float(np.linalg.norm(self.object_velocity()[:3]))
            if self.in_basin(pose[:3]) and speed < self.config.success_max_speed_m_s:
                return OUTCOME_SUCCESS
            return None

    def success(self) -> bool:
        """`outcome()` is "success": the target rests in the basin and nothing else is in it."""
        return self.outcome() == OUTCOME_SUCCESS

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
        """(32, 3) float32 points on an object (default: the target; fixed body-frame surface
        samples) in the camera optical frame (+x right, +y down, +z forward), metres."""
        return self.to_optical(self.object_points_base(name)).astype(np.float32)

    def scene_tracks(self) -> tuple[np.ndarray, np.ndarray]:
        """The recorded point tracks of this instant (layout `data.schema.TRACK_SLICES`):
        (N_TRACK, 3) float32 camera optical frame, metres, and (N_TRACK,) bool validity: the
        slot is filled and the point projects inside the image in front of the camera."""
        with self.lock:
            pts = np.zeros((schema.N_TRACK, 3))
            filled = np.zeros(schema.N_TRACK, bool)
            t = schema.TRACK_SLICES["target"]
            pts[t] = self.object_points_base()
            filled[t] = True
            f0 = schema.TRACK_SLICES["fingers"].start
            for k, g in enumerate(self._pad_geoms):
                rows = slice(f0 + k * schema.POINTS_PER_FINGER, f0 + (k + 1) * schema.POINTS_PER_FINGER)
                pts[rows] = self._pad_points @ self.data.geom_xmat[g].reshape(3, 3).T + self.data.geom_xpos[g]
                filled[rows] = True
            for k, name in enumerate(self.episode.distractors[:schema.MAX_OTHER_OBJECTS]):
                b = self._obj_body[name]
                r, p = self.data.xmat[b].reshape(3, 3), self.data.xpos[b]
                rows = schema.object_rows(k + 1)
                pts[rows] = self._other_points[name] @ r.T + p
                filled[rows] = True
        optical = self.to_optical(pts)  # (N_TRACK, 3)
        k = self.camera.intrinsics  # the rendered image's pinhole model (pixel centres at integers)
        z = optical[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            u = k.fx * optical[:, 0] / z + k.cx
            v = k.fy * optical[:, 1] / z + k.cy
        inside = (u >= -0.5) & (u < k.width - 0.5) & (v >= -0.5) & (v < k.height - 0.5)
        valid = filled & (z > self.config.camera_znear_m) & inside
        optical[~filled] = 0.0
        return optical.astype(np.float32), valid

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
