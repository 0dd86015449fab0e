"""DynaFLIP training samples from a LeRobotDataset v3 (data/triplets.py), on a synthetic dataset.

`write_synthetic_dataset` is also used by tests/test_encoder_train.py.
"""
import numpy as np
import pytest

from dynaflip_ros.configs.encoder import TripletDataConfig
from dynaflip_ros.data import schema

OBJECTS = {"red cube": (220, 40, 40), "blue ball": (40, 60, 220)}
FOCAL_PX = 80.0
DEPTH_M = 0.8


def write_synthetic_dataset(root, n_episodes=4, length=30, idle_tail=10, image_hw=(64, 64), seed=0):
    """A LeRobotDataset v3 with schema.features: a coloured square (the object) on a gradient and a
    dark bar (the arm). Per episode: the arm moves during the first `length - idle_tail` frames
    (state changes), the object stays for a third of that, then slides in an episode-specific
    direction at 1 cm/frame; in the last `idle_tail` frames nothing moves. Point tracks: 32 points
    on the object (camera optical frame, metres), projected with a pinhole camera."""
    from dynaflip_ros._compat import torchvision_shim

    torchvision_shim.apply()
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    rng = np.random.default_rng(seed)
    h, w = image_hw
    ds = LeRobotDataset.create(repo_id="local/synthetic", root=root, fps=schema.RECORD_FPS,
                               features=schema.features(image_hw), use_videos=False)
    offsets = np.concatenate([rng.uniform(-0.02, 0.02, size=(schema.N_TRACK, 2)), np.zeros((schema.N_TRACK, 1))], 1)
    yy, xx = np.mgrid[0:h, 0:w]
    background = np.stack([90 + 60 * xx / w, 90 + 60 * yy / h, np.full((h, w), 120.0)], -1)
    moving_len = length - idle_tail
    still = moving_len // 3
    for ep in range(n_episodes):
        name = list(OBJECTS)[ep % len(OBJECTS)]
        start = rng.uniform(-0.08, 0.08, size=2)
        angle = rng.uniform(0, 2 * np.pi)
        direction = np.array([np.cos(angle), np.sin(angle)])
        for i in range(length):
            s = np.clip(i - still, 0, moving_len - still)
            centre = np.array([*(start + 0.01 * s * direction), DEPTH_M])
            points = (centre + offsets).astype(np.float32)  # (N, 3)
            arm = 0.05 * min(i, moving_len)
            phase = min(i * len(schema.PHASES) // moving_len, len(schema.PHASES) - 1)
            gripper = 1.0 if 2 <= phase < 5 else 0.0
            state = np.array([arm] * 6 + [gripper], np.float32)
            img = background.copy()
            u, v = FOCAL_PX * centre[0] / DEPTH_M + w / 2, FOCAL_PX * centre[1] / DEPTH_M + h / 2
            r = 4
            img[max(int(v) - r, 0): int(v) + r, max(int(u) - r, 0): int(u) + r] = OBJECTS[name]
            bar_x = int((0.1 + 0.8 * min(i, moving_len) / moving_len) * w)
            img[: h // 3, max(bar_x - 2, 0): bar_x + 2] = (30, 30, 30)
            ds.add_frame({
                schema.IMAGE_KEY: img.clip(0, 255).astype(np.uint8),
                schema.STATE_KEY: state,
                schema.ACTION_KEY: state,
                schema.TRACKS_KEY: points,
                schema.PHASE_KEY: np.array([phase], np.int64),
                "task": f"Pick the {name} into the sink",
            })
        ds.save_episode()
    ds.finalize()
    return root


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
