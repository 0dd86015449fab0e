"""A small synthetic LeRobotDataset v3 for the encoder tests (tests/test_encoder_triplets.py,
tests/test_encoder_train.py). A plain module (not a test module): test files import it by name.

Scene: a coloured square (the object) on a gradient and a dark bar (the arm), seen by a pinhole
camera with focal length FOCAL_PX (pixels) at depth DEPTH_M (metres); see write_synthetic_dataset.
"""
import numpy as np

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
                schema.VALID_KEY: np.ones(schema.N_TRACK, np.float32),
                schema.PHASE_KEY: np.array([phase], np.int64),
                "task": f"Pick the {name} into the sink",
            })
        ds.save_episode()
    ds.finalize()
    return root
