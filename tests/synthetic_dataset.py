"""A small synthetic LeRobotDataset v3 (schema `data.schema`) for the encoder tests
(tests/test_encoder_triplets.py, tests/test_triplets_language.py, tests/test_encoder_train.py,
tests/test_encoder_resume.py). A plain module (not a test module): test files import it by name.

Scene: a coloured square (the target object) and a grey square (one other object) on a
gradient, and a dark bar (the arm), seen by a pinhole camera with focal length FOCAL_PX
(pixels) at depth DEPTH_M (metres); see write_synthetic_dataset.
"""
import numpy as np

from dynaflip_ros.data import schema

OBJECTS = {"red cube": (220, 40, 40), "blue bar": (40, 60, 220)}  # catalogue names -> RGB
OTHER_OBJECT = "white mug"
FOCAL_PX = 80.0
DEPTH_M = 0.8
OCCLUDED_ROWS = slice(28, 32)  # target rows invalid (out of view) in frames OCCLUDED_FRAMES
OCCLUDED_FRAMES = range(12, 15)
EMPTY_ROWS = slice(64, 96)  # other-object slots 2 and 3: empty (zeros, invalid) in every frame


def write_synthetic_dataset(root, n_episodes=4, length=30, idle_tail=10, image_hw=(64, 64), seed=0,
                            trackless_episodes=(), no_tracks=False, side_records=True):
    """A LeRobotDataset v3 with schema.features, plus the recorder's side records (target object
    of each episode, `data.dataset_io`) unless `side_records` is False.

    Per episode (target alternating over OBJECTS): the arm moves during the first
    `length - idle_tail` frames (state changes), the target stays for a third of that, then
    slides in an episode-specific direction at 1 cm/frame; in the last `idle_tail` frames nothing
    moves. Expert phase i * 7 // (length - idle_tail), capped at 6 ("retreat") in the idle tail.
    Point tracks (camera optical frame, metres): rows 0-31 on the target (rows OCCLUDED_ROWS
    invalid in frames OCCLUDED_FRAMES, their positions kept), 32-47 finger pads at the arm, 48-63
    the static other object, 64-95 empty (zeros, invalid). Episodes in `trackless_episodes`, or
    every episode with `no_tracks` (a real-cell recording), store zero tracks and an all-zero mask.
    """
    from dynaflip_ros._compat import torchvision_shim

    torchvision_shim.apply()
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from dynaflip_ros.data.dataset_io import append_episode_record

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
        other = np.array([*(-start), DEPTH_M])
        angle = rng.uniform(0, 2 * np.pi)
        direction = np.array([np.cos(angle), np.sin(angle)])
        trackless = no_tracks or ep in trackless_episodes
        for i in range(length):
            s = np.clip(i - still, 0, moving_len - still)
            centre = np.array([*(start + 0.01 * s * direction), DEPTH_M])
            arm = 0.05 * min(i, moving_len)
            arm_xy = np.array([0.1 * arm - 0.1, -0.2, DEPTH_M - 0.1])
            points = np.zeros((schema.N_TRACK, 3), np.float32)  # (N, 3)
            valid = np.zeros(schema.N_TRACK, np.float32)
            points[schema.TRACK_SLICES["target"]] = (centre + offsets[0:32])
            points[schema.TRACK_SLICES["fingers"]] = (arm_xy + offsets[32:48])
            points[48:64] = other + offsets[48:64]
            valid[:64] = 1.0
            if i in OCCLUDED_FRAMES:
                valid[OCCLUDED_ROWS] = 0.0
            if trackless:
                points[:] = 0.0
                valid[:] = 0.0
            phase = min(i * len(schema.PHASES) // moving_len, len(schema.PHASES) - 1)
            gripper = 1.0 if 2 <= phase < 5 else 0.0
            state = np.array([arm] * 6 + [gripper], np.float32)
            img = background.copy()
            r = 4
            for c, colour in ((other, (200, 200, 200)), (centre, OBJECTS[name])):
                u, v = FOCAL_PX * c[0] / DEPTH_M + w / 2, FOCAL_PX * c[1] / DEPTH_M + h / 2
                img[max(int(v) - r, 0): max(int(v) + r, 0), max(int(u) - r, 0): max(int(u) + r, 0)] = colour
            bar_x = int((0.1 + 0.8 * min(i, moving_len) / moving_len) * w)
            img[: h // 3, max(bar_x - 2, 0): bar_x + 2] = (30, 30, 30)
            ds.add_frame({
                schema.IMAGE_KEY: img.clip(0, 255).astype(np.uint8),
                schema.STATE_KEY: state,
                schema.ACTION_KEY: state,
                schema.TRACKS_KEY: points,
                schema.VALID_KEY: valid,
                schema.PHASE_KEY: np.array([phase], np.int64),
                "task": f"put the {name} in the sink",
            })
        ds.save_episode()
        if side_records:
            append_episode_record(root, {"episode_index": ep, "task": f"put the {name} in the sink", "seed": ep,
                                         "object_name": name, "extra": {"objects": [name, OTHER_OBJECT],
                                                                   "distractors": [OTHER_OBJECT]}})
    ds.finalize()
    return root
