"""The recorded-episode schema: one LeRobotDataset v3.0 layout for sim and (later) teleop demos.

Frames are recorded at `RECORD_FPS` (the policy rate). One dataset row per frame:

| key                        | dtype   | shape          | meaning                                             |
|----------------------------|---------|----------------|-----------------------------------------------------|
| observation.image          | image   | (H, W, 3)      | fixed camera RGB, uint8 (PNG inside parquet)       |
| observation.state          | float32 | (7,)           | 6 joint positions (rad) + gripper 0 open..1 closed  |
| action                     | float32 | (7,)           | joint position target (rad) + gripper command       |
| observation.point_tracks   | float32 | (N_TRACK, 3)   | ground-truth 3D points (layout `TRACK_SLICES`),     |
|                            |         |                | camera optical frame, metres (same points each frame)|
| observation.point_valid    | float32 | (N_TRACK,)     | 1 where the point exists and is in view, else 0     |
| observation.phase          | int64   | (1,)           | expert phase index into PHASES (-1 when unknown)    |
| task (LeRobot built-in)    | str     |                | the instruction, "put the red cube in the sink"     |

Point layout (`TRACK_SLICES`): rows 0-31 the target object, 32-47 the gripper finger pads (8 per
pad), 48-95 up to three other objects on the table (16 points each, in the order of the episode's
`objects` list without the target). A row is valid (`observation.point_valid` = 1) when its slot
is filled (an object / finger exists) and the point lies in front of the camera inside the image;
rows of empty slots are 0 and invalid. Recordings without ground-truth tracks (a real cell) store
zeros and an all-zero mask; `data.triplets` refuses to build flow from them.

The language of a training clip (docs/method.md §1) is built by `data.triplets` from the episode's
target object (the recorder's side record, `dataset_io.read_episode_records`) and the clip's
expert phases (`observation.phase`) with `task.instructions.clip_sentences`.
"""
from __future__ import annotations

RECORD_FPS = 10
N_TRACK = 96
# Rows of observation.point_tracks (module docstring).
TRACK_SLICES: dict[str, slice] = {
    "target": slice(0, 32),
    "fingers": slice(32, 48),
    "others": slice(48, 96),
}
POINTS_PER_FINGER = 8
POINTS_PER_OTHER_OBJECT = 16
MAX_OTHER_OBJECTS = 3


def object_rows(k: int) -> slice:
    """Rows of the k-th object of an episode in row order: k = 0 the target (32 rows), k = 1..3
    the other-object blocks (16 rows each). Raises ValueError for k outside 0..MAX_OTHER_OBJECTS."""
    if not 0 <= k <= MAX_OTHER_OBJECTS:
        raise ValueError(f"object index must be in [0, {MAX_OTHER_OBJECTS}], got {k}")
    if k == 0:
        return TRACK_SLICES["target"]
    start = TRACK_SLICES["others"].start + (k - 1) * POINTS_PER_OTHER_OBJECT
    return slice(start, start + POINTS_PER_OTHER_OBJECT)
STATE_DIM = 7
ACTION_DIM = 7

IMAGE_KEY = "observation.image"
STATE_KEY = "observation.state"
ACTION_KEY = "action"
TRACKS_KEY = "observation.point_tracks"
VALID_KEY = "observation.point_valid"
PHASE_KEY = "observation.phase"

# Phases of a pick-into-sink episode, in order (the scripted expert reports them; teleop -> -1).
PHASES: tuple[str, ...] = ("approach", "descend", "grasp", "lift", "carry", "release", "retreat")


def features(image_hw: tuple[int, int]) -> dict:
    """LeRobotDataset `features` dict for this schema (image size (H, W))."""
    h, w = image_hw
    return {
        IMAGE_KEY: {"dtype": "image", "shape": (h, w, 3), "names": ["height", "width", "channels"]},
        STATE_KEY: {
            "dtype": "float32",
            "shape": (STATE_DIM,),
            "names": ["shoulder_pan", "shoulder_lift", "elbow", "wrist_1", "wrist_2", "wrist_3", "gripper"],
        },
        ACTION_KEY: {
            "dtype": "float32",
            "shape": (ACTION_DIM,),
            "names": ["shoulder_pan", "shoulder_lift", "elbow", "wrist_1", "wrist_2", "wrist_3", "gripper"],
        },
        TRACKS_KEY: {"dtype": "float32", "shape": (N_TRACK, 3), "names": ["point", "xyz"]},
        VALID_KEY: {"dtype": "float32", "shape": (N_TRACK,), "names": ["point"]},
        PHASE_KEY: {"dtype": "int64", "shape": (1,), "names": ["phase"]},
    }


def valid_point_centre(points, valid):
    """Mean of the valid points: points (..., P, 3) metres, valid (..., P) bool -> (..., 3)
    float64, NaN where none of the P points is valid."""
    import numpy as np

    w = np.asarray(valid).astype(np.float64)
    count = w.sum(-1)
    centre = (np.asarray(points, np.float64) * w[..., None]).sum(-2) / np.maximum(count, 1.0)[..., None]
    centre[count == 0] = np.nan
    return centre


def finger_pad_centres(tracks, valid):
    """Centre of each finger pad's valid points: tracks (..., N_TRACK, 3) metres, valid
    (..., N_TRACK) bool -> (..., 2, 3) float64 (rows `TRACK_SLICES["fingers"]`, POINTS_PER_FINGER
    per pad), NaN for a pad with no valid point. Their midpoint is where the gripper closes."""
    import numpy as np

    f0 = TRACK_SLICES["fingers"].start
    pads = [slice(f0 + k * POINTS_PER_FINGER, f0 + (k + 1) * POINTS_PER_FINGER) for k in range(2)]
    return np.stack([valid_point_centre(np.asarray(tracks)[..., r, :], np.asarray(valid)[..., r]) for r in pads], axis=-2)


def target_offset_from_fingers(tracks, valid):
    """The instructed object's centre (rows `object_rows(0)`) minus the midpoint of the finger
    pads (`finger_pad_centres`): tracks (..., N_TRACK, 3) metres, valid (..., N_TRACK) bool ->
    (..., 3) float64, camera axes, NaN where the object or a pad has no valid point; the offset
    the gripper still has to close."""
    import numpy as np

    rows = object_rows(0)
    tracks, valid = np.asarray(tracks), np.asarray(valid)
    return valid_point_centre(tracks[..., rows, :], valid[..., rows]) - finger_pad_centres(tracks, valid).mean(axis=-2)
