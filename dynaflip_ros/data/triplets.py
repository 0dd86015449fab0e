"""DynaFLIP training samples from a recorded LeRobotDataset v3 (docs/method.md §1 "Inputs", "Data").

One sample (DynaFLIP paper §2.1, §2.3): frames o_t and o_t+k of one episode; the language of the
clip, one paraphrase drawn per use from `task.instructions.clip_sentences(phase, target)` (phase:
the clip's dominant expert phase, `TripletDataConfig.clip_phase`; target: the episode's object
from the recorder's side records; episodes without phases fall back to their task string); the
3D flow F = point_tracks[t : t+T] (T, N, 3) in metres in the (fixed) camera's optical frame
(padded at the episode end by repeating the last frame) with its validity mask (N,) (a point
counts when valid in every frame of the window); and TCN frames s0 < s1 < s2 of the same episode
(DynaFLIP paper §2.2). Clips without motion are kept at `still_keep_fraction` with the "still"
language. Episodes are split into train / held-out (`heldout_fraction`) for retrieval.

`load_episode_frames` reads the dataset's parquet files directly (the files lerobot 0.4.4's
`load_nested_dataset` globs: `data/*/*.parquet`, tasks from `meta/tasks.parquet`; or, for a
dataset written by `data.recorder`, only the files its commit record lists), decodes the
PNG frames once with OpenCV and resizes them to the encoder input (INTER_AREA, as
`encoder.preprocess.preprocess` does), so every frame lives in memory as uint8. Image-mode datasets
only (the schema stores PNG in parquet). A dataset that cannot supervise the flow branch (old
schema without `observation.point_valid`, or tracks never valid: a real-cell / teleop recording)
raises `TripletDataError` instead of producing zero flow.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dynaflip_ros.configs.encoder import TripletDataConfig
from dynaflip_ros.data import schema
from dynaflip_ros.errors import UserError
from dynaflip_ros.task.catalogue import CATALOGUE
from dynaflip_ros.task.instructions import clip_sentences

STILL = -2  # clip "phase" of a clip without motion (language: task.instructions.STILL_SENTENCES)


class TripletDataError(ValueError, UserError):
    """A dataset cannot supervise DynaFLIP pre-training (the message names it and says why)."""


@dataclass
class EpisodeFrames:
    """Every frame of a dataset in memory, rows ordered by (episode, frame); M = total frames.

    images: (M, H, W, 3) uint8 RGB at the requested size; state: (M, 7) float32; tracks:
    (M, N, 3) float32 metres (camera optical frame); valid: (M, N) bool (point exists and is in
    view); phase: (M,) int64 expert phase (index into schema.PHASES, -1 unknown);
    episode_index, frame_index: (M,) int64; episode_start / episode_length: (E,) int64 row range
    of each episode (ordered as episode_ids (E,)); episode_task: the LeRobot task string of each
    episode; episode_target: its target object (a catalogue name, or None when the side records
    do not name a catalogue object); fps: recording rate (Hz); root: the dataset directory.
    """

    images: np.ndarray
    state: np.ndarray
    tracks: np.ndarray
    valid: np.ndarray
    phase: np.ndarray
    episode_index: np.ndarray
    frame_index: np.ndarray
    episode_ids: np.ndarray
    episode_start: np.ndarray
    episode_length: np.ndarray
    episode_task: list[str]
    episode_target: list[str | None]
    fps: float
    root: str = ""
    episode_objects: list[tuple[str, ...]] | None = None

    @property
    def num_frames(self) -> int:
        return int(len(self.images))

    def objects_of(self, e: int) -> tuple[str, ...]:
        """Objects of episode row `e` in track-row order (target first); () when unknown."""
        if self.episode_objects is not None:
            return tuple(self.episode_objects[e])
        target = self.episode_target[e]
        return (target,) if target is not None else ()


def flow_points(cfg: TripletDataConfig) -> int:
    """Points per clip the losses and heads see (`TripletDataConfig.track_layout`): num_points
    ("recorded"), or one slot of points_per_object per catalogue object plus the finger pads
    ("object_slots")."""
    if cfg.track_layout == "recorded":
        return int(cfg.num_points)
    fingers = schema.TRACK_SLICES["fingers"]
    return len(CATALOGUE) * int(cfg.points_per_object) + (fingers.stop - fingers.start)


def object_slot_rows(objects: tuple[str, ...], points_per_object: int) -> tuple[np.ndarray, np.ndarray]:
    """Where each object's recorded rows go in the "object_slots" layout (TripletDataConfig.track_layout).

    objects: the episode's objects in row order (target first, then the other-object blocks).
    Returns (src (K,), dst (K,)) int64: recorded row src[i] (schema.TRACK_SLICES) fills slot row
    dst[i]; object j of task.catalogue's order owns slot rows j*P .. j*P+P-1 (P =
    points_per_object, evenly spaced over its recorded points); the finger pads follow in the last
    16 rows. Objects outside the catalogue, and other objects beyond schema.MAX_OTHER_OBJECTS, are
    left out. Raises ValueError when P exceeds an object block's recorded points.
    """
    names = list(CATALOGUE)
    p = int(points_per_object)
    fingers = schema.TRACK_SLICES["fingers"]
    if not 1 <= p <= schema.POINTS_PER_OTHER_OBJECT:
        raise ValueError(f"points_per_object must be in [1, {schema.POINTS_PER_OTHER_OBJECT}], got {p}")
    src, dst = [], []
    for k, name in enumerate(objects[: 1 + schema.MAX_OTHER_OBJECTS]):
        if name not in CATALOGUE:
            continue
        block = schema.object_rows(k)
        src.append(block.start + (np.arange(p) * (block.stop - block.start)) // p)
        dst.append(names.index(name) * p + np.arange(p))
    n_fingers = fingers.stop - fingers.start
    src.append(np.arange(fingers.start, fingers.stop))
    dst.append(len(names) * p + np.arange(n_fingers))
    return np.concatenate(src).astype(np.int64), np.concatenate(dst).astype(np.int64)


def to_object_slots(frames: EpisodeFrames, points_per_object: int) -> EpisodeFrames:
    """A copy of `frames` whose tracks / valid are in the "object_slots" layout (`object_slot_rows`):
    (M, len(CATALOGUE) * P + 16, 3) and (M, len(CATALOGUE) * P + 16); slots of objects not on the
    table are zero and invalid."""
    fingers = schema.TRACK_SLICES["fingers"]
    n_out = len(CATALOGUE) * int(points_per_object) + (fingers.stop - fingers.start)
    tracks = np.zeros((frames.num_frames, n_out, 3), np.float32)
    valid = np.zeros((frames.num_frames, n_out), bool)
    for e, (s, n) in enumerate(zip(frames.episode_start, frames.episode_length)):
        src, dst = object_slot_rows(frames.objects_of(e), points_per_object)
        tracks[s : s + n, dst] = frames.tracks[s : s + n][:, src]
        valid[s : s + n, dst] = frames.valid[s : s + n][:, src]
    return dataclasses.replace(frames, tracks=tracks, valid=valid)


def _decode_image(cell: dict | None, root: Path, image_hw: tuple[int, int]) -> np.ndarray:
    import cv2

    if cell is None:
        raise ValueError("missing image cell")
    data = cell.get("bytes")
    if data is None:
        rel = cell.get("path")
        if not rel:
            raise ValueError("image cell has neither bytes nor path")
        data = (root / rel).read_bytes()
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("undecodable image bytes")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)  # (h, w, 3)
    h, w = image_hw
    if rgb.shape[:2] != (h, w):
        rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
    return rgb


def _column_array(table, name: str, width_shape: tuple[int, ...], dtype) -> np.ndarray:
    """Flatten a (nested) list / fixed-size-list arrow column to a numpy array (M, *width_shape)."""
    import pyarrow as pa

    col = table.column(name).combine_chunks()
    values = col
    while pa.types.is_list(values.type) or pa.types.is_fixed_size_list(values.type) or pa.types.is_large_list(values.type):
        values = values.flatten()
    arr = values.to_numpy(zero_copy_only=False).astype(dtype)
    return arr.reshape((len(col),) + width_shape)


def _committed_files_and_tasks(root: Path) -> tuple[list[Path] | None, dict[int, str] | None]:
    """Data files + tasks of the recorder's commit record (`data.dataset_io`), if there is one.

    A dataset written by `data.recorder.EpisodeRecorder` lists its committed parquet files in
    `meta/dynaflip_commit.json`; reading only those skips an episode whose save was interrupted.
    Returns (None, None) for a plain LeRobotDataset (then every data/*/*.parquet is read).
    """
    try:
        from dynaflip_ros.data.dataset_io import read_commit
    except ImportError:
        return None, None
    commit = read_commit(root)
    if commit is None:
        return None, None
    files = sorted(root / f for f in commit.files if f.startswith("data/"))
    return files, dict(enumerate(commit.tasks))


def _episode_objects(root: Path, episode_ids: np.ndarray) -> tuple[list[str | None], list[tuple[str, ...]]]:
    """From the recorder's side records, per episode: the target object (None when the records do
    not name a catalogue object) and the objects in track-row order (target, then the recorded
    `distractors` list that fills the other-object rows; () when the target is unknown)."""
    from dynaflip_ros.data.dataset_io import read_episode_records

    records = {int(r["episode_index"]): r for r in read_episode_records(root)}
    targets, objects = [], []
    for e in episode_ids:
        r = records.get(int(e), {})
        name = r.get("object_name")
        extra = r.get("extra") if isinstance(r.get("extra"), dict) else {}
        target = name if name in CATALOGUE else None
        targets.append(target)
        objects.append((target, *(str(o) for o in extra.get("distractors", ()))) if target is not None else ())
    return targets, objects


def load_episode_frames(root: str | Path, image_hw: tuple[int, int] | None, progress: bool = True) -> EpisodeFrames:
    """Load every frame of the LeRobotDataset v3.0 at `root` (schema `data.schema`) into memory.

    image_hw: (H, W) the images are resized to (the encoder's input_hw); None: images are not
    read (`images` is then (M, 0, 0, 3); for readers of the tracks and state only). Shows a tqdm
    bar while decoding. Raises FileNotFoundError (no dataset / no data files), TripletDataError (a
    ValueError and UserError: wrong codebase version, video-mode images, missing schema keys --
    `observation.point_valid` missing means the old schema: re-record --, point tracks never
    valid (a recording without ground-truth 3D tracks), non-contiguous episodes, bad images).
    """
    import pandas as pd
    import pyarrow.parquet as pq
    from tqdm import tqdm

    root = Path(root)
    info_path = root / "meta" / "info.json"
    if not info_path.is_file():
        raise FileNotFoundError(f"{root}: no LeRobotDataset here (meta/info.json missing)")
    info = json.loads(info_path.read_text())
    if info.get("codebase_version") != "v3.0":
        raise TripletDataError(f"{root}: LeRobotDataset codebase_version {info.get('codebase_version')!r}, expected 'v3.0'")
    feats = info.get("features", {})
    if schema.VALID_KEY not in feats:
        raise TripletDataError(
            f"{root}: dataset has no {schema.VALID_KEY!r}: it was recorded with the old schema (32 target "
            "points, no validity mask); re-record it with `dynaflip record --sim`"
        )
    for key in (schema.IMAGE_KEY, schema.STATE_KEY, schema.TRACKS_KEY, schema.PHASE_KEY):
        if key not in feats:
            raise TripletDataError(f"{root}: dataset has no feature {key!r} (features: {sorted(feats)})")
    if feats[schema.IMAGE_KEY].get("dtype") != "image":
        raise TripletDataError(
            f"{root}: {schema.IMAGE_KEY} is stored as {feats[schema.IMAGE_KEY].get('dtype')!r}; "
            "only image-mode datasets (PNG in parquet, data.schema) are supported"
        )
    n_points = int(feats[schema.TRACKS_KEY]["shape"][0])
    files, task_by_index = _committed_files_and_tasks(root)
    if files is None:
        files = sorted((root / "data").glob("*/*.parquet"))
        tasks_df = pd.read_parquet(root / "meta" / "tasks.parquet")
        task_by_index = {int(i): str(t) for t, i in zip(tasks_df.index, tasks_df["task_index"])}
    if not files:
        raise FileNotFoundError(f"{root}: no data/*/*.parquet files (no episode saved yet?)")

    keys = (schema.STATE_KEY, schema.TRACKS_KEY, schema.VALID_KEY, schema.PHASE_KEY, "episode_index", "frame_index", "task_index")
    shapes = ((schema.STATE_DIM,), (n_points, 3), (n_points,), (), (), (), ())
    dtypes = (np.float32, np.float32, np.float32, np.int64, np.int64, np.int64, np.int64)
    with_images = image_hw is not None
    tables = [pq.read_table(f, columns=[schema.IMAGE_KEY, *keys] if with_images else list(keys)) for f in files]
    n_total = sum(t.num_rows for t in tables)
    h, w = image_hw if with_images else (0, 0)
    images = np.empty((n_total, h, w, 3), np.uint8)  # (M, H, W, 3)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    row = 0
    with tqdm(total=n_total, desc="decoding frames", unit="frame", disable=not progress or not with_images) as bar:
        for f, table in zip(files, tables):
            for key, shape, dtype in zip(keys, shapes, dtypes):
                parts[key].append(_column_array(table, key, shape, dtype))
            for cell in table.column(schema.IMAGE_KEY).to_pylist() if with_images else ():
                try:
                    images[row] = _decode_image(cell, root, image_hw)
                except ValueError as e:
                    raise TripletDataError(f"{f}: frame {row}: {e}") from e
                row += 1
                bar.update(1)

    cols = {k: np.concatenate(v) for k, v in parts.items()}
    order = np.lexsort((cols["frame_index"], cols["episode_index"]))
    cols = {k: v[order] for k, v in cols.items()}
    images = images[order]
    episode_index, frame_index, task_index = cols["episode_index"], cols["frame_index"], cols["task_index"]
    valid = cols[schema.VALID_KEY] > 0.5  # (M, N)
    if not valid.any():
        raise TripletDataError(
            f"{root}: {schema.VALID_KEY} is 0 in every frame: the point tracks were never valid (a real-cell or "
            "teleop recording without ground-truth 3D tracks), so there is no flow to learn from; pre-train on "
            "simulated demos (`dynaflip record --sim`)"
        )

    episode_ids, episode_start, episode_length = np.unique(episode_index, return_index=True, return_counts=True)
    episode_target, episode_objects = _episode_objects(root, episode_ids)
    for e, s, n in zip(episode_ids, episode_start, episode_length):
        if not np.array_equal(frame_index[s : s + n], np.arange(n)):
            raise TripletDataError(f"{root}: episode {e} frames are not 0..{n - 1} (duplicated or missing rows)")
    unknown = sorted(set(task_index.tolist()) - set(task_by_index))
    if unknown:
        raise TripletDataError(f"{root}: task_index {unknown} missing from meta/tasks.parquet")
    tracks, state = cols[schema.TRACKS_KEY], cols[schema.STATE_KEY]
    if not (np.isfinite(state).all() and np.isfinite(tracks).all()):
        raise TripletDataError(f"{root}: state or point tracks contain NaN/inf")
    return EpisodeFrames(
        images=images,
        state=state,
        tracks=tracks,
        valid=valid,
        phase=cols[schema.PHASE_KEY],
        episode_index=episode_index,
        frame_index=frame_index,
        episode_ids=episode_ids.astype(np.int64),
        episode_start=episode_start.astype(np.int64),
        episode_length=episode_length.astype(np.int64),
        episode_task=[task_by_index[int(task_index[s])] for s in episode_start],
        episode_target=episode_target,
        fps=float(info.get("fps", schema.RECORD_FPS)),
        root=str(root),
        episode_objects=episode_objects,
    )
@dataclass
class TripletBatch:
    """One training batch (numpy). images: (B, V, H, W, 3) uint8, view 0 = o_t, view 1 = o_t+k,
    `tcn_views` = the views of s0 < s1 < s2 (reuse_pair: V = 3, views (0, 1, 2); independent:
    V = 5, views (2, 3, 4); () in a batch drawn without TCN frames, V = 2); text_ids: (B,) int64
    into `TripletSampler.texts` (the paraphrase drawn for this use); language_ids: (B,) int64
    language group (same id = same meaning: one phase + target, or one task string); flow:
    (B, T, N, 3) float32 metres, invalid points zeroed; flow_valid: (B, N) bool; episode_ids,
    frame_t: (B,) int64; still: (B,) bool (a clip without motion)."""

    images: np.ndarray
    tcn_views: tuple[int, ...]
    text_ids: np.ndarray
    language_ids: np.ndarray
    flow: np.ndarray
    flow_valid: np.ndarray
    episode_ids: np.ndarray
    frame_t: np.ndarray
    still: np.ndarray


class TripletSampler:
    """Clips of in-memory frames, their language groups, and batches drawn from them.

    A clip start t (row of an episode of length L) is a candidate when t + k <= L - 1 (reuse_pair
    TCN: t + k <= L - 2, so a farther frame s2 exists; independent TCN: L >= 3). Its point mask
    (N,) holds the points valid in every frame of the flow window; a candidate without any valid
    point is dropped. A clip is moving or still (`TripletDataConfig.motion_source`, measured on
    valid points only); every moving clip is kept, a `still_keep_fraction` share of the still
    ones (evenly spaced). Episodes without any valid point are skipped; the rest are split by
    episode into train / held-out (`heldout_fraction`, `split_seed`). `sample` draws train clips,
    `heldout_batch` the held-out ones. Language: `texts` (every distinct sentence, embed each
    once) and one group per meaning (`group_keys`: (phase name, target), ("still", None) or
    ("task", task string)). With data.track_layout "object_slots" the frames' tracks are first
    rearranged into one slot per catalogue object (`to_object_slots`), so `frames.tracks` and every
    batch's flow have `flow_points(cfg)` rows. Raises TripletDataError when the track count differs from
    cfg.num_points or no clip is left for training.
    """

    def __init__(self, frames: EpisodeFrames, cfg: TripletDataConfig):
        where = frames.root or "dataset"
        if frames.tracks.shape[1] != cfg.num_points:
            raise TripletDataError(f"{where}: {frames.tracks.shape[1]} tracked points per frame, config data.num_points={cfg.num_points}")
        if cfg.track_layout == "object_slots":
            if cfg.num_points != schema.N_TRACK:
                raise TripletDataError(f"{where}: track_layout 'object_slots' needs the recorded layout of "
                                       f"{schema.N_TRACK} points (data.schema), config data.num_points={cfg.num_points}")
            frames = to_object_slots(frames, cfg.points_per_object)  # clips see the slot layout
        self.frames = frames
        self.cfg = cfg
        k, t_win = cfg.frame_offset, cfg.flow_window
        margin = 1 if cfg.tcn_mode == "reuse_pair" else 0
        n_eps = len(frames.episode_ids)
        used = [e for e in range(n_eps) if frames.valid[frames.episode_start[e] : frames.episode_start[e] + frames.episode_length[e]].any()]
        self.episodes_skipped_no_tracks = n_eps - len(used)
        heldout_eps = self._split(used)
        moving, still, masks = [], [], {}
        self.num_candidates = self.clips_dropped_no_valid_points = 0
        for e in used:
            s, n = int(frames.episode_start[e]), int(frames.episode_length[e])
            if cfg.tcn_mode == "independent" and n < 3:
                continue
            for t in range(0, n - k - margin):
                self.num_candidates += 1
                end = min(t + t_win, n)
                mask = frames.valid[s + t : s + end].all(0)  # (N,) valid in every frame of the window
                if not mask.any():
                    self.clips_dropped_no_valid_points += 1
                    continue
                masks[(e, t)] = mask
                (moving if self._moves(s, t, end, mask) else still).append((e, t))
        n_still = int(round(cfg.still_keep_fraction * len(still)))
        kept_still = [still[i] for i in (np.arange(n_still) * len(still)) // max(n_still, 1)]
        self.clips_kept_moving, self.clips_kept_still = len(moving), n_still
        self.clips_dropped_still = len(still) - n_still
        clips = sorted([(e, t, False) for e, t in moving] + [(e, t, True) for e, t in kept_still])
        if not clips:
            raise TripletDataError(
                f"{where}: no valid clips: {n_eps} episodes ({self.episodes_skipped_no_tracks} without valid tracks, "
                f"lengths {frames.episode_length.tolist()[:10]}...) with frame_offset={k}, "
                f"motion_source={cfg.motion_source!r}, still_keep_fraction={cfg.still_keep_fraction}"
            )
        self.clip_episode_row = np.asarray([c[0] for c in clips], np.int64)  # (C,) index into episode_start
        self.clip_rows = frames.episode_start[self.clip_episode_row] + np.asarray([c[1] for c in clips], np.int64)  # (C,) row of o_t
        self.clip_still = np.asarray([c[2] for c in clips], bool)  # (C,)
        self.clip_valid = np.stack([masks[(e, t)] for e, t, _ in clips])  # (C, N) bool
        self.clip_heldout = np.isin(self.clip_episode_row, list(heldout_eps))  # (C,)
        self.train_clips = np.flatnonzero(~self.clip_heldout)
        self.heldout_clips = np.flatnonzero(self.clip_heldout)
        self.episodes_used, self.episodes_heldout = len(used), len(heldout_eps)
        if not len(self.train_clips):
            raise TripletDataError(f"{where}: every clip is in a held-out episode; lower data.heldout_fraction")
        self._build_language()
        self.tcn_views = (0, 1, 2) if cfg.tcn_mode == "reuse_pair" else (2, 3, 4)
        self._flow_offsets = np.arange(t_win)

    # ---------------------------------------------------------------------------- construction
    def _split(self, used: list[int]) -> set[int]:
        """Held-out episode rows: round(heldout_fraction * n) of the used episodes (>= 1 when the
        fraction is > 0 and n >= 2, always leaving one for training), by a seeded permutation."""
        n, f = len(used), self.cfg.heldout_fraction
        n_held = 0 if f <= 0.0 or n < 2 else min(max(1, int(round(f * n))), n - 1)
        perm = np.random.default_rng(self.cfg.split_seed).permutation(n)
        return {used[i] for i in perm[:n_held]}

    def _moves(self, s: int, t: int, end: int, mask: np.ndarray) -> bool:
        """Whether the clip at row s + t moves (cfg.motion_source), tracks measured on `mask`."""
        cfg = self.cfg
        if cfg.motion_source == "none":
            return True
        tr = self.frames.tracks[s + t : s + end][:, mask]  # (T', n_valid, 3)
        track_motion = float(np.sqrt(((tr - tr[:1]) ** 2).sum(-1)).max())
        st = self.frames.state[s + t : s + t + cfg.frame_offset + 1]  # (k+1, 7)
        state_motion = float(np.abs(st - st[:1]).max())
        moves_tracks = track_motion >= cfg.min_track_motion_m
        moves_state = state_motion >= cfg.min_state_motion
        if cfg.motion_source == "tracks":
            return moves_tracks
        if cfg.motion_source == "state":
            return moves_state
        return moves_tracks or moves_state

    def _clip_phase(self, row: int) -> int:
        """Expert phase naming the clip at `row`: the dominant known phase of frames t .. t+k
        (ties to the earlier phase) or the phase at t (cfg.clip_phase); -1 when unknown."""
        ph = self.frames.phase[row : row + self.cfg.frame_offset + 1]  # (k+1,)
        if self.cfg.clip_phase == "start":
            return int(ph[0]) if 0 <= ph[0] < len(schema.PHASES) else -1
        known = ph[(ph >= 0) & (ph < len(schema.PHASES))]
        return int(np.bincount(known).argmax()) if known.size else -1

    def _build_language(self) -> None:
        f = self.frames
        self.texts: list[str] = []
        self.group_keys: list[tuple[str, str | None]] = []
        text_index: dict[str, int] = {}
        group_index: dict[tuple[str, str | None], int] = {}
        members: list[list[int]] = []
        clip_group = np.empty(len(self.clip_rows), np.int64)
        for c, (row, e, still) in enumerate(zip(self.clip_rows, self.clip_episode_row, self.clip_still)):
            phase = STILL if still else self._clip_phase(int(row))
            if phase == STILL:
                key, sentences = ("still", None), clip_sentences("still", None)
            elif phase < 0:  # no expert phase (teleop): the episode's instruction
                key = ("task", f.episode_task[e])
                sentences = (f.episode_task[e],)
            else:
                key = (schema.PHASES[phase], f.episode_target[e])
                sentences = clip_sentences(key[0], key[1])
            if key not in group_index:
                group_index[key] = len(self.group_keys)
                self.group_keys.append(key)
                ids = []
                for text in sentences:
                    if text not in text_index:
                        text_index[text] = len(self.texts)
                        self.texts.append(text)
                    ids.append(text_index[text])
                members.append(ids)
            clip_group[c] = group_index[key]
        self.clip_group = clip_group  # (C,) language group of each clip
        self._member_count = np.asarray([len(m) for m in members], np.int64)  # (G,)
        self._member_start = np.concatenate([[0], np.cumsum(self._member_count)[:-1]]).astype(np.int64)
        self._members = np.asarray([i for m in members for i in m], np.int64)

    # ---------------------------------------------------------------------------- queries
    @property
    def num_clips(self) -> int:
        return int(len(self.clip_rows))

    def group_text_ids(self, group: int) -> np.ndarray:
        """Ids (into `texts`) of the paraphrases of language group `group`."""
        s = int(self._member_start[group])
        return self._members[s : s + int(self._member_count[group])]

    def summary(self) -> dict:
        f = self.frames
        return {
            "episodes": int(len(f.episode_ids)),
            "episodes_used": self.episodes_used,
            "episodes_skipped_no_tracks": self.episodes_skipped_no_tracks,
            "episodes_heldout": self.episodes_heldout,
            "frames": f.num_frames,
            "clip_candidates": self.num_candidates,
            "clips_kept": self.num_clips,
            "clips_kept_moving": self.clips_kept_moving,
            "clips_kept_still": self.clips_kept_still,
            "clips_dropped_still": self.clips_dropped_still,
            "clips_dropped_no_valid_points": self.clips_dropped_no_valid_points,
            "clips_train": int(len(self.train_clips)),
            "clips_heldout": int(len(self.heldout_clips)),
            "language_groups": len(self.group_keys),
            "distinct_texts": len(self.texts),
        }

    def sample(self, batch_size: int, rng: np.random.Generator) -> TripletBatch:
        """Draw `batch_size` train clips uniformly (with replacement when there are fewer clips),
        each with one paraphrase of its language drawn from `rng`."""
        n = len(self.train_clips)
        pick = self.train_clips[rng.choice(n, size=batch_size, replace=batch_size > n)]
        return self._batch(pick, rng, tcn=True)

    def heldout_batch(self, max_clips: int) -> TripletBatch | None:
        """Up to `max_clips` held-out clips (evenly spaced, deterministic; no TCN frames, V = 2);
        None when nothing is held out."""
        n = len(self.heldout_clips)
        if n == 0:
            return None
        sel = np.unique(np.linspace(0, n - 1, min(max_clips, n)).round().astype(np.int64))
        return self._batch(self.heldout_clips[sel], np.random.default_rng(0), tcn=False)

    def _flow_rows(self, clips: np.ndarray) -> np.ndarray:
        """(B, T) rows of the flow window of each clip (the episode's last frame repeated)."""
        ep_rows = self.clip_episode_row[clips]
        starts, lengths = self.frames.episode_start[ep_rows], self.frames.episode_length[ep_rows]
        t = self.clip_rows[clips] - starts
        return np.minimum(t[:, None] + self._flow_offsets[None, :], lengths[:, None] - 1) + starts[:, None]

    def _batch(self, clips: np.ndarray, rng: np.random.Generator, tcn: bool) -> TripletBatch:
        cfg, f = self.cfg, self.frames
        rows = self.clip_rows[clips]  # (B,)
        ep_rows = self.clip_episode_row[clips]
        starts, lengths = f.episode_start[ep_rows], f.episode_length[ep_rows]
        t = rows - starts  # (B,) frame index of o_t
        k = cfg.frame_offset
        views = [rows, rows + k]
        if tcn and cfg.tcn_mode == "reuse_pair":
            far = rng.integers(t + k + 1, lengths)  # (B,) in (t+k, L-1]
            views.append(starts + far)
        elif tcn:
            triplets = np.stack([np.sort(rng.choice(n, size=3, replace=False)) for n in lengths])  # (B, 3)
            views += [starts + triplets[:, 0], starts + triplets[:, 1], starts + triplets[:, 2]]
        groups = self.clip_group[clips]  # (B,)
        text_ids = self._members[self._member_start[groups] + rng.integers(0, self._member_count[groups])]  # (B,)
        mask = self.clip_valid[clips]  # (B, N)
        return TripletBatch(
            images=f.images[np.stack(views, axis=1)],  # (B, V, H, W, 3)
            tcn_views=self.tcn_views if tcn else (),
            text_ids=text_ids.astype(np.int64),
            language_ids=groups.astype(np.int64),
            flow=f.tracks[self._flow_rows(clips)] * mask[:, None, :, None],  # (B, T, N, 3)
            flow_valid=mask.copy(),
            episode_ids=f.episode_index[rows],
            frame_t=t.astype(np.int64),
            still=self.clip_still[clips].copy(),
        )

    def all_clip_flows(self, max_clips: int = 4096, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Flows (C', T, N, 3) (invalid points zeroed) and masks (C', N) of up to `max_clips` train
        clips, for the flow normaliser's statistics."""
        rng = np.random.default_rng(seed)
        n = len(self.train_clips)
        clips = self.train_clips[np.sort(rng.choice(n, size=min(max_clips, n), replace=False))]
        mask = self.clip_valid[clips]
        return self.frames.tracks[self._flow_rows(clips)] * mask[:, None, :, None], mask.copy()


def augment_images(images: np.ndarray, cfg: TripletDataConfig, rng: np.random.Generator) -> np.ndarray:
    """Per-sample random shift + brightness/contrast jitter, identical for all views of a sample.

    images: (B, V, H, W, 3) uint8 -> same shape uint8. Shift: edge-pad by cfg.max_shift_px and
    crop back at a random offset (DrQ-style); jitter: x' = (x - mean) * (1 + c) + mean + 255 b,
    c ~ U(-contrast, contrast), b ~ U(-brightness, brightness).
    """
    if images.ndim != 5 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 (B, V, H, W, 3), got {images.dtype} {images.shape}")
    b, v, h, w, _ = images.shape
    out = np.empty_like(images)
    s = cfg.max_shift_px
    for i in range(b):
        x = images[i]  # (V, H, W, 3)
        if s > 0:
            padded = np.pad(x, ((0, 0), (s, s), (s, s), (0, 0)), mode="edge")
            dy, dx = rng.integers(0, 2 * s + 1, size=2)
            x = padded[:, dy : dy + h, dx : dx + w]
        if cfg.brightness > 0 or cfg.contrast > 0:
            c = 1.0 + rng.uniform(-cfg.contrast, cfg.contrast)
            br = 255.0 * rng.uniform(-cfg.brightness, cfg.brightness)
            xf = x.astype(np.float32)
            mean = xf.mean()
            x = np.clip((xf - mean) * c + mean + br, 0.0, 255.0).round().astype(np.uint8)
        out[i] = x
    return out
