"""Instruction-image fusion in front of the diffusion UNet (policies/fusion.py)."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from dynaflip_ros.configs.policy import DiffusionModelConfig
from dynaflip_ros.policies.fusion import ConditionFusion
from fake_text import FakeText  # noqa: E402
from test_policy_language import DIM, SHA, TINY, instructed_episodes, obs


def test_condition_fusion_shapes_and_identity_start():
    torch.manual_seed(0)
    fusion = ConditionFusion(image_dim=4, text_dim=6, hidden_dim=8, out_dim=5)
    env = torch.randn(3, 2, 10)  # (B, S, D + T)
    assert fusion(env).shape == (3, 2, 5)
    # FiLM starts at the identity: the first layer sees [image, text] unchanged
    first = fusion.mlp[0]
    expected = first(env)
    image, text = env[..., :4], env[..., 4:]
    gamma, beta = fusion.film(text).chunk(2, dim=-1)
    assert torch.equal(gamma, torch.zeros_like(gamma)) and torch.equal(beta, torch.zeros_like(beta))
    torch.testing.assert_close(first(torch.cat([image * (1 + gamma) + beta, text], -1)), expected)
    # a product of instruction and image: with FiLM weights set, the text scales the image part
    with torch.no_grad():
        fusion.film.weight.zero_()
        fusion.film.weight[0, 0] = 1.0  # gamma_0 = text_0
    a = env.clone()
    a[..., 4] = 1.0
    b = env.clone()
    b[..., 4] = -1.0  # gamma_0 = -1 removes image_0 entirely
    b0 = b.clone()
    b0[..., 0] = 123.0
    torch.testing.assert_close(fusion(b), fusion(b0))
    assert not torch.allclose(fusion(a), fusion(a.clone().index_fill_(-1, torch.tensor([0]), 123.0)))
    with pytest.raises(ValueError, match="input"):
        fusion(torch.randn(3, 9))
    with pytest.raises(ValueError, match="dims"):
        ConditionFusion(0, 6, 8, 5)


def test_config_refuses_fusion_without_language_and_unknown_names():
    with pytest.raises(ValueError, match="language_conditioning"):
        DiffusionModelConfig(condition_fusion="film_mlp", language_conditioning=False)
    with pytest.raises(ValueError, match="condition_fusion"):
        DiffusionModelConfig(condition_fusion="attention")
    with pytest.raises(ValueError, match="fusion_dim"):
        DiffusionModelConfig(condition_fusion="film_mlp", fusion_dim=0)


def test_fused_policy_trains_saves_and_loads(tmp_path):
    """film_mlp: the fusion weights are part of the checkpoint, a reloaded policy gives the same
    chunks, and a policy.json without condition_fusion (before this option) loads as concat."""
    from dynaflip_ros.policies.diffusion import DiffusionPolicyRunner
    from dynaflip_ros.policies.train import compute_stats

    eps, _ = instructed_episodes(2, seed=0)
    model = dataclasses.replace(TINY, condition_fusion="film_mlp", fusion_hidden_dim=16, fusion_dim=8)
    text = FakeText()
    runner = DiffusionPolicyRunner.create(model, DIM, compute_stats(eps), 10.0, {"weights_sha256": SHA}, seed=0,
                                          text_encoder=text)
    keys = runner.policy.state_dict().keys()
    assert any(k.startswith("diffusion.fusion.film") for k in keys) and any(k.startswith("diffusion.fusion.mlp") for k in keys)
    # the UNet is conditioned on [state (7), fused (8)] per observation step
    assert runner.policy.diffusion.unet.down_modules[0][0].cond_encoder[1].in_features == 16 + 2 * (7 + 8)
    with torch.no_grad():
        for p in runner.policy.diffusion.fusion.parameters():
            p.add_(0.01 * torch.randn_like(p))
    a = runner.predict_action_chunk(obs(eps, 0, 0.0, "reach the first target")).actions
    out = runner.save(tmp_path / "fused")
    loaded = DiffusionPolicyRunner.load(out, encoder_sha256=SHA, seed=0, text_encoder=text)
    assert loaded.model_config.condition_fusion == "film_mlp"
    np.testing.assert_allclose(loaded.predict_action_chunk(obs(eps, 0, 0.0, "reach the first target")).actions, a,
                               atol=1e-6)

    plain = DiffusionPolicyRunner.create(TINY, DIM, compute_stats(eps), 10.0, {"weights_sha256": SHA}, seed=0,
                                         text_encoder=text)
    old = plain.save(tmp_path / "old")
    meta = json.loads((old / "policy.json").read_text())
    for k in ("condition_fusion", "fusion_hidden_dim", "fusion_dim"):
        del meta["model"][k]
    (old / "policy.json").write_text(json.dumps(meta))
    assert DiffusionPolicyRunner.load(old, encoder_sha256=SHA, text_encoder=text).model_config.condition_fusion == "concat"


def _token_layout(grid=(3, 3), channels=4, embedding_dim=5):
    from dynaflip_ros.encoder.manifest import TokenLayout

    return TokenLayout(embedding_dim, grid, channels)


def test_token_readout_keypoints_follow_the_cell_the_instruction_selects():
    """TokenReadoutFusion: each map's spatial softmax lands on the cell whose token its (FiLM-
    modulated) per-token MLP scores highest; with the instruction's FiLM set so that the text
    selects a channel, the keypoint moves to the cell that carries that channel."""
    from dynaflip_ros.policies.fusion import TokenReadoutFusion

    torch.manual_seed(0)
    lay = _token_layout()
    fusion = TokenReadoutFusion(lay, text_dim=2, keypoints=1, readout_hidden_dim=2, hidden_dim=8, out_dim=3)
    env = torch.zeros(1, lay.embedding_dim + lay.token_dim + 2)
    env[0, 5:] = 0.0
    tokens = torch.zeros(3, 3, 4)
    tokens[0, 2, 0] = 1.0  # channel 0 ("red") at row 0, col 2
    tokens[2, 0, 1] = 1.0  # channel 1 ("blue") at row 2, col 0
    env[0, 5 : 5 + lay.token_dim] = tokens.flatten()
    assert fusion(env).shape == (1, 3)
    assert torch.equal(fusion.token_film.weight, torch.zeros_like(fusion.token_film.weight))  # identity start
    seen = {}
    with torch.no_grad():
        fusion.token_in.weight.copy_(20.0 * torch.eye(2, 4))  # hidden_i = 20 * channel_i
        fusion.token_in.bias.zero_()
        fusion.token_out.weight.fill_(1.0)
        fusion.token_out.bias.zero_()
        fusion.token_film.weight.zero_()
        fusion.token_film.bias.zero_()
        fusion.token_film.weight[0, 0] = -1.0  # gamma_0 = -text_0: text [1, 0] silences channel 0
        fusion.token_film.weight[1, 1] = -1.0  # gamma_1 = -text_1: text [0, 1] silences channel 1

        def keypoint(text):
            e = env.clone()
            e[0, -2:] = torch.tensor(text)
            captured = {}
            handle = fusion.image.register_forward_pre_hook(lambda m, args: captured.update(x=args[0]))
            fusion(e)
            handle.remove()
            return captured["x"][0, 5:7]  # keypoint (x, y)

        seen["blue"] = keypoint([1.0, 0.0])  # red silenced -> the blue cell (col 0, row 2)
        seen["red"] = keypoint([0.0, 1.0])  # blue silenced -> the red cell (col 2, row 0)
    torch.testing.assert_close(seen["blue"], torch.tensor([-1.0, 1.0]), atol=1e-3, rtol=0)
    torch.testing.assert_close(seen["red"], torch.tensor([1.0, -1.0]), atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="input"):
        fusion(torch.zeros(1, 10))


def test_token_readout_policy_needs_tokens_and_round_trips(tmp_path):
    """A token_readout policy is built from the encoder manifest's token layout, refuses an
    encoder without tokens, and a saved policy reloads to the same chunks."""
    from dynaflip_ros.encoder.manifest import EncoderManifest
    from dynaflip_ros.policies.diffusion import DiffusionPolicyRunner
    from dynaflip_ros.policies.train import compute_stats

    from dynaflip_ros.configs.encoder import EncoderModelConfig
    from dynaflip_ros.configs.io import to_dict

    enc_model = EncoderModelConfig(input_hw=(32, 32), output_tokens=True, embedding_dim=DIM)  # 2 x 2 x 112 tokens
    manifest = EncoderManifest(input_hw=(32, 32), mean=(0.5,) * 3, std=(0.5,) * 3, embedding_dim=enc_model.output_dim,
                               weights_sha256=SHA, architecture="test", config={"model": to_dict(enc_model)})
    eps, _ = instructed_episodes(2, seed=0)
    rng = np.random.default_rng(0)
    tokens = rng.normal(size=(len(eps.embedding), enc_model.output_dim - DIM)).astype(np.float32)
    eps = dataclasses.replace(eps, embedding=np.concatenate([eps.embedding, tokens], axis=1))
    model = dataclasses.replace(TINY, condition_fusion="token_readout", fusion_hidden_dim=16, fusion_dim=8,
                                readout_keypoints=4, readout_hidden_dim=8)
    text = FakeText()
    with pytest.raises(ValueError, match="output_tokens"):
        DiffusionPolicyRunner.create(model, enc_model.output_dim, compute_stats(eps), 10.0, {"weights_sha256": SHA},
                                     text_encoder=text)
    runner = DiffusionPolicyRunner.create(model, enc_model.output_dim, compute_stats(eps), 10.0, manifest, seed=0,
                                          text_encoder=text)
    keys = runner.policy.state_dict().keys()
    assert any(k.startswith("diffusion.fusion.token_film") for k in keys)
    with torch.no_grad():
        for p in runner.policy.diffusion.fusion.parameters():
            p.add_(0.01 * torch.randn_like(p))
    a = runner.predict_action_chunk(obs(eps, 0, 0.0, "reach the first target")).actions
    loaded = DiffusionPolicyRunner.load(runner.save(tmp_path / "tok"), encoder_sha256=SHA, seed=0, text_encoder=text)
    assert loaded.model_config.condition_fusion == "token_readout"
    np.testing.assert_allclose(loaded.predict_action_chunk(obs(eps, 0, 0.0, "reach the first target")).actions, a,
                               atol=1e-6)


def _token_episodes(n: int, seed: int):
    """instructed_episodes with a 3 x 3 x 4 token grid per frame: each episode's instructed object
    is a hot cell (channel 0) at a random cell, with a distractor (channel 1) at another, and
    target_centre is that cell's (x, y) in metres at depth 0.6 (frames 0-1 of each episode
    unknown: NaN). Returns (episodes, manifest)."""
    from dynaflip_ros.configs.encoder import EncoderModelConfig
    from dynaflip_ros.configs.io import to_dict
    from dynaflip_ros.encoder.manifest import EncoderManifest

    enc_model = EncoderModelConfig(input_hw=(48, 48), output_tokens=True, embedding_dim=DIM, token_stages=4)
    assert enc_model.token_grid == (3, 3) and enc_model.token_channels == 80
    manifest = EncoderManifest(input_hw=(48, 48), mean=(0.5,) * 3, std=(0.5,) * 3, embedding_dim=enc_model.output_dim,
                               weights_sha256=SHA, architecture="test", config={"model": to_dict(enc_model)})
    eps, _ = instructed_episodes(n, seed=seed)
    rng = np.random.default_rng(seed)
    tokens = 0.1 * rng.normal(size=(len(eps.embedding), 3, 3, 80)).astype(np.float32)
    centre = np.full((len(eps.embedding), 3), np.nan, np.float32)
    starts, ends = eps.episode_bounds()
    for s, e in zip(starts, ends):
        cells = rng.choice(9, size=2, replace=False)
        (ti, tj), (di, dj) = divmod(int(cells[0]), 3), divmod(int(cells[1]), 3)
        tokens[s:e, ti, tj, 0] += 3.0
        tokens[s:e, di, dj, 1] += 3.0
        centre[s + 2 : e] = (0.1 * (tj - 1), 0.1 * (ti - 1), 0.6)
    eps = dataclasses.replace(eps, embedding=np.concatenate([eps.embedding, tokens.reshape(len(tokens), -1)], axis=1),
                              target_centre=centre)
    return eps, manifest


def test_readout_target_loss_teaches_the_readout_where_the_object_is():
    """readout_target_weight > 0: batches carry the standardised target centre (unknown frames
    masked), the loss adds the head's error, and after training the head places the instructed
    object far better than the spread of the centres; without the weight no head exists; a
    config asking for it on another fusion, or episodes without centres, are refused."""
    from dynaflip_ros.configs.policy import PolicyConfig, PolicyTrainConfig
    from dynaflip_ros.policies.base import PolicyDataError
    from dynaflip_ros.policies.fusion import TARGET_CENTRE, TARGET_VALID
    from dynaflip_ros.policies.train import train_policy

    with pytest.raises(ValueError, match="token_readout"):
        DiffusionModelConfig(condition_fusion="film_mlp", readout_target_weight=1.0)
    eps, manifest = _token_episodes(40, seed=0)
    model = dataclasses.replace(TINY, condition_fusion="token_readout", fusion_hidden_dim=16, fusion_dim=8,
                                readout_keypoints=4, readout_hidden_dim=8, readout_target_weight=1.0)
    cfg = PolicyConfig(model=model, train=PolicyTrainConfig(steps=300, batch_size=32, warmup_steps=10, lr=3e-3,
                                                            val_fraction=0.2, eval_every_steps=300, log_every_steps=50,
                                                            num_threads=1))
    records = []
    runner, info = train_policy(eps, cfg, manifest, progress=False, text_encoder=FakeText(), log_fn=records.append)
    assert runner.policy.diffusion.fusion.target_head is not None
    spread = float(np.median(np.linalg.norm(eps.target_centre[~np.isnan(eps.target_centre).any(1)]
                                            - np.nanmean(eps.target_centre, 0), axis=1)))
    err = info["final_eval"]["val_target_median_error_m"]
    assert err < 0.5 * spread, (err, spread)

    from dynaflip_ros.policies.samples import Samples, target_centre_stats

    stats = target_centre_stats(eps)
    batch = Samples(eps.with_instruction_embeddings(FakeText()), model).normalise(runner, stats).batch(np.arange(4))
    assert batch[TARGET_CENTRE].shape == (4, model.n_obs_steps, 3)
    assert not batch[TARGET_VALID][0].any()  # frames 0-1 of episode 0: centre unknown -> masked, zero-filled
    assert torch.equal(batch[TARGET_CENTRE][0], torch.zeros(model.n_obs_steps, 3))
    assert batch[TARGET_VALID][3].all()

    with pytest.raises(PolicyDataError, match="point tracks"):
        train_policy(dataclasses.replace(eps, target_centre=None), cfg, manifest, progress=False,
                     text_encoder=FakeText())
    plain = dataclasses.replace(model, readout_target_weight=0.0)
    runner0, _ = train_policy(eps, PolicyConfig(model=plain, train=dataclasses.replace(cfg.train, steps=2)), manifest,
                              progress=False, text_encoder=FakeText())
    assert runner0.policy.diffusion.fusion.target_head is None


def test_with_target_centres_reads_the_instructed_objects_valid_points(tmp_path):
    """policies.train.with_target_centres: per frame the mean of the target rows' valid points
    (occluded rows left out); a recording without tracks is refused with the triplet error."""
    from dynaflip_ros.data import schema
    from dynaflip_ros.data.triplets import TripletDataError, load_episode_frames
    from dynaflip_ros.policies.embeddings import compute_embeddings
    from dynaflip_ros.policies.train import with_target_centres

    from synthetic_dataset import write_synthetic_dataset
    from test_policy_data import FakeBackend

    ds = write_synthetic_dataset(tmp_path / "ds", n_episodes=2, length=20, idle_tail=4)
    eps = compute_embeddings(ds, FakeBackend(), progress=False)
    got = with_target_centres(eps, ds).target_centre  # (N, 3)
    frames = load_episode_frames(ds, None, progress=False)
    rows = schema.object_rows(0)
    for i in (0, 7, len(got) - 1):
        ok = frames.valid[i, rows]
        np.testing.assert_allclose(got[i], frames.tracks[i, rows][ok].mean(0), atol=1e-6)
    occluded = np.flatnonzero(~frames.valid[:, rows].all(1))
    assert len(occluded) and np.isfinite(got[occluded]).all()  # partly occluded: still known
    bare = write_synthetic_dataset(tmp_path / "bare", n_episodes=2, length=20, idle_tail=4, no_tracks=True)
    with pytest.raises(TripletDataError):
        with_target_centres(compute_embeddings(bare, FakeBackend(), progress=False), bare)


@pytest.mark.parametrize("head", ["linear", "mlp_state"])
def test_target_input_conditions_the_policy_on_the_heads_prediction(tmp_path, head):
    """readout_target_input: the head's (detached) prediction joins the fusion MLP's input, so
    changing the head changes the fused vector, the diffusion loss sends no gradient into the
    head, and a trained policy round-trips through save/load; the "mlp_state" head also reads the
    observation state (and refuses to run without it); the config refuses target input without
    a target loss, and unknown frames or heads."""
    from dynaflip_ros.configs.policy import PolicyConfig, PolicyTrainConfig
    from dynaflip_ros.policies.diffusion import DiffusionPolicyRunner
    from dynaflip_ros.policies.train import train_policy

    with pytest.raises(ValueError, match="readout_target_weight"):
        DiffusionModelConfig(condition_fusion="token_readout", readout_target_input=True)
    with pytest.raises(ValueError, match="readout_target_frame"):
        DiffusionModelConfig(condition_fusion="token_readout", readout_target_frame="base")
    with pytest.raises(ValueError, match="readout_target_head"):
        DiffusionModelConfig(condition_fusion="token_readout", readout_target_head="transformer")
    eps, manifest = _token_episodes(12, seed=1)
    model = dataclasses.replace(TINY, condition_fusion="token_readout", fusion_hidden_dim=16, fusion_dim=8,
                                readout_keypoints=4, readout_hidden_dim=8, readout_target_weight=1.0,
                                readout_target_input=True, readout_target_head=head)
    cfg = PolicyConfig(model=model, train=PolicyTrainConfig(steps=20, batch_size=16, warmup_steps=2, val_fraction=0.2,
                                                            eval_every_steps=20, log_every_steps=10, num_threads=1))
    text = FakeText()
    runner, info = train_policy(eps, cfg, manifest, progress=False, text_encoder=text)
    fusion = runner.policy.diffusion.fusion
    assert fusion.target_input and fusion.image.image_dim == DIM + 3 * 4 + 3  # [embedding, 2K + K, target]
    assert "val_target_median_error_m" in info["final_eval"]
    env = torch.from_numpy(np.concatenate([eps.embedding[:3], np.zeros((3, text.dim), np.float32)], 1))
    state = torch.rand(3, model.state_dim) if head == "mlp_state" else None
    runner.policy.zero_grad(set_to_none=True)
    fused = fusion(env, state)
    fused.sum().backward()
    assert all(p.grad is None or not p.grad.any() for p in fusion.target_head.parameters())
    with torch.no_grad():
        last = fusion.target_head if head == "linear" else fusion.target_head[-1]
        last.bias.add_(1.0)
    assert not torch.allclose(fusion(env, state), fused.detach())
    if head == "mlp_state":
        with pytest.raises(ValueError, match="observation state"):
            fusion(env)
    loaded = DiffusionPolicyRunner.load(runner.save(tmp_path / "ti"), encoder_sha256=SHA, text_encoder=text)
    assert loaded.model_config.readout_target_input and loaded.model_config.readout_target_head == head
    runner.reset(seed=0)
    loaded.reset(seed=0)
    np.testing.assert_allclose(loaded.predict_action_chunk(obs(eps, 0, 0.0, "reach the first target")).actions,
                               runner.predict_action_chunk(obs(eps, 0, 0.0, "reach the first target")).actions,
                               atol=1e-6)


def test_with_target_centres_in_the_finger_frame(tmp_path):
    """frame "fingers": the instructed object's centre minus the midpoint of the two finger pads'
    valid points (data.schema.finger_pad_centres); unknown frames are refused."""
    from dynaflip_ros.data import schema
    from dynaflip_ros.data.triplets import load_episode_frames
    from dynaflip_ros.policies.embeddings import compute_embeddings
    from dynaflip_ros.policies.train import with_target_centres

    from synthetic_dataset import write_synthetic_dataset
    from test_policy_data import FakeBackend

    ds = write_synthetic_dataset(tmp_path / "ds", n_episodes=2, length=20, idle_tail=4)
    eps = compute_embeddings(ds, FakeBackend(), progress=False)
    camera = with_target_centres(eps, ds).target_centre
    fingers = with_target_centres(eps, ds, "fingers").target_centre
    frames = load_episode_frames(ds, None, progress=False)
    f0 = schema.TRACK_SLICES["fingers"].start
    for i in (0, 9, len(eps.embedding) - 1):
        pads = [frames.tracks[i, r][frames.valid[i, r]].mean(0)
                for r in (slice(f0, f0 + schema.POINTS_PER_FINGER),
                          slice(f0 + schema.POINTS_PER_FINGER, f0 + 2 * schema.POINTS_PER_FINGER))]
        np.testing.assert_allclose(fingers[i], camera[i] - 0.5 * (pads[0] + pads[1]), atol=1e-5)
    assert not np.allclose(fingers, camera)
    with pytest.raises(ValueError, match="frame"):
        with_target_centres(eps, ds, "base")


def test_teacher_forcing_feeds_the_label_in_training_only_where_known():
    """readout_target_teacher_forcing: the training conditioning uses the batch's label where it
    is valid (changing it changes the conditioning) and the head's estimate where it is not; the
    config refuses it without readout_target_input."""
    from dynaflip_ros.configs.policy import PolicyConfig, PolicyTrainConfig
    from dynaflip_ros.policies.fusion import TARGET_CENTRE, TARGET_VALID
    from dynaflip_ros.policies.samples import Samples, target_centre_stats
    from dynaflip_ros.policies.train import train_policy

    with pytest.raises(ValueError, match="readout_target_input"):
        DiffusionModelConfig(condition_fusion="token_readout", readout_target_weight=1.0,
                             readout_target_teacher_forcing=True)
    eps, manifest = _token_episodes(8, seed=2)
    model = dataclasses.replace(TINY, condition_fusion="token_readout", fusion_hidden_dim=16, fusion_dim=8,
                                readout_keypoints=4, readout_hidden_dim=8, readout_target_weight=1.0,
                                readout_target_input=True, readout_target_teacher_forcing=True)
    cfg = PolicyConfig(model=model, train=PolicyTrainConfig(steps=4, batch_size=8, warmup_steps=1, val_fraction=0.0,
                                                            num_threads=1))
    runner, _ = train_policy(eps, cfg, manifest, progress=False, text_encoder=FakeText())
    batch = Samples(eps.with_instruction_embeddings(FakeText()), model).normalise(
        runner, target_centre_stats(eps)).batch(np.arange(4))
    assert not batch[TARGET_VALID][0].any() and batch[TARGET_VALID][3].all()
    diffusion = runner.policy.diffusion
    with torch.no_grad():
        base = diffusion._prepare_global_conditioning(batch)  # (B, S * (state + F))
        moved = dict(batch, **{TARGET_CENTRE: batch[TARGET_CENTRE] + 5.0})
        cond = diffusion._prepare_global_conditioning(moved)
    assert torch.allclose(cond[0], base[0])  # label unknown: the estimate, whatever the label says
    assert not torch.allclose(cond[3], base[3])  # label known: the label is the input
