"""DynaFLIP training samples from a recorded LeRobotDataset v3 (docs/method.md §1 "Inputs", "Data").

One sample (DynaFLIP paper §2.1, §2.3): frames o_t and o_t+k of one episode, the language of the
transition `schema.phase_description(task, phase_t)`, the 3D flow F = point_tracks[t : t+T]
(T, N, 3) in metres in the (fixed) camera's optical frame (padded at the episode end by
repeating the last frame), and TCN frames s0 < s1 < s2 of the same episode (DynaFLIP paper §2.2).
Clips with too little motion are dropped (`TripletDataConfig.motion_source`).

`load_episode_frames` reads the dataset's parquet files directly (the files lerobot 0.4.4's
`load_nested_dataset` globs: `data/*/*.parquet`, tasks from `meta/tasks.parquet`; or, for a
dataset written by `data.recorder`, only the files its commit record lists), decodes the
PNG frames once with OpenCV and resizes them to the encoder input (INTER_AREA, as
`encoder.preprocess.preprocess` does), so every frame lives in memory as uint8. Image-mode datasets
only (the schema stores PNG in parquet); a video-mode dataset raises ValueError.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dynaflip_ros.configs.encoder import TripletDataConfig
from dynaflip_ros.data import schema


@dataclass
class EpisodeFrames:
    """Every frame of a dataset in memory, rows ordered by (episode, frame); M = total frames.

    images: (M, H, W, 3) uint8 RGB at the requested size; state: (M, 7) float32; tracks:
    (M, N, 3) float32 metres (camera optical frame); episode_index, frame_index: (M,) int64;
    text_id: (M,) int64 index into `texts` (the transition language of each frame);
    episode_start / episode_length: (E,) int64 row range of each episode (ordered as
    episode_ids (E,)); fps: recording rate (Hz).
    """

    images: np.ndarray
    state: np.ndarray
    tracks: np.ndarray
    episode_index: np.ndarray
    frame_index: np.ndarray
    text_id: np.ndarray
    texts: list[str]
    episode_ids: np.ndarray
    episode_start: np.ndarray
    episode_length: np.ndarray
    fps: float

    @property
    def num_frames(self) -> int:
        return int(len(self.images))


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


def load_episode_frames(root: str | Path, image_hw: tuple[int, int], progress: bool = True) -> EpisodeFrames:
    """Load every frame of the LeRobotDataset v3.0 at `root` (schema `data.schema`) into memory.

    image_hw: (H, W) the images are resized to (the encoder's input_hw). Shows a tqdm bar while
    decoding. Raises FileNotFoundError (no dataset / no data files), ValueError (wrong codebase
    version, video-mode images, missing schema keys, non-contiguous episodes, bad images).
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
        raise ValueError(f"{root}: LeRobotDataset codebase_version {info.get('codebase_version')!r}, expected 'v3.0'")
    feats = info.get("features", {})
    for key in (schema.IMAGE_KEY, schema.STATE_KEY, schema.TRACKS_KEY, schema.PHASE_KEY):
        if key not in feats:
            raise ValueError(f"{root}: dataset has no feature {key!r} (features: {sorted(feats)})")
    if feats[schema.IMAGE_KEY].get("dtype") != "image":
        raise ValueError(
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

    columns = [schema.IMAGE_KEY, schema.STATE_KEY, schema.TRACKS_KEY, schema.PHASE_KEY, "episode_index", "frame_index", "task_index"]
    tables = [pq.read_table(f, columns=columns) for f in files]
    n_total = sum(t.num_rows for t in tables)
    h, w = image_hw
    images = np.empty((n_total, h, w, 3), np.uint8)  # (M, H, W, 3)
    state_parts, track_parts, phase_parts, ep_parts, fr_parts, task_parts = [], [], [], [], [], []
    row = 0
    with tqdm(total=n_total, desc="decoding frames", unit="frame", disable=not progress) as bar:
        for f, table in zip(files, tables):
            state_parts.append(_column_array(table, schema.STATE_KEY, (schema.STATE_DIM,), np.float32))
            track_parts.append(_column_array(table, schema.TRACKS_KEY, (n_points, 3), np.float32))
            phase_parts.append(_column_array(table, schema.PHASE_KEY, (), np.int64))
            ep_parts.append(_column_array(table, "episode_index", (), np.int64))
            fr_parts.append(_column_array(table, "frame_index", (), np.int64))
            task_parts.append(_column_array(table, "task_index", (), np.int64))
            for cell in table.column(schema.IMAGE_KEY).to_pylist():
                try:
                    images[row] = _decode_image(cell, root, image_hw)
                except ValueError as e:
                    raise ValueError(f"{f}: frame {row}: {e}") from e
                row += 1
                bar.update(1)

    episode_index = np.concatenate(ep_parts)
    frame_index = np.concatenate(fr_parts)
    order = np.lexsort((frame_index, episode_index))
    images = images[order]
    state = np.concatenate(state_parts)[order]
    tracks = np.concatenate(track_parts)[order]
    phase = np.concatenate(phase_parts)[order]
    task_index = np.concatenate(task_parts)[order]
    episode_index, frame_index = episode_index[order], frame_index[order]

    episode_ids, episode_start, episode_length = np.unique(episode_index, return_index=True, return_counts=True)
    for e, s, n in zip(episode_ids, episode_start, episode_length):
        if not np.array_equal(frame_index[s : s + n], np.arange(n)):
            raise ValueError(f"{root}: episode {e} frames are not 0..{n - 1} (duplicated or missing rows)")
    unknown = sorted(set(task_index.tolist()) - set(task_by_index))
    if unknown:
        raise ValueError(f"{root}: task_index {unknown} missing from meta/tasks.parquet")
    if not (np.isfinite(state).all() and np.isfinite(tracks).all()):
        raise ValueError(f"{root}: state or point tracks contain NaN/inf")

    texts: list[str] = []
    text_index: dict[str, int] = {}
    text_id = np.empty(len(order), np.int64)
    cache: dict[tuple[int, int], int] = {}
    for i, (ti, ph) in enumerate(zip(task_index.tolist(), phase.tolist())):
        key = (ti, ph)
        if key not in cache:
            text = schema.phase_description(task_by_index[ti], ph)
            if text not in text_index:
                text_index[text] = len(texts)
                texts.append(text)
            cache[key] = text_index[text]
        text_id[i] = cache[key]
    return EpisodeFrames(
        images=images,
        state=state,
        tracks=tracks,
        episode_index=episode_index,
        frame_index=frame_index,
        text_id=text_id,
        texts=texts,
        episode_ids=episode_ids.astype(np.int64),
        episode_start=episode_start.astype(np.int64),
        episode_length=episode_length.astype(np.int64),
        fps=float(info.get("fps", schema.RECORD_FPS)),
    )


@dataclass
class TripletBatch:
    """One training batch (numpy). images: (B, V, H, W, 3) uint8, view 0 = o_t, view 1 = o_t+k,
    `tcn_views` = the views of s0 < s1 < s2 (reuse_pair: V = 3, views (0, 1, 2); independent:
    V = 5, views (2, 3, 4)); text_ids: (B,) int64 into EpisodeFrames.texts; flow: (B, T, N, 3)
    float32 metres; episode_ids, frame_t: (B,) int64."""

    images: np.ndarray
    tcn_views: tuple[int, int, int]
    text_ids: np.ndarray
    flow: np.ndarray
    episode_ids: np.ndarray
    frame_t: np.ndarray


class TripletSampler:
    """Draws `TripletBatch`es of valid clips (uniformly over clips) from in-memory frames.

    A clip start t (row of an episode of length L) is valid when t + k <= L - 1 (reuse_pair TCN:
    t + k <= L - 2, so a farther frame s2 exists; independent TCN: L >= 3) and it passes the
    motion filter. Raises ValueError when no clip is valid or the track count differs from
    cfg.num_points.
    """

    def __init__(self, frames: EpisodeFrames, cfg: TripletDataConfig):
        if frames.tracks.shape[1] != cfg.num_points:
            raise ValueError(f"dataset has {frames.tracks.shape[1]} tracked points, config num_points={cfg.num_points}")
        self.frames = frames
        self.cfg = cfg
        starts, kept_ep, n_candidates = [], [], 0
        k, t_win = cfg.frame_offset, cfg.flow_window
        margin = 1 if cfg.tcn_mode == "reuse_pair" else 0
        for ep_row, (s, n) in enumerate(zip(frames.episode_start, frames.episode_length)):
            if cfg.tcn_mode == "independent" and n < 3:
                continue
            for t in range(0, n - k - margin):
                n_candidates += 1
                if self._moves(s, n, t):
                    starts.append(s + t)
                    kept_ep.append(ep_row)
        if not starts:
            raise ValueError(
                f"no valid clips: {len(frames.episode_length)} episodes (lengths {frames.episode_length.tolist()[:10]}...) "
                f"with frame_offset={k}, motion_source={cfg.motion_source!r}"
            )
        self.clip_rows = np.asarray(starts, np.int64)  # (C,) global row of o_t
        self.clip_episode_row = np.asarray(kept_ep, np.int64)  # (C,) index into episode_start
        self.num_candidates = n_candidates
        self.tcn_views = (0, 1, 2) if cfg.tcn_mode == "reuse_pair" else (2, 3, 4)
        self._flow_offsets = np.arange(t_win)

    def _moves(self, s: int, n: int, t: int) -> bool:
        cfg = self.cfg
        if cfg.motion_source == "none":
            return True
        end = min(t + cfg.flow_window, n)
        tr = self.frames.tracks[s + t : s + end]  # (T', N, 3)
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

    @property
    def num_clips(self) -> int:
        return int(len(self.clip_rows))

    def summary(self) -> dict:
        f = self.frames
        return {
            "episodes": int(len(f.episode_ids)),
            "frames": f.num_frames,
            "clips_kept": self.num_clips,
            "clips_dropped_low_motion": int(self.num_candidates - self.num_clips),
            "distinct_texts": len(f.texts),
        }

    def sample(self, batch_size: int, rng: np.random.Generator) -> TripletBatch:
        """Draw `batch_size` clips uniformly (with replacement when there are fewer clips)."""
        cfg, f = self.cfg, self.frames
        pick = rng.choice(self.num_clips, size=batch_size, replace=batch_size > self.num_clips)
        rows = self.clip_rows[pick]  # (B,)
        ep_rows = self.clip_episode_row[pick]
        starts = f.episode_start[ep_rows]
        lengths = f.episode_length[ep_rows]
        t = rows - starts  # (B,) frame index of o_t
        k = cfg.frame_offset
        views = [rows, rows + k]
        if cfg.tcn_mode == "reuse_pair":
            far = rng.integers(t + k + 1, lengths)  # (B,) in (t+k, L-1]
            views.append(starts + far)
        else:
            triplets = np.stack([np.sort(rng.choice(n, size=3, replace=False)) for n in lengths])  # (B, 3)
            views += [starts + triplets[:, 0], starts + triplets[:, 1], starts + triplets[:, 2]]
        view_rows = np.stack(views, axis=1)  # (B, V)
        flow_idx = np.minimum(t[:, None] + self._flow_offsets[None, :], lengths[:, None] - 1) + starts[:, None]  # (B, T)
        return TripletBatch(
            images=f.images[view_rows],  # (B, V, H, W, 3)
            tcn_views=self.tcn_views,
            text_ids=f.text_id[rows],
            flow=f.tracks[flow_idx],  # (B, T, N, 3)
            episode_ids=f.episode_index[rows],
            frame_t=t.astype(np.int64),
        )

    def all_clip_flows(self, max_clips: int = 4096, seed: int = 0) -> np.ndarray:
        """(C', T, N, 3) flows of up to `max_clips` valid clips (for flow normalisation stats)."""
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(self.num_clips, size=min(max_clips, self.num_clips), replace=False))
        rows = self.clip_rows[pick]
        ep_rows = self.clip_episode_row[pick]
        starts, lengths = self.frames.episode_start[ep_rows], self.frames.episode_length[ep_rows]
        idx = np.minimum(rows[:, None] - starts[:, None] + self._flow_offsets[None, :], lengths[:, None] - 1) + starts[:, None]
        return self.frames.tracks[idx]


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
