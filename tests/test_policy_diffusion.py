"""DiffusionPolicyRunner (image-only: model.language_conditioning false): learns a synthetic
reaching task, chunk timing, save/load, input checks. The language-conditioned policy:
tests/test_policy_language.py."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from dynaflip_ros.configs.io import ConfigError, load_yaml, to_dict
from dynaflip_ros.configs.policy import DiffusionModelConfig, PolicyConfig, PolicyTrainConfig
from dynaflip_ros.encoder.manifest import EncoderManifest
from dynaflip_ros.policies.action_frame import from_model_frame
from dynaflip_ros.policies.base import ActionChunk, EncoderMismatchError, Policy, PolicyObservation
from dynaflip_ros.policies.embeddings import EmbeddedEpisodes

DIM = 32
SHA = "a" * 64
LENGTH = 30
REPO = Path(__file__).resolve().parents[1]


def reaching_episodes(n_episodes: int, seed: int, world_seed: int = 123) -> EmbeddedEpisodes:
    """Reach a per-episode target joint configuration that only the embedding reveals.

    The embedding is tanh(W_t q* + W_s state + noise) with fixed W (the "world", `world_seed`);
    the arm starts near zero, moves min-jerk to q* within 60 % of the episode, then closes the
    gripper. Actions are the next state (absolute joint targets + gripper), as in recordings.
    """
    world = np.random.default_rng(world_seed)
    w_target = world.normal(size=(DIM, 6)) / np.sqrt(6)
    w_state = world.normal(size=(DIM, 7)) / np.sqrt(7) * 0.5
    rng = np.random.default_rng(seed)
    cols = {k: [] for k in ("embedding", "state", "action", "episode_index", "frame_index")}
    for ep in range(n_episodes):
        target = rng.uniform(-1.0, 1.0, 6)
        q0 = rng.uniform(-0.3, 0.3, 6)
        t = np.arange(LENGTH + 1) / LENGTH
        s = np.clip(t / 0.6, 0.0, 1.0)
        s = s**3 * (10 - 15 * s + 6 * s**2)  # min-jerk profile
        q = q0 + (target - q0) * s[:, None]  # (T+1, 6)
        full = np.concatenate([q, (t >= 0.6)[:, None]], axis=1).astype(np.float32)  # (T+1, 7)
        state, action = full[:-1], full[1:]
        emb = np.tanh(target @ w_target.T + state @ w_state.T + 0.05 * rng.normal(size=(LENGTH, DIM)))
        cols["embedding"].append(emb.astype(np.float32))
        cols["state"].append(state)
        cols["action"].append(action)
        cols["episode_index"].append(np.full(LENGTH, ep))
        cols["frame_index"].append(np.arange(LENGTH))
    cat = {k: np.concatenate(v) for k, v in cols.items()}
    return EmbeddedEpisodes(
        task=np.full(len(cat["state"]), "reach"), fps=10.0, encoder_sha256=SHA, dataset_fingerprint="f" * 64, **cat
    )


def fake_manifest(sha: str = SHA) -> EncoderManifest:
    return EncoderManifest(
        input_hw=(8, 8), mean=(0.5,) * 3, std=(0.5,) * 3, embedding_dim=DIM, weights_sha256=sha, architecture="fake"
    )


@pytest.fixture(scope="module")
def trained():
    from dynaflip_ros.policies.train import train_policy

    config = PolicyConfig(
        model=DiffusionModelConfig(language_conditioning=False),
        train=PolicyTrainConfig(steps=300, batch_size=64, warmup_steps=50, eval_every_steps=300, val_fraction=0.2, num_threads=1),
    )
    runner, info = train_policy(reaching_episodes(24, seed=0), config, fake_manifest(), progress=False)
    return runner, info


def obs_at(eps: EmbeddedEpisodes, row: int, stamp_s: float) -> PolicyObservation:
    return PolicyObservation(embedding=eps.embedding[row], state=eps.state[row], stamp_s=stamp_s)


@pytest.mark.slow
def test_policy_learns_to_reach_unseen_targets(trained):
    """Rolled through the public API on new episodes (new targets), the chunks must track the
    demonstrated joint motion clearly better than holding the current state (measured: joint
    RMSE 0.10 rad vs 0.15 rad for holding after 300 steps)."""
    runner, info = trained
    assert info["final_eval"]["val_joint_rmse_rad"] < info["final_eval"]["hold_joint_rmse_rad"]
    test = reaching_episodes(6, seed=99)
    n_act = runner.model_config.n_action_steps
    err_joint, err_grip, hold_joint, hold_grip = [], [], [], []
    starts, ends = test.episode_bounds()
    for start, end in zip(starts, ends):
        runner.reset(seed=0)
        for row in range(start, end):
            chunk = runner.predict_action_chunk(obs_at(test, row, 0.1 * (row - start)))
            k = min(n_act, end - row)
            target = test.action[row : row + k]  # (k, 7)
            err_joint.append((chunk.actions[:k, :6] - target[:, :6]).ravel())
            err_grip.append(np.abs(chunk.actions[:k, 6] - target[:, 6]))
            hold_joint.append((test.state[row, :6] - target[:, :6]).ravel())
            hold_grip.append(np.abs(test.state[row, 6] - target[:, 6]))
    rmse = float(np.sqrt(np.mean(np.concatenate(err_joint) ** 2)))
    hold_rmse = float(np.sqrt(np.mean(np.concatenate(hold_joint) ** 2)))
    grip, hold_g = float(np.mean(np.concatenate(err_grip))), float(np.mean(np.concatenate(hold_grip)))
    print(f"joint RMSE {rmse:.3f} rad (hold {hold_rmse:.3f}); gripper MAE {grip:.3f} (hold {hold_g:.3f})")
    assert rmse < 0.8 * hold_rmse  # it learned where each target is from the embedding
    assert grip < 1.05 * hold_g  # the gripper timing is barely learnable in 300 steps; no worse than holding
    assert info["s_per_step"] > 0 and info["train_time_s"] > 0 and info["num_parameters"] == runner.num_parameters


def test_chunk_shape_and_timestamps(trained):
    runner, _ = trained
    assert isinstance(runner, Policy) and runner.encoder_sha256 == SHA
    eps = reaching_episodes(1, seed=5)
    runner.reset()
    chunk = runner.predict_action_chunk(obs_at(eps, 0, 12.5))
    assert isinstance(chunk, ActionChunk)
    assert chunk.actions.shape == (8, 7) and chunk.actions.dtype == np.float32
    assert chunk.t0_s == pytest.approx(12.6) and chunk.dt_s == pytest.approx(0.1)
    np.testing.assert_allclose(chunk.times_s(), 12.5 + 0.1 * np.arange(1, 9))  # target one period after its frame
    assert np.all(np.isfinite(chunk.actions))
    assert np.all((chunk.actions[:, 6] >= -1e-6) & (chunk.actions[:, 6] <= 1 + 1e-6))  # MIN_MAX + clip_sample


def test_save_load_roundtrip_identical_chunks(trained, tmp_path):
    from dynaflip_ros.policies.diffusion import DiffusionPolicyRunner

    runner, _ = trained
    out = runner.save(tmp_path / "policy")
    suffixes = {p.suffix for p in out.iterdir()}
    assert suffixes == {".json", ".safetensors"}, suffixes
    meta = json.loads((out / "policy.json").read_text())
    assert meta["encoder"]["weights_sha256"] == SHA and meta["encoder"]["manifest"]["embedding_dim"] == DIM
    assert meta["train"]["steps"] == 300 and meta["embedding_dim"] == DIM
    assert (out / "model.safetensors").stat().st_size < 10e6

    loaded = DiffusionPolicyRunner.load(out, encoder_sha256=SHA, seed=7)
    assert loaded.model_config == runner.model_config and loaded.fps == runner.fps
    runner.reset(seed=7)
    eps = reaching_episodes(1, seed=6)
    for i in range(4):
        a = runner.predict_action_chunk(obs_at(eps, i, 0.1 * i))
        b = loaded.predict_action_chunk(obs_at(eps, i, 0.1 * i))
        np.testing.assert_array_equal(a.actions, b.actions)
    # another seed -> another noise draw -> a different chunk
    other = DiffusionPolicyRunner.load(out, encoder_sha256=SHA, seed=8)
    c = other.predict_action_chunk(obs_at(eps, 0, 0.0))
    loaded.reset()
    d = loaded.predict_action_chunk(obs_at(eps, 0, 0.0))
    assert not np.array_equal(c.actions, d.actions)

    with pytest.raises(EncoderMismatchError, match="retrain"):
        DiffusionPolicyRunner.load(out, encoder_sha256="b" * 64)
    weights = out / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ValueError, match="sha256"):
        DiffusionPolicyRunner.load(out, encoder_sha256=SHA)
    with pytest.raises(FileNotFoundError):
        DiffusionPolicyRunner.load(tmp_path / "missing", encoder_sha256=SHA)


def test_samples_per_chunk_averages_k_denoised_chunks(trained):
    """K > 1: one window expanded to K rows, K chunks denoised in one batch, their mean returned
    (normalised space; the unnormaliser is affine). Bad K: ValueError, the runner keeps its K."""
    import torch

    runner, _ = trained
    eps = reaching_episodes(1, seed=5)
    diffusion = runner.policy.diffusion
    real = diffusion.generate_actions
    batches, outputs = [], []

    def spy(window):
        batches.append({k: v.shape[0] for k, v in window.items()})
        out = real(window)  # (K, n_action_steps, 7) normalised
        outputs.append(out.clone())
        return out

    diffusion.generate_actions = spy
    try:
        runner.samples_per_chunk = 4
        runner.reset(seed=3)
        chunk = runner.predict_action_chunk(obs_at(eps, 0, 0.0))
        assert set(batches[-1].values()) == {4} and outputs[-1].shape[0] == 4
        assert not torch.equal(outputs[-1][0], outputs[-1][1])  # K different initial noises
        mean = runner.postprocessor(outputs[-1].mean(0, keepdim=True))[0].numpy()
        np.testing.assert_allclose(chunk.actions, from_model_frame(mean, eps.state[0], runner.model_config.action_frame),
                                   atol=1e-5)
        runner.samples_per_chunk = 1
        runner.reset(seed=3)
        runner.predict_action_chunk(obs_at(eps, 0, 0.0))
        assert set(batches[-1].values()) == {1}
    finally:
        diffusion.generate_actions = real
        runner.samples_per_chunk = 1
    for bad in (0, 65, 2.5, True, "4"):
        with pytest.raises(ValueError, match="samples_per_chunk must be an integer in 1..64"):
            runner.samples_per_chunk = bad
    assert runner.samples_per_chunk == 1


def test_bad_observations_raise_clear_errors(trained):
    runner, _ = trained
    runner.reset()
    good_emb, good_state = np.zeros(DIM, np.float32), np.zeros(7, np.float32)
    nan_emb = good_emb.copy()
    nan_emb[3] = np.nan
    cases = [
        (PolicyObservation(nan_emb, good_state, 0.0), "embedding contains NaN"),
        (PolicyObservation(np.zeros(DIM + 1, np.float32), good_state, 0.0), r"embedding must have shape \(32,\)"),
        (PolicyObservation(good_emb[None], good_state, 0.0), "embedding must have shape"),
        (PolicyObservation(good_emb, np.full(7, np.inf, np.float32), 0.0), "state contains NaN or inf"),
        (PolicyObservation(good_emb, np.zeros(6, np.float32), 0.0), r"state must have shape \(7,\)"),
        (PolicyObservation(good_emb.astype(np.int64), good_state, 0.0), "floating point"),
        (PolicyObservation(good_emb, good_state, float("nan")), "stamp_s must be finite"),
    ]
    for obs, message in cases:
        with pytest.raises(ValueError, match=message):
            runner.predict_action_chunk(obs)
    runner.predict_action_chunk(PolicyObservation(good_emb, good_state, 5.0))
    with pytest.raises(ValueError, match="older"):
        runner.predict_action_chunk(PolicyObservation(good_emb, good_state, 4.9))


def test_observation_history_window(trained):
    """First frame fills the window; a repeated stamp replaces; a stale gap restarts the window."""
    runner, _ = trained
    eps = reaching_episodes(1, seed=7)

    def chunk_after(stamps_rows, seed=3):
        runner.reset(seed=seed)
        for stamp, row in stamps_rows[:-1]:
            runner.observe(obs_at(eps, row, stamp))
        stamp, row = stamps_rows[-1]
        return runner.predict_action_chunk(obs_at(eps, row, stamp)).actions

    fresh = chunk_after([(1.0, 5)])
    np.testing.assert_array_equal(chunk_after([(0.0, 9), (1.0, 5)]), fresh)  # 1 s gap > max_obs_gap_s
    np.testing.assert_array_equal(chunk_after([(1.0, 9), (1.0, 5)]), fresh)  # same stamp replaced
    with_history = chunk_after([(0.9, 4), (1.0, 5)])
    assert not np.array_equal(with_history, fresh)  # the previous frame is used
    np.testing.assert_array_equal(chunk_after([(0.8, 9), (0.9, 4), (1.0, 5)]), with_history)  # window = 2
    before = runner.stale_history_resets
    runner.observe(obs_at(eps, 1, 1.0))
    runner.observe(obs_at(eps, 2, 2.0))
    assert runner.stale_history_resets == before + 1


def test_model_frame_roundtrip():
    from dynaflip_ros.policies.action_frame import from_model_frame, to_model_frame

    rng = np.random.default_rng(0)
    actions, state = rng.normal(size=(5, 16, 7)).astype(np.float32), rng.normal(size=(5, 7)).astype(np.float32)
    rel = to_model_frame(actions, state, "relative")
    np.testing.assert_allclose(rel[:, :, :6], actions[:, :, :6] - state[:, None, :6], atol=1e-6)
    np.testing.assert_array_equal(rel[:, :, 6], actions[:, :, 6])  # gripper stays absolute
    np.testing.assert_allclose(from_model_frame(rel, state, "relative"), actions, atol=1e-6)
    np.testing.assert_array_equal(to_model_frame(actions, state, "absolute"), actions)
    with pytest.raises(ValueError):
        to_model_frame(actions, state, "polar")


@pytest.mark.parametrize("embedding_dim,language", [(128, False), (512, False), (128, True)])
def test_default_model_fits_the_checkpoint_budget(embedding_dim, language):
    """Shipped policy <= ~10 MB of float32 weights for the encoder's default D=128 (image-only and
    with the 384-d instruction) and for an image-only D=512 (15 MB with the instruction)."""
    from dynaflip_ros.policies.diffusion import import_lerobot, make_lerobot_config

    import_lerobot()
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy

    policy = DiffusionPolicy(make_lerobot_config(DiffusionModelConfig(language_conditioning=language), embedding_dim))
    n_params = sum(p.numel() for p in policy.parameters())
    assert n_params * 4 <= 10.6e6, n_params
    assert not hasattr(policy.diffusion, "rgb_encoder")  # no vision backbone


def test_config_validation_and_yaml_defaults():
    assert load_yaml(PolicyConfig, REPO / "config" / "policy.yaml") == PolicyConfig()
    shipped = load_yaml(PolicyConfig, REPO / "config" / "policy_token_readout.yaml")  # the build's recipe
    assert shipped.model == dataclasses.replace(PolicyConfig().model, condition_fusion="token_readout",
                                                readout_target_weight=1.0, readout_target_frame="fingers",
                                                readout_target_head="mlp_state", readout_target_input=True)
    assert shipped.train == PolicyConfig().train
    with pytest.raises(ValueError, match="n_action_steps"):
        DiffusionModelConfig(n_obs_steps=2, horizon=16, n_action_steps=16)
    DiffusionModelConfig(n_obs_steps=2, horizon=16, n_action_steps=15)  # the full predicted future
    with pytest.raises(ValueError, match="multiple"):
        DiffusionModelConfig(horizon=12, down_dims=(32, 64, 128))
    with pytest.raises(ValueError, match="action_frame"):
        DiffusionModelConfig(action_frame="delta")
    with pytest.raises(ValueError, match="lr"):
        PolicyTrainConfig(lr=0.0)
    with pytest.raises(ValueError, match="language_conditioning"):
        DiffusionModelConfig(language_conditioning="yes")
    with pytest.raises(ValueError, match="init_stats"):
        PolicyTrainConfig(init_stats="average")
    with pytest.raises(ValueError, match="checkpoint_every_steps"):
        PolicyTrainConfig(checkpoint_every_steps=-1)
    assert DiffusionModelConfig().language_conditioning is True
    cfg = PolicyConfig(model=dataclasses.replace(DiffusionModelConfig(), down_dims=(32, 64)))
    assert to_dict(cfg)["model"]["down_dims"] == [32, 64]
    from dynaflip_ros.configs.io import from_dict

    with pytest.raises(ConfigError, match="unknown keys"):
        from_dict(PolicyConfig, {"model": {"down_dim": [1]}})
