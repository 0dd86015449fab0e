"""DynaFLIP training samples from a LeRobotDataset v3 (data/triplets.py), on a synthetic dataset:
loading, refusal of track-less data, clips, still clips, point masks, batches.

The dataset comes from tests/synthetic_dataset.py (shared with tests/test_encoder_train.py).
Language sampling: tests/test_triplets_language.py.
"""
import json

import numpy as np
import pytest

from dynaflip_ros.configs.encoder import TripletDataConfig
from dynaflip_ros.data import schema

from synthetic_dataset import (
    EMPTY_ROWS, FOCAL_PX, OCCLUDED_FRAMES, OCCLUDED_ROWS, OBJECTS, OTHER_OBJECT, write_synthetic_dataset,
)


def _cfg(**kw) -> TripletDataConfig:
    """Recorded track layout (rows as stored) unless asked otherwise: these tests check masks on
    the recorded rows; the object-slot layout has its own tests below."""
    kw.setdefault("heldout_fraction", 0.0)
    kw.setdefault("track_layout", "recorded")
    return TripletDataConfig(**kw)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("synth") / "ds", n_episodes=3, length=30, idle_tail=10)


@pytest.fixture(scope="module")
def frames(dataset):
    from dynaflip_ros.data.triplets import load_episode_frames

    return load_episode_frames(dataset, (64, 64), progress=False)


def test_load_episode_frames(dataset, frames):
    from dynaflip_ros.data.triplets import load_episode_frames

    assert frames.num_frames == 90 and frames.images.shape == (90, 64, 64, 3) and frames.images.dtype == np.uint8
    assert frames.tracks.shape == (90, schema.N_TRACK, 3) and frames.state.shape == (90, 7)
    assert frames.valid.shape == (90, schema.N_TRACK) and frames.valid.dtype == bool
    assert not frames.valid[:, EMPTY_ROWS].any() and frames.valid[:, :28].all()
    assert not frames.valid[12, OCCLUDED_ROWS].any() and frames.valid[11, OCCLUDED_ROWS].all()
    assert frames.episode_ids.tolist() == [0, 1, 2] and frames.episode_length.tolist() == [30, 30, 30]
    assert frames.frame_index[:30].tolist() == list(range(30))
    assert frames.phase[:30].tolist() == [min(i * 7 // 20, 6) for i in range(30)]
    # the target of each episode comes from the recorder's side records; the task is free-form
    assert frames.episode_target == ["red cube", "blue bar", "red cube"]
    assert frames.episode_task[1] == "put the blue bar in the sink"
    # the object (red square) is where the first track says it is
    c = frames.tracks[0, schema.TRACK_SLICES["target"]].mean(0)
    u, v = int(FOCAL_PX * c[0] / c[2] + 32), int(FOCAL_PX * c[1] / c[2] + 32)
    assert tuple(frames.images[0, v, u]) == OBJECTS["red cube"]
    # resized on load (INTER_AREA), same content
    small = load_episode_frames(dataset, (32, 32), progress=False)
    assert small.images.shape == (90, 32, 32, 3)
    assert abs(float(small.images.mean()) - float(frames.images.mean())) < 2.0


def test_load_errors(tmp_path):
    from dynaflip_ros.data.triplets import load_episode_frames

    with pytest.raises(FileNotFoundError):
        load_episode_frames(tmp_path / "nope", (64, 64))


def test_refuses_track_less_and_old_schema_datasets(dataset, tmp_path):
    """A real-cell / teleop recording (all-zero mask) and an old-schema dataset (no
    observation.point_valid) are refused with a UserError naming the dataset and why."""
    import shutil

    from dynaflip_ros.data.triplets import TripletDataError, load_episode_frames
    from dynaflip_ros.errors import UserError

    real = write_synthetic_dataset(tmp_path / "real", n_episodes=1, length=8, idle_tail=2, no_tracks=True)
    with pytest.raises(TripletDataError, match="never valid") as e:
        load_episode_frames(real, (64, 64), progress=False)
    assert str(real) in str(e.value) and isinstance(e.value, UserError) and isinstance(e.value, ValueError)

    old = tmp_path / "old"
    shutil.copytree(dataset, old)
    info = json.loads((old / "meta" / "info.json").read_text())
    del info["features"][schema.VALID_KEY]
    (old / "meta" / "info.json").write_text(json.dumps(info))
    with pytest.raises(TripletDataError, match="re-record") as e:
        load_episode_frames(old, (64, 64), progress=False)
    assert str(old) in str(e.value)


def test_episodes_without_tracks_are_skipped_and_counted(tmp_path):
    from dynaflip_ros.data.triplets import TripletSampler, load_episode_frames

    root = write_synthetic_dataset(tmp_path / "mixed", n_episodes=3, length=16, idle_tail=2, trackless_episodes=(1,))
    frames = load_episode_frames(root, (64, 64), progress=False)
    sampler = TripletSampler(frames, _cfg())
    s = sampler.summary()
    assert s["episodes"] == 3 and s["episodes_used"] == 2 and s["episodes_skipped_no_tracks"] == 1
    assert set(frames.episode_index[sampler.clip_rows].tolist()) == {0, 2}


def test_sampler_clips_still_handling_and_summary(frames):
    from dynaflip_ros.data.triplets import TripletSampler

    # candidates: t + 5 <= 28 -> t in 0..23 per episode; nothing moves for t >= 20 (idle tail)
    keep_all = TripletSampler(frames, _cfg(still_keep_fraction=1.0))
    assert keep_all.num_candidates == 3 * 24 and keep_all.num_clips == 3 * 24
    assert keep_all.clips_kept_still == 3 * 4 and keep_all.clip_still.sum() == 12
    drop_all = TripletSampler(frames, _cfg(still_keep_fraction=0.0))
    assert drop_all.num_clips == 3 * 20 and drop_all.summary()["clips_dropped_still"] == 12
    sampler = TripletSampler(frames, _cfg(still_keep_fraction=0.25))
    s = sampler.summary()
    assert (s["clips_kept_moving"], s["clips_kept_still"], s["clips_dropped_still"]) == (60, 3, 9)
    assert s["clip_candidates"] == 72 and s["clips_kept"] == 63 and s["clips_dropped_no_valid_points"] == 0
    # kept still clips are spread over the episodes and carry the "still" language
    still_rows = sampler.clip_rows[sampler.clip_still]
    assert len(set(frames.episode_index[still_rows].tolist())) == 3
    assert all(sampler.group_keys[g] == ("still", None) for g in sampler.clip_group[sampler.clip_still])
    # "none" counts every clip as moving
    assert TripletSampler(frames, _cfg(motion_source="none", still_keep_fraction=0.0)).num_clips == 72


def test_batches_masks_and_flow(frames):
    from dynaflip_ros.data.triplets import TripletSampler

    sampler = TripletSampler(frames, _cfg(frame_offset=5, flow_window=6, still_keep_fraction=1.0, augment=False))
    rng = np.random.default_rng(0)
    batch = sampler.sample(32, rng)
    assert batch.images.shape == (32, 3, 64, 64, 3) and batch.tcn_views == (0, 1, 2)
    assert batch.flow.shape == (32, 6, schema.N_TRACK, 3) and batch.flow_valid.shape == (32, schema.N_TRACK)
    assert batch.text_ids.shape == batch.language_ids.shape == batch.still.shape == (32,)
    for i in range(32):
        ep, t = int(batch.episode_ids[i]), int(batch.frame_t[i])
        row = int(frames.episode_start[ep]) + t
        assert np.array_equal(batch.images[i, 0], frames.images[row])
        assert np.array_equal(batch.images[i, 1], frames.images[row + 5])
        # a point counts when valid in every frame of the window; invalid points are zeroed
        window = range(t, t + 6)
        occluded = any(f in OCCLUDED_FRAMES for f in window)
        assert batch.flow_valid[i, :28].all() and not batch.flow_valid[i, EMPTY_ROWS].any()
        assert batch.flow_valid[i, OCCLUDED_ROWS].all() == (not occluded)
        m = batch.flow_valid[i]
        assert np.array_equal(batch.flow[i][:, m], frames.tracks[row : row + 6][:, m])
        assert not batch.flow[i][:, ~m].any()
        later = [r for r in range(row + 6, int(frames.episode_start[ep]) + 30) if np.array_equal(frames.images[r], batch.images[i, 2])]
        assert later, "s2 must come from the same episode after t + k"
    # the flow normaliser's examples carry the same masks
    flows, valid = sampler.all_clip_flows(max_clips=10)
    assert flows.shape == (10, 6, schema.N_TRACK, 3) and valid.shape == (10, schema.N_TRACK)
    assert not flows[:, :, ~valid[0]][0].any()


def test_flow_padding_at_episode_end_and_independent_tcn(frames):
    from dynaflip_ros.data.triplets import TripletSampler

    cfg = _cfg(frame_offset=3, flow_window=8, motion_source="none", tcn_mode="independent")
    sampler = TripletSampler(frames, cfg)
    last_start = int(sampler.clip_rows.max())  # t = 26 in episode 2: frames 26..29, then padded
    assert last_start == 60 + 26
    flows, valid = sampler.all_clip_flows(max_clips=10_000)
    idx = int(np.flatnonzero(sampler.clip_rows == last_start)[0])
    f = flows[idx][:, valid[idx]]
    assert np.array_equal(f[:4], frames.tracks[86:90][:, valid[idx]])
    assert all(np.array_equal(f[j], frames.tracks[89][valid[idx]]) for j in range(4, 8))
    batch = sampler.sample(8, np.random.default_rng(1))
    assert batch.images.shape[1] == 5 and batch.tcn_views == (2, 3, 4)


def test_heldout_split_by_episode(frames):
    from dynaflip_ros.data.triplets import TripletSampler

    sampler = TripletSampler(frames, _cfg(heldout_fraction=0.34, still_keep_fraction=0.0))
    held_eps = set(frames.episode_index[sampler.clip_rows[sampler.heldout_clips]].tolist())
    train_eps = set(frames.episode_index[sampler.clip_rows[sampler.train_clips]].tolist())
    assert len(held_eps) == 1 and not held_eps & train_eps and len(train_eps) == 2
    assert sampler.summary()["episodes_heldout"] == 1
    for _ in range(5):  # training batches never see a held-out clip
        batch = sampler.sample(16, np.random.default_rng(_))
        assert not set(batch.episode_ids.tolist()) & held_eps
    ho = sampler.heldout_batch(8)
    assert ho.images.shape[:2] == (8, 2) and ho.tcn_views == () and set(ho.episode_ids.tolist()) == held_eps
    again = sampler.heldout_batch(8)  # deterministic
    assert np.array_equal(ho.frame_t, again.frame_t) and np.array_equal(ho.text_ids, again.text_ids)
    assert TripletSampler(frames, _cfg()).heldout_batch(8) is None


def test_augment_same_for_all_views_of_a_sample():
    from dynaflip_ros.data.triplets import augment_images

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(4, 1, 32, 32, 3), dtype=np.uint8)
    views = np.repeat(img, 3, axis=1)  # three identical views per sample
    out = augment_images(views, TripletDataConfig(max_shift_px=4), np.random.default_rng(1))
    assert out.shape == views.shape and out.dtype == np.uint8
    assert np.array_equal(out[:, 0], out[:, 1]) and np.array_equal(out[:, 0], out[:, 2])
    assert not np.array_equal(out, views)
    with pytest.raises(ValueError):
        augment_images(views[:, 0], TripletDataConfig(), rng)


def test_sampler_rejects_wrong_point_count(frames):
    from dynaflip_ros.data.triplets import TripletDataError, TripletSampler

    with pytest.raises(TripletDataError, match="num_points"):
        TripletSampler(frames, TripletDataConfig(num_points=32))
    with pytest.raises(TripletDataError, match="num_points"):
        TripletSampler(frames, TripletDataConfig(num_points=32, track_layout="object_slots"))


def test_object_slot_rows():
    """Each catalogue object owns P fixed slot rows, filled from its own recorded block."""
    from dynaflip_ros.data.triplets import object_slot_rows
    from dynaflip_ros.task.catalogue import CATALOGUE

    names = list(CATALOGUE)
    src, dst = object_slot_rows(("green cube", "red cube", "not an object", "yellow ball"), 4)
    pairs = dict(zip(dst.tolist(), src.tolist()))
    g, r, y = (names.index(n) * 4 for n in ("green cube", "red cube", "yellow ball"))
    assert [pairs[g + j] for j in range(4)] == [0, 8, 16, 24]  # the target block, evenly spaced
    assert [pairs[r + j] for j in range(4)] == [48, 52, 56, 60]  # first other-object block
    assert [pairs[y + j] for j in range(4)] == [80, 84, 88, 92]  # third block (second one unknown)
    fingers = len(names) * 4 + np.arange(16)
    assert [pairs[int(d)] for d in fingers] == list(range(32, 48))
    assert len(src) == 3 * 4 + 16
    with pytest.raises(ValueError, match="points_per_object"):
        object_slot_rows(("red cube",), 17)


def test_object_slot_layout(frames):
    """With track_layout "object_slots" a row always means the same catalogue object: the
    target's slot and the other object's slot hold their recorded points, absent objects are
    invalid, and the flow has flow_points(cfg) rows."""
    from dynaflip_ros.data.triplets import TripletSampler, flow_points
    from dynaflip_ros.task.catalogue import CATALOGUE

    cfg = _cfg(track_layout="object_slots", points_per_object=8, still_keep_fraction=1.0, augment=False)
    n = len(CATALOGUE) * 8 + 16
    assert flow_points(cfg) == n and flow_points(_cfg()) == schema.N_TRACK
    sampler = TripletSampler(frames, cfg)
    assert sampler.frames.tracks.shape == (90, n, 3) and sampler.frames.valid.shape == (90, n)
    names = list(CATALOGUE)
    for e, target in enumerate(frames.episode_target):  # red cube, blue bar, red cube; the other: white mug
        rows = slice(frames.episode_start[e], frames.episode_start[e] + frames.episode_length[e])
        t0, m0 = names.index(target) * 8, names.index(OTHER_OBJECT) * 8
        assert np.array_equal(sampler.frames.tracks[rows, t0:t0 + 8], frames.tracks[rows, 0:32:4])
        assert np.array_equal(sampler.frames.tracks[rows, m0:m0 + 8], frames.tracks[rows, 48:64:2])
        assert np.array_equal(sampler.frames.valid[rows, n - 16:], frames.valid[rows, 32:48])
        present = {t0 // 8, m0 // 8}
        absent = [j for j in range(len(names)) if j not in present]
        assert not sampler.frames.valid[rows][:, [j * 8 + i for j in absent for i in range(8)]].any()
    batch = sampler.sample(8, np.random.default_rng(0))
    assert batch.flow.shape == (8, 6, n, 3) and batch.flow_valid.shape == (8, n)


def test_reads_only_committed_files_of_a_recorder_dataset(dataset, frames, tmp_path):
    """A dataset from data.recorder lists its committed parquet files in a commit record; a torn
    file of an interrupted episode (no parquet footer) is ignored."""
    import shutil

    from dynaflip_ros.data.dataset_io import snapshot_commit, write_commit
    from dynaflip_ros.data.triplets import load_episode_frames

    root = tmp_path / "ds"
    shutil.copytree(dataset, root)
    write_commit(root, snapshot_commit(root, ["put the red cube in the sink", "put the blue bar in the sink"]))
    torn = root / "data" / "chunk-000" / "file-999.parquet"
    torn.write_bytes(b"PAR1 interrupted")
    loaded = load_episode_frames(root, (64, 64), progress=False)
    assert loaded.num_frames == frames.num_frames and loaded.episode_task == frames.episode_task
    assert loaded.episode_target == frames.episode_target
    assert np.array_equal(loaded.images, frames.images) and np.array_equal(loaded.valid, frames.valid)
