"""EpisodeRecorder: LeRobotDataset v3.0 round trip, validation, discard, resume (synthetic frames)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dynaflip_ros.data import dataset_io, schema
from dynaflip_ros.data.recorder import (
    DatasetBusyError,
    DatasetSchemaError,
    EpisodeRecorder,
    FrameValidationError,
    RecorderStateError,
)

from recorder_frames import HW, TASKS, check_dataset, record, synthetic_frame


def test_round_trip_exact_values_tasks_and_boundaries(tmp_path):
    root = tmp_path / "demos"
    with EpisodeRecorder(root, HW, resume=False) as rec:
        assert record(rec, 0, 4, TASKS[0]) == 0
        assert record(rec, 1, 6, TASKS[1], success=False, demonstrator="teleop", source="real") == 1
        assert record(rec, 2, 5, TASKS[0], extra={"note": "x"}) == 2
        assert (rec.num_episodes, rec.num_frames) == (3, 15)
    check_dataset(root, [(0, 4, TASKS[0]), (1, 6, TASKS[1]), (2, 5, TASKS[0])])

    info = json.loads((root / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == schema.RECORD_FPS
    assert info["features"][schema.IMAGE_KEY]["dtype"] == "image"  # PNG in parquet, no video
    assert not (root / "videos").exists()
    recs = dataset_io.read_episode_records(root)
    assert [r["episode_index"] for r in recs] == [0, 1, 2]
    assert [r["success"] for r in recs] == [True, False, True]
    assert [r["seed"] for r in recs] == [0, 1, 2]
    assert [r["length"] for r in recs] == [4, 6, 5]
    assert recs[1]["demonstrator"] == "teleop" and recs[1]["source"] == "real"
    assert recs[2]["extra"] == {"note": "x"} and recs[2]["object_name"] == "obj2"
    assert recs[0]["task"] == TASKS[0]


def test_discard_and_keep_false_leave_no_trace(tmp_path):
    root = tmp_path / "demos"
    with EpisodeRecorder(root, HW) as rec:
        record(rec, 0, 3, TASKS[0])
        assert record(rec, 1, 4, TASKS[0], keep=False) is None
        rec.begin_episode(TASKS[1])
        rec.add_frame(**synthetic_frame(2, 0))
        rec.discard_episode()
        assert not rec.episode_in_progress
        rec.begin_episode(TASKS[1])  # discarding an empty episode works too
        rec.discard_episode()
        assert record(rec, 3, 2, TASKS[1]) == 1
        rec.begin_episode(TASKS[0])
        rec.add_frame(**synthetic_frame(4, 0))  # left open: close() discards it
    check_dataset(root, [(0, 3, TASKS[0]), (3, 2, TASKS[1])])
    assert [r["seed"] for r in dataset_io.read_episode_records(root)] == [0, 3]
    assert not any((root / "images").rglob("*.png"))


def _bad(**override):
    frame = synthetic_frame(0, 0)
    frame.update(override)
    return frame


@pytest.mark.parametrize(
    "frame, match",
    [
        (_bad(image=np.zeros((32, 24, 3), np.uint8)), r"image: expected shape \(24, 32, 3\)"),
        (_bad(image=np.zeros((24, 32, 3), np.float32)), "image: expected dtype uint8"),
        (_bad(image=np.zeros((3, 24, 32), np.uint8)), r"image: expected shape"),
        (_bad(image=[[0]]), "image: expected a uint8 numpy array"),
        (_bad(state=np.zeros(6)), r"state: expected shape \(7,\), got \(6,\)"),
        (_bad(state=np.zeros(7, np.int64)), "state: expected a floating dtype"),
        (_bad(state=[0.0] * 7), "state: expected a numpy array"),
        (_bad(action=np.array([0, 0, np.nan, 0, 0, 0, 0], np.float32)), r"action: non-finite value nan at index \[2\]"),
        (_bad(action=np.full(7, 1e39)), "action: non-finite value"),  # overflows float32
        (_bad(point_tracks=np.zeros((96, 2), np.float32)), r"point_tracks: expected shape \(96, 3\)"),
        (_bad(point_tracks=np.full((96, 3), np.inf, np.float32)), "point_tracks: non-finite"),
        (_bad(point_valid=np.ones(95, bool)), r"point_valid: expected a bool array of shape \(96,\)"),
        (_bad(point_valid=np.full(96, 0.5, np.float32)), "point_valid: expected bools"),
        (_bad(phase=7), "phase: expected -1"),
        (_bad(phase=-2), "phase: expected -1"),
        (_bad(phase=1.0), "phase: expected an int"),
        (_bad(phase=True), "phase: expected an int"),
    ],
)
def test_add_frame_validation(tmp_path, frame, match):
    with EpisodeRecorder(tmp_path / "d", HW) as rec:
        rec.begin_episode(TASKS[0])
        rec.add_frame(**synthetic_frame(0, 0))
        with pytest.raises(FrameValidationError, match=match):
            rec.add_frame(**frame)
        assert rec.frames_in_episode == 1  # the bad frame was not added
        rec.add_frame(**synthetic_frame(0, 1))
        assert rec.end_episode(True) == 0
    check_dataset(tmp_path / "d", [(0, 2, TASKS[0])])


def test_state_errors(tmp_path):
    with EpisodeRecorder(tmp_path / "d", HW) as rec:
        with pytest.raises(RecorderStateError, match="before begin_episode"):
            rec.add_frame(**synthetic_frame(0, 0))
        with pytest.raises(RecorderStateError, match="without begin_episode"):
            rec.end_episode(True)
        with pytest.raises(RecorderStateError, match="without begin_episode"):
            rec.discard_episode()
        with pytest.raises(ValueError, match="task must be a non-empty string"):
            rec.begin_episode("  ")
        with pytest.raises(ValueError, match="source must be one of"):
            rec.begin_episode(TASKS[0], source="mars")
        with pytest.raises(ValueError, match="demonstrator must be one of"):
            rec.begin_episode(TASKS[0], demonstrator="ghost")
        with pytest.raises(ValueError, match="JSON-serialisable"):
            rec.begin_episode(TASKS[0], extra={"a": object()})
        rec.begin_episode(TASKS[0])
        with pytest.raises(RecorderStateError, match="already in progress"):
            rec.begin_episode(TASKS[0])
        with pytest.raises(RecorderStateError, match="no frames"):
            rec.end_episode(True)
        with pytest.raises(ValueError, match="success must be a bool"):
            rec.end_episode("yes")
        assert rec.episode_in_progress  # still open after the refused end
        rec.add_frame(**synthetic_frame(0, 0))
        assert rec.end_episode(True) == 0
    with pytest.raises(RecorderStateError, match="closed"):
        rec.begin_episode(TASKS[0])
    with pytest.raises(ValueError, match="image_hw"):
        EpisodeRecorder(tmp_path / "e", (24,))


def test_resume_appends_and_refuses_mismatch(tmp_path):
    root = tmp_path / "demos"
    with EpisodeRecorder(root, HW) as rec:
        record(rec, 0, 3, TASKS[0])
    with pytest.raises(FileExistsError, match="resume=True"):
        EpisodeRecorder(root, HW, resume=False)
    with pytest.raises(DatasetSchemaError, match="observation.image"):
        EpisodeRecorder(root, (32, 32))
    with pytest.raises(DatasetSchemaError, match="fps"):
        EpisodeRecorder(root, HW, fps=30)
    with EpisodeRecorder(root, HW, resume=True) as rec:
        assert rec.num_episodes == 1
        assert record(rec, 1, 2, TASKS[1]) == 1
    with EpisodeRecorder(root, HW) as rec:
        assert record(rec, 2, 4, TASKS[0]) == 2
    check_dataset(root, [(0, 3, TASKS[0]), (1, 2, TASKS[1]), (2, 4, TASKS[0])])

    other = tmp_path / "not_a_dataset"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="holds no dataset"):
        EpisodeRecorder(other, HW)
    assert (other / "notes.txt").read_text() == "mine"


def test_resume_of_dataset_without_episodes_starts_fresh(tmp_path):
    root = tmp_path / "demos"
    rec = EpisodeRecorder(root, HW)
    rec.close()  # created, nothing committed
    with EpisodeRecorder(root, HW) as rec:
        assert rec.num_episodes == 0
        record(rec, 5, 2, TASKS[0])
    check_dataset(root, [(5, 2, TASKS[0])])


def test_one_writer_at_a_time(tmp_path):
    root = tmp_path / "demos"
    with EpisodeRecorder(root, HW) as rec:
        record(rec, 0, 2, TASKS[0])
        rec.begin_episode(TASKS[0])
        rec.add_frame(**synthetic_frame(1, 0))
        with pytest.raises(DatasetBusyError, match="another recorder"):
            EpisodeRecorder(root, HW)
        with pytest.raises(DatasetBusyError):
            dataset_io.recover(root)  # must not delete the live recorder's files
        with pytest.raises(DatasetBusyError):
            dataset_io.open_dataset(root)
        rec.add_frame(**synthetic_frame(1, 1))
        assert rec.end_episode(True) == 1
    with EpisodeRecorder(root, HW) as rec:  # released by close()
        assert rec.num_episodes == 2
    check_dataset(root, [(0, 2, TASKS[0]), (1, 2, TASKS[0])])


def test_write_error_rolls_back_and_recorder_stays_usable(tmp_path, monkeypatch):
    from lerobot.datasets import lerobot_dataset

    root = tmp_path / "demos"
    real_write_info = lerobot_dataset.write_info
    with EpisodeRecorder(root, HW) as rec:
        record(rec, 0, 3, TASKS[0])

        def failing_write_info(info, local_dir):  # the data parquet of episode 1 is already written
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(lerobot_dataset, "write_info", failing_write_info)
        with pytest.raises(OSError, match="No space left"):
            record(rec, 1, 4, TASKS[1])
        monkeypatch.setattr(lerobot_dataset, "write_info", real_write_info)
        assert not rec.episode_in_progress and rec.num_episodes == 1
        assert rec.last_recovery.removed_files  # the failed episode's data file
        assert record(rec, 2, 2, TASKS[1]) == 1
    check_dataset(root, [(0, 3, TASKS[0]), (2, 2, TASKS[1])])
    assert [r["seed"] for r in dataset_io.read_episode_records(root)] == [0, 2]
