"""Crash-safe storage of recorded episodes in a local LeRobotDataset v3.0 (lerobot 0.4.4).

How lerobot 0.4.4 writes (read from `lerobot/datasets/lerobot_dataset.py`):
- `LeRobotDataset.add_frame` keeps the non-image values in RAM and writes each image as a PNG
  under `<root>/images/<key>/episode-XXXXXX/` (temporary; deleted after `save_episode`).
- `save_episode` appends the episode's rows (PNG bytes embedded) to a `pq.ParquetWriter` that it
  keeps OPEN across episodes (`data/chunk-XXX/file-XXX.parquet`); episode metadata rows are
  buffered in RAM (`metadata_buffer_size`, default 10) and then appended to a second open writer
  (`meta/episodes/chunk-XXX/file-XXX.parquet`). `meta/info.json`, `meta/stats.json` (and
  `meta/tasks.parquet` when a task is new) are rewritten in place, non-atomically, after every
  episode. A parquet file has no footer until its writer is closed, which only `finalize()` does:
  a SIGKILL before `finalize()` therefore leaves unreadable parquet files and an info.json that
  counts episodes whose metadata was never written -- every episode of the session is lost.
- Calling `finalize()` and then `save_episode` again on the same object OVERWRITES the data and
  episode-metadata files it just closed (the next writer is opened on the same path).

What we do (`EpisodeRecorder` + this module):
- After every episode: `save_episode()` then `finalize()` (footers written), then mark the
  writer so the next episode starts new files (`start_new_files`). Each episode therefore lives
  in its own closed `data/...parquet` + `meta/episodes/...parquet` pair.
- A commit record `meta/dynaflip_commit.json`, replaced atomically (write temp, fsync, rename)
  after the episode's files are fsynced, is the single source of truth: it lists the committed
  parquet files and holds the matching info.json, stats.json and task list.
- `recover(root)` rolls the directory back to the commit record: it deletes parquet files that
  the record does not list (the episode being saved when the process died), restores info.json,
  stats.json and tasks.parquet from the record, removes the temporary `images/` folder and drops
  side-file records of uncommitted episodes. A SIGKILL at any instant thus loses at most the
  episode in progress.

Per-episode extra metadata (seed, object, success, source, demonstrator, ...) that lerobot's
fixed episode schema cannot hold lives in `meta/dynaflip_episodes.jsonl` (one JSON object per
committed episode, keyed by `episode_index`).
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dynaflip_ros.errors import UserError

DEFAULT_REPO_ID = "local/pick_into_sink"
LEROBOT_VERSION = "0.4.4"  # the writer internals this module relies on were read in this version
COMMIT_PATH = "meta/dynaflip_commit.json"
EPISODES_SIDE_PATH = "meta/dynaflip_episodes.jsonl"
COMMIT_FORMAT = "dynaflip-commit-v1"
_TMP_SUFFIX = ".dynaflip-tmp"
# Everything a lerobot image-mode dataset (plus our side files) keeps under its root.
_DATASET_ENTRIES = frozenset({"data", "meta", "images"})


class DatasetCorruptError(RuntimeError, UserError):
    """The dataset on disk is damaged beyond what crash recovery can repair (message says why)."""


class DatasetBusyError(RuntimeError, UserError):
    """Another live process (or recorder) is writing to this dataset."""


class WriterLock:
    """Exclusive advisory lock of a dataset directory (`flock` on the directory itself).

    Held by `EpisodeRecorder` for its lifetime and taken briefly by `recover`, so that recovery
    never deletes the files of an episode another live process is saving. The kernel releases
    it when the holder dies (SIGKILL included). Raises DatasetBusyError when already held,
    FileNotFoundError when `root` does not exist.
    """

    def __init__(self, root: str | Path) -> None:
        import fcntl

        self.root = Path(root)
        self._fd: int | None = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            self._fd = None
            raise DatasetBusyError(
                f"{self.root} is being written by another recorder (one writer at a time; "
                "close it or wait for it to finish)"
            ) from None

    def release(self) -> None:
        """Release the lock; idempotent."""
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor releases the flock
            self._fd = None

    def __enter__(self) -> "WriterLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


def import_lerobot():
    """Import lerobot's dataset module offline and return it (`lerobot.datasets.lerobot_dataset`).

    Applies the torchvision shim first (docs/environment.md gotcha 1) and defaults HF_HUB_OFFLINE /
    HF_DATASETS_OFFLINE to 1 so that any accidental hub access fails at once instead of hanging.
    Raises ImportError when lerobot is missing or its version is not LEROBOT_VERSION (the
    crash-safety logic depends on that version's writer internals).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from dynaflip_ros._compat import torchvision_shim

    torchvision_shim.apply()
    import lerobot
    from lerobot.datasets import lerobot_dataset

    version = getattr(lerobot, "__version__", "unknown")
    if version != LEROBOT_VERSION:
        raise ImportError(
            f"dynaflip_ros.data needs lerobot=={LEROBOT_VERSION} (its crash-safe writer relies on that "
            f"version's internals); found {version}. Install it with "
            f"`pip install --no-deps lerobot=={LEROBOT_VERSION}`."
        )
    return lerobot_dataset


# ---------------------------------------------------------------------------- atomic file helpers
def fsync_file(path: Path) -> None:
    """Flush one file's (or directory's entries') data to disk (power-loss durability; SIGKILL
    alone keeps the page cache)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old or the new content, never a mix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + _TMP_SUFFIX)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_file(path.parent)


def atomic_write_json(path: Path, obj: Any, indent: int | None = 4) -> None:
    """`atomic_write_bytes` of `json.dumps(obj)` (UTF-8, lerobot's indent of 4 by default)."""
    atomic_write_bytes(path, json.dumps(obj, indent=indent, ensure_ascii=False).encode("utf-8"))


def _write_tasks_parquet(root: Path, tasks: list[str]) -> None:
    """Write `meta/tasks.parquet` as lerobot does (index = task string, column task_index)."""
    import io

    import pandas as pd

    df = pd.DataFrame({"task_index": list(range(len(tasks)))}, index=list(tasks))
    buf = io.BytesIO()
    df.to_parquet(buf)
    atomic_write_bytes(root / "meta" / "tasks.parquet", buf.getvalue())


# --------------------------------------------------------------------------------- commit record
@dataclass
class CommitRecord:
    """The committed state of a dataset (contents of `meta/dynaflip_commit.json`).

    Attributes:
        total_episodes: committed episodes (episode indices 0 .. total_episodes-1).
        total_frames: committed frames.
        files: committed parquet files, paths relative to the dataset root (posix).
        info: the `meta/info.json` matching this state.
        stats: the `meta/stats.json` matching this state (None before the first episode).
        tasks: task strings ordered by task_index (`meta/tasks.parquet`).
    """

    total_episodes: int
    total_frames: int
    files: list[str]
    info: dict
    stats: dict | None
    tasks: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "format": COMMIT_FORMAT,
            "lerobot_version": LEROBOT_VERSION,
            "total_episodes": self.total_episodes,
            "total_frames": self.total_frames,
            "files": sorted(self.files),
            "tasks": list(self.tasks),
            "info": self.info,
            "stats": self.stats,
        }

    @classmethod
    def from_json(cls, obj: dict, where: str) -> "CommitRecord":
        if obj.get("format") != COMMIT_FORMAT:
            raise DatasetCorruptError(f"{where}: unknown commit format {obj.get('format')!r}")
        try:
            return cls(
                total_episodes=int(obj["total_episodes"]),
                total_frames=int(obj["total_frames"]),
                files=[str(p) for p in obj["files"]],
                info=dict(obj["info"]),
                stats=obj["stats"],
                tasks=[str(t) for t in obj["tasks"]],
            )
        except (KeyError, TypeError, ValueError) as e:
            raise DatasetCorruptError(f"{where}: malformed commit record ({e})") from e


def read_commit(root: str | Path) -> CommitRecord | None:
    """The dataset's commit record, or None when it has none. Raises DatasetCorruptError if unreadable.

    The record is only ever replaced atomically, so an unreadable one means outside damage.
    """
    path = Path(root) / COMMIT_PATH
    if not path.exists():
        return None
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise DatasetCorruptError(f"{path}: unreadable commit record ({e})") from e
    return CommitRecord.from_json(obj, str(path))


def write_commit(root: str | Path, record: CommitRecord) -> None:
    """Atomically replace the commit record: the commit point of an episode."""
    atomic_write_json(Path(root) / COMMIT_PATH, record.to_json(), indent=None)


def list_parquet_files(root: str | Path) -> list[str]:
    """Parquet files of the data and episode-metadata tables, relative posix paths, sorted."""
    root = Path(root)
    out = []
    for sub in ("data", "meta/episodes"):
        base = root / sub
        if base.is_dir():
            out += [p.relative_to(root).as_posix() for p in base.glob("*/*.parquet")]
    return sorted(out)


def committed_data_files(root: str | Path) -> list[Path]:
    """The committed `data/*/*.parquet` files of the dataset (absolute paths, sorted).

    For readers that open the parquet files directly (not through LeRobotDataset): files of an
    episode that was being saved when its recorder died are not listed. Without a commit record
    (a dataset written by plain lerobot) every data file is returned. Raises DatasetCorruptError
    when the commit record is unreadable.
    """
    root = Path(root)
    commit = read_commit(root)
    rels = commit.files if commit is not None else list_parquet_files(root)
    return [root / rel for rel in sorted(rels) if rel.startswith("data/")]


def parquet_is_complete(path: str | Path) -> bool:
    """True when the parquet file has a readable footer (its writer was closed)."""
    import pyarrow.parquet as pq

    try:
        pq.read_metadata(path)
        return True
    except Exception:  # pyarrow raises ArrowInvalid / OSError for a torn or empty file
        return False


def snapshot_commit(root: str | Path, tasks: list[str]) -> CommitRecord:
    """Build the commit record of the dataset as it is on disk now (all writers closed).

    Raises DatasetCorruptError when a listed parquet file has no footer.
    """
    root = Path(root)
    files = list_parquet_files(root)
    for rel in files:
        if not parquet_is_complete(root / rel):
            raise DatasetCorruptError(f"{root / rel}: parquet file has no footer; cannot commit")
    info = json.loads((root / "meta" / "info.json").read_text(encoding="utf-8"))
    stats_path = root / "meta" / "stats.json"
    stats = json.loads(stats_path.read_text(encoding="utf-8")) if stats_path.exists() else None
    return CommitRecord(
        total_episodes=int(info["total_episodes"]),
        total_frames=int(info["total_frames"]),
        files=files,
        info=info,
        stats=stats,
        tasks=list(tasks),
    )


# ---------------------------------------------------------------------------------- side records
def append_episode_record(root: str | Path, record: dict) -> None:
    """Append one episode's extra metadata to `meta/dynaflip_episodes.jsonl` (flushed + fsynced).

    `record` must hold an int `episode_index` and be JSON-serialisable (TypeError otherwise).
    """
    if not isinstance(record.get("episode_index"), int):
        raise TypeError(f"episode record needs an int 'episode_index', got {record.get('episode_index')!r}")
    line = json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n"
    path = Path(root) / EPISODES_SIDE_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def _parse_side_records(path: Path) -> tuple[dict[int, dict], int]:
    """Records by episode_index (last one wins) and the number of unparsable lines."""
    records: dict[int, dict] = {}
    bad = 0
    if not path.exists():
        return records, bad
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            idx = rec["episode_index"]
            if not isinstance(idx, int):
                raise TypeError
        except (json.JSONDecodeError, KeyError, TypeError):
            bad += 1
            continue
        records[idx] = rec
    return records, bad


def read_episode_records(root: str | Path) -> list[dict]:
    """Extra metadata of the committed episodes, sorted by `episode_index`.

    Each dict holds at least: episode_index, task, length, success, source, demonstrator, seed,
    object_name, plus what the recorder was given in `extra`. Records of episodes beyond the
    commit record (a crash between the side-file append and the commit) are ignored.
    """
    root = Path(root)
    commit = read_commit(root)
    limit = commit.total_episodes if commit is not None else None
    records, _ = _parse_side_records(root / EPISODES_SIDE_PATH)
    return [records[i] for i in sorted(records) if limit is None or i < limit]


# -------------------------------------------------------------------------------------- recovery
@dataclass
class RecoveryReport:
    """What `recover` did.

    Attributes:
        committed_episodes: episodes in the dataset after recovery.
        committed_frames: frames in the dataset after recovery.
        removed_files: uncommitted parquet files deleted (relative paths).
        removed_temp_images: the temporary `images/` folder of an unfinished episode was deleted.
        dropped_side_records: side-file lines dropped (uncommitted episodes or torn lines).
        restored_meta: info.json, stats.json or tasks.parquet was rolled back to the commit record.
        adopted: the dataset had no commit record (written by plain lerobot) and one was created.
    """

    committed_episodes: int
    committed_frames: int
    removed_files: list[str] = field(default_factory=list)
    removed_temp_images: bool = False
    dropped_side_records: int = 0
    restored_meta: bool = False
    adopted: bool = False

    @property
    def changed(self) -> bool:
        return bool(
            self.removed_files
            or self.removed_temp_images
            or self.dropped_side_records
            or self.restored_meta
            or self.adopted
        )


def is_dataset_dir(root: str | Path) -> bool:
    """True when `root` holds a LeRobotDataset (a `meta/info.json`)."""
    return (Path(root) / "meta" / "info.json").exists()


def output_dir_problem(out: Path, resume: bool) -> str:
    """Why `out` cannot take a new recording ("" when it can): it already holds a dataset (or a
    commit record) and `resume` is False, or it holds other files and no dataset."""
    out = Path(out)
    if not resume and (is_dataset_dir(out) or (out / COMMIT_PATH).exists()):
        return f"{out} already holds a dataset; pass --resume to append to it"
    if foreign_entries(out) and not is_dataset_dir(out):
        return f"{out} is not empty and holds no dataset; choose another --out"
    return ""


def foreign_entries(root: str | Path) -> list[str]:
    """Entries directly under `root` that are not part of a dataset written by this module."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.name not in _DATASET_ENTRIES)


def remove_dataset_files(root: str | Path) -> None:
    """Delete the dataset's own folders (data/, meta/, images/) under `root`; nothing else."""
    root = Path(root)
    for name in sorted(_DATASET_ENTRIES):
        p = root / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def _read_json_or_none(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _read_tasks_or_none(root: Path) -> list[str] | None:
    import pandas as pd

    try:
        df = pd.read_parquet(root / "meta" / "tasks.parquet")
        return [str(t) for t in df.sort_values("task_index").index]
    except Exception:  # missing or torn file
        return None


def _restore_meta(root: Path, commit: CommitRecord) -> bool:
    """Make info.json / stats.json / tasks.parquet match the commit record; True if any changed."""
    changed = False
    info_path = root / "meta" / "info.json"
    if _read_json_or_none(info_path) != commit.info:
        atomic_write_json(info_path, commit.info)
        changed = True
    stats_path = root / "meta" / "stats.json"
    if commit.stats is not None:
        if _read_json_or_none(stats_path) != commit.stats:
            atomic_write_json(stats_path, commit.stats)
            changed = True
    elif stats_path.exists():
        stats_path.unlink()
        changed = True
    tasks_path = root / "meta" / "tasks.parquet"
    if commit.tasks:
        if _read_tasks_or_none(root) != commit.tasks:
            _write_tasks_parquet(root, commit.tasks)
            changed = True
    elif tasks_path.exists():
        tasks_path.unlink()
        changed = True
    return changed


def _adopt(root: Path) -> CommitRecord:
    """Create a commit record for a dataset written without one, after checking it is whole."""
    info = json.loads((root / "meta" / "info.json").read_text(encoding="utf-8"))
    files = list_parquet_files(root)
    broken = [f for f in files if not parquet_is_complete(root / f)]
    if broken:
        raise DatasetCorruptError(
            f"{root}: dataset without a dynaflip commit record has parquet files without a footer "
            f"{broken} (lerobot was killed before finalize()); its episodes cannot be recovered"
        )
    n_meta_rows = 0
    if int(info.get("total_episodes", 0)) > 0:
        import pyarrow.parquet as pq

        n_meta_rows = sum(
            pq.read_metadata(root / f).num_rows for f in files if f.startswith("meta/episodes/")
        )
        if n_meta_rows != int(info["total_episodes"]):
            raise DatasetCorruptError(
                f"{root}: info.json counts {info['total_episodes']} episodes but the episode "
                f"metadata holds {n_meta_rows} (lerobot was killed before finalize())"
            )
    tasks: list[str] = []
    if (root / "meta" / "tasks.parquet").exists():
        tasks = _read_tasks_or_none(root)
        if tasks is None:
            raise DatasetCorruptError(f"{root}: meta/tasks.parquet is unreadable")
    stats_path = root / "meta" / "stats.json"
    stats = json.loads(stats_path.read_text(encoding="utf-8")) if stats_path.exists() else None
    commit = CommitRecord(
        total_episodes=int(info.get("total_episodes", 0)),
        total_frames=int(info.get("total_frames", 0)),
        files=files,
        info=info,
        stats=stats,
        tasks=tasks,
    )
    write_commit(root, commit)
    return commit


def recover(root: str | Path, lock: bool = True) -> RecoveryReport:
    """Roll the dataset at `root` back to its last committed episode (idempotent).

    Deletes uncommitted parquet files, restores info.json / stats.json / tasks.parquet from the
    commit record, removes the temporary `images/` folder and drops side-file records of
    uncommitted episodes. A dataset without a commit record (written by plain lerobot) is
    adopted if it is whole. With `lock` (default) the dataset's WriterLock is taken for the
    duration (the recorder, which holds it already, passes False). Returns a RecoveryReport.

    Raises FileNotFoundError when `root` holds no dataset, DatasetBusyError when a live recorder
    holds the dataset, DatasetCorruptError when committed files are missing or damaged (outside
    damage, not a crash of the recorder).
    """
    root = Path(root)
    if lock:
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: no LeRobotDataset here (no such directory)")
        with WriterLock(root):
            return recover(root, lock=False)
    commit = read_commit(root)
    adopted = False
    if commit is None:
        if not is_dataset_dir(root):
            raise FileNotFoundError(f"{root}: no LeRobotDataset here (meta/info.json missing)")
        commit = _adopt(root)
        adopted = True
    report = RecoveryReport(commit.total_episodes, commit.total_frames, adopted=adopted)

    committed = set(commit.files)
    for rel in list_parquet_files(root):
        if rel not in committed:
            (root / rel).unlink()
            report.removed_files.append(rel)
    missing = [rel for rel in sorted(committed) if not (root / rel).exists()]
    broken = [rel for rel in sorted(committed) if rel not in missing and not parquet_is_complete(root / rel)]
    if missing or broken:
        raise DatasetCorruptError(
            f"{root}: committed parquet files are missing {missing} or damaged {broken}; "
            "this is outside damage (the recorder never rewrites committed files)"
        )
    for tmp in root.rglob("*" + _TMP_SUFFIX):
        tmp.unlink()
    report.restored_meta = _restore_meta(root, commit)

    images = root / "images"  # lerobot's temporary PNGs of an unfinished episode
    if images.exists():
        report.removed_temp_images = any(p.is_file() for p in images.rglob("*"))
        shutil.rmtree(images)

    side = root / EPISODES_SIDE_PATH
    records, bad = _parse_side_records(side)
    keep = {i: r for i, r in records.items() if i < commit.total_episodes}
    n_lines = sum(1 for line in side.read_text(encoding="utf-8").splitlines() if line.strip()) if side.exists() else 0
    report.dropped_side_records = n_lines - len(keep)
    if report.dropped_side_records:
        text = "".join(json.dumps(keep[i], ensure_ascii=False) + "\n" for i in sorted(keep))
        atomic_write_bytes(side, text.encode("utf-8"))
    return report


def open_dataset(root: str | Path, repo_id: str = DEFAULT_REPO_ID, repair: bool = True, **kwargs):
    """Open a recorded dataset for reading: `LeRobotDataset(repo_id, root=root, **kwargs)`, offline.

    With `repair` (default) `recover(root)` runs first, so a dataset whose recorder was killed
    while saving an episode opens with its committed episodes. Raises FileNotFoundError when
    `root` holds no dataset or no episode (lerobot would then try the hub), DatasetBusyError
    when a recorder is writing to it (pass repair=False to read anyway: lerobot may then fail
    on the file of an episode being saved), DatasetCorruptError on outside damage.
    """
    root = Path(root)
    if not is_dataset_dir(root):
        raise FileNotFoundError(f"{root}: no LeRobotDataset here (meta/info.json missing)")
    if repair:
        recover(root)
    info = json.loads((root / "meta" / "info.json").read_text(encoding="utf-8"))
    if int(info.get("total_episodes", 0)) == 0:
        raise FileNotFoundError(f"{root}: dataset has no episodes yet")
    lerobot_dataset = import_lerobot()
    return lerobot_dataset.LeRobotDataset(repo_id, root=root, **kwargs)
