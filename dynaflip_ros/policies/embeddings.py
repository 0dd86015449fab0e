"""Precompute frozen-encoder embeddings f(o_t) for every frame of a recorded LeRobotDataset v3.

The policy never sees images: it is trained on (embedding, instruction, state) -> action chunks,
so the embeddings are computed once per (encoder, dataset) pair and cached as an `.npz`
(`allow_pickle=False`) keyed by the encoder (`encoder_cache_key`: weights, input size and
architecture) and a content fingerprint of the dataset files. Dataset layout: `dynaflip_ros.data.schema` (LeRobotDataset v3.0).

Instructions: each episode's paraphrases are the recorded task string followed by the
recorder's `extra["instruction_paraphrases"]` (`data.dataset_io.read_episode_records`; only the
task string when absent), de-duplicated; training draws one per sample. Every distinct string is
embedded once by the frozen text encoder (`policies.language`); the cache file carries the
strings, the episode -> paraphrase table and, when computed, their embeddings with the text
encoder's sha256 (recomputed, text part only, for another text encoder).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dynaflip_ros.data import schema

CACHE_VERSION = 2
_FINGERPRINT_DIRS = ("meta", "data", "videos")


@dataclass(frozen=True)
class EmbeddedEpisodes:
    """Per-frame arrays of a dataset, ordered by (episode, frame); N = total frames.

    embedding: (N, D) float32 f(o_t); state: (N, 7) float32 joint positions (rad) + gripper;
    action: (N, 7) float32 joint targets (rad) + gripper command; episode_index: (N,) int64;
    frame_index: (N,) int64 (0..len-1 inside each episode); task: (N,) str;
    fps: recording rate (Hz); encoder_sha256 / dataset_fingerprint: the cache key.
    Instructions (None: each episode's task string, derived from `task`): instruction_texts (U,)
    str, the distinct strings; paraphrase_episode / paraphrase_text (P,) int64, one row per
    (episode, paraphrase) pair (index into instruction_texts), every episode with at least one;
    instruction_embedding (U, T) float32 or None (not embedded yet), by the text encoder whose
    weights sha256 is text_encoder_sha256 ("" when none). target_centre: (N, 3) float32 centre of
    the instructed object (m, camera frame, NaN where unknown; `policies.train.
    with_target_centres`) for the token readout's auxiliary loss, or None; read from the point tracks,
    not cached. demonstrated: (N,) bool, False on context-only frames (before a recorded
    episode's `demonstration_start_frame`: a deliberately missed grasp, `policies.train.
    with_demonstration_marks`), which are never training anchors; None = every frame; not cached.
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
    instruction_texts: np.ndarray | None = None
    paraphrase_episode: np.ndarray | None = None
    paraphrase_text: np.ndarray | None = None
    instruction_embedding: np.ndarray | None = None
    text_encoder_sha256: str = ""
    target_centre: np.ndarray | None = None
    demonstrated: np.ndarray | None = None

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
        tc = self.target_centre
        if tc is not None and (tc.shape != (n, 3) or tc.dtype != np.float32):
            raise ValueError(f"target_centre must be float32 ({n}, 3), got {tc.dtype} {tc.shape}")
        dm = self.demonstrated
        if dm is not None and (dm.shape != (n,) or dm.dtype != np.bool_):
            raise ValueError(f"demonstrated must be bool ({n},), got {dm.dtype} {dm.shape}")
        if self.instruction_texts is None:  # each episode's task string
            starts = self.episode_bounds()[0]
            texts, table = _paraphrase_table(
                self.episode_index[starts], [[str(self.task[s])] for s in starts]
            )
            object.__setattr__(self, "instruction_texts", texts)
            object.__setattr__(self, "paraphrase_episode", table[0])
            object.__setattr__(self, "paraphrase_text", table[1])
        self._check_instructions()

    def _check_instructions(self) -> None:
        texts, pe, pt = self.instruction_texts, self.paraphrase_episode, self.paraphrase_text
        if texts.ndim != 1 or pe is None or pt is None or pe.shape != pt.shape or pe.ndim != 1:
            raise ValueError("instruction_texts (U,) and paraphrase_episode / paraphrase_text (P,) must be given together")
        if len(pt) and (pt.min() < 0 or pt.max() >= len(texts)):
            raise ValueError("paraphrase_text indexes outside instruction_texts")
        missing = np.setdiff1d(np.unique(self.episode_index), pe)
        if len(missing):
            raise ValueError(f"episodes {missing[:8].tolist()} have no instruction")
        emb = self.instruction_embedding
        if emb is not None and (emb.ndim != 2 or len(emb) != len(texts) or emb.dtype != np.float32):
            raise ValueError(f"instruction_embedding must be float32 ({len(texts)}, T), got {emb.dtype} {emb.shape}")
        if emb is not None and not np.all(np.isfinite(emb)):
            raise ValueError("instruction_embedding contains NaN or inf")

    @property
    def embedding_dim(self) -> int:
        return int(self.embedding.shape[1])

    def paraphrases(self, episode_id: int) -> list[str]:
        """The instructions of one episode (the recorded task string first)."""
        return [str(self.instruction_texts[i]) for i in self.paraphrase_text[self.paraphrase_episode == episode_id]]

    def with_instruction_embeddings(self, text_encoder) -> EmbeddedEpisodes:
        """A copy whose instruction_embedding is text_encoder's (policies.language), every distinct
        string embedded once."""
        from dynaflip_ros.policies.language import embed_texts

        return dataclasses.replace(
            self,
            instruction_embedding=embed_texts(text_encoder, [str(t) for t in self.instruction_texts]),
            text_encoder_sha256=str(text_encoder.weights_sha256),
        )

    def episode_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Row ranges [start, end) of each episode: (starts (E,), ends (E,)) int64."""
        change = np.flatnonzero(np.diff(self.episode_index)) + 1
        starts = np.concatenate([[0], change]).astype(np.int64)
        ends = np.concatenate([change, [len(self.episode_index)]]).astype(np.int64)
        return starts, ends

    def select_episodes(self, episode_ids: np.ndarray) -> EmbeddedEpisodes:
        """Rows of the given episode ids (in dataset order)."""
        mask = np.isin(self.episode_index, np.asarray(episode_ids))
        pairs = np.isin(self.paraphrase_episode, np.asarray(episode_ids))
        return dataclasses.replace(  # the string table stays whole (paraphrase_text indexes it)
            self,
            embedding=self.embedding[mask],
            state=self.state[mask],
            action=self.action[mask],
            episode_index=self.episode_index[mask],
            frame_index=self.frame_index[mask],
            task=self.task[mask],
            paraphrase_episode=self.paraphrase_episode[pairs],
            paraphrase_text=self.paraphrase_text[pairs],
            target_centre=None if self.target_centre is None else self.target_centre[mask],
            demonstrated=None if self.demonstrated is None else self.demonstrated[mask],
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
            instruction_texts=self.instruction_texts.astype(str),
            paraphrase_episode=self.paraphrase_episode.astype(np.int64),
            paraphrase_text=self.paraphrase_text.astype(np.int64),
            text_encoder_sha256=np.str_(self.text_encoder_sha256),
            cache_version=np.int64(CACHE_VERSION),
            **({} if self.instruction_embedding is None else {"instruction_embedding": self.instruction_embedding}),
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
                instruction_texts=z["instruction_texts"],
                paraphrase_episode=z["paraphrase_episode"],
                paraphrase_text=z["paraphrase_text"],
                instruction_embedding=z["instruction_embedding"] if "instruction_embedding" in z.files else None,
                text_encoder_sha256=str(z["text_encoder_sha256"]),
            )


def _paraphrase_table(episode_ids, paraphrases: list[list[str]]) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Per-episode string lists -> (distinct strings (U,) in first-seen order, (episode (P,),
    string index (P,))), duplicates inside an episode dropped."""
    index: dict[str, int] = {}
    pe, pt = [], []
    for ep, strings in zip(np.asarray(episode_ids).tolist(), paraphrases):
        for text in dict.fromkeys(strings):
            pe.append(ep)
            pt.append(index.setdefault(text, len(index)))
    return np.asarray(list(index), dtype=str), (np.asarray(pe, np.int64), np.asarray(pt, np.int64))


def episode_paraphrases(records: list[dict], episode_ids, tasks) -> list[list[str]]:
    """Each episode's instructions: its task string, then the recorder's
    `extra["instruction_paraphrases"]` (side records, `data.dataset_io.read_episode_records`)
    when present. Raises ValueError on a malformed paraphrase list."""
    by_episode = {int(r["episode_index"]): r for r in records if isinstance(r, dict) and "episode_index" in r}
    out = []
    for ep, task in zip(np.asarray(episode_ids).tolist(), tasks):
        extra = (by_episode.get(int(ep)) or {}).get("extra") or {}
        paras = extra.get("instruction_paraphrases") or []
        if not isinstance(paras, list) or not all(isinstance(p, str) and p.strip() for p in paras):
            raise ValueError(f"episode {ep}: extra.instruction_paraphrases must be a list of non-empty strings")
        out.append([str(task), *paras])
    return out


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


def column_stats(array: np.ndarray, rows: np.ndarray | None = None, chunk_rows: int = 4096) -> dict[str, np.ndarray]:
    """Per-column min, max, mean and (population) std of array[rows] (M, D) (all rows when None),
    float32 (D,) each, accumulated in float64 over chunks of rows: no copy of a large array (an
    embedding with patch tokens is gigabytes) is made. The same quantities as LeRobot's
    `compute_stats.get_feature_stats(..., axis=0)` min / max / mean / std. Raises ValueError on an
    empty selection or an array that is not 2-D."""
    array = np.asarray(array)
    if array.ndim != 2:
        raise ValueError(f"column_stats needs (M, D), got {array.shape}")
    rows = np.arange(len(array)) if rows is None else np.asarray(rows)
    if len(rows) == 0:
        raise ValueError("column_stats of no rows")
    d = array.shape[1]
    total, total_sq = np.zeros(d), np.zeros(d)
    lo, hi = np.full(d, np.inf), np.full(d, -np.inf)
    for i in range(0, len(rows), chunk_rows):
        part = array[rows[i : i + chunk_rows]].astype(np.float64)
        total += part.sum(0)
        total_sq += (part * part).sum(0)
        lo, hi = np.minimum(lo, part.min(0)), np.maximum(hi, part.max(0))
    mean = total / len(rows)
    std = np.sqrt(np.maximum(total_sq / len(rows) - mean * mean, 0.0))
    return {k: v.astype(np.float32) for k, v in (("min", lo), ("max", hi), ("mean", mean), ("std", std))}


def encoder_cache_key(manifest) -> str:
    """16 hex digits naming what an encoder computes: its weights sha256 together with the
    preprocessing and architecture its manifest records (input_hw, mean, std, output width and
    model config). The same weights exported at another input size, or with patch tokens from
    another stage (`configs.encoder.EncoderModelConfig.token_stages`), give other embeddings and
    so another key. manifest: `encoder.manifest.EncoderManifest`."""
    import json

    model = (getattr(manifest, "config", None) or {}).get("model", {})
    ident = {"weights_sha256": manifest.weights_sha256, "input_hw": [int(v) for v in manifest.input_hw],
             "mean": [float(v) for v in manifest.mean], "std": [float(v) for v in manifest.std],
             "embedding_dim": int(manifest.embedding_dim), "model": model}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def cache_path(cache_dir: str | Path, manifest, fingerprint: str) -> Path:
    """`<cache_dir>/emb_<encoder_cache_key(manifest)>_<dataset fingerprint[:16]>_d<D>.npz`."""
    return Path(cache_dir) / f"emb_{encoder_cache_key(manifest)}_{fingerprint[:16]}_d{int(manifest.embedding_dim)}.npz"


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/dynaflip_ros/embeddings` (default `~/.cache/dynaflip_ros/embeddings`)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dynaflip_ros" / "embeddings"


def _read_table(dataset_root: str | Path, required: tuple[str, ...]):
    """Open the LeRobotDataset v3 at `dataset_root` and read everything of `EmbeddedEpisodes` but
    the row embeddings. Returns (dataset, order (N,) row indices by absolute index, fields: the
    EmbeddedEpisodes keyword arguments state, action, episode_index, frame_index, task, fps,
    instruction_texts, paraphrase_episode, paraphrase_text). Raises ValueError when a `required`
    feature is missing, a frame names a task the dataset does not list, or episodes are not
    contiguous."""
    from dynaflip_ros._compat import torchvision_shim

    torchvision_shim.apply()
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    root = Path(dataset_root)
    ds = LeRobotDataset(repo_id=f"local/{root.name}", root=root)
    for key in required:
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
    task_index = np.asarray(table["task_index"], np.int64)[order]
    if len(task_index) and (task_index.min() < 0 or task_index.max() >= len(task_names)):
        raise ValueError(f"{root}: frames name task {int(task_index.max())} but meta/tasks.parquet lists "
                         f"{len(task_names)} tasks (is a recording still writing this dataset? embed it "
                         f"once the recorder has finished, or a copy of it)")
    task = np.asarray([task_names[i] for i in task_index], dtype=str)
    _check_episode_layout(episode_index, frame_index)
    from dynaflip_ros.data.dataset_io import read_episode_records

    starts = np.concatenate([[0], np.flatnonzero(np.diff(episode_index)) + 1])
    texts, (para_ep, para_text) = _paraphrase_table(
        episode_index[starts], episode_paraphrases(read_episode_records(root), episode_index[starts], task[starts])
    )

    fields = dict(state=state, action=action, episode_index=episode_index, frame_index=frame_index, task=task,
                  fps=float(ds.fps), instruction_texts=texts, paraphrase_episode=para_ep, paraphrase_text=para_text)
    return ds, order, fields


def episodes_with_embedding(dataset_root: str | Path, embedding: np.ndarray, encoder_sha256: str,
                            text_encoder=None) -> EmbeddedEpisodes:
    """EmbeddedEpisodes of the dataset at `dataset_root` whose row embeddings the caller computed
    (N, D) float32, rows ordered by (episode, frame), e.g. features that are not a function of the
    image (`eval.privileged`); no image is read and nothing is cached. encoder_sha256 names the
    feature source. Raises ValueError as `compute_embeddings` does, and when `embedding` does not
    have one finite row per frame."""
    fingerprint = dataset_fingerprint(dataset_root)
    _, _, table = _read_table(dataset_root, required=(schema.STATE_KEY, schema.ACTION_KEY))
    embedding = np.asarray(embedding, np.float32)
    if embedding.ndim != 2 or len(embedding) != len(table["state"]) or not np.all(np.isfinite(embedding)):
        raise ValueError(f"embedding must be ({len(table['state'])}, D) finite, got {embedding.shape}")
    return _with_text(EmbeddedEpisodes(embedding=embedding, encoder_sha256=encoder_sha256,
                                       dataset_fingerprint=fingerprint, **table), text_encoder, None)


def compute_embeddings(
    dataset_root: str | Path,
    encoder_backend,
    batch_size: int = 32,
    cache_dir: str | Path | None = None,
    image_key: str = schema.IMAGE_KEY,
    progress: bool = True,
    text_encoder=None,
) -> EmbeddedEpisodes:
    """Embed every frame of the LeRobotDataset v3 at `dataset_root` with a frozen encoder.

    encoder_backend: any `inference.base.EncoderBackend` (`embed(uint8 (B,H,W,3)) -> float32 (B,D)`,
    `.manifest.weights_sha256`, `.manifest.embedding_dim`). Images are read as stored (uint8 RGB)
    and passed to `embed` in batches of `batch_size` (tqdm bar). With `cache_dir` (None: no cache),
    a cache file keyed by `encoder_cache_key` + `dataset_fingerprint` is loaded when present and
    written otherwise. With `text_encoder` (policies.language), the episodes' instructions are
    embedded too (once per distinct string; a cached file of another text encoder gets its text
    part recomputed and rewritten).

    Returns EmbeddedEpisodes (rows ordered by episode, then frame). Raises FileNotFoundError (no
    dataset), ValueError (missing keys, non-contiguous episodes, wrong embedding shape/dtype or
    non-finite embeddings from the backend).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    manifest = encoder_backend.manifest
    fingerprint = dataset_fingerprint(dataset_root)
    dim = int(manifest.embedding_dim)
    cached = cache_path(cache_dir, manifest, fingerprint) if cache_dir is not None else None
    if cached is not None and cached.is_file():
        try:
            emb = EmbeddedEpisodes.load_npz(cached)
        except (ValueError, KeyError, OSError):  # an older cache version or a damaged file: recompute
            emb = None
        if (emb is not None and emb.encoder_sha256 == manifest.weights_sha256 and emb.dataset_fingerprint == fingerprint
                and emb.embedding_dim == dim):
            return _with_text(emb, text_encoder, cached)

    from tqdm import tqdm

    ds, order, table = _read_table(dataset_root, required=(image_key, schema.STATE_KEY, schema.ACTION_KEY))

    n = len(order)
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

    result = EmbeddedEpisodes(embedding=embedding, encoder_sha256=manifest.weights_sha256,
                              dataset_fingerprint=fingerprint, **table)
    if cached is not None:
        result.save_npz(cached)
    return _with_text(result, text_encoder, cached)


def _with_text(emb: EmbeddedEpisodes, text_encoder, cached: Path | None) -> EmbeddedEpisodes:
    """`emb` with the instruction embeddings of `text_encoder` (as is when None or already there)."""
    if text_encoder is None:
        return emb
    if emb.instruction_embedding is not None and emb.text_encoder_sha256 == text_encoder.weights_sha256:
        return emb
    emb = emb.with_instruction_embeddings(text_encoder)
    if cached is not None:
        emb.save_npz(cached)
    return emb
