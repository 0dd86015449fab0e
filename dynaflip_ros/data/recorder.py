"""Record demonstrations into a local LeRobotDataset v3.0 (schema: `dynaflip_ros.data.schema`).

`EpisodeRecorder` writes one frame per `add_frame` call (at `RECORD_FPS`, the policy rate) and one
episode per `begin_episode` .. `end_episode`. Images are stored as PNG inside parquet
(`use_videos=False`, lossless, no ffmpeg). Crash safety: every finished episode is finalized into
its own parquet files and then committed atomically (`dataset_io`), so a recorder killed at any
instant (SIGKILL included) loses at most the episode in progress; reopening with `resume=True`
(or `dataset_io.recover`) rolls back what the dead process left half-written.

The MuJoCo pick-into-sink cell's scripted-expert episodes are recorded through this class by
`sim.record_demos.record_sim_episodes` (data/ does not import sim/).

Source: LeRobotDataset v3.0 (lerobot 0.4.4, `lerobot/datasets/lerobot_dataset.py`); the
writer's buffering and why we finalize per episode are described in `dataset_io`.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from dynaflip_ros.data import dataset_io, schema
from dynaflip_ros.data.dataset_io import DEFAULT_REPO_ID, DatasetBusyError, DatasetCorruptError
from dynaflip_ros.errors import UserError

__all__ = [
    "DEFAULT_REPO_ID",
    "DatasetBusyError",
    "DatasetCorruptError",
    "DatasetSchemaError",
    "EpisodeRecorder",
    "FrameValidationError",
    "RecorderStateError",
]

log = logging.getLogger(__name__)

SOURCES = ("sim", "real")
DEMONSTRATORS = ("expert", "teleop", "policy")


class FrameValidationError(ValueError, UserError):
    """A frame passed to `EpisodeRecorder.add_frame` has a wrong type, dtype, shape or value."""


class RecorderStateError(RuntimeError):
    """A recorder method was called in the wrong state (e.g. add_frame before begin_episode)."""


class DatasetSchemaError(ValueError, UserError):
    """An existing dataset was recorded with another schema (image size, fps, features)."""


# ------------------------------------------------------------------------------------ validation
def _check_float_array(name: str, value: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Validated float32 copy of `value` (a real floating ndarray of `shape`, all finite)."""
    if not isinstance(value, np.ndarray):
        raise FrameValidationError(f"{name}: expected a numpy array of shape {shape}, got {type(value).__name__}")
    if not np.issubdtype(value.dtype, np.floating):
        raise FrameValidationError(f"{name}: expected a floating dtype (float32), got {value.dtype}")
    if value.shape != shape:
        raise FrameValidationError(f"{name}: expected shape {shape}, got {value.shape}")
    with np.errstate(over="ignore"):  # overflow to inf is reported below
        out = np.array(value, dtype=np.float32, copy=True)  # copy: lerobot keeps references until save
    if not np.all(np.isfinite(out)):
        bad = np.argwhere(~np.isfinite(out))[0].tolist()
        raise FrameValidationError(f"{name}: non-finite value {value[tuple(bad)]} at index {bad} (as float32)")
    return out


def _check_mask(name: str, value: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Validated float32 0/1 copy of a boolean mask (bool array, or floats that are all 0 or 1)."""
    if not isinstance(value, np.ndarray) or value.shape != shape:
        got = value.shape if isinstance(value, np.ndarray) else type(value).__name__
        raise FrameValidationError(f"{name}: expected a bool array of shape {shape}, got {got}")
    if value.dtype != np.bool_:
        if not np.issubdtype(value.dtype, np.number) or not np.all((value == 0) | (value == 1)):
            raise FrameValidationError(f"{name}: expected bools (or 0/1 values), got {value.dtype}")
    return value.astype(np.float32)


def _check_image(value: Any, image_hw: tuple[int, int]) -> np.ndarray:
    h, w = image_hw
    if not isinstance(value, np.ndarray):
        raise FrameValidationError(f"image: expected a uint8 numpy array (H,W,3), got {type(value).__name__}")
    if value.dtype != np.uint8:
        raise FrameValidationError(f"image: expected dtype uint8, got {value.dtype}")
    if value.shape != (h, w, 3):
        raise FrameValidationError(f"image: expected shape {(h, w, 3)} (H, W, RGB), got {value.shape}")
    return value


def _check_phase(value: Any) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise FrameValidationError(f"phase: expected an int, got {type(value).__name__} {value!r}")
    phase = int(value)
    if not -1 <= phase < len(schema.PHASES):
        raise FrameValidationError(
            f"phase: expected -1 (unknown) or 0..{len(schema.PHASES) - 1} ({', '.join(schema.PHASES)}), got {phase}"
        )
    return phase


def _check_json(name: str, value: dict | None) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a dict or None, got {type(value).__name__}")
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be JSON-serialisable (no NaN): {e}") from e


def _features_signature(features: dict) -> dict:
    """dtype and shape per feature key (what must match for appending to a dataset)."""
    return {k: (v["dtype"], tuple(v["shape"])) for k, v in features.items()}


# -------------------------------------------------------------------------------------- recorder
class EpisodeRecorder:
    """Writes episodes to a LeRobotDataset v3.0 at `root`, crash-safe, resumable.

    Args:
        root: dataset directory (created if missing).
        image_hw: (H, W) of the recorded RGB images.
        fps: recording rate, Hz (frames are stamped frame_index / fps).
        repo_id: LeRobot repo id (local only; never pushed).
        resume: append to an existing dataset at `root` (after crash recovery). When False and
            `root` already holds a dataset, FileExistsError is raised.
        robot_type: stored in info.json.

    Raises:
        FileExistsError: `root` holds a dataset and resume is False, or holds unrelated files.
        DatasetSchemaError: the existing dataset has another image size, fps or feature set.
        DatasetCorruptError: committed files are damaged (see `dataset_io.recover`).
        DatasetBusyError: another recorder (this or another process) is writing to `root`.
        ImportError: lerobot is missing or not version 0.4.4.

    One writer per dataset: the directory is locked (`dataset_io.WriterLock`) until `close()`.
    Calls from several threads are serialised by an internal lock.
    """

    def __init__(
        self,
        root: str | Path,
        image_hw: tuple[int, int],
        fps: int = schema.RECORD_FPS,
        repo_id: str = DEFAULT_REPO_ID,
        resume: bool = True,
        robot_type: str = "ur3",
    ) -> None:
        hw = tuple(image_hw)
        if len(hw) != 2 or not all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) and x >= 8 for x in hw):
            raise ValueError(f"image_hw must be two ints >= 8 (H, W), got {image_hw!r}")
        if isinstance(fps, bool) or not isinstance(fps, (int, np.integer)) or fps <= 0:
            raise ValueError(f"fps must be a positive int, got {fps!r}")
        self.root = Path(root)
        self.image_hw = (int(image_hw[0]), int(image_hw[1]))
        self.fps = int(fps)
        self.repo_id = repo_id
        self.robot_type = robot_type
        self._features = schema.features(self.image_hw)
        self._lock = threading.RLock()
        self._lerobot = dataset_io.import_lerobot()
        from lerobot.utils.utils import SuppressProgressBars

        self._quiet = SuppressProgressBars
        self._ds = None
        self._lock_file: dataset_io.WriterLock | None = None
        self._episode: dict | None = None  # begin_episode kwargs while an episode is open
        self._n_frames = 0
        self.last_recovery: dataset_io.RecoveryReport | None = None
        try:
            self._open(resume)
        except BaseException:
            self._release_lock()
            raise

    # ------------------------------------------------------------------ opening / creating
    def _open(self, resume: bool) -> None:
        root = self.root
        has_dataset = dataset_io.is_dataset_dir(root) or (root / dataset_io.COMMIT_PATH).exists()
        if has_dataset:
            if not resume:
                raise FileExistsError(
                    f"{root} already holds a dataset; pass resume=True (CLI: --resume) to append to it, "
                    "or choose another directory"
                )
            self._lock_file = dataset_io.WriterLock(root)
            self.last_recovery = dataset_io.recover(root, lock=False)
            if self.last_recovery.changed:
                log.warning("recovered %s: %s", root, self.last_recovery)
            if self.last_recovery.committed_episodes == 0:
                self._create()  # nothing committed: start afresh (lerobot cannot reopen an empty dataset)
            else:
                self._check_schema()
                self._open_writer()
        else:
            foreign = dataset_io.foreign_entries(root)
            if foreign:
                raise FileExistsError(f"{root} is not empty and holds no dataset ({foreign[:5]}); choose another directory")
            self._create()

    def _create(self) -> None:
        root = self.root
        if dataset_io.foreign_entries(root):
            raise FileExistsError(f"{root} holds files that are not part of a dataset; choose another directory")
        if root.exists() and self._lock_file is None:
            self._lock_file = dataset_io.WriterLock(root)
        dataset_io.remove_dataset_files(root)
        if root.exists():
            root.rmdir()  # LeRobotDataset.create insists on creating the directory itself
        self._release_lock()
        root.parent.mkdir(parents=True, exist_ok=True)
        # create() makes root with mkdir(exist_ok=False): exclusive against a concurrent creator.
        self._ds = self._lerobot.LeRobotDataset.create(
            self.repo_id,
            fps=self.fps,
            features=self._features,
            root=root,
            robot_type=self.robot_type,
            use_videos=False,
        )
        self._lock_file = dataset_io.WriterLock(root)
        dataset_io.write_commit(root, dataset_io.snapshot_commit(root, tasks=[]))

    def _check_schema(self) -> None:
        info = dataset_io.read_commit(self.root).info
        if int(info["fps"]) != self.fps:
            raise DatasetSchemaError(f"{self.root}: dataset was recorded at {info['fps']} fps, recorder asked for {self.fps}")
        have = _features_signature({k: v for k, v in info["features"].items() if k in self._features})
        want = _features_signature(self._features)
        if have != want:
            diff = {k: (have.get(k), want[k]) for k in want if have.get(k) != want[k]}
            raise DatasetSchemaError(f"{self.root}: dataset schema differs from this recorder's (existing, wanted): {diff}")

    def _open_writer(self) -> None:
        """Open the committed dataset for appending (loads only the last episode's rows)."""
        n = dataset_io.read_commit(self.root).total_episodes
        with self._quiet():
            self._ds = self._lerobot.LeRobotDataset(self.repo_id, root=self.root, episodes=[n - 1])

    # ------------------------------------------------------------------------- properties
    @property
    def num_episodes(self) -> int:
        """Committed episodes in the dataset."""
        return int(self._ds.meta.total_episodes)

    @property
    def num_frames(self) -> int:
        """Committed frames in the dataset."""
        return int(self._ds.meta.total_frames)

    @property
    def episode_in_progress(self) -> bool:
        return self._episode is not None

    @property
    def frames_in_episode(self) -> int:
        return self._n_frames

    # ---------------------------------------------------------------------------- episodes
    def begin_episode(
        self,
        task: str,
        *,
        seed: int | None = None,
        object_name: str | None = None,
        source: str = "sim",
        demonstrator: str = "expert",
        extra: dict | None = None,
    ) -> int:
        """Open a new episode; returns the episode index it will get if kept.

        Args:
            task: the instruction, e.g. "Pick the red cube into the sink" (LeRobot `task`).
            seed: environment seed (sim), stored in the side file.
            object_name: manipulated object, stored in the side file.
            source: "sim" or "real".
            demonstrator: "expert" (scripted), "teleop" or "policy".
            extra: more JSON-serialisable per-episode metadata (side file, key "extra").

        Raises RecorderStateError if an episode is already open, ValueError on bad arguments.
        """
        if not isinstance(task, str) or not task.strip():
            raise ValueError(f"task must be a non-empty string, got {task!r}")
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        if demonstrator not in DEMONSTRATORS:
            raise ValueError(f"demonstrator must be one of {DEMONSTRATORS}, got {demonstrator!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise ValueError(f"seed must be an int or None, got {seed!r}")
        if object_name is not None and not isinstance(object_name, str):
            raise ValueError(f"object_name must be a string or None, got {object_name!r}")
        _check_json("extra", extra)
        with self._lock:
            self._require_open()
            if self._episode is not None:
                raise RecorderStateError("an episode is already in progress; call end_episode() or discard_episode() first")
            self._episode = {
                "task": task,
                "seed": None if seed is None else int(seed),
                "object_name": object_name,
                "source": source,
                "demonstrator": demonstrator,
                "extra": dict(extra) if extra else {},
            }
            self._n_frames = 0
            return self.num_episodes

    def add_frame(
        self,
        image: np.ndarray,
        state: np.ndarray,
        action: np.ndarray,
        point_tracks: np.ndarray,
        point_valid: np.ndarray,
        phase: int,
    ) -> None:
        """Append one frame (time step at `fps`) to the open episode.

        Args:
            image: uint8 (H, W, 3) RGB of the fixed camera, (H, W) == image_hw.
            state: float (7,) measured joint positions (rad) + gripper 0 open..1 closed.
            action: float (7,) commanded joint-position target (rad) + gripper command.
            point_tracks: float (N_TRACK, 3) = (96, 3) points (layout `schema.TRACK_SLICES`),
                camera optical frame, m; zeros where there are none (a real cell).
            point_valid: (N_TRACK,) bool or 0/1 floats: which rows of point_tracks are real
                points in view (all False on a real cell).
            phase: expert phase index into `schema.PHASES`, -1 when unknown (teleop).

        Floats are stored as float32 and must be finite after the cast.
        Raises FrameValidationError (a ValueError) naming the offending input; nothing is added
        then. Raises RecorderStateError when no episode is open.
        """
        img = _check_image(image, self.image_hw)
        frame = {
            schema.IMAGE_KEY: img,
            schema.STATE_KEY: _check_float_array("state", state, (schema.STATE_DIM,)),
            schema.ACTION_KEY: _check_float_array("action", action, (schema.ACTION_DIM,)),
            schema.TRACKS_KEY: _check_float_array("point_tracks", point_tracks, (schema.N_TRACK, 3)),
            schema.VALID_KEY: _check_mask("point_valid", point_valid, (schema.N_TRACK,)),
            schema.PHASE_KEY: np.array([_check_phase(phase)], dtype=np.int64),
        }
        with self._lock:
            self._require_open()
            if self._episode is None:
                raise RecorderStateError("add_frame() before begin_episode()")
            frame["task"] = self._episode["task"]
            self._ds.add_frame(frame)
            self._n_frames += 1

    def end_episode(self, success: bool, keep: bool = True, extra: dict | None = None) -> int | None:
        """Close the open episode: commit it (keep=True) or drop it (keep=False).

        Returns the committed episode index, or None when dropped. The episode is on disk and
        crash-safe when this returns. `success` is stored in the side file, `extra` (JSON-
        serialisable, e.g. the episode's outcome) is merged into begin_episode's `extra`.

        Raises RecorderStateError when no episode is open or (keep=True) it has no frame; the
        episode then stays open. On a write error the dataset is rolled back to the previous
        commit, the episode is dropped and the error re-raised.
        """
        if not isinstance(success, (bool, np.bool_)):
            raise ValueError(f"success must be a bool, got {success!r}")
        _check_json("extra", extra)
        with self._lock:
            self._require_open()
            if self._episode is None:
                raise RecorderStateError("end_episode() without begin_episode()")
            if not keep:
                self.discard_episode()
                return None
            if self._n_frames == 0:
                raise RecorderStateError("episode has no frames; add frames or call discard_episode()")
            episode = self._episode
            index = self.num_episodes
            previous = set(dataset_io.read_commit(self.root).files)
            try:
                with self._quiet(), warnings.catch_warnings():
                    # datasets converts the (1,)-shaped phase with int(array): numpy>=1.25 warns
                    warnings.filterwarnings("ignore", "Conversion of an array with ndim > 0", DeprecationWarning)
                    self._ds.save_episode()
                self._ds.finalize()
                self._start_new_files_next_episode()
                tasks = [str(t) for t in self._ds.meta.tasks.sort_values("task_index").index]
                commit = dataset_io.snapshot_commit(self.root, tasks)
                new_files = sorted(set(commit.files) - previous)
                if commit.total_episodes != index + 1 or len(new_files) != 2 or not previous <= set(commit.files):
                    raise DatasetCorruptError(
                        f"unexpected lerobot writer state after episode {index}: total_episodes="
                        f"{commit.total_episodes}, new files {new_files} (expected one data and one "
                        "episode-metadata file; is lerobot 0.4.4 installed?)"
                    )
                for rel in new_files:
                    dataset_io.fsync_file(self.root / rel)
                dataset_io.append_episode_record(
                    self.root,
                    {
                        "episode_index": index,
                        "task": episode["task"],
                        "length": self._n_frames,
                        "success": bool(success),
                        "seed": episode["seed"],
                        "object_name": episode["object_name"],
                        "source": episode["source"],
                        "demonstrator": episode["demonstrator"],
                        "fps": self.fps,
                        "recorded_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                        "extra": {**episode["extra"], **(extra or {})},
                    },
                )
                dataset_io.write_commit(self.root, commit)  # the commit point
            except BaseException:
                self._episode = None
                self._n_frames = 0
                self._rollback_and_reopen()
                raise
            self._episode = None
            self._n_frames = 0
            return index

    def discard_episode(self) -> None:
        """Drop the open episode (its temporary images included). RecorderStateError if none is open."""
        with self._lock:
            self._require_open()
            if self._episode is None:
                raise RecorderStateError("discard_episode() without begin_episode()")
            if self._ds.episode_buffer is not None:
                self._ds.clear_episode_buffer(delete_images=True)
            self._episode = None
            self._n_frames = 0

    def close(self) -> None:
        """Drop an open episode, release the dataset; idempotent."""
        with self._lock:
            if self._ds is None:
                return
            if self._episode is not None:
                log.warning("closing %s with an episode in progress (%d frames): discarded", self.root, self._n_frames)
                self.discard_episode()
            self._ds.finalize()
            self._ds = None
            self._release_lock()

    def __enter__(self) -> "EpisodeRecorder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------------------ internals
    def _release_lock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.release()
            self._lock_file = None

    def _require_open(self) -> None:
        if self._ds is None:
            raise RecorderStateError(f"recorder for {self.root} is closed")

    def _start_new_files_next_episode(self) -> None:
        """Make lerobot 0.4.4 write the next episode to NEW data / episode-metadata files.

        After `finalize()` lerobot would reopen a writer on the file it just closed and overwrite
        it (LeRobotDataset._save_episode_data / LeRobotDatasetMetadata._flush_metadata_buffer).
        Setting `_writer_closed_for_reading` is lerobot's own "writer was closed, roll over to the
        next file" flag for the data table; for the metadata table we put it in its resume state
        (`latest_episode` None, `episodes[-1]` = the episode just written), in which it moves to
        the next file exactly as when reopening a dataset.
        """
        ds = self._ds
        if ds.writer is not None or ds.meta.writer is not None or ds.meta.metadata_buffer:
            raise DatasetCorruptError("lerobot writers still open after finalize(); is lerobot 0.4.4 installed?")
        last = ds.meta.latest_episode  # dict of one-element lists
        ds._writer_closed_for_reading = True
        ds.meta.episodes = [
            {
                "meta/episodes/chunk_index": int(last["meta/episodes/chunk_index"][0]),
                "meta/episodes/file_index": int(last["meta/episodes/file_index"][0]),
                "dataset_to_index": int(last["dataset_to_index"][0]),
                "data/chunk_index": int(ds.latest_episode["data/chunk_index"]),
                "data/file_index": int(ds.latest_episode["data/file_index"]),
            }
        ]
        ds.meta.latest_episode = None

    def _rollback_and_reopen(self) -> None:
        """After a failed save: close lerobot's writers, roll back to the last commit, reopen."""
        ds, self._ds = self._ds, None
        try:
            if ds is not None:
                ds.meta.metadata_buffer = []  # never flush the failed episode's metadata row
                ds._close_writer()
                ds.meta._close_writer()
        except Exception:  # the files are uncommitted and get deleted by recover()
            log.exception("closing lerobot writers after a failed save")
        self.last_recovery = dataset_io.recover(self.root, lock=False)
        if self.last_recovery.committed_episodes == 0:
            self._create()
        else:
            self._open_writer()
