"""Privileged-state features: the policy recipe's ceiling when the embedding says everything.

A policy trained and run on ground-truth scene state instead of f(o_t) (a "privileged" or
"state-based" policy, the usual upper-bound arm of visuomotor papers, e.g. Diffusion Policy's
state-observation results, Chi et al. 2023 §5) separates the two ways the learned stack can
fail: when this policy cannot do the task either, the policy recipe (data, steps, action
representation) is what limits, not the image encoder.

The features are read off the recorded point tracks (`data.schema.TRACK_SLICES`; camera optical
frame, metres), so the training data is the recorded demos themselves and the simulated cell
produces the same vector at run time (`SimPrivilegedBackend`, `sim.pick_into_sink.
PickIntoSinkEnv.scene_tracks`). Per catalogue object (`task.catalogue` order), 10 values:

    present (0 / 1), centre (3), covariance of its tracked points (6: xx, yy, zz, xy, xz, yz,
    in cm^2, i.e. 1e4 m^2, so the shape and in-plane orientation of elongated objects show)

all zero when the object is not on the table or none of its points is valid; then each finger
pad's centre (2 x 3; their distance is the gripper opening, their axis the gripper yaw). With
`target_first`, the instructed object's 10 values come first as well (dimension
PRIVILEGED_DIM + FEATURES_PER_OBJECT): the instruction is then grounded for the policy, so the
difference between the two bounds is what grounding the instruction in the object slots costs. With
`finger_offset`, 3 more values close the vector: the instructed object's centre minus the
midpoint of the finger pads (m, camera axes; 0 when either is out of view), the offset the gripper
still has to close, which the policy then need not form as a difference of two positions (a
policy given it grasps far more precisely, docs/results.md). The
centre and covariance come from the object's valid points; its recorded points are a fixed
surface sample, 32 points for the instructed object and 16 for the others (`sim.pick_into_sink`),
so the two samples' centres differ by a few millimetres - a small cue of which object is the
target, which makes this bound, if anything, optimistic.
"""
from __future__ import annotations

import hashlib

import numpy as np

from dynaflip_ros.data import schema
from dynaflip_ros.eval.probe import object_blocks
from dynaflip_ros.task.catalogue import CATALOGUE

FEATURES_PER_OBJECT = 10
PRIVILEGED_DIM = len(CATALOGUE) * FEATURES_PER_OBJECT + 2 * 3
FEATURE_VERSION = "privileged-v1:present,centre,cov_cm2;finger_pads"
_COV_SCALE = 1e4  # m^2 -> cm^2
_IU = (np.array([0, 1, 2, 0, 0, 1]), np.array([0, 1, 2, 1, 2, 2]))  # xx yy zz xy xz yz


def feature_dim(target_first: bool = False, finger_offset: bool = False) -> int:
    """Width of `privileged_features` (module docstring)."""
    return PRIVILEGED_DIM + (FEATURES_PER_OBJECT if target_first else 0) + (3 if finger_offset else 0)


def privileged_features(tracks: np.ndarray, valid: np.ndarray, episode_start: np.ndarray,
                        episode_length: np.ndarray, episode_objects: list[tuple[str, ...]],
                        target_first: bool = False, finger_offset: bool = False) -> np.ndarray:
    """(M, feature_dim(target_first, finger_offset)) float32 features (module docstring) of M frames.

    tracks (M, N_TRACK, 3) metres, valid (M, N_TRACK) bool, rows ordered by episode;
    episode_start / episode_length (E,) row ranges; episode_objects: per episode the objects in
    track-row order (target first, then the other-object blocks). Objects outside the catalogue
    are left out. Raises ValueError on a track count other than N_TRACK or mismatched lengths.
    """
    tracks = np.asarray(tracks, np.float64)
    valid = np.asarray(valid, bool)
    if tracks.shape[1:] != (schema.N_TRACK, 3) or valid.shape != tracks.shape[:2]:
        raise ValueError(f"tracks must be (M, {schema.N_TRACK}, 3) with valid (M, {schema.N_TRACK}), "
                         f"got {tracks.shape} / {valid.shape}")
    if not len(episode_start) == len(episode_length) == len(episode_objects):
        raise ValueError("episode_start, episode_length and episode_objects must have one entry per episode")
    names = list(CATALOGUE)
    out = np.zeros((len(tracks), PRIVILEGED_DIM))
    target = np.zeros((len(tracks), FEATURES_PER_OBJECT))  # the instructed object's block (target_first)
    for rows, j, block in object_blocks(episode_start, episode_length, episode_objects):
        pts, w = tracks[rows, block], valid[rows, block].astype(np.float64)  # (n, P, 3), (n, P)
        count = w.sum(1)
        centre = (pts * w[..., None]).sum(1) / np.maximum(count, 1.0)[:, None]  # (n, 3)
        d = (pts - centre[:, None]) * w[..., None]
        cov = np.einsum("npi,npj->nij", d, d) / np.maximum(count, 1.0)[:, None, None]  # (n, 3, 3)
        f = np.concatenate([np.ones((len(centre), 1)), centre, _COV_SCALE * cov[:, _IU[0], _IU[1]]], axis=1)
        f[count == 0] = 0.0
        out[rows, j * FEATURES_PER_OBJECT : (j + 1) * FEATURES_PER_OBJECT] = f
        if block == schema.object_rows(0):
            target[rows] = f
    pads = schema.finger_pad_centres(tracks, valid)  # (M, 2, 3), NaN where a pad is out of view
    out[:, len(names) * FEATURES_PER_OBJECT :] = np.nan_to_num(pads).reshape(len(tracks), 6)
    parts = [target, out] if target_first else [out]
    if finger_offset:
        parts.append(np.nan_to_num(schema.target_offset_from_fingers(tracks, valid)))  # (M, 3)
    return np.concatenate(parts, axis=1).astype(np.float32)


def layout_name(target_first: bool = False, finger_offset: bool = False) -> str:
    """"slots" or "target_first", with "+finger_offset" when those 3 values close the vector."""
    return ("target_first" if target_first else "slots") + ("+finger_offset" if finger_offset else "")


def privileged_manifest(target_first: bool = False, finger_offset: bool = False):
    """An `encoder.manifest.EncoderManifest` for the privileged features, so the policy trainer,
    checkpoint and version-skew guard treat them like any encoder: embedding_dim PRIVILEGED_DIM,
    weights_sha256 the sha256 of FEATURE_VERSION, the layout and the catalogue's names (another
    feature definition or catalogue is another "encoder")."""
    from dynaflip_ros.encoder.manifest import EncoderManifest

    layout = layout_name(target_first, finger_offset)
    ident = hashlib.sha256(f"{FEATURE_VERSION}|{layout}|{','.join(CATALOGUE)}".encode()).hexdigest()
    return EncoderManifest(input_hw=(1, 1), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                           embedding_dim=feature_dim(target_first, finger_offset), weights_sha256=ident, architecture=FEATURE_VERSION,
                           config={"kind": "privileged", "layout": layout,
                                   "source": "point tracks (data.schema.TRACK_SLICES)"})


class SimPrivilegedBackend:
    """An `inference.base.EncoderBackend` look-alike for `eval.closed_loop`: `embed(images)`
    ignores the images and returns the privileged features of the simulated scene's current
    state, (B, feature_dim(target_first, finger_offset)) float32 (the same row B times). `env`: a
    reset `sim.pick_into_sink.PickIntoSinkEnv`; RuntimeError when it has no episode yet."""

    def __init__(self, env, target_first: bool = False, finger_offset: bool = False):
        self.env = env
        self.target_first = bool(target_first)
        self.finger_offset = bool(finger_offset)
        self.manifest = privileged_manifest(self.target_first, self.finger_offset)

    def embed(self, images: np.ndarray) -> np.ndarray:
        ep = self.env.episode
        if ep is None:
            raise RuntimeError("SimPrivilegedBackend: the environment has not been reset")
        pts, ok = self.env.scene_tracks()
        f = privileged_features(pts[None], ok[None], np.array([0]), np.array([1]), [(ep.object_name, *ep.distractors)],
                                target_first=self.target_first, finger_offset=self.finger_offset)
        return np.repeat(f, len(images), axis=0)


class _FeatureSource:
    """What `policies.train.train_policy_from_dataset` reads of an encoder backend when the
    episodes come already embedded: the manifest."""

    def __init__(self, target_first: bool, finger_offset: bool):
        self.manifest = privileged_manifest(target_first, finger_offset)


def train_privileged_policy(dataset_root, out_dir, config, *, target_first: bool = False, finger_offset: bool = False,
                            resume: bool = False, progress: bool = True):
    """Train the diffusion policy of `config` (configs.policy.PolicyConfig) on the privileged
    features of the recorded dataset at `dataset_root` and save it to `out_dir` (checkpoints and
    --resume as `policies.train.train_policy_from_dataset`; the instructions are embedded there).
    No image is read. Returns the loaded `policies.diffusion.DiffusionPolicyRunner` (eval mode).
    Raises UserError when the dataset has no valid point tracks (`data.triplets.load_episode_frames`),
    or its rows do not line up with the dataset table (changed while reading)."""
    from dynaflip_ros.data.triplets import load_episode_frames
    from dynaflip_ros.errors import UserError
    from dynaflip_ros.policies.diffusion import DiffusionPolicyRunner
    from dynaflip_ros.policies.embeddings import episodes_with_embedding
    from dynaflip_ros.policies.train import train_policy_from_dataset

    frames = load_episode_frames(dataset_root, None, progress=False)
    source = _FeatureSource(target_first, finger_offset)
    features = privileged_features(frames.tracks, frames.valid, frames.episode_start, frames.episode_length,
                                   [frames.objects_of(e) for e in range(len(frames.episode_ids))],
                                   target_first=target_first, finger_offset=finger_offset)
    try:
        episodes = episodes_with_embedding(dataset_root, features, source.manifest.weights_sha256)
    except ValueError as e:
        raise UserError(f"{dataset_root}: {e}") from e
    if not (np.array_equal(episodes.episode_index, frames.episode_index)
            and np.array_equal(episodes.frame_index, frames.frame_index)):
        raise UserError(f"{dataset_root}: the dataset's frames and point tracks do not line up (changed while reading?)")
    train_policy_from_dataset(dataset_root, "privileged", out_dir, config, encoder_backend=source, progress=progress,
                              resume=resume, episodes=episodes)
    return DiffusionPolicyRunner.load(out_dir, encoder_sha256=source.manifest.weights_sha256)
