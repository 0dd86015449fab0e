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
