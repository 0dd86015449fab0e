"""MetaWorld expert demos as DynaFLIP training frames (image transition / language / 3D flow).

`demos_to_frames` turns the demos of several tasks (metaworld/env.py) into a
`data.triplets.EpisodeFrames`, so the encoder recipes pre-train on them exactly as on our
recordings (`encoder.train.train_encoder` accepts frames in memory):

- frames: every `stride`-th step of each demo (MetaWorld steps at 80 Hz; the default stride 4
  gives 20 Hz, so that a short expert episode - reach: about 60 steps - still has the 11 frames a
  clip with the recipes' frame offset 5 and flow window 6 needs);
- language: one sentence per task (TASK_SENTENCES; other tasks: their name in words); no expert
  phases, so every clip of an episode takes the task sentence (the triplets' fallback);
- 3D flow: MetaWorld has no point tracks, but its observation holds the poses that move. The
  rows of `data.schema.TRACK_SLICES` are filled with fixed point patterns attached to them:
  "target" (32 points on a 2 cm sphere, rotated with the first object's quaternion, around its
  position), "fingers" (two pads of 8 points on either side of the hand, 1 to 5 cm apart with the
  gripper opening) and the first "others" block (16 points around the second object, when the
  task has one); the remaining rows are invalid. Positions in metres, world frame. Use
  `track_layout: recorded` (the object slots are our catalogue's).
- state: hand position and gripper opening, then zeros (7 values as in our schema).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from dynaflip_ros.data import schema
from dynaflip_ros.data.triplets import EpisodeFrames
from dynaflip_ros.metaworld.env import TaskDemos

TASK_SENTENCES = {
    "reach-v3": "reach to the goal position",
    "button-press-topdown-v3": "press the button from the top",
    "drawer-open-v3": "open the drawer",
    "door-open-v3": "open the door",
    "pick-place-v3": "pick up the puck and place it at the goal",
    "assembly-v3": "put the ring onto the peg",
    "bin-picking-v3": "move the cube from one bin to the other",
    "peg-insert-side-v3": "insert the peg into the hole from the side",
}
FPS = 80.0  # MetaWorld: frame_skip 5 x timestep 2.5 ms


def task_sentence(task: str) -> str:
    """The instruction of a task: TASK_SENTENCES, else its name in words ("drawer-close-v3" -> "drawer close")."""
    return TASK_SENTENCES.get(task, task.removesuffix("-v3").replace("-", " "))


def sphere_points(n: int, radius_m: float) -> np.ndarray:
    """(n, 3) points spread evenly over a sphere (Fibonacci lattice), deterministic."""
    k = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * k / n)
    theta = np.pi * (1 + 5 ** 0.5) * k
    return radius_m * np.stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)], axis=1)


def _object_points(pos: np.ndarray, quat_wxyz: np.ndarray, pattern: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, P, 3) points of `pattern` rotated by each frame's quaternion around its position, (T,)
    valid where the object exists (a non-zero position)."""
    q = np.asarray(quat_wxyz, np.float64)
    norm = np.linalg.norm(q, axis=1)
    q = np.where(norm[:, None] > 1e-6, q, [1.0, 0.0, 0.0, 0.0])
    rot = Rotation.from_quat(q, scalar_first=True).as_matrix()  # (T, 3, 3)
    pts = pos[:, None, :] + np.einsum("tij,pj->tpi", rot, pattern)
    return pts, np.linalg.norm(pos, axis=1) > 1e-6


def demos_to_frames(demos: list[TaskDemos], stride: int = 4) -> EpisodeFrames:
    """One EpisodeFrames of every demo of every task (module doc), episodes numbered in order.
    Raises ValueError for stride < 1 or no demos."""
    if stride < 1 or not demos:
        raise ValueError(f"need stride >= 1 and demos, got stride {stride} and {len(demos)} task(s)")
    target, fingers, others = (schema.TRACK_SLICES[k] for k in ("target", "fingers", "others"))
    obj_pattern = sphere_points(target.stop - target.start, 0.02)
    other_pattern = sphere_points(schema.POINTS_PER_OTHER_OBJECT, 0.02)
    pad_pattern = sphere_points(schema.POINTS_PER_FINGER, 0.005)
    cols: dict[str, list] = {k: [] for k in ("images", "state", "tracks", "valid", "episode_index", "frame_index")}
    starts, lengths, tasks = [], [], []
    for d in demos:
        for ep in np.unique(d.episode):
            rows = np.flatnonzero(d.episode == ep)[::stride]
            obs = np.asarray(d.observations[rows], np.float64)
            t = len(rows)
            tracks = np.zeros((t, schema.N_TRACK, 3))
            valid = np.zeros((t, schema.N_TRACK), bool)
            tracks[:, target], ok = _object_points(obs[:, 4:7], obs[:, 7:11], obj_pattern)
            valid[:, target] = ok[:, None]
            half = 0.005 + 0.02 * np.clip(obs[:, 3:4], 0.0, 1.0)  # (t, 1) pad offset from the hand, m
            for k, sign in enumerate((1.0, -1.0)):
                pads = slice(fingers.start + k * schema.POINTS_PER_FINGER, fingers.start + (k + 1) * schema.POINTS_PER_FINGER)
                centre = obs[:, 0:3] + sign * half * np.array([0.0, 1.0, 0.0])
                tracks[:, pads] = centre[:, None, :] + pad_pattern
                valid[:, pads] = True
            second = slice(others.start, others.start + schema.POINTS_PER_OTHER_OBJECT)
            tracks[:, second], ok = _object_points(obs[:, 11:14], obs[:, 14:18], other_pattern)
            valid[:, second] = ok[:, None]
            state = np.zeros((t, schema.STATE_DIM), np.float32)
            state[:, :4] = obs[:, :4]
            starts.append(sum(len(x) for x in cols["images"]))
            lengths.append(t)
            tasks.append(task_sentence(d.task))
            e = len(lengths) - 1
            cols["images"].append(d.images[rows])
            cols["state"].append(state)
            cols["tracks"].append(tracks.astype(np.float32))
            cols["valid"].append(valid)
            cols["episode_index"].append(np.full(t, e, np.int64))
            cols["frame_index"].append(np.arange(t, dtype=np.int64))
    cat = {k: np.concatenate(v) for k, v in cols.items()}
    m = len(cat["images"])
    return EpisodeFrames(images=cat["images"], state=cat["state"], tracks=cat["tracks"], valid=cat["valid"],
                         phase=np.full(m, -1, np.int64), episode_index=cat["episode_index"],
                         frame_index=cat["frame_index"], episode_ids=np.arange(len(lengths), dtype=np.int64),
                         episode_start=np.asarray(starts, np.int64), episode_length=np.asarray(lengths, np.int64),
                         episode_task=tasks, episode_target=[None] * len(lengths), fps=FPS / stride,
                         root=str(Path("metaworld") / "+".join(d.task for d in demos)))
