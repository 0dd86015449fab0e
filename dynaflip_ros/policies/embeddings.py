"""Precompute frozen-encoder embeddings f(o_t) for every frame of a recorded LeRobotDataset v3.

The policy never sees images: it is trained on (embedding, state) -> action chunks, so the
embeddings are computed once per (encoder, dataset) pair and cached as an `.npz`
(`allow_pickle=False`) keyed by the encoder's `weights_sha256` and a content fingerprint of the
dataset files. Dataset layout: `dynaflip_ros.data.schema` (LeRobotDataset v3.0).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dynaflip_ros.data import schema

CACHE_VERSION = 1
_FINGERPRINT_DIRS = ("meta", "data", "videos")


@dataclass(frozen=True)
class EmbeddedEpisodes:
    """Per-frame arrays of a dataset, ordered by (episode, frame); N = total frames.

    embedding: (N, D) float32 f(o_t); state: (N, 7) float32 joint positions (rad) + gripper;
    action: (N, 7) float32 joint targets (rad) + gripper command; episode_index: (N,) int64;
    frame_index: (N,) int64 (0..len-1 inside each episode); task: (N,) str;
    fps: recording rate (Hz); encoder_sha256 / dataset_fingerprint: the cache key.
    """

    embedding: np.ndarray
    state: np.ndarray
    action: np.ndarray
    episode_index: np.ndarray
    frame_index: np.ndarray
    task: np.ndarray
    fps: float
    encoder_sha256: str
    dataset_fingerprint: str

    def __post_init__(self) -> None:
        n = len(self.embedding)
        if self.embedding.ndim != 2 or self.embedding.dtype != np.float32:
            raise ValueError(f"embedding must be float32 (N, D), got {self.embedding.dtype} {self.embedding.shape}")
        for name, width in (("state", schema.STATE_DIM), ("action", schema.ACTION_DIM)):
            arr = getattr(self, name)
            if arr.shape != (n, width) or arr.dtype != np.float32:
                raise ValueError(f"{name} must be float32 ({n}, {width}), got {arr.dtype} {arr.shape}")
        for name in ("episode_index", "frame_index", "task"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name} must have shape ({n},), got {getattr(self, name).shape}")
        if not np.all(np.isfinite(self.embedding)):
            raise ValueError("embedding contains NaN or inf")
        if not (np.all(np.isfinite(self.state)) and np.all(np.isfinite(self.action))):
            raise ValueError("state or action contains NaN or inf")
        if self.fps <= 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        _check_episode_layout(self.episode_index, self.frame_index)

    @property
    def embedding_dim(self) -> int:
        return int(self.embedding.shape[1])

    def episode_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Row ranges [start, end) of each episode: (starts (E,), ends (E,)) int64."""
        change = np.flatnonzero(np.diff(self.episode_index)) + 1
        starts = np.concatenate([[0], change]).astype(np.int64)
        ends = np.concatenate([change, [len(self.episode_index)]]).astype(np.int64)
        return starts, ends

    def select_episodes(self, episode_ids: np.ndarray) -> EmbeddedEpisodes:
        """Rows of the given episode ids (in dataset order)."""
        mask = np.isin(self.episode_index, np.asarray(episode_ids))
        return EmbeddedEpisodes(
            embedding=self.embedding[mask],
            state=self.state[mask],
            action=self.action[mask],
            episode_index=self.episode_index[mask],
            frame_index=self.frame_index[mask],
            task=self.task[mask],
            fps=self.fps,
            encoder_sha256=self.encoder_sha256,
            dataset_fingerprint=self.dataset_fingerprint,
        )

    def save_npz(self, path: str | Path) -> None:
        """Write all arrays + key fields to an uncompressed .npz (no pickled objects)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(
            tmp,
            embedding=self.embedding,
            state=self.state,
            action=self.action,
            episode_index=self.episode_index,
            frame_index=self.frame_index,
            task=self.task.astype(str),
            fps=np.float64(self.fps),
            encoder_sha256=np.str_(self.encoder_sha256),
            dataset_fingerprint=np.str_(self.dataset_fingerprint),
            cache_version=np.int64(CACHE_VERSION),
        )
        os.replace(tmp, path)

    @classmethod
    def load_npz(cls, path: str | Path) -> EmbeddedEpisodes:
        """Read a file written by `save_npz` (allow_pickle=False). Raises ValueError on a bad file."""
        with np.load(path, allow_pickle=False) as z:
            if int(z["cache_version"]) != CACHE_VERSION:
                raise ValueError(f"{path}: cache version {int(z['cache_version'])} != {CACHE_VERSION}")
            return cls(
                embedding=z["embedding"],
                state=z["state"],
                action=z["action"],
                episode_index=z["episode_index"],
                frame_index=z["frame_index"],
                task=z["task"],
                fps=float(z["fps"]),
                encoder_sha256=str(z["encoder_sha256"]),
                dataset_fingerprint=str(z["dataset_fingerprint"]),
            )


def _check_episode_layout(episode_index: np.ndarray, frame_index: np.ndarray) -> None:
    """Each episode must be one contiguous block of rows with frame_index 0, 1, ..., len-1."""
    if len(episode_index) == 0:
        raise ValueError("no frames")
    change = np.flatnonzero(np.diff(episode_index)) + 1
    starts = np.concatenate([[0], change])
    if len(np.unique(episode_index[starts])) != len(starts):
        raise ValueError("episodes are not contiguous blocks of rows")
    ends = np.concatenate([change, [len(episode_index)]])
    expected = np.concatenate([np.arange(e - s) for s, e in zip(starts, ends)])
    if not np.array_equal(frame_index, expected):
        raise ValueError("frame_index must run 0..len-1 inside each episode (missing or reordered frames)")


def dataset_fingerprint(dataset_root: str | Path) -> str:
    """sha256 over the relative paths and bytes of every file under meta/, data/ and videos/.

    Changes whenever an episode is added, removed or re-recorded. Raises FileNotFoundError when
    `dataset_root/meta/info.json` is missing (not a LeRobotDataset).
    """
    root = Path(dataset_root)
    if not (root / "meta" / "info.json").is_file():
        raise FileNotFoundError(f"{root}: no meta/info.json, not a LeRobotDataset v3 root")
    h = hashlib.sha256()
    for sub in _FINGERPRINT_DIRS:
        for path in sorted(p for p in (root / sub).rglob("*") if p.is_file()):
            rel = path.relative_to(root).as_posix().encode()
            h.update(len(rel).to_bytes(8, "little") + rel)
            h.update(path.stat().st_size.to_bytes(8, "little"))
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()


def cache_path(cache_dir: str | Path, encoder_sha256: str, fingerprint: str) -> Path:
    """`<cache_dir>/emb_<encoder sha[:16]>_<dataset fingerprint[:16]>.npz`."""
    return Path(cache_dir) / f"emb_{encoder_sha256[:16]}_{fingerprint[:16]}.npz"


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/dynaflip_ros/embeddings` (default `~/.cache/dynaflip_ros/embeddings`)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dynaflip_ros" / "embeddings"


def compute_embeddings(
    dataset_root: str | Path,
    encoder_backend,
    batch_size: int = 32,
    cache_dir: str | Path | None = None,
    image_key: str = schema.IMAGE_KEY,
    progress: bool = True,
) -> EmbeddedEpisodes:
    """Embed every frame of the LeRobotDataset v3 at `dataset_root` with a frozen encoder.

    encoder_backend: any `inference.base.EncoderBackend` (`embed(uint8 (B,H,W,3)) -> float32 (B,D)`,
    `.manifest.weights_sha256`, `.manifest.embedding_dim`). Images are read as stored (uint8 RGB)
    and passed to `embed` in batches of `batch_size` (tqdm bar). With `cache_dir` (None: no cache),
    a cache file keyed by the encoder sha256 + `dataset_fingerprint` is loaded when present and
    written otherwise.

    Returns EmbeddedEpisodes (rows ordered by episode, then frame). Raises FileNotFoundError (no
    dataset), ValueError (missing keys, non-contiguous episodes, wrong embedding shape/dtype or
    non-finite embeddings from the backend).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    manifest = encoder_backend.manifest
    fingerprint = dataset_fingerprint(dataset_root)
    cached = cache_path(cache_dir, manifest.weights_sha256, fingerprint) if cache_dir is not None else None
    if cached is not None and cached.is_file():
        emb = EmbeddedEpisodes.load_npz(cached)
        if emb.encoder_sha256 == manifest.weights_sha256 and emb.dataset_fingerprint == fingerprint:
            return emb

    from dynaflip_ros._compat import torchvision_shim

    torchvision_shim.apply()
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    from tqdm import tqdm

    root = Path(dataset_root)
    ds = LeRobotDataset(repo_id=f"local/{root.name}", root=root)
    for key in (image_key, schema.STATE_KEY, schema.ACTION_KEY):
        if key not in ds.features:
            raise ValueError(f"{root}: dataset has no feature {key!r} (features: {sorted(ds.features)})")
    if ds.hf_dataset is None:  # lazily loaded in some LeRobot versions
        ds._ensure_hf_dataset_loaded()
    columns = [schema.STATE_KEY, schema.ACTION_KEY, "episode_index", "frame_index", "index", "task_index"]
    table = ds.hf_dataset.select_columns(columns).with_format("numpy")[:]
    order = np.argsort(table["index"], kind="stable")  # rows by absolute index
    state = np.asarray(table[schema.STATE_KEY], np.float32)[order]  # (N, 7)
    action = np.asarray(table[schema.ACTION_KEY], np.float32)[order]  # (N, 7)
    episode_index = np.asarray(table["episode_index"], np.int64)[order]
    frame_index = np.asarray(table["frame_index"], np.int64)[order]
    task_names = [str(name) for name in ds.meta.tasks.index]
    task = np.asarray([task_names[i] for i in np.asarray(table["task_index"])[order]], dtype=str)
    _check_episode_layout(episode_index, frame_index)

    n = len(order)
    dim = int(manifest.embedding_dim)
    embedding = np.empty((n, dim), np.float32)  # (N, D)
    is_video = image_key in ds.meta.video_keys
    images_view = None if is_video else ds.hf_dataset.select_columns([image_key]).with_format("numpy")
    with tqdm(total=n, desc="embedding frames", unit="frame", disable=not progress) as bar:
        for start in range(0, n, batch_size):
            rows = order[start : start + batch_size]
            if is_video:  # decoded float [0, 1] (3, H, W) per frame -> uint8 (B, H, W, 3)
                frames = [ds[int(r)][image_key].numpy() for r in rows]
                images = np.stack([np.round(f.transpose(1, 2, 0) * 255.0) for f in frames]).astype(np.uint8)
            else:
                images = np.asarray(images_view[rows.tolist()][image_key])  # (B, H, W, 3) uint8
            if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
                raise ValueError(f"{image_key}: expected uint8 (B, H, W, 3) RGB, got {images.dtype} {images.shape}")
            out = np.asarray(encoder_backend.embed(images))
            if out.shape != (len(rows), dim):
                raise ValueError(f"encoder returned {out.shape}, expected ({len(rows)}, {dim}) per the manifest")
            if not np.all(np.isfinite(out)):
                raise ValueError(f"encoder returned NaN/inf embeddings for rows {rows[0]}..{rows[-1]}")
            embedding[start : start + len(rows)] = out
            bar.update(len(rows))

    result = EmbeddedEpisodes(
        embedding=embedding,
        state=state,
        action=action,
        episode_index=episode_index,
        frame_index=frame_index,
        task=task,
        fps=float(ds.fps),
        encoder_sha256=manifest.weights_sha256,
        dataset_fingerprint=fingerprint,
    )
    if cached is not None:
        result.save_npz(cached)
    return result
