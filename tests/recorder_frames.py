"""Synthetic episodes for EpisodeRecorder tests: deterministic frames, a recording helper, and a
check that a LeRobotDataset v3.0 on disk holds exactly those frames (tests/test_data_recorder.py,
tests/test_data_crash.py). A plain module (not a test module): test files import it by name.

Frames: image (H, W, 3) uint8, state (7,) float64 (stored as float32), action (7,) float32,
point_tracks (32, 3) float32 (metres), phase int in -1 .. 6; HW = (H, W) in pixels.
"""
from __future__ import annotations

import numpy as np
import pytest

from dynaflip_ros.data import dataset_io, schema
from dynaflip_ros.data.recorder import EpisodeRecorder

HW = (24, 32)  # non-square: catches an H/W swap
TASKS = ("Pick the red cube into the sink", "Pick the green mug into the sink")


def synthetic_frame(episode: int, i: int, hw=HW) -> dict:
    """Deterministic, distinct values for frame i of episode `episode`."""
    rng = np.random.default_rng(1000 * episode + i)
    return {
        "image": rng.integers(0, 256, (*hw, 3), dtype=np.uint8),
        "state": rng.normal(size=7),  # float64 on purpose: stored as float32
        "action": rng.normal(size=7).astype(np.float32),
        "point_tracks": rng.normal(size=(schema.N_TRACK, 3)).astype(np.float32),
        "point_valid": rng.uniform(size=schema.N_TRACK) < 0.8,
        "phase": int((i + episode) % (len(schema.PHASES) + 1)) - 1,  # -1 .. 6
    }


def record(rec: EpisodeRecorder, episode: int, length: int, task: str, success=True, keep=True, **kw):
    rec.begin_episode(task, seed=episode, object_name=f"obj{episode}", **kw)
    for i in range(length):
        rec.add_frame(**synthetic_frame(episode, i, rec.image_hw))
    return rec.end_episode(success, keep=keep)


def check_dataset(root, expected: list[tuple[int, int, str]], hw=HW) -> None:
    """expected: (synthetic episode id, length, task) per dataset episode, in order."""
    ds = dataset_io.open_dataset(root, repair=False)
    assert ds.num_episodes == len(expected)
    assert len(ds) == sum(n for _, n, _ in expected)
    starts = np.cumsum([0] + [n for _, n, _ in expected])
    assert list(ds.meta.episodes["dataset_from_index"]) == starts[:-1].tolist()
    assert list(ds.meta.episodes["dataset_to_index"]) == starts[1:].tolist()
    for ep_idx, (syn_ep, length, task) in enumerate(expected):
        for i in range(length):
            item = ds[int(starts[ep_idx]) + i]
            want = synthetic_frame(syn_ep, i, hw)
            assert item["episode_index"].item() == ep_idx
            assert item["frame_index"].item() == i
            assert item["timestamp"].item() == pytest.approx(i / schema.RECORD_FPS)
            assert item["task"] == task
            img = item[schema.IMAGE_KEY]  # (3, H, W) float32 in [0, 1]
            assert tuple(img.shape) == (3, *hw)
            np.testing.assert_array_equal((img * 255).round().byte().permute(1, 2, 0).numpy(), want["image"])
            np.testing.assert_array_equal(item[schema.STATE_KEY].numpy(), want["state"].astype(np.float32))
            np.testing.assert_array_equal(item[schema.ACTION_KEY].numpy(), want["action"])
            np.testing.assert_array_equal(item[schema.TRACKS_KEY].numpy(), want["point_tracks"])
            np.testing.assert_array_equal(item[schema.VALID_KEY].numpy(), want["point_valid"].astype(np.float32))
            # lerobot stores (1,)-shaped features as a scalar column: phase reads back with shape ()
            assert item[schema.PHASE_KEY].shape == () and item[schema.PHASE_KEY].item() == want["phase"]
