"""Linear probe of embeddings (eval/probe.py) and `dynaflip probe`."""
import json

import numpy as np
import pytest

from dynaflip_ros.data import schema
from dynaflip_ros.eval.probe import GROUPS, fit_ridge, object_centres, probe
from dynaflip_ros.task.catalogue import CATALOGUE

NAMES = list(CATALOGUE)


def _scene(n_episodes=150, length=8, seed=0):
    """Episodes of `length` frames with a target and one or two other objects at random static
    positions (camera frame), fingers moving; returns tracks, valid, state, episode arrays."""
    rng = np.random.default_rng(seed)
    m = n_episodes * length
    tracks = np.zeros((m, schema.N_TRACK, 3), np.float32)
    valid = np.zeros((m, schema.N_TRACK), bool)
    state = rng.normal(size=(m, 7)).astype(np.float32)
    objects = []
    for e in range(n_episodes):
        rows = slice(e * length, (e + 1) * length)
        names = tuple(rng.choice(NAMES[:5], size=2 + e % 2, replace=False))
        objects.append(names)
        for k, name in enumerate(names):
            centre = np.array([rng.uniform(-0.2, 0.2), rng.uniform(-0.1, 0.1), rng.uniform(0.6, 0.8)])
            block = schema.TRACK_SLICES["target"] if k == 0 else slice(48 + 16 * (k - 1), 64 + 16 * (k - 1))
            n = block.stop - block.start
            tracks[rows, block] = centre + rng.normal(scale=0.005, size=(n, 3))
            valid[rows, block] = True
        tracks[rows, 32:48] = rng.normal(size=(length, 1, 3)) * 0.1
        valid[rows, 32:48] = True
    episode_index = np.repeat(np.arange(n_episodes), length)
    starts = np.arange(n_episodes) * length
    lengths = np.full(n_episodes, length)
    return tracks, valid, state, episode_index, starts, lengths, objects


def test_object_centres_by_identity_and_nan_where_absent():
    tracks, valid, _, _, starts, lengths, objects = _scene(n_episodes=3, length=20)
    valid[5, 0:16] = False  # half the target's points out of view in frame 5: the centre uses the rest
    centres = object_centres(tracks, valid, starts, lengths, objects)
    assert centres.shape == (60, len(NAMES), 3)
    t = NAMES.index(objects[0][0])
    assert np.allclose(centres[3, t], tracks[3, 0:32].mean(0), atol=1e-6)
    assert np.allclose(centres[5, t], tracks[5, 16:32].mean(0), atol=1e-6)
    other = NAMES.index(objects[0][1])
    assert np.allclose(centres[0, other], tracks[0, 48:64].mean(0), atol=1e-6)
    absent = [j for j in range(len(NAMES)) if NAMES[j] not in objects[0]]
    assert np.isnan(centres[:20, absent]).all()
    valid[0, 48:64] = False  # none of its points valid: unknown, not zero
    assert np.isnan(object_centres(tracks, valid, starts, lengths, objects)[0, other]).all()
    with pytest.raises(ValueError, match="tracks"):
        object_centres(tracks[:, :32], valid[:, :32], starts, lengths, objects)


def test_fit_ridge_recovers_a_linear_map():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 6)) * [1, 10, 0.1, 1, 1, 1] + 3
    w = rng.normal(size=(6, 2))
    y = x @ w + 0.5
    mean, std, wz = fit_ridge(x, y, alpha=1e-6)
    pred = np.c_[(x - mean) / std, np.ones(len(x))] @ wz
    assert np.allclose(pred, y, atol=1e-4)


def test_probe_scores_decodable_and_undecodable_embeddings():
    tracks, valid, state, episode_index, starts, lengths, objects = _scene()
    centres = object_centres(tracks, valid, starts, lengths, objects)  # (M, O, 3)
    # an embedding that states every object's position (0 where absent) and the joints, linearly
    informative = np.concatenate([np.nan_to_num(centres, nan=0.0).reshape(len(tracks), -1) * 3.0,
                                  np.nan_to_num(~np.isnan(centres[:, :, 0])).astype(float), state[:, :6] * 2.0], 1)
    good = probe(informative, state, tracks, valid, episode_index, starts, lengths, objects, seed=0, ridge_alpha=1e-3)
    assert set(good.groups) == set(GROUPS)
    assert good.groups["joints"].r2 > 0.99 and good.groups["objects"].r2 > 0.95
    # every object's position is there, but not which one was instructed: the target group is not
    assert good.groups["target"].r2 < 0.5
    assert good.groups["objects"].rmse < 0.02
    assert set(good.per_object) == set(NAMES[:5]) and good.skipped_objects == []
    assert good.groups["gripper"].r2 < 0.2  # the gripper is not in this embedding
    noise = np.random.default_rng(2).normal(size=(len(tracks), 16))
    bad = probe(noise, state, tracks, valid, episode_index, starts, lengths, objects, seed=0)
    assert bad.groups["objects"].r2 < 0.2 and bad.groups["joints"].r2 < 0.2
    assert bad.groups["tcp_position"].r2 < 0.2 and bad.groups["tcp_orientation"].r2 < 0.2
    # the end-effector pose is a non-linear function of the joints (here spread over +-1 rad): a
    # linear read-out of the joints gets part of it, noise none
    assert good.groups["tcp_position"].r2 > 0.3
    # the split is by episode: no held-out episode is fitted
    assert len(good.test_episodes) == 30 and good.test_episodes == bad.test_episodes
    assert json.loads(json.dumps(good.to_dict()))["groups"]["objects"]["n_test"] > 0


def test_probe_refuses_bad_input():
    tracks, valid, state, episode_index, starts, lengths, objects = _scene(n_episodes=4, length=20)
    emb = np.zeros((len(tracks), 4))
    with pytest.raises(ValueError, match="one row per frame"):
        probe(emb[:-1], state, tracks, valid, episode_index, starts, lengths, objects)
    with pytest.raises(ValueError, match="heldout_fraction"):
        probe(emb, state, tracks, valid, episode_index, starts, lengths, objects, heldout_fraction=1.0)
    one = slice(0, 20)
    with pytest.raises(ValueError, match="two episodes"):
        probe(emb[one], state[one], tracks[one], valid[one], episode_index[one], starts[:1], lengths[:1], objects[:1])


def test_probe_cli_end_to_end(tmp_path, monkeypatch, capsys):
    from dynaflip_ros.cli import main
    from dynaflip_ros.policies import train

    from synthetic_dataset import write_synthetic_dataset
    from test_policy_data import FakeBackend

    ds = write_synthetic_dataset(tmp_path / "ds", n_episodes=6, length=30, idle_tail=5)
    monkeypatch.setattr(train, "load_encoder_backend", lambda *a, **k: FakeBackend())
    out = tmp_path / "probe.json"
    rc = main(["probe", "--dataset", str(ds), "--encoder", str(tmp_path), "--cache-dir", str(tmp_path / "cache"),
               "--heldout-fraction", "0.34", "--out", str(out), "--no-progress"])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["encoder_sha256"] == "1" * 64 and len(report["test_episodes"]) == 2
    assert {"joints", "gripper", "fingers", "target"} <= set(report["groups"])
    printed = capsys.readouterr().out
    assert "joints" in printed and "R2" in printed
    assert main(["probe", "--dataset", str(tmp_path / "missing"), "--encoder", str(tmp_path)]) == 2
    assert main(["probe", "--dataset", str(ds), "--encoder", str(tmp_path), "--heldout-fraction", "0"]) == 2
    # --spatial-steps needs an encoder that outputs patch tokens (FakeBackend's manifest has none)
    assert main(["probe", "--dataset", str(ds), "--encoder", str(tmp_path), "--cache-dir", str(tmp_path / "cache"),
                 "--spatial-steps", "10", "--no-progress"]) == 2
    assert "outputs no patch tokens" in capsys.readouterr().err


def _token_scene(n_episodes=60, length=3, grid=(6, 6), channels=4, seed=0):
    """Two objects on a 6 x 6 token grid, each marked by its own channel in one cell; its centre
    (metres) is a linear function of that cell's (x, y); object 1 is absent in odd episodes."""
    rng = np.random.default_rng(seed)
    m = n_episodes * length
    h, w = grid
    tokens = rng.normal(scale=0.1, size=(m, h, w, channels)).astype(np.float32)
    centres = np.full((m, 2, 3), np.nan)
    for e in range(n_episodes):
        rows = slice(e * length, (e + 1) * length)
        for j in range(2 if e % 2 == 0 else 1):
            i, k = rng.integers(h), rng.integers(w)
            tokens[rows, i, k, j] += 3.0
            centres[rows, j] = [0.1 * k, 0.05 * i, 0.7]
    return tokens, centres, np.repeat(np.arange(n_episodes), length)


def test_spatial_probe_finds_marked_objects_and_an_unmarked_grid_does_not():
    from dynaflip_ros.eval.spatial_probe import spatial_object_probe

    tokens, centres, episodes = _token_scene()
    found = spatial_object_probe(tokens, centres, episodes, steps=300, seed=0)
    assert found.grid == (6, 6) and set(found.per_object) == {0, 1} and found.n_test > 0
    # the cells are 2 cm (y) and 4 cm (x) apart: the readout finds the marked cell
    assert found.median_error_m < 0.4 * found.baseline_median_m
    blind = spatial_object_probe(np.random.default_rng(1).normal(size=tokens.shape).astype(np.float32), centres,
                                 episodes, steps=300, seed=0)
    assert blind.median_error_m > 0.7 * blind.baseline_median_m
    assert found.to_dict()["steps"] == 300


def test_spatial_probe_refuses_bad_input():
    from dynaflip_ros.eval.spatial_probe import spatial_object_probe

    tokens, centres, episodes = _token_scene(n_episodes=4)
    with pytest.raises(ValueError, match="tokens"):
        spatial_object_probe(tokens[:, 0], centres, episodes)
    with pytest.raises(ValueError, match="two episodes"):
        spatial_object_probe(tokens, centres, np.zeros(len(tokens), int))
    with pytest.raises(ValueError, match="steps"):
        spatial_object_probe(tokens, centres, episodes, steps=0)
    with pytest.raises(ValueError, match="no object"):
        spatial_object_probe(tokens, np.full_like(centres, np.nan), episodes)
