"""Linear probe of frozen embeddings: what a policy could read off f(o_t) with one linear layer.

A ridge regressor (closed form, inputs standardised on the training frames) maps the (N, D)
embeddings of a recorded dataset to quantities a pick-and-place policy needs, and reports the
coefficient of determination R^2 on held-out episodes (the split is by episode, never by frame,
so a probe cannot pass by remembering neighbouring frames of one trajectory):

- `joints`: the six joint positions (rad), `observation.state[:, :6]`;
- `gripper`: the gripper opening, `observation.state[:, 6]`;
- `tcp_position`, `tcp_orientation`: the end-effector (flange) pose in the UR base frame from the
  recorded joints by forward kinematics (`robot.kinematics`, UR3 CB3 DH): position (m) and
  orientation as the first two columns of its rotation matrix (the continuous 6-D rotation
  representation of Zhou et al., CVPR 2019; unitless, no wrap-around);
- `fingers`: the centre of the finger-pad points (m, camera optical frame);
- `target`: the centre of the instructed object's points (m, camera frame);
- `objects`: the centre of every catalogue object on the table, one regressor per object (each
  object's output is only scored on frames where it is on the table and tracked); the group's
  R^2 is the mean over objects, `per_object` lists each.

R^2 per output dimension is 1 - SSE / SS0 on the held-out frames, where SS0 is the squared error
of predicting the training frames' mean (the no-information baseline: R^2 = 0 is no better than
it, 1 is exact; the held-out frames' own mean is not used because one object may appear in only
a few held-out episodes, with almost no spread), averaged over the dimensions of a group; RMSE is the root mean squared Euclidean error (metres
for positions, rad for joints). A probe like this is the "control-relevant probe" of
representation papers (e.g. R3M, Nair et al. 2022; DynaMo, Cui et al. 2024, probes object and
end-effector state); the ridge solution is Hoerl & Kennard (1970).

The object centres come from the recorded point tracks (`data.schema.TRACK_SLICES`) and the
episode's objects in row order (`data.triplets.EpisodeFrames.objects_of`); a dataset without
valid tracks (real teleop) has nothing to probe for the position groups.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from dynaflip_ros.data import schema
from dynaflip_ros.robot.kinematics import forward_kinematics_batch
from dynaflip_ros.task.catalogue import CATALOGUE

GROUPS = ("joints", "gripper", "tcp_position", "tcp_orientation", "fingers", "target", "objects")


@dataclass
class ProbeScore:
    """Held-out score of one regressor: r2 (mean over output dims), rmse (Euclidean, the
    outputs' units), n_train / n_test frames."""

    r2: float
    rmse: float
    n_train: int
    n_test: int


@dataclass
class ProbeReport:
    """groups: GROUPS name -> ProbeScore (objects: mean r2 / rmse over per_object); per_object:
    catalogue name -> ProbeScore (objects with too few frames are left out and listed in
    skipped_objects); split: the held-out episode ids; ridge_alpha; embedding_dim."""

    groups: dict[str, ProbeScore]
    per_object: dict[str, ProbeScore]
    test_episodes: list[int]
    ridge_alpha: float
    embedding_dim: int
    skipped_objects: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def object_blocks(episode_start: np.ndarray, episode_length: np.ndarray, episode_objects: list[tuple[str, ...]]):
    """Yield (rows, j, block) for every catalogue object of every episode: rows the episode's
    slice of frames, j the object's index in task.catalogue order, block its slice of track rows
    (`data.schema.object_rows`; target first, then the other-object blocks). Objects outside the
    catalogue, and other objects beyond schema.MAX_OTHER_OBJECTS, are skipped."""
    names = list(CATALOGUE)
    for s, n, objects in zip(episode_start, episode_length, episode_objects):
        rows = slice(int(s), int(s) + int(n))
        for k, name in enumerate(objects[: 1 + schema.MAX_OTHER_OBJECTS]):
            if name in CATALOGUE:
                yield rows, names.index(name), schema.object_rows(k)


def object_centres(tracks: np.ndarray, valid: np.ndarray, episode_start: np.ndarray, episode_length: np.ndarray,
                   episode_objects: list[tuple[str, ...]]) -> np.ndarray:
    """(M, len(CATALOGUE), 3) centre of each catalogue object's valid recorded points per frame
    (camera frame, m), NaN where the object is not on the table or none of its points is valid.

    tracks (M, N_TRACK, 3), valid (M, N_TRACK) bool, rows ordered by episode; episode_start /
    episode_length (E,); episode_objects: per episode, the objects in track-row order (target,
    then the other-object blocks). Raises ValueError on a track count other than N_TRACK."""
    if tracks.shape[1:] != (schema.N_TRACK, 3) or valid.shape != tracks.shape[:2]:
        raise ValueError(f"tracks must be (M, {schema.N_TRACK}, 3) with valid (M, {schema.N_TRACK}), "
                         f"got {tracks.shape} / {valid.shape}")
    out = np.full((len(tracks), len(CATALOGUE), 3), np.nan)
    for rows, j, block in object_blocks(episode_start, episode_length, episode_objects):
        out[rows, j] = schema.valid_point_centre(tracks[rows, block], valid[rows, block])  # (n, 3)
    return out


def split_episodes(episode_index: np.ndarray, heldout_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Held-out split by episode: (test episode ids (sorted), (M,) bool mask of their frames);
    heldout_fraction of the episodes, at least one and never all, by a seeded permutation.
    Raises ValueError with heldout_fraction outside (0, 1) or fewer than two episodes."""
    if not 0.0 < heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
    ids = np.unique(episode_index)
    if len(ids) < 2:
        raise ValueError(f"need at least two episodes to split, got {len(ids)}")
    n_test = min(max(1, int(round(heldout_fraction * len(ids)))), len(ids) - 1)
    test_ids = np.sort(np.random.default_rng(seed).permutation(ids)[:n_test])
    return test_ids, np.isin(episode_index, test_ids)


def fit_ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ridge regression on standardised inputs: returns (mean (D,), std (D,), W (D + 1, K)) so
    that predict = [(x - mean) / std, 1] @ W. x (M, D), y (M, K). The bias is not penalised."""
    mean, std = x.mean(0), x.std(0) + 1e-8
    z = np.c_[(x - mean) / std, np.ones(len(x))]
    reg = alpha * np.eye(z.shape[1])
    reg[-1, -1] = 0.0
    w = np.linalg.solve(z.T @ z + reg, z.T @ y)
    return mean, std, w


def _score(x_tr, y_tr, x_te, y_te, alpha: float) -> ProbeScore:
    mean, std, w = fit_ridge(x_tr, y_tr, alpha)
    pred = np.c_[(x_te - mean) / std, np.ones(len(x_te))] @ w
    sst = ((y_te - y_tr.mean(0)) ** 2).sum(0)  # error of the training mean (module docstring)
    r2 = 1.0 - ((pred - y_te) ** 2).sum(0) / np.maximum(sst, 1e-12)
    rmse = float(np.sqrt(((pred - y_te) ** 2).sum(1).mean()))
    return ProbeScore(r2=float(r2.mean()), rmse=rmse, n_train=len(x_tr), n_test=len(x_te))


def probe(embedding: np.ndarray, state: np.ndarray, tracks: np.ndarray, valid: np.ndarray,
          episode_index: np.ndarray, episode_start: np.ndarray, episode_length: np.ndarray,
          episode_objects: list[tuple[str, ...]], heldout_fraction: float = 0.2, seed: int = 0,
          ridge_alpha: float = 1.0, min_frames: int = 20) -> ProbeReport:
    """Probe (M, D) embeddings of one dataset (rows ordered by episode, as `state` (M, 7), `tracks`
    (M, N_TRACK, 3), `valid` (M, N_TRACK), `episode_index` (M,)); episode_start / length /
    objects as in `object_centres`. heldout_fraction of the episodes (at least one; seeded
    permutation) are scored, the rest fit. An object (or group) with fewer than `min_frames`
    training or held-out frames is skipped. Raises ValueError on mismatched lengths, fewer than
    two episodes or heldout_fraction outside (0, 1)."""
    m = len(embedding)
    if not (len(state) == len(tracks) == len(valid) == len(episode_index) == m):
        raise ValueError(f"embedding, state, tracks, valid and episode_index must have one row per frame ({m})")
    test_ids, te = split_episodes(episode_index, heldout_fraction, seed)
    x = np.asarray(embedding, np.float64)
    centres = object_centres(tracks, valid, episode_start, episode_length, episode_objects)  # (M, O, 3)
    names = list(CATALOGUE)
    per_object, skipped = {}, []
    for j, name in enumerate(names):
        ok = ~np.isnan(centres[:, j, 0])
        if (ok & ~te).sum() < min_frames or (ok & te).sum() < min_frames:
            if ok.any():
                skipped.append(name)
            continue
        per_object[name] = _score(x[ok & ~te], centres[ok & ~te, j], x[ok & te], centres[ok & te, j], ridge_alpha)
    first_obj = np.array([names.index(objs[0]) if objs and objs[0] in CATALOGUE else -1 for objs in episode_objects])
    row_target = np.repeat(first_obj, episode_length)  # (M,) catalogue index of the target, -1 unknown
    target = np.full((m, 3), np.nan)
    known = row_target >= 0
    target[known] = centres[np.flatnonzero(known), row_target[known]]
    fingers = schema.TRACK_SLICES["fingers"]
    fw = valid[:, fingers].astype(np.float64)
    finger_centre = (tracks[:, fingers] * fw[..., None]).sum(1) / np.maximum(fw.sum(1), 1.0)[:, None]
    finger_centre[fw.sum(1) == 0] = np.nan
    tcp_position, tcp_rotation = forward_kinematics_batch(np.asarray(state[:, :6], np.float64))  # (M, 3), (M, 3, 3)
    outputs = {"joints": np.asarray(state[:, :6], np.float64), "gripper": np.asarray(state[:, 6:7], np.float64),
               "tcp_position": tcp_position, "tcp_orientation": tcp_rotation[:, :, :2].transpose(0, 2, 1).reshape(m, 6),
               "fingers": finger_centre, "target": target}
    groups = {}
    for name, y in outputs.items():
        ok = ~np.isnan(y).any(1)
        if (ok & ~te).sum() >= min_frames and (ok & te).sum() >= min_frames:
            groups[name] = _score(x[ok & ~te], y[ok & ~te], x[ok & te], y[ok & te], ridge_alpha)
    if per_object:
        scores = list(per_object.values())
        groups["objects"] = ProbeScore(r2=float(np.mean([s.r2 for s in scores])), rmse=float(np.mean([s.rmse for s in scores])),
                                       n_train=sum(s.n_train for s in scores), n_test=sum(s.n_test for s in scores))
    return ProbeReport(groups=groups, per_object=per_object, test_episodes=[int(i) for i in test_ids],
                       ridge_alpha=float(ridge_alpha), embedding_dim=int(x.shape[1]), skipped_objects=skipped)


def format_report(report: ProbeReport) -> str:
    """Plain-text table of a ProbeReport (groups, then objects)."""
    lines = [f"{'group':<18}{'R2':>8}{'RMSE':>10}{'train':>8}{'test':>7}"]
    for name in GROUPS:
        s = report.groups.get(name)
        if s is not None:
            lines.append(f"{name:<18}{s.r2:>8.3f}{s.rmse:>10.4f}{s.n_train:>8}{s.n_test:>7}")
    if report.per_object:
        lines.append(f"{'object':<18}{'R2':>8}{'RMSE m':>10}")
        for name, s in report.per_object.items():
            lines.append(f"{name:<18}{s.r2:>8.3f}{s.rmse:>10.4f}{s.n_train:>8}{s.n_test:>7}")
    return "\n".join(lines)
