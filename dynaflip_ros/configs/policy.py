"""Policy parameters: a diffusion policy on frozen encoder embeddings (docs/method.md).

The policy is LeRobot 0.4.4's `DiffusionPolicy` (Chi et al., "Diffusion Policy", RSS 2023,
https://huggingface.co/papers/2303.04137) with no vision backbone: the per-frame image embedding
f(o_t) of the frozen encoder, followed (with `language_conditioning`) by the frozen sentence
embedding of the episode's instruction (all-MiniLM-L6-v2, 384-d), enters as
`observation.environment_state` (FeatureType.ENV) next to the required `observation.state` (7,). `DiffusionModelConfig` holds the fields that are mapped onto
`lerobot.policies.diffusion.configuration_diffusion.DiffusionConfig`; `PolicyTrainConfig` holds the
optimisation parameters. YAML: `config/policy.yaml` with sections `model:` and `train:`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from dynaflip_ros.configs.io import ConfigError
from dynaflip_ros.configs.validate import require_choice, require_finite, require_int, require_range

NORMALIZATION_MODES = ("IDENTITY", "MEAN_STD", "MIN_MAX")
NOISE_SCHEDULERS = ("DDPM", "DDIM")
# Run-time chunks averaged per prediction (`DiffusionPolicyRunner.samples_per_chunk`): the
# deployment default of `dynaflip eval --samples-per-chunk` and the policy node's parameter,
# the setting measured in docs/results.md (issue 10, eleventh round).
DEFAULT_SAMPLES_PER_CHUNK = 8
MAX_SAMPLES_PER_CHUNK = 64


def check_samples_per_chunk(k) -> int:
    """k as an int; raises ValueError unless it is an integer in 1..MAX_SAMPLES_PER_CHUNK."""
    integer = not isinstance(k, bool) and hasattr(k, "__index__")  # int, numpy integers; not bool / float / str
    if not integer or not 1 <= k <= MAX_SAMPLES_PER_CHUNK:
        raise ValueError(f"samples_per_chunk must be an integer in 1..{MAX_SAMPLES_PER_CHUNK}, got {k!r}")
    return int(k)
PREDICTION_TYPES = ("epsilon", "sample")
ACTION_FRAMES = ("absolute", "relative", "tcp_relative")
INIT_STATS = ("recompute", "keep")
TCP_STATE_DIM = 7 + 3 + 6  # "tcp_relative" model state: q, gripper, TCP position, 6-D rotation
CONDITION_FUSIONS = ("concat", "film_mlp", "token_readout")  # policies.fusion.FUSIONS
READOUT_TARGET_FRAMES = ("camera", "fingers")  # DiffusionModelConfig.readout_target_frame
READOUT_TARGET_HEADS = ("linear", "mlp_state")  # DiffusionModelConfig.readout_target_head


@dataclass
class DiffusionModelConfig:
    """Diffusion policy architecture and sampling (CPU defaults: ~1.8-2.6 M parameters, 7-11 MB).

    n_obs_steps: observations in the conditioning window (current + n_obs_steps-1 past frames at
        1/fps spacing). horizon: actions the UNet denoises, counted from the FIRST observation of
        the window (LeRobot convention). n_action_steps: actions returned per chunk, starting at the
        CURRENT observation (index n_obs_steps-1 of the horizon); at most horizon - n_obs_steps + 1.
    down_dims: channels per UNet level (horizon must be divisible by 2**len(down_dims)).
    embedding_normalization / state_normalization / action_normalization: LeRobot
        NormalizationMode names for FeatureType ENV / STATE / ACTION. MIN_MAX actions + clip_sample
        keep sampled actions inside the range seen in training.
    num_inference_steps: DDIM (or DDPM) denoising steps per chunk at inference.
    prediction_type: "sample" (the UNet predicts the clean action chunk) or "epsilon" (the noise,
        LeRobot's default). On the synthetic reaching test (tests/test_policy_diffusion.py, 2-core
        CPU budgets of a few hundred to a few thousand steps) "sample" beat the hold-still baseline
        after 200 steps while "epsilon" was still worse than it after 400, so "sample" is the default.
    action_frame: what the diffusion model predicts. "absolute": the 7-D action as recorded.
        "relative": joint targets minus the CURRENT measured joint positions (gripper stays
        absolute); converted back to absolute targets before they leave the policy, so the
        ActionChunk contract (absolute rad + gripper) is the same either way. Relative targets
        spare the small UNet from having to copy the state through FiLM and learn much faster.
        "tcp_relative": the TCP pose of each joint target relative to the current TCP pose
        (position m + rotation vector rad, UR base frame) and the gripper; the observation
        state gains the current TCP pose; inverse kinematics turns a chunk back into joints
        before it leaves the policy (`policies.tcp_frame`).
    tcp_offset_m: flange -> TCP distance along the flange z axis (m) of the "tcp_relative"
        frame's forward / inverse kinematics (0.15: between the finger pads of the cell's gripper,
        as `configs.safety.SafetyConfig.tcp_offset_m`).
    max_obs_gap_s: at inference, an observation more than this after the previous one means the
        history is stale (e.g. a stalled camera): the window is refilled with the new observation,
        as at episode start.
    language_conditioning: the policy also sees the instruction (PolicyObservation.instruction)
        as a frozen 384-d sentence embedding appended to the image embedding (docs/method.md §3).
        False: the image-only policy (a checkpoint without this field loads as False).
    condition_fusion: how instruction and image embedding reach the UNet (`policies.fusion`).
        "concat": LeRobot's conditioning, [state, image, instruction] into every FiLM layer.
        "film_mlp": the instruction FiLM-modulates the image embedding, then an MLP (hidden
        fusion_hidden_dim) maps [image', instruction] to fusion_dim features (language-conditioned
        policies only; a checkpoint without this field loads as "concat").
        "token_readout": as film_mlp, plus an instruction-conditioned spatial softmax over the
        encoder's patch tokens (an encoder exported with `output_tokens`): readout_keypoints
        maps from a per-token MLP (hidden readout_hidden_dim) whose hidden layer the
        instruction FiLM-modulates, each map's expected (x, y) and peak logit join the MLP's input.
    readout_keypoints / readout_hidden_dim: the token readout's K maps and per-token width.
    readout_target_weight: token_readout only; > 0 adds an auxiliary loss (this weight times the
        mean squared error of the standardised 3-D centre of the instructed object, predicted by
        a linear head from the readout's keypoints and peaks) so the instruction-conditioned maps
        are taught where the named object is rather than left to find it through the action loss
        alone (auxiliary state prediction, e.g. Kalashnikov et al. 2018 QT-Opt's / Jaderberg et
        al. 2017 UNREAL's auxiliary tasks). The centre is read off the demos' point tracks, so
        training needs recordings with tracks (sim); at run time the head is unused (ours).
    readout_target_frame: what that head predicts. "camera": the instructed object's centre in the
        camera optical frame. "fingers": that centre minus the midpoint of the two finger pads
        (same axes, m), i.e. the offset the gripper still has to close (docs/method.md §3).
    readout_target_head: "linear" (a linear map of the readout's keypoints and peaks) or
        "mlp_state" (an MLP, hidden fusion_hidden_dim, of those and the observation state: where
        the fingers are follows from the joints, which the image alone gives only roughly).
    readout_target_input: the head's prediction (standardised, gradient stopped) also joins the
        fusion MLP's input, so the policy conditions on its own estimate of the target (or, with
        "fingers", of the finger-to-object offset); needs readout_target_weight > 0. False (and
        checkpoints without the field): the head is training-only.
    readout_target_teacher_forcing: with readout_target_input, training feeds the label (the
        exact value from the tracks) where it is known instead of the head's prediction, so the
        policy learns to act on an exact offset; run time always feeds the prediction.
    """

    n_obs_steps: int = 2
    horizon: int = 16
    n_action_steps: int = 8
    down_dims: tuple[int, ...] = (64, 128)
    kernel_size: int = 5
    n_groups: int = 8
    diffusion_step_embed_dim: int = 64
    use_film_scale_modulation: bool = True
    noise_scheduler_type: str = "DDIM"
    num_train_timesteps: int = 100
    num_inference_steps: int = 10
    beta_schedule: str = "squaredcos_cap_v2"
    beta_start: float = 0.0001
    beta_end: float = 0.02
    prediction_type: str = "sample"
    clip_sample: bool = True
    clip_sample_range: float = 1.0
    do_mask_loss_for_padding: bool = False
    embedding_normalization: str = "MEAN_STD"
    state_normalization: str = "MIN_MAX"
    action_normalization: str = "MIN_MAX"
    action_frame: str = "relative"
    tcp_offset_m: float = 0.15
    max_obs_gap_s: float = 0.25
    language_conditioning: bool = True
    condition_fusion: str = "concat"
    fusion_hidden_dim: int = 256
    fusion_dim: int = 128
    readout_keypoints: int = 32
    readout_hidden_dim: int = 64
    readout_target_weight: float = 0.0
    readout_target_frame: str = "camera"
    readout_target_head: str = "linear"
    readout_target_input: bool = False
    readout_target_teacher_forcing: bool = False

    def __post_init__(self) -> None:
        self.down_dims = tuple(int(d) for d in self.down_dims)
        if self.n_obs_steps < 1:
            raise ValueError(f"n_obs_steps must be >= 1, got {self.n_obs_steps}")
        if self.horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {self.horizon}")
        if not 1 <= self.n_action_steps <= self.horizon - self.n_obs_steps + 1:
            raise ValueError(
                f"n_action_steps must be in [1, horizon - n_obs_steps + 1 = "
                f"{self.horizon - self.n_obs_steps + 1}], got {self.n_action_steps}"
            )
        if not self.down_dims or any(d < 1 for d in self.down_dims):
            raise ValueError(f"down_dims must be non-empty positive ints, got {self.down_dims}")
        if self.horizon % (2 ** len(self.down_dims)) != 0:
            raise ValueError(
                f"horizon {self.horizon} must be a multiple of 2**len(down_dims) = {2 ** len(self.down_dims)}"
            )
        if any(d % self.n_groups for d in self.down_dims):
            raise ValueError(f"every down_dims entry must be divisible by n_groups={self.n_groups}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd int, got {self.kernel_size}")
        if self.diffusion_step_embed_dim < 4 or self.diffusion_step_embed_dim % 2:
            raise ValueError(f"diffusion_step_embed_dim must be even and >= 4, got {self.diffusion_step_embed_dim}")
        if self.noise_scheduler_type not in NOISE_SCHEDULERS:
            raise ValueError(f"noise_scheduler_type must be one of {NOISE_SCHEDULERS}")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}")
        if not 1 <= self.num_inference_steps <= self.num_train_timesteps:
            raise ValueError(
                f"num_inference_steps must be in [1, num_train_timesteps={self.num_train_timesteps}]"
            )
        if not 0.0 < self.beta_start < self.beta_end < 1.0:
            raise ValueError("need 0 < beta_start < beta_end < 1")
        if self.clip_sample_range <= 0:
            raise ValueError("clip_sample_range must be > 0")
        for name in ("embedding_normalization", "state_normalization", "action_normalization"):
            require_choice("", name, getattr(self, name), NORMALIZATION_MODES)
        require_choice("", "action_frame", self.action_frame, ACTION_FRAMES)
        require_range("DiffusionModelConfig", "tcp_offset_m", self.tcp_offset_m, 0.0, 0.5, unit="m")
        if self.max_obs_gap_s <= 0:
            raise ValueError("max_obs_gap_s must be > 0")
        if not isinstance(self.language_conditioning, bool):
            raise ValueError(f"language_conditioning must be true or false, got {self.language_conditioning!r}")
        require_choice("", "condition_fusion", self.condition_fusion, CONDITION_FUSIONS)
        if self.condition_fusion != "concat" and not self.language_conditioning:
            raise ValueError(f"condition_fusion {self.condition_fusion!r} needs language_conditioning (there is no instruction to fuse)")
        for name in ("fusion_hidden_dim", "fusion_dim", "readout_keypoints", "readout_hidden_dim"):
            require_int("DiffusionModelConfig", name, getattr(self, name), lo=1)
        require_range("DiffusionModelConfig", "readout_target_weight", self.readout_target_weight, 0.0, 100.0)
        if self.readout_target_weight > 0 and self.condition_fusion != "token_readout":
            raise ValueError(f"readout_target_weight {self.readout_target_weight} needs condition_fusion "
                             f"'token_readout' (it trains the token readout), got {self.condition_fusion!r}")
        require_choice("", "readout_target_frame", self.readout_target_frame, READOUT_TARGET_FRAMES)
        require_choice("", "readout_target_head", self.readout_target_head, READOUT_TARGET_HEADS)
        if not isinstance(self.readout_target_input, bool):
            raise ValueError(f"readout_target_input must be true or false, got {self.readout_target_input!r}")
        if self.readout_target_input and self.readout_target_weight <= 0:
            raise ValueError("readout_target_input needs readout_target_weight > 0 (an untrained target head "
                             "would feed the policy noise)")
        if not isinstance(self.readout_target_teacher_forcing, bool):
            raise ValueError("readout_target_teacher_forcing must be true or false")
        if self.readout_target_teacher_forcing and not self.readout_target_input:
            raise ValueError("readout_target_teacher_forcing needs readout_target_input (it decides what that input is)")

    @property
    def state_dim(self) -> int:
        """Width of the model's observation.state: 7 (joints + gripper), 16 in the "tcp_relative"
        frame (+ TCP position and 6-D rotation, `policies.tcp_frame.model_state`)."""
        return TCP_STATE_DIM if self.action_frame == "tcp_relative" else 7

    @property
    def drop_n_last_frames(self) -> int:
        """Frames at each episode end not used as training anchors (LeRobot/Chi et al. default)."""
        return max(0, self.horizon - self.n_action_steps - self.n_obs_steps + 1)


@dataclass
class PolicyTrainConfig:
    """Behaviour-cloning optimisation (Adam + cosine schedule with warmup, as LeRobot's preset).

    val_fraction: share of episodes held out (split by episode, never by frame) for the
    validation loss and the sampled-chunk action error: floor(val_fraction * E) of the E
    episodes, none when that is 0 (e.g. 0.1 of 2 episodes; logged once and stated as
    `validation_note` in the train info). embed_batch_size: images per encoder call
    when precomputing embeddings. num_threads: torch intra-op threads (2-core machines).

    ema_max_decay / ema_power: exponential moving average of the weights, as in Diffusion Policy
    (Chi et al., RSS 2023, §IV-C; diffusers `EMAModel` with warm-up): after optimiser step k the
    average moves with decay min(ema_max_decay, 1 - (1 + k)^-ema_power) and the saved policy, the
    validation metrics and the checkpoints' evaluation weights are the averaged ones.
    ema_max_decay 0 turns it off (the raw weights of the last step are saved).
    """

    steps: int = 5000
    batch_size: int = 64
    lr: float = 1e-3
    betas: tuple[float, float] = (0.95, 0.999)
    eps: float = 1e-8
    weight_decay: float = 1e-6
    warmup_steps: int = 200
    grad_clip_norm: float = 10.0
    seed: int = 0
    val_fraction: float = 0.1
    eval_every_steps: int = 500
    eval_max_samples: int = 256
    log_every_steps: int = 50
    embed_batch_size: int = 32
    num_threads: int = 2
    checkpoint_every_steps: int = 500
    init_stats: str = "recompute"
    ema_max_decay: float = 0.0
    ema_power: float = 0.75

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)
        owner = type(self).__name__
        for name in ("steps", "batch_size"):
            require_int(owner, name, getattr(self, name), lo=1)
        for name in ("lr", "eps"):
            require_finite(owner, name, getattr(self, name), lo=0.0, lo_open=True)
        require_finite(owner, "weight_decay", self.weight_decay, lo=0.0)
        if len(self.betas) != 2:
            raise ConfigError(f"{owner}.betas must be two values in [0, 1), got {self.betas}")
        for i, b in enumerate(self.betas):
            require_range(owner, f"betas[{i}]", b, 0.0, 1.0, hi_open=True)
        require_int(owner, "warmup_steps", self.warmup_steps, lo=0)
        require_finite(owner, "grad_clip_norm", self.grad_clip_norm, lo=0.0, lo_open=True)
        require_range(owner, "val_fraction", self.val_fraction, 0.0, 1.0, hi_open=True)
        for name in ("eval_every_steps", "eval_max_samples", "log_every_steps", "embed_batch_size", "num_threads"):
            require_int(owner, name, getattr(self, name), lo=1)
        require_int(owner, "checkpoint_every_steps", self.checkpoint_every_steps, lo=0)
        require_choice(owner, "init_stats", self.init_stats, INIT_STATS)
        require_range(owner, "ema_max_decay", self.ema_max_decay, 0.0, 1.0, hi_open=True)
        require_finite(owner, "ema_power", self.ema_power, lo=0.0, lo_open=True)

    @property
    def ema(self) -> bool:
        """Whether the weights are averaged (ema_max_decay > 0)."""
        return self.ema_max_decay > 0.0


@dataclass
class PolicyConfig:
    """Everything `dynaflip train-policy` needs besides paths: model + training."""

    model: DiffusionModelConfig = field(default_factory=DiffusionModelConfig)
    train: PolicyTrainConfig = field(default_factory=PolicyTrainConfig)
