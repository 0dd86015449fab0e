"""Out-of-distribution conditions of the sim cell: named, seeded, with a severity in [0, 1],
composable, one factor at a time against a matched nominal control (the protocol of Colosseum,
Pumacay et al. 2024, arXiv:2402.08191, and LIBERO-Plus, arXiv:2510.13626).

A condition spec is `FAMILY[:SEVERITY]` (severity 1 when omitted); `+` composes families
("lighting:0.5+texture:1"); `distractors@novel:0.5` draws the distractors from the catalogue's
novel split (default: train). Severity 0 is the nominal scene.

Families (what severity s scales; the nominal scene is never randomised in evaluation):
- `distractors`: ceil(4 s) more objects on the table, each with a footprint clearance of
  `SimConfig.min_object_gap_m` + 0-5 cm from the target (3-8 cm by default), from the train split (objects the policy has seen, none of this scene's) or the novel split.
- `novel_object`: the target becomes an object of the novel split at the target's pose:
  s <= 0.5 a known shape in a new colour ("cyan cube"), s > 0.5 a new shape and colour
  ("brown T-block" or "grey capsule"); the instruction names it.
- `placement`: the target moves 1.5 + 4.5 s cm outside the region training scenes place objects
  in, beyond one of its sides (far x, near x, far -y; drawn), at a drawn point along that side.
- `lighting`: every light and the headlight dimmed to 1 - 0.8 s or brightened to 1 + 1.2 s of
  nominal (drawn), tilted by up to 60 s degrees, tinted by up to 50 s % per channel; the key
  light casts shadows for s >= 0.5.
- `texture`: table and floor get a checkerboard or speckle texture of contrast ceil(4 s) / 4 and
  a colour blended from nominal towards a drawn one by s.
- `camera_pose`: the camera moves 8 s cm in a drawn direction and turns 8 s degrees about a
  drawn axis (training randomisation: up to 3 cm and 3 degrees per axis).

Matching: the layout (objects, poses, target) comes from the episode seed's own stream before
any condition; each family draws from `numpy.random.default_rng([seed, FAMILY_STREAM[family]])`,
so a seed gives the same layout under every condition, and the same draws of a family alone or
composed. Layout families apply in the order placement, novel_object, distractors (distractors
are placed around the target where it finally is), then the visual ones. The nominal
instruction is kept while it still names the target unambiguously; otherwise a new one is drawn
on the family's stream.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

FAMILIES = ("distractors", "novel_object", "lighting", "texture", "camera_pose", "placement")
LAYOUT_ORDER = ("placement", "novel_object", "distractors")
FAMILY_STREAM = {name: 0x00D0 + i for i, name in enumerate(FAMILIES)}
DISTRACTOR_SPLITS = ("train", "novel")
MAX_DISTRACTORS = 4
NOVEL_COLOUR_ONLY = ("cyan cube",)
NOVEL_SHAPE_AND_COLOUR = ("brown T-block", "grey capsule")


@dataclass(frozen=True)
class Condition:
    """One family at one severity (0..1); split: the distractors' catalogue split (distractors only)."""

    family: str
    severity: float = 1.0
    split: str = "train"

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"unknown condition {self.family!r}; families: {', '.join(FAMILIES)}")
        if not (isinstance(self.severity, (int, float)) and 0.0 <= float(self.severity) <= 1.0):
            raise ValueError(f"{self.family}: severity must be in [0, 1], got {self.severity!r}")
        if self.split not in DISTRACTOR_SPLITS or (self.split != "train" and self.family != "distractors"):
            raise ValueError(f"{self.family}: a split ({self.split!r}) applies to distractors only, "
                             f"one of {DISTRACTOR_SPLITS}")

    @property
    def spec(self) -> str:
        split = f"@{self.split}" if self.split != "train" else ""
        return f"{self.family}{split}:{float(self.severity):g}"


@dataclass(frozen=True)
class Perturbation:
    """Composed conditions (at most one per family), in FAMILIES order; () = nominal."""

    conditions: tuple[Condition, ...] = ()

    def __post_init__(self) -> None:
        fams = [c.family for c in self.conditions]
        if len(set(fams)) != len(fams):
            raise ValueError(f"a family appears twice in one condition: {fams}")
        object.__setattr__(self, "conditions", tuple(sorted(self.conditions, key=lambda c: FAMILIES.index(c.family))))

    @property
    def active(self) -> tuple[Condition, ...]:
        return tuple(c for c in self.conditions if c.severity > 0)

    @property
    def name(self) -> str:
        """Canonical spec: "nominal", "lighting:0.5", "distractors@novel:1+lighting:0.5"."""
        return "+".join(c.spec for c in self.active) or "nominal"

    @property
    def families(self) -> list[str]:
        return [c.family for c in self.active]

    @property
    def severity(self) -> float:
        return max((float(c.severity) for c in self.active), default=0.0)

    def get(self, family: str) -> Condition | None:
        return next((c for c in self.active if c.family == family), None)


def parse_condition(text: str) -> Perturbation:
    """"lighting:0.5+texture" -> Perturbation; "nominal" -> Perturbation(). Raises ValueError
    (unknown family, severity not a number in [0, 1], a split on a family other than distractors)."""
    text = text.strip()
    if text in ("", "nominal"):
        return Perturbation()
    conds = []
    for part in text.split("+"):
        name, _, sev = part.strip().partition(":")
        family, _, split = name.partition("@")
        try:
            severity = float(sev) if sev.strip() else 1.0
        except ValueError:
            raise ValueError(f"{part!r}: severity {sev!r} is not a number in [0, 1]") from None
        if not math.isfinite(severity):
            raise ValueError(f"{part!r}: severity must be in [0, 1], got {sev!r}")
        conds.append(Condition(family.strip(), severity, split.strip() or "train"))
    return Perturbation(tuple(conds))


def parse_conditions(text: str) -> list[Perturbation]:
    """A comma-separated list of condition specs (`--conditions`), duplicates removed, order kept."""
    out: dict[str, Perturbation] = {}
    for item in text.split(","):
        if item.strip():
            p = parse_condition(item)
            out.setdefault(p.name, p)
    if not out:
        raise ValueError("no condition given (e.g. --conditions distractors:1,lighting:0.5)")
    return list(out.values())


def family_rng(seed: int, family: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), FAMILY_STREAM[family]])


# ---------------------------------------------------------------------------- layout
def apply_layout(env, pert: Perturbation, seed: int, target: str, others: list[str],
                 instruction: str) -> tuple[str, list[str], str, dict]:
    """Apply the layout families of `pert` to the placed scene of `env` (a PickIntoSinkEnv,
    world held by the caller). Returns (target, others, instruction, what was drawn). Raises
    ValueError when the cell lacks the objects a condition needs."""
    from dynaflip_ros.task.instructions import instruction_paraphrases, sample_instruction

    drawn: dict = {}
    for family in LAYOUT_ORDER:
        cond = pert.get(family)
        if cond is None:
            continue
        rng = family_rng(seed, family)
        if family == "placement":
            drawn[family] = _move_outside_region(env, cond.severity, rng, target, others)
        elif family == "novel_object":
            target, drawn[family] = _swap_in_novel_target(env, cond.severity, rng, target, others)
        else:
            added, drawn[family] = _add_distractors(env, cond, rng, target, others)
            others = others + added
        if instruction not in instruction_paraphrases(target, [target, *others]):
            instruction = sample_instruction(target, [target, *others], rng)
            drawn[family]["instruction"] = instruction
    return target, others, instruction, drawn


def _footprints(env, names) -> list[tuple[float, float, float]]:
    return [(*env.object_pose(n)[:2], env.object_specs[n].radius_xy_m) for n in names]


def _clear(env, name: str, x: float, y: float, placed) -> bool:
    r, gap = env.object_specs[name].radius_xy_m, env.config.min_object_gap_m
    return all(math.hypot(x - px, y - py) > r + pr + gap for px, py, pr in placed)


def _move_outside_region(env, severity: float, rng, target: str, others: list[str]) -> dict:
    from dynaflip_ros.sim.cell_params import yaw_from_quat_wxyz

    cfg = env.config
    (x0, x1), (y0, y1) = cfg.object_region_x_m, cfg.object_region_y_m
    d = 0.015 + 0.045 * severity
    yaw = yaw_from_quat_wxyz(env.object_pose(target)[3:])  # the nominal yaw
    placed = _footprints(env, others)
    sides = [("far_x", lambda u: (x1 + d, y0 + u * (y1 - y0))), ("near_x", lambda u: (x0 - d, y0 + u * (y1 - y0))),
             ("far_-y", lambda u: (x0 + u * (x1 - x0), y0 - d))]
    for k in rng.permutation(len(sides)):
        side, at = sides[int(k)]
        for u in rng.uniform(0.1, 0.9, size=20):
            x, y = at(float(u))
            if _clear(env, target, x, y, placed):
                env.place_object(target, x, y, yaw)
                return {"side": side, "offset_m": round(d, 4), "xy_m": [round(x, 4), round(y, 4)]}
    raise ValueError(f"placement: no clear spot for {target!r} outside the object region")


def _swap_in_novel_target(env, severity: float, rng, target: str, others: list[str]) -> tuple[str, dict]:
    pool = NOVEL_COLOUR_ONLY if severity <= 0.5 else NOVEL_SHAPE_AND_COLOUR
    missing = [n for n in pool if n not in env.object_specs]
    if missing:
        raise ValueError(f"novel_object: the cell lacks {missing} (SimConfig.objects must include the novel split)")
    pose = env.object_pose(target)
    x, y = float(pose[0]), float(pose[1])
    yaw = float(rng.uniform(*env.config.object_yaw_range_rad))
    placed = _footprints(env, others)
    order = [pool[int(i)] for i in rng.permutation(len(pool))]
    for radius in (0.0, 0.02, 0.04, 0.06):  # at the target's spot, else the nearest clear ring
        for name in order:
            for a in (rng.uniform(0, 2 * math.pi, size=8) if radius else [0.0]):
                nx, ny = x + radius * math.cos(a), y + radius * math.sin(a)
                if _clear(env, name, nx, ny, placed):
                    _park(env, target)
                    env.place_object(name, nx, ny, yaw)
                    return name, {"replaced": target, "target": name, "moved_m": radius}
    raise ValueError(f"novel_object: no novel object of {pool} fits at or near {target!r}'s place")


def _add_distractors(env, cond: Condition, rng, target: str, others: list[str]) -> tuple[list[str], dict]:
    from dynaflip_ros.task.catalogue import objects_in_split

    count = math.ceil(MAX_DISTRACTORS * cond.severity)
    on_table = {target, *others}
    pool = [n for n in env.object_names if n in objects_in_split(cond.split) and n not in on_table]
    pool = [pool[int(i)] for i in rng.permutation(len(pool))]
    tx, ty = (float(v) for v in env.object_pose(target)[:2])
    rt = env.object_specs[target].radius_xy_m
    placed = _footprints(env, [target, *others])
    added = []
    for name in pool:
        if len(added) == count:
            break
        r = env.object_specs[name].radius_xy_m
        for _ in range(100):
            dist = rt + r + env.config.min_object_gap_m + rng.uniform(0.0, 0.05)
            a = rng.uniform(0, 2 * math.pi)
            x, y = tx + dist * math.cos(a), ty + dist * math.sin(a)
            if _on_table(env, x, y) and _clear(env, name, x, y, placed):
                env.place_object(name, x, y, float(rng.uniform(*env.config.object_yaw_range_rad)))
                placed.append((x, y, r))
                added.append(name)
                break
    return added, {"asked": count, "split": cond.split, "added": added}


def _on_table(env, x: float, y: float) -> bool:
    """Inside the region objects may be placed for evaluation: 6 cm beyond the training region
    on every side, never over the basin."""
    cfg = env.config
    (x0, x1), (y0, y1) = cfg.object_region_x_m, cfg.object_region_y_m
    cx, cy = cfg.sink_center_xy_m
    hx, hy = cfg.sink_inner_size_m[0] / 2 + 0.04, cfg.sink_inner_size_m[1] / 2 + 0.04
    in_sink = abs(x - cx) < hx and abs(y - cy) < hy
    return x0 - 0.06 <= x <= x1 + 0.06 and y0 - 0.06 <= y <= y1 + 0.06 and not in_sink


def _park(env, name: str) -> None:
    from dynaflip_ros.sim.cell_params import parked_position

    x, y, z = parked_position(env.object_names.index(name))
    env.place_object(name, x, y, 0.0, z_m=z + env.object_specs[name].half_height_m)


# ---------------------------------------------------------------------------- visual
def apply_visual(env, pert: Perturbation, seed: int) -> dict:
    """Apply the visual families of `pert` to `env.model` (nominal values restored by the env
    before). World held by the caller. Returns what was drawn."""
    drawn = {}
    for cond in pert.active:
        rng = family_rng(seed, cond.family)
        if cond.family == "lighting":
            drawn["lighting"] = _lighting(env, cond.severity, rng)
        elif cond.family == "texture":
            drawn["texture"] = _texture(env, cond.severity, rng)
        elif cond.family == "camera_pose":
            drawn["camera_pose"] = _camera_pose(env, cond.severity, rng)
    return drawn


def _unit(rng) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def _lighting(env, s: float, rng) -> dict:
    m = env.model
    scale = 1.0 - 0.8 * s if rng.uniform() < 0.5 else 1.0 + 1.2 * s
    tint = 1.0 + 0.5 * s * rng.uniform(-1.0, 1.0, size=3)
    for i in range(m.nlight):
        m.light_diffuse[i] = np.clip(m.light_diffuse[i] * scale * tint, 0.0, 1.0)
        tilt = Rotation.from_rotvec(_unit(rng) * math.radians(60.0 * s * rng.uniform(0.5, 1.0)))
        m.light_dir[i] = tilt.apply(m.light_dir[i])
    m.vis.headlight.ambient[:] = np.clip(m.vis.headlight.ambient * scale * tint, 0.0, 1.0)
    m.vis.headlight.diffuse[:] = np.clip(m.vis.headlight.diffuse * scale * tint, 0.0, 1.0)
    shadows = s >= 0.5
    m.light_castshadow[0] = shadows  # the key light
    return {"scale": round(scale, 4), "tint": tint.round(4).tolist(), "shadows": bool(shadows)}


def _texture(env, s: float, rng) -> dict:
    import mujoco

    from dynaflip_ros.sim.cell import OOD_TEXTURE_KINDS, OOD_TEXTURE_LEVELS, ood_texture_name

    m = env.model
    level = max(1, math.ceil(OOD_TEXTURE_LEVELS * s))
    out = {}
    for surface in ("table", "floor"):
        kind = OOD_TEXTURE_KINDS[int(rng.integers(len(OOD_TEXTURE_KINDS)))]
        tex = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_TEXTURE, ood_texture_name(kind, level))
        mat = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_MATERIAL, surface)
        m.mat_texid[mat, mujoco.mjtTextureRole.mjTEXROLE_RGB] = tex
        m.mat_texrepeat[mat] = [float(rng.uniform(4, 12))] * 2 if surface == "table" else [16.0, 16.0]
        colour = rng.uniform(0.2, 1.0, size=3)
        m.mat_rgba[mat, :3] = (1 - s) * m.mat_rgba[mat, :3] + s * colour
        out[surface] = {"texture": ood_texture_name(kind, level), "rgb": m.mat_rgba[mat, :3].round(4).tolist()}
    return out


def _camera_pose(env, s: float, rng) -> dict:
    m, c = env.model, env.camera_id
    offset = _unit(rng) * 0.08 * s
    turn = Rotation.from_rotvec(_unit(rng) * math.radians(8.0 * s))
    m.cam_pos[c] = m.cam_pos[c] + offset
    base = Rotation.from_quat(m.cam_quat[c], scalar_first=True)
    m.cam_quat[c] = (base * turn).as_quat(scalar_first=True)
    return {"offset_m": offset.round(4).tolist(), "rotation_deg": round(8.0 * s, 3)}
