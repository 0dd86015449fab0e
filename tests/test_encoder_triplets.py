"""DynaFLIP training samples from a LeRobotDataset v3 (data/triplets.py), on a synthetic dataset.

The dataset comes from tests/synthetic_dataset.py (shared with tests/test_encoder_train.py).
"""
import numpy as np
import pytest

from dynaflip_ros.configs.encoder import TripletDataConfig
from dynaflip_ros.data import schema

from synthetic_dataset import FOCAL_PX, OBJECTS, write_synthetic_dataset


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
    assert frames.episode_ids.tolist() == [0, 1, 2] and frames.episode_length.tolist() == [30, 30, 30]
    assert frames.frame_index[:30].tolist() == list(range(30))
    # language of each frame = phase_description(task, phase)
    assert frames.texts[frames.text_id[0]] == "move the gripper above the red cube"
    assert frames.texts[frames.text_id[30 + 10]] == "lift the blue ball off the table"
    assert len(frames.texts) == 2 * len(schema.PHASES) - 1  # "move the gripper away from the sink" is shared
    # the object (red square) is where the first track says it is
    c = frames.tracks[0].mean(0)
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


def test_sampler_clips_motion_filter_and_batches(frames):
    from dynaflip_ros.data.triplets import TripletSampler

    cfg = TripletDataConfig(frame_offset=5, flow_window=6, motion_source="either", augment=False)
    sampler = TripletSampler(frames, cfg)
    # valid starts: t + 5 <= 28 -> t in 0..23 per episode; t >= 20 sees no motion at all
    assert sampler.num_candidates == 3 * 24
    assert sampler.num_clips == 3 * 20
    assert sampler.summary()["clips_dropped_low_motion"] == 12
    # tracks-only filter also drops the approach clips where only the arm moves (t + T - 1 < 6)
    only_tracks = TripletSampler(frames, TripletDataConfig(motion_source="tracks"))
    assert only_tracks.num_clips < sampler.num_clips
    assert TripletSampler(frames, TripletDataConfig(motion_source="none")).num_clips == 3 * 24

    rng = np.random.default_rng(0)
    batch = sampler.sample(16, rng)
    assert batch.images.shape == (16, 3, 64, 64, 3) and batch.tcn_views == (0, 1, 2)
    assert batch.flow.shape == (16, 6, schema.N_TRACK, 3) and batch.text_ids.shape == (16,)
    for i in range(16):
        ep, t = int(batch.episode_ids[i]), int(batch.frame_t[i])
        row = int(frames.episode_start[ep]) + t
        assert np.array_equal(batch.images[i, 0], frames.images[row])
        assert np.array_equal(batch.images[i, 1], frames.images[row + 5])
        assert np.array_equal(batch.flow[i], frames.tracks[row : row + 6])
        assert batch.text_ids[i] == frames.text_id[row]
        # s2 is a later frame of the same episode
        later = [r for r in range(row + 6, int(frames.episode_start[ep]) + 30) if np.array_equal(frames.images[r], batch.images[i, 2])]
        assert later, "s2 must come from the same episode after t + k"


def test_flow_padding_at_episode_end_and_independent_tcn(frames):
    from dynaflip_ros.data.triplets import TripletSampler

    cfg = TripletDataConfig(frame_offset=3, flow_window=8, motion_source="none", tcn_mode="independent")
    sampler = TripletSampler(frames, cfg)
    last_start = int(sampler.clip_rows.max())  # t = 26 in episode 2: frames 26..29, then padded
    assert last_start == 60 + 26
    flows = sampler.all_clip_flows(max_clips=10_000)
    idx = int(np.flatnonzero(sampler.clip_rows == last_start)[0])
    f = flows[idx]
    assert np.array_equal(f[:4], frames.tracks[86:90])
    assert all(np.array_equal(f[j], frames.tracks[89]) for j in range(4, 8))
    batch = sampler.sample(8, np.random.default_rng(1))
    assert batch.images.shape[1] == 5 and batch.tcn_views == (2, 3, 4)


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
    from dynaflip_ros.data.triplets import TripletSampler

    with pytest.raises(ValueError, match="num_points"):
        TripletSampler(frames, TripletDataConfig(num_points=16))


def test_reads_only_committed_files_of_a_recorder_dataset(dataset, frames, tmp_path):
    """A dataset from data.recorder lists its committed parquet files in a commit record; a torn
    file of an interrupted episode (no parquet footer) is ignored."""
    import shutil

    from dynaflip_ros.data.dataset_io import snapshot_commit, write_commit
    from dynaflip_ros.data.triplets import load_episode_frames

    root = tmp_path / "ds"
    shutil.copytree(dataset, root)
    write_commit(root, snapshot_commit(root, ["Pick the red cube into the sink", "Pick the blue ball into the sink"]))
    torn = root / "data" / "chunk-000" / "file-999.parquet"
    torn.write_bytes(b"PAR1 interrupted")
    loaded = load_episode_frames(root, (64, 64), progress=False)
    assert loaded.num_frames == frames.num_frames and loaded.texts == frames.texts
    assert np.array_equal(loaded.images, frames.images)
