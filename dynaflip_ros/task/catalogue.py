"""The object catalogue of the Pick-into-Sink task: graspable objects with names, colours,
shapes, synonyms, geometry and a `split`.

Every object is one free MuJoCo body made of one or more primitive parts (boxes, cylinders,
spheres, capsules); the body origin sits `half_height_m` above the table when the object rests
upright (its lowest part on the table). Lengths in metres,
masses in kg, angles in radians; the body frame is x forward, y left, z up.

`split`: "train" objects may appear in recorded demos and pre-training data; "novel" objects
never do (they exist for out-of-distribution evaluation). `ObjectSpec.colour` / `.shape` are the
canonical words an instruction uses; `colour_words` / `shape_words` list the synonyms
(`task.instructions`). The pair (colour, shape) is unique in the catalogue, so "the <colour>
<shape>" always names exactly one object.

Grasp: the scripted expert closes the fingers across the part named by `grasp_part` at its
centre (`grasp_offset_m`, body frame), with tool y along the object's y axis when
`grasp_across_y` else along its x axis; `grasp_symmetry_rad` is the period of equivalent grasp
yaws (0: any yaw works, e.g. a ball or an upright cylinder).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SPLITS = ("train", "novel")
PART_SHAPES = ("box", "cylinder", "sphere", "capsule")


@dataclass(frozen=True)
class Part:
    """One primitive of an object, in the object's body frame.

    shape: "box" | "cylinder" | "sphere" | "capsule"; size: MuJoCo geom size (box half-extents
    (3,), cylinder / capsule (radius, half-length of the straight part), sphere (radius,)),
    metres; pos: (3,) centre in the body frame, metres (upright parts only: axis = body z).
    """

    shape: str
    size: tuple[float, ...]
    pos: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        want = {"box": 3, "cylinder": 2, "sphere": 1, "capsule": 2}
        if self.shape not in want:
            raise ValueError(f"unknown part shape {self.shape!r}; one of {PART_SHAPES}")
        if len(self.size) != want[self.shape] or any(not (s > 0) for s in self.size):
            raise ValueError(f"{self.shape} needs {want[self.shape]} positive sizes, got {self.size}")

    @property
    def half_height_m(self) -> float:
        """Half of the part's vertical extent (m)."""
        if self.shape == "box":
            return self.size[2]
        if self.shape == "sphere":
            return self.size[0]
        if self.shape == "capsule":
            return self.size[0] + self.size[1]
        return self.size[1]

    @property
    def radius_xy_m(self) -> float:
        """Radius of the part's footprint about its own centre (m)."""
        if self.shape == "box":
            return float(math.hypot(self.size[0], self.size[1]))
        return float(self.size[0])

    @property
    def area_m2(self) -> float:
        s = self.size
        if self.shape == "box":
            return 8.0 * (s[0] * s[1] + s[1] * s[2] + s[0] * s[2])
        if self.shape == "sphere":
            return 4.0 * math.pi * s[0] ** 2
        if self.shape == "capsule":
            return 4.0 * math.pi * s[0] ** 2 + 2.0 * math.pi * s[0] * 2.0 * s[1]
        return 2.0 * math.pi * s[0] * 2.0 * s[1] + 2.0 * math.pi * s[0] ** 2

    def surface_points(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """(n, 3) points on the part's surface in the body frame (area-weighted; faces of other
        parts that touch it are not removed)."""
        if n <= 0:
            return np.zeros((0, 3))
        s = self.size
        if self.shape == "sphere":
            v = rng.normal(size=(n, 3))
            pts = s[0] * v / np.linalg.norm(v, axis=1, keepdims=True)
        elif self.shape == "box":
            h = np.asarray(s)
            areas = np.array([h[1] * h[2], h[1] * h[2], h[0] * h[2], h[0] * h[2], h[0] * h[1], h[0] * h[1]])
            faces = rng.choice(6, size=n, p=areas / areas.sum())
            pts = rng.uniform(-1, 1, size=(n, 3)) * h
            axis, sign = faces // 2, np.where(faces % 2 == 0, 1.0, -1.0)
            pts[np.arange(n), axis] = sign * h[axis]
        elif self.shape == "cylinder":
            r, hh = s
            side, cap = 2 * math.pi * r * 2 * hh, 2 * math.pi * r * r
            on_side = rng.uniform(size=n) < side / (side + cap)
            ang = rng.uniform(0, 2 * math.pi, size=n)
            rad = np.where(on_side, r, r * np.sqrt(rng.uniform(size=n)))
            z = np.where(on_side, rng.uniform(-hh, hh, size=n), np.where(rng.uniform(size=n) < 0.5, hh, -hh))
            pts = np.stack([rad * np.cos(ang), rad * np.sin(ang), z], axis=1)
        else:  # capsule: cylinder side + two hemispheres
            r, hl = s
            side, caps = 2 * math.pi * r * 2 * hl, 4 * math.pi * r * r
            on_side = rng.uniform(size=n) < side / (side + caps)
            ang = rng.uniform(0, 2 * math.pi, size=n)
            v = rng.normal(size=(n, 3))
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            cap_pts = r * v + np.where(v[:, 2:3] >= 0, hl, -hl) * np.array([0.0, 0.0, 1.0])
            side_pts = np.stack([r * np.cos(ang), r * np.sin(ang), rng.uniform(-hl, hl, size=n)], axis=1)
            pts = np.where(on_side[:, None], side_pts, cap_pts)
        return pts + np.asarray(self.pos)


@dataclass(frozen=True)
class ObjectSpec:
    """A graspable object of the catalogue (module docstring).

    name: unique name, "<colour> <shape>" (e.g. "red cube"); colour / shape: the canonical words;
    colour_words / shape_words: synonyms an instruction may use (the canonical word first);
    split: "train" | "novel"; parts: its primitives; rgba: colour (all parts); mass_kg.
    """

    name: str
    colour: str
    shape: str
    colour_words: tuple[str, ...]
    shape_words: tuple[str, ...]
    split: str
    parts: tuple[Part, ...]
    rgba: tuple[float, float, float, float]
    mass_kg: float
    grasp_symmetry_rad: float
    grasp_across_y: bool = False
    grasp_part: int = 0

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"{self.name}: split must be one of {SPLITS}, got {self.split!r}")
        if not self.parts:
            raise ValueError(f"{self.name}: needs at least one part")
        if self.colour_words[:1] != (self.colour,) or self.shape_words[:1] != (self.shape,):
            raise ValueError(f"{self.name}: the canonical colour / shape word must come first in the synonyms")
        if not 0 <= self.grasp_part < len(self.parts):
            raise ValueError(f"{self.name}: grasp_part {self.grasp_part} out of range")

    @property
    def body(self) -> str:
        """MuJoCo body name."""
        return "obj_" + self.name.replace(" ", "_").replace("-", "_")

    @property
    def primitive(self) -> Part:
        """The first part (a single-part object's only one)."""
        return self.parts[0]

    @property
    def half_height_m(self) -> float:
        """Height of the body origin above the table when the object rests upright (m)."""
        return -min(p.pos[2] - p.half_height_m for p in self.parts)

    @property
    def height_m(self) -> float:
        """Total height of the object resting upright (m)."""
        return max(p.pos[2] + p.half_height_m for p in self.parts) + self.half_height_m

    @property
    def radius_xy_m(self) -> float:
        """Radius of a circle about the body origin that contains the footprint (m)."""
        return max(math.hypot(p.pos[0], p.pos[1]) + p.radius_xy_m for p in self.parts)

    @property
    def grasp_offset_m(self) -> np.ndarray:
        """(3,) centre of the grasped part in the body frame (m)."""
        return np.asarray(self.parts[self.grasp_part].pos, dtype=float)

    def surface_points(self, n: int = 32, seed: int = 0) -> np.ndarray:
        """(n, 3) fixed points on the object's surface in its body frame, metres; deterministic
        for (n, seed), spread over the parts by area."""
        rng = np.random.default_rng(seed)
        areas = np.array([p.area_m2 for p in self.parts])
        counts = np.floor(n * areas / areas.sum()).astype(int)
        counts[np.argsort(-areas)[: n - counts.sum()]] += 1
        return np.concatenate([p.surface_points(int(c), rng) for p, c in zip(self.parts, counts)], axis=0)


def _obj(name: str, split: str, parts, rgba, mass_kg: float, symmetry: float, *, colours=(), shapes=(),
         across_y: bool = False, grasp_part: int = 0) -> ObjectSpec:
    colour, shape = name.split(" ", 1)
    return ObjectSpec(name, colour, shape, (colour, *colours), (shape, *shapes), split, tuple(parts),
                      rgba, mass_kg, symmetry, across_y, grasp_part)


_HALF_PI = math.pi / 2
CATALOGUE: dict[str, ObjectSpec] = {o.name: o for o in (
    # The four objects of the original single-object cell keep their exact geometry.
    _obj("red cube", "train", [Part("box", (0.02, 0.02, 0.02))], (0.85, 0.1, 0.1, 1), 0.08, _HALF_PI,
         shapes=("block", "box")),
    _obj("green cylinder", "train", [Part("cylinder", (0.02, 0.03))], (0.1, 0.7, 0.2, 1), 0.07, 0.0,
         shapes=("can",)),
    _obj("blue bar", "train", [Part("box", (0.045, 0.0125, 0.015))], (0.1, 0.25, 0.85, 1), 0.06, math.pi,
         shapes=("stick",), across_y=True),
    _obj("yellow ball", "train", [Part("sphere", (0.022,))], (0.95, 0.85, 0.1, 1), 0.05, 0.0,
         shapes=("sphere",)),
    _obj("green cube", "train", [Part("box", (0.017, 0.017, 0.017))], (0.2, 0.55, 0.15, 1), 0.06, _HALF_PI,
         shapes=("block", "box")),
    _obj("purple cylinder", "train", [Part("cylinder", (0.017, 0.025))], (0.5, 0.2, 0.65, 1), 0.05, 0.0,
         colours=("violet",), shapes=("can",)),
    _obj("orange ball", "train", [Part("sphere", (0.019,))], (0.95, 0.5, 0.1, 1), 0.04, 0.0,
         shapes=("sphere",)),
    _obj("white mug", "train", [Part("cylinder", (0.021, 0.025)), Part("box", (0.012, 0.004, 0.012), (0.029, 0.0, 0.0))],
         (0.92, 0.92, 0.9, 1), 0.06, math.pi, shapes=("cup",), across_y=True),
    _obj("pink L-block", "train", [Part("box", (0.035, 0.011, 0.013)), Part("box", (0.009, 0.014, 0.013), (-0.026, 0.025, 0.0))],
         (0.95, 0.45, 0.65, 1), 0.05, math.pi, shapes=("L-shaped block",), across_y=True),
    # Novel objects: never in training data (OOD sessions).
    _obj("cyan cube", "novel", [Part("box", (0.019, 0.019, 0.019))], (0.1, 0.75, 0.8, 1), 0.07, _HALF_PI,
         shapes=("block", "box")),
    _obj("brown T-block", "novel", [Part("box", (0.035, 0.011, 0.013)), Part("box", (0.011, 0.02, 0.013), (-0.001, 0.031, 0.0))],
         (0.5, 0.3, 0.15, 1), 0.05, math.pi, shapes=("T-shaped block",), grasp_part=1),
    _obj("grey capsule", "novel", [Part("capsule", (0.018, 0.012))], (0.55, 0.55, 0.58, 1), 0.05, 0.0,
         colours=("gray",), shapes=("pill",)),
)}


def objects_in_split(split: str) -> tuple[str, ...]:
    """Names of the catalogue's objects in `split` ("train" | "novel"), catalogue order.
    Raises ValueError on an unknown split."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; one of {SPLITS}")
    return tuple(n for n, o in CATALOGUE.items() if o.split == split)


def get_object(name: str) -> ObjectSpec:
    """The catalogue entry `name`. Raises ValueError (listing the catalogue) when unknown."""
    try:
        return CATALOGUE[name]
    except KeyError:
        raise ValueError(f"unknown object {name!r}; the catalogue has {list(CATALOGUE)}") from None
