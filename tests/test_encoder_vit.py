"""The ViT-B/14 backbone option (configs/encoder.py VIT_BACKBONES, encoder/model.py): config
rules, shapes of the embedding and patch tokens, a training step, and the weights loader. Small
inputs (2 x 2 or 2 x 3 patches) keep the 86 M-parameter network affordable on CPU."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from dynaflip_ros.configs.encoder import EncoderConfig, EncoderModelConfig
from dynaflip_ros.configs.io import load_yaml
from dynaflip_ros.encoder.model import ImageEncoder, architecture_name, load_backbone_weights

VIT = "vit_base_patch14_dinov2"


def _cfg(**kw) -> EncoderModelConfig:
    return EncoderModelConfig(**{"backbone": VIT, "pretrained": False, "input_hw": (28, 42), **kw})


def test_the_shipped_vit_config_is_vit_b14_at_224():
    cfg = load_yaml(EncoderConfig, "config/encoder_vit_b14.yaml").model
    assert (cfg.backbone, tuple(cfg.input_hw), cfg.feature_grid, cfg.trunk_channels) == (VIT, (224, 224), (16, 16), 768)


@pytest.mark.parametrize("kw, match", [
    ({"input_hw": (30, 42)}, "multiples of its patch size 14"),
    ({"input_hw": (14, 28)}, "at least 28"),
    ({"pretrained": True}, "no weights ship with the package"),
    ({"token_stages": 3}, "needs 0"),
])
def test_vit_config_refusals(kw, match):
    with pytest.raises(ValueError, match=match):
        _cfg(**kw)


def test_backbone_weights_are_vit_only():
    with pytest.raises(ValueError, match="for ViT backbones"):
        EncoderModelConfig(backbone_weights="/tmp/w.safetensors")


def test_vit_embedding_tokens_and_gradients():
    torch.manual_seed(0)
    cfg = _cfg(output_tokens=True, num_keypoints=4, embedding_dim=16)
    enc = ImageEncoder(cfg)
    assert cfg.token_grid == (2, 3) and cfg.output_dim == 16 + 2 * 3 * 768
    x = torch.randn(2, 3, 28, 42)
    out = enc(x)
    assert out.shape == (2, cfg.output_dim)
    tokens = enc.trunk.forward_features(x)[:, enc.trunk.num_prefix_tokens:]  # (2, 6, 768), row-major cells
    assert torch.allclose(out[:, 16:].view(2, 6, 768), tokens, atol=1e-5)
    enc.features(x).sum().backward()
    assert enc.trunk.patch_embed.proj.weight.grad.abs().sum() > 0
    assert architecture_name(cfg).startswith(f"{VIT}[768ch]")
    with pytest.raises(ValueError, match="expected"):
        enc(torch.randn(1, 3, 28, 28))


def test_load_backbone_weights_is_strict(tmp_path):
    from safetensors.torch import save_file

    src, dst = nn.Linear(3, 2), nn.Linear(3, 2)
    save_file(src.state_dict(), str(tmp_path / "w.safetensors"))
    load_backbone_weights(dst, str(tmp_path / "w.safetensors"))
    assert torch.equal(src.weight, dst.weight)
    save_file({"weight": src.weight.detach()}, str(tmp_path / "partial.safetensors"))
    with pytest.raises(RuntimeError, match="bias"):
        load_backbone_weights(dst, str(tmp_path / "partial.safetensors"))
    with pytest.raises(FileNotFoundError):
        load_backbone_weights(dst, str(tmp_path / "none.safetensors"))


def test_vit_trains_through_the_encoder_loop(tmp_path):
    from synthetic_dataset import write_synthetic_dataset
    from test_encoder_resume import _cfg as train_cfg
    from test_encoder_resume import _train

    ds = write_synthetic_dataset(tmp_path / "ds", n_episodes=3, length=16, idle_tail=2)
    result = _train(ds, tmp_path / "enc", train_cfg(model=_cfg(input_hw=(28, 28), num_keypoints=4), steps=2,
                                                      save_every=0, eval_every=0))
    assert result.manifest.architecture.startswith(VIT) and tuple(result.manifest.input_hw) == (28, 28)
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in result.log if r["event"] == "train")


def test_runs_without_backbone_weights_keep_the_fingerprint_of_older_checkpoints():
    from dynaflip_ros.encoder.checkpoint import run_fingerprint

    assert "backbone_weights" not in run_fingerprint(EncoderConfig(), {}, None)["config"]["model"]
    vit = EncoderConfig(model=_cfg(pretrained=True, backbone_weights="/w.safetensors"))
    assert run_fingerprint(vit, {}, None)["config"]["model"]["backbone_weights"] == "/w.safetensors"
