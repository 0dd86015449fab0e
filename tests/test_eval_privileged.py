"""Privileged-state features (eval/privileged.py) and `dynaflip privileged`."""
import json

import numpy as np
import pytest

from dynaflip_ros.data import schema
from dynaflip_ros.eval.privileged import FEATURES_PER_OBJECT, PRIVILEGED_DIM, privileged_features
from dynaflip_ros.task.catalogue import CATALOGUE

NAMES = list(CATALOGUE)


def _episode(length=4, seed=0):
    """One episode: a red cube (target rows) and a blue bar (first other block), finger pads."""
    rng = np.random.default_rng(seed)
    tracks = np.zeros((length, schema.N_TRACK, 3), np.float32)
    valid = np.zeros((length, schema.N_TRACK), bool)
    tracks[:, 0:32] = np.array([0.1, 0.0, 0.7]) + rng.normal(scale=0.01, size=(length, 32, 3))
    valid[:, 0:32] = True
    bar = np.zeros((16, 3))
    bar[:, 0] = np.linspace(-0.05, 0.05, 16)  # elongated along camera x
    tracks[:, 48:64] = np.array([-0.1, 0.05, 0.75]) + bar
    valid[:, 48:64] = True
    tracks[:, 32:40] = [0.0, -0.1, 0.6]
    tracks[:, 40:48] = [0.04, -0.1, 0.6]
    valid[:, 32:48] = True
    return tracks, valid, ("red cube", "blue bar")


def _block(features, name):
    j = NAMES.index(name) * FEATURES_PER_OBJECT
    return features[:, j : j + FEATURES_PER_OBJECT]


def test_features_by_identity_with_shape_and_absent_objects_zero():
    tracks, valid, objects = _episode()
    valid[1, 0:16] = False  # half the cube out of view in frame 1: centre and spread of the rest
    f = privileged_features(tracks, valid, np.array([0]), np.array([4]), [objects])
    assert f.shape == (4, PRIVILEGED_DIM) and f.dtype == np.float32
    cube, bar = _block(f, "red cube"), _block(f, "blue bar")
    assert (cube[:, 0] == 1).all() and (bar[:, 0] == 1).all()
    assert np.allclose(cube[0, 1:4], tracks[0, 0:32].mean(0), atol=1e-6)
    assert np.allclose(cube[1, 1:4], tracks[1, 16:32].mean(0), atol=1e-6)
    cov = np.cov(tracks[0, 0:32].T.astype(np.float64), bias=True) * 1e4
    assert np.allclose(cube[0, 4:], [cov[0, 0], cov[1, 1], cov[2, 2], cov[0, 1], cov[0, 2], cov[1, 2]], rtol=1e-4)
    assert bar[0, 4] > 10 * max(bar[0, 5], 1e-9)  # the bar's spread shows its orientation (x)
    others = [n for n in NAMES if n not in objects]
    assert all((_block(f, n) == 0).all() for n in others)
    pads = f[:, len(NAMES) * FEATURES_PER_OBJECT :]
    assert np.allclose(pads[0], [0.0, -0.1, 0.6, 0.04, -0.1, 0.6], atol=1e-6)
    valid[2, 48:64] = False  # no point of the bar valid: all zero, not NaN
    f = privileged_features(tracks, valid, np.array([0]), np.array([4]), [objects])
    assert (_block(f, "blue bar")[2] == 0).all() and np.isfinite(f).all()
    # the same object as target or as an "other" block lands in the same slot
    swapped = privileged_features(tracks[:, :], valid, np.array([0]), np.array([4]), [("blue bar", "red cube")])
    assert _block(swapped, "blue bar")[0, 0] == 1 and _block(swapped, "red cube")[0, 0] == 1
    with pytest.raises(ValueError, match="tracks"):
        privileged_features(tracks[:, :32], valid[:, :32], np.array([0]), np.array([4]), [objects])
    with pytest.raises(ValueError, match="one entry per episode"):
        privileged_features(tracks, valid, np.array([0, 2]), np.array([4]), [objects])



def test_target_first_leads_with_the_instructed_objects_block():
    from dynaflip_ros.eval.privileged import feature_dim, privileged_manifest

    tracks, valid, objects = _episode()
    plain = privileged_features(tracks, valid, np.array([0]), np.array([4]), [objects])
    lead = privileged_features(tracks, valid, np.array([0]), np.array([4]), [objects], target_first=True)
    assert lead.shape == (4, feature_dim(True)) == (4, PRIVILEGED_DIM + FEATURES_PER_OBJECT)
    assert np.array_equal(lead[:, FEATURES_PER_OBJECT:], plain)
    assert np.array_equal(lead[:, :FEATURES_PER_OBJECT], _block(plain, "red cube"))
    other = privileged_features(tracks, valid, np.array([0]), np.array([4]), [("blue bar", "red cube")], target_first=True)
    assert np.array_equal(other[:, :FEATURES_PER_OBJECT], _block(other[:, FEATURES_PER_OBJECT:], "blue bar"))
    assert privileged_manifest(True).weights_sha256 != privileged_manifest(False).weights_sha256
    assert privileged_manifest(True).embedding_dim == feature_dim(True)


def test_finger_offset_closes_the_vector_with_target_minus_pad_midpoint():
    """finger_offset: 3 more values, the instructed object's valid-point centre minus the
    midpoint of the two finger pads (0 when a pad is out of view), in either layout; another
    feature identity for the version-skew guard."""
    from dynaflip_ros.data import schema
    from dynaflip_ros.eval.privileged import feature_dim, privileged_manifest

    tracks, valid, objects = _episode()
    args = (tracks, valid, np.array([0]), np.array([4]), [objects])
    lead = privileged_features(*args, target_first=True)
    both = privileged_features(*args, target_first=True, finger_offset=True)
    assert both.shape == (4, feature_dim(True, True)) == (4, PRIVILEGED_DIM + FEATURES_PER_OBJECT + 3)
    assert np.array_equal(both[:, :-3], lead)
    f0 = schema.TRACK_SLICES["fingers"].start
    pad = [tracks[:, f0 + k * schema.POINTS_PER_FINGER : f0 + (k + 1) * schema.POINTS_PER_FINGER].mean(1) for k in (0, 1)]
    target = lead[:, 1:4]
    np.testing.assert_allclose(both[:, -3:], target - 0.5 * (pad[0] + pad[1]), atol=1e-5)
    slots = privileged_features(*args, finger_offset=True)
    assert np.array_equal(slots[:, -3:], both[:, -3:]) and slots.shape[1] == feature_dim(False, True)
    hidden = valid.copy()
    hidden[:, f0 : f0 + schema.POINTS_PER_FINGER] = False
    assert not privileged_features(tracks, hidden, *args[2:], finger_offset=True)[:, -3:].any()
    ids = {privileged_manifest(t, o).weights_sha256 for t in (False, True) for o in (False, True)}
    assert len(ids) == 4 and privileged_manifest(True, True).embedding_dim == feature_dim(True, True)

def test_sim_backend_matches_the_recorded_feature_function():
    from dynaflip_ros.configs.sim import SimConfig
    from dynaflip_ros.eval.privileged import SimPrivilegedBackend, privileged_manifest
    from dynaflip_ros.sim.pick_into_sink import PickIntoSinkEnv

    env = PickIntoSinkEnv(SimConfig())
    try:
        backend = SimPrivilegedBackend(env)
        with pytest.raises(RuntimeError, match="reset"):
            SimPrivilegedBackend(type("NotReset", (), {"episode": None})()).embed(np.zeros((1, 8, 8, 3), np.uint8))
        info = env.reset(seed=100_003)
        out = backend.embed(np.zeros((2, 8, 8, 3), np.uint8))
        pts, ok = env.scene_tracks()
        expected = privileged_features(pts[None], ok[None], np.array([0]), np.array([1]), [(info.object_name, *info.distractors)])
        assert out.shape == (2, PRIVILEGED_DIM) and np.array_equal(out[0], expected[0]) and np.array_equal(out[1], out[0])
        present = {NAMES[j] for j in range(len(NAMES)) if out[0, j * FEATURES_PER_OBJECT] == 1}
        assert present == {info.object_name, *info.distractors}
        assert backend.manifest.embedding_dim == PRIVILEGED_DIM
        assert backend.manifest.weights_sha256 == privileged_manifest().weights_sha256
    finally:
        env.close()


def test_privileged_cli_trains_saves_and_evaluates(tmp_path, capsys):
    from dynaflip_ros.cli import main
    from dynaflip_ros.policies.diffusion import DiffusionPolicyRunner

    from synthetic_dataset import write_synthetic_dataset

    ds = write_synthetic_dataset(tmp_path / "ds", n_episodes=4, length=30, idle_tail=5)
    cfg = tmp_path / "policy.yaml"
    cfg.write_text("train:\n  steps: 2\n  batch_size: 4\n  eval_every_steps: 2\n  checkpoint_every_steps: 0\n")
    out = tmp_path / "eval.json"
    rc = main(["privileged", "--dataset", str(ds), "--policy", str(tmp_path / "policy"), "--config", str(cfg),
               "--episodes", "1", "--episode-timeout-s", "0.5", "--out", str(out), "--no-progress"])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["config"]["privileged"] == "slots" and len(report["episodes"]) == 1
    assert report["episodes"][0]["outcome"] in ("success", "wrong_object", "timeout", "safety_stop")
    meta = DiffusionPolicyRunner.read_metadata(tmp_path / "policy")
    assert meta is not None
    assert "[privileged]" in capsys.readouterr().out
    rc = main(["privileged", "--dataset", str(ds), "--policy", str(tmp_path / "offset"), "--config", str(cfg),
               "--target-first", "--finger-offset", "--episodes", "1", "--episode-timeout-s", "0.5", "--out", str(out),
               "--no-progress"])
    assert rc == 0 and json.loads(out.read_text())["config"]["privileged"] == "target_first+finger_offset"
    from dynaflip_ros.eval.privileged import feature_dim

    assert DiffusionPolicyRunner.read_metadata(tmp_path / "offset")["embedding_dim"] == feature_dim(True, True)
    assert main(["privileged", "--dataset", str(tmp_path / "missing"), "--policy", str(tmp_path / "p")]) == 2
    assert main(["privileged", "--dataset", str(ds), "--policy", str(tmp_path / "p"), "--episodes", "0"]) == 2
