"""Diffusion policy on frozen encoder embeddings: LeRobot 0.4.4 `DiffusionPolicy` behind `Policy`.

Model: Chi et al., "Diffusion Policy" (RSS 2023), LeRobot implementation
(`lerobot.policies.diffusion.modeling_diffusion`): a 1-D conditional UNet denoises a chunk of
`horizon` actions, FiLM-conditioned on the last `n_obs_steps` observations. There is no vision
backbone: the frame embedding f(o_t) (D,) enters as `observation.environment_state`
(FeatureType.ENV) next to `observation.state` (7,). With `language_conditioning` the frozen
sentence embedding of the instruction (T = 384, `policies.language`) is appended:
environment_state = [f(o_t) (D,), E_text(instruction) (T,)] (LeRobot 0.4.4's DiffusionPolicy has
no language input; its global conditioning concatenates state, image features and this one ENV
vector per observation step, so the instruction reaches the UNet through FiLM like the image;
`condition_fusion: film_mlp` puts `policies.fusion.ConditionFusion` in front of that instead).
The instruction of the CURRENT observation conditions every step of the window (training uses one
instruction per sample). Normalisation is LeRobot's pre/post processor pipeline
(`make_pre_post_processors(cfg, dataset_stats=...)`); the instruction part's stats are
`policies.language.text_stats`.

Samples per chunk (run-time option K, `samples_per_chunk`): each chunk is denoised from K initial
noises on the same window in one batch and the K chunks are averaged in the normalised action
space (affine in the action, so the mean commutes with unnormalisation): the sampler's own spread
removed, for K times the UNet work (docs/method.md §4). K = 1 is the plain sampler. With
`obs.committed` the chunk continues the actions in flight (real-time chunking, `policies.rtc`).

Action indexing (LeRobot `DiffusionPolicy.select_action`): the denoised horizon starts at the
OLDEST observation of the window, so horizon index n_obs_steps-1 is the action for the CURRENT
observation. `predict_action_chunk` returns horizon[n_obs_steps-1 : n_obs_steps-1+n_action_steps],
i.e. n_action_steps actions. A recorded action is the joint target the arm must reach one period
after its frame (the expert's target for t + 1/fps; `sim.rollout.SimRunner.run_expert_episode`),
so action i is due at obs.stamp_s + (i + 1) / fps: the chunk's t0_s is obs.stamp_s + 1/fps.

Checkpoint directory (`save` / `load`), safetensors + JSON only:
  model.safetensors, config.json                      LeRobot `save_pretrained` of the policy
  policy_preprocessor.json + *_normalizer_processor.safetensors    normalisation stats (LeRobot)
  policy_postprocessor.json + *_unnormalizer_processor.safetensors
  policy.json        this module's config, embedding dim, fps, the encoder's weights_sha256 and
                     manifest, the text encoder (name, dim, weights_sha256; null for an image-only
                     policy), train info (data, recipe, steps, init), and the sha256 of every file
                     above. format_version 2; version 1 (image-only, no text_encoder) still loads.
"""
from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from dynaflip_ros.configs.io import from_dict, to_dict
from dynaflip_ros.configs.policy import DiffusionModelConfig, check_samples_per_chunk
from dynaflip_ros.data import schema
from dynaflip_ros.encoder.manifest import (
    EncoderArtifactError,
    EncoderManifest,
    check_recorded_sha256,
    sha256_file,
    token_layout,
)
from dynaflip_ros.policies.action_frame import from_model_frame, model_state
from dynaflip_ros.policies.rtc import guided_sampler
from dynaflip_ros.policies.base import (
    ActionChunk,
    EncoderMismatchError,
    PolicyCheckpointError,
    PolicyObservation,
)
from dynaflip_ros.policies.language import (
    TEXT_DIM,
    TEXT_STATS_KEY,
    MiniLMTextEncoder,
    check_instruction,
    check_text_encoder,
    default_text_stats,
    embed_texts,
    text_encoder_info,
)

POLICY_JSON = "policy.json"
FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)
_INSTRUCTION_CACHE_SIZE = 256  # embedded instructions kept per runner
POLICY_TYPE = "lerobot_diffusion_on_embeddings"
OBS_STATE = "observation.state"
OBS_EMBEDDING = "observation.environment_state"
ACTION = "action"
_PROCESSOR_PREFIXES = ("policy_preprocessor", "policy_postprocessor")


def import_lerobot() -> None:
    """Apply the torchvision shim (docs/environment.md gotcha 1) before anything imports lerobot."""
    from dynaflip_ros._compat import torchvision_shim

    torchvision_shim.apply()


def environment_dim(model: DiffusionModelConfig, embedding_dim: int) -> int:
    """Width of observation.environment_state: D, plus T = 384 with language conditioning."""
    return int(embedding_dim) + (TEXT_DIM if model.language_conditioning else 0)


def build_policy(lerobot_config, model: DiffusionModelConfig, embedding_dim: int, encoder_manifest=None):
    """A fresh LeRobot DiffusionPolicy for `lerobot_config` (`make_lerobot_config`) whose
    DiffusionModel has the conditioning of `model.condition_fusion` (`policies.fusion`; the
    "token_readout" fusion reads the token layout of `encoder_manifest`, an EncoderManifest or
    its dict). Raises ValueError when that fusion meets an encoder without tokens."""
    import_lerobot()
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy

    from dynaflip_ros.policies.fusion import make_diffusion_model

    policy = DiffusionPolicy(lerobot_config)
    if model.condition_fusion != "concat":
        layout = token_layout(encoder_manifest) if encoder_manifest is not None else None
        policy.diffusion = make_diffusion_model(lerobot_config, model.condition_fusion, int(embedding_dim), TEXT_DIM,
                                                model.fusion_hidden_dim, model.fusion_dim, token_layout=layout,
                                                readout_keypoints=model.readout_keypoints,
                                                readout_hidden_dim=model.readout_hidden_dim,
                                                readout_target_weight=model.readout_target_weight,
                                                readout_target_input=model.readout_target_input,
                                                readout_target_head=model.readout_target_head,
                                                readout_target_teacher_forcing=model.readout_target_teacher_forcing)
    return policy


def make_lerobot_config(model: DiffusionModelConfig, embedding_dim: int):
    """DiffusionModelConfig + image embedding dim D -> `lerobot...DiffusionConfig` (CPU, no images).

    Inputs: observation.state (STATE, (model.state_dim,): 7, or 16 with the TCP pose) and observation.environment_state (ENV, (D,), or
    (D + 384,) with language conditioning); output: action (ACTION, (7,)). Raises ValueError on D < 1.
    """
    if int(embedding_dim) < 1:
        raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}")
    import_lerobot()
    from lerobot.configs.types import FeatureType, NormalizationMode, PolicyFeature
    from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig

    return DiffusionConfig(
        input_features={
            OBS_STATE: PolicyFeature(type=FeatureType.STATE, shape=(model.state_dim,)),
            OBS_EMBEDDING: PolicyFeature(type=FeatureType.ENV, shape=(environment_dim(model, embedding_dim),)),
        },
        output_features={ACTION: PolicyFeature(type=FeatureType.ACTION, shape=(schema.ACTION_DIM,))},
        normalization_mapping={
            "STATE": NormalizationMode(model.state_normalization),
            "ENV": NormalizationMode(model.embedding_normalization),
            "ACTION": NormalizationMode(model.action_normalization),
        },
        device="cpu",
        n_obs_steps=model.n_obs_steps,
        horizon=model.horizon,
        n_action_steps=model.n_action_steps,
        drop_n_last_frames=model.drop_n_last_frames,
        down_dims=tuple(model.down_dims),
        kernel_size=model.kernel_size,
        n_groups=model.n_groups,
        diffusion_step_embed_dim=model.diffusion_step_embed_dim,
        use_film_scale_modulation=model.use_film_scale_modulation,
        noise_scheduler_type=model.noise_scheduler_type,
        num_train_timesteps=model.num_train_timesteps,
        num_inference_steps=model.num_inference_steps,
        beta_schedule=model.beta_schedule,
        beta_start=model.beta_start,
        beta_end=model.beta_end,
        prediction_type=model.prediction_type,
        clip_sample=model.clip_sample,
        clip_sample_range=model.clip_sample_range,
        do_mask_loss_for_padding=model.do_mask_loss_for_padding,
        push_to_hub=False,
    )


def stats_to_torch(stats: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{feature: {stat: array}} -> same with float32 torch tensors (what LeRobot normalisers take)."""
    import torch

    return {k: {s: torch.as_tensor(np.asarray(v, np.float32)) for s, v in d.items()} for k, d in stats.items()}


class DiffusionPolicyRunner:
    """`policies.base.Policy` backed by a LeRobot DiffusionPolicy on (embedding, state) inputs.

    Keeps the last n_obs_steps normalised observations (LeRobot `populate_queues` semantics: the
    first observation after `reset()` fills the whole window). A language-conditioned runner
    (`language_conditioned`) embeds `obs.instruction` with its text encoder (once per distinct
    string) and conditions the whole window on the instruction of the observation it samples
    for. With `seed` set, the diffusion noise comes from a private generator re-seeded by
    `reset()`, so a rollout is reproducible and two runners with the same weights and seed return
    identical chunks; with seed None the global torch RNG is used. Thread-safe (one lock around
    history + sampling).

    Build with `DiffusionPolicyRunner.create(...)` (fresh weights, for training) or `.load(dir, ...)`.
    """

    def __init__(
        self,
        policy,
        preprocessor,
        postprocessor,
        model_config: DiffusionModelConfig,
        embedding_dim: int,
        fps: float,
        encoder_manifest: dict[str, Any],
        train_info: dict[str, Any] | None = None,
        seed: int | None = None,
        text_encoder=None,
        text_info: dict[str, Any] | None = None,
        samples_per_chunk: int = 1,
    ) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        if "weights_sha256" not in encoder_manifest:
            raise ValueError("encoder_manifest must contain weights_sha256")
        self.policy = policy
        self.preprocessor = preprocessor
        self.postprocessor = postprocessor
        self.model_config = model_config
        self.embedding_dim = int(embedding_dim)
        self.fps = float(fps)
        self.encoder_manifest = dict(encoder_manifest)
        self.encoder_sha256: str = str(encoder_manifest["weights_sha256"])
        self.train_info: dict[str, Any] = dict(train_info or {})
        self.seed = seed
        # text encoder (policies.language) and what the manifest records of it; None when image-only
        self.language_conditioned = bool(model_config.language_conditioning)
        self.text_encoder = text_encoder
        if self.language_conditioned and text_info is None:
            if text_encoder is None:
                self.text_encoder = text_encoder = MiniLMTextEncoder()
            text_info = text_encoder_info(text_encoder)
        self.text_info: dict[str, Any] | None = dict(text_info) if self.language_conditioned else None
        self._instructions: dict[str, np.ndarray] = {}  # instruction -> (T,) embedding
        # sha256 of model.safetensors once saved / loaded (None for a model only in memory)
        self.weights_sha256: str | None = None
        self._lock = threading.Lock()
        self._generator = None
        self.samples_per_chunk = samples_per_chunk
        self._history: dict[str, deque] = {}
        self._stamps: deque = deque()
        self.stale_history_resets = 0
        self.ik_unconverged = 0  # "tcp_relative" chunk poses inverse kinematics did not reach (policies.tcp_frame)
        self.reset()

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        model_config: DiffusionModelConfig,
        embedding_dim: int,
        stats: dict[str, dict[str, Any]],
        fps: float,
        encoder_manifest: EncoderManifest | dict[str, Any],
        seed: int | None = None,
        text_encoder=None,
    ) -> DiffusionPolicyRunner:
        """Freshly initialised policy. stats: {"observation.state" | "observation.environment_state" |
        "action": {"mean","std","min","max": (F,) arrays}} from the training data (action stats in
        the model's action frame, see `to_model_frame`; environment_state stats of the image
        embedding (D,)), plus for language conditioning optionally "observation.instruction" (T,)
        (`policies.language.text_stats`; default `default_text_stats`). text_encoder: see
        `policies.language` (default: the shipped MiniLM)."""
        import_lerobot()
        from lerobot.policies.factory import make_pre_post_processors

        missing = {OBS_STATE, OBS_EMBEDDING, ACTION} - set(stats)
        if missing:
            raise ValueError(f"stats lack {sorted(missing)}")
        stats = {k: dict(v) for k, v in stats.items()}
        text = stats.pop(TEXT_STATS_KEY, None)
        if model_config.language_conditioning:  # environment_state = [image (D,), instruction (T,)]
            text = default_text_stats() if text is None else text
            image = stats[OBS_EMBEDDING]
            stats[OBS_EMBEDDING] = {
                k: np.concatenate([np.asarray(image[k], np.float32), np.asarray(text[k], np.float32)])
                for k in ("mean", "std", "min", "max")
            }
        manifest = asdict(encoder_manifest) if isinstance(encoder_manifest, EncoderManifest) else encoder_manifest
        cfg = make_lerobot_config(model_config, embedding_dim)
        policy = build_policy(cfg, model_config, embedding_dim, manifest)
        pre, post = make_pre_post_processors(cfg, dataset_stats=stats_to_torch(stats))
        return cls(policy, pre, post, model_config, embedding_dim, fps, manifest, seed=seed, text_encoder=text_encoder)

    @property
    def samples_per_chunk(self) -> int:
        """K chunks denoised and averaged per `predict_action_chunk` (module docstring)."""
        return self._samples_per_chunk

    @samples_per_chunk.setter
    def samples_per_chunk(self, k: int) -> None:
        """Raises ValueError unless k is an int in 1..64 (`configs.policy.check_samples_per_chunk`)."""
        self._samples_per_chunk = check_samples_per_chunk(k)

    @property
    def dt_s(self) -> float:
        """Spacing of the actions in a chunk (s) = 1 / dataset fps."""
        return 1.0 / self.fps

    @property
    def num_parameters(self) -> int:
        return int(sum(p.numel() for p in self.policy.parameters()))

    # ---- Policy protocol ------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> None:
        """Clear the observation history (episode start); re-seed the noise generator if seeded."""
        import torch

        if seed is not None:
            self.seed = int(seed)
        n = self.model_config.n_obs_steps
        with self._lock:
            self._history = {OBS_STATE: deque(maxlen=n), OBS_EMBEDDING: deque(maxlen=n)}
            self._stamps: deque = deque(maxlen=n)  # capture stamps (s) of the window entries
            self._generator = None if self.seed is None else torch.Generator().manual_seed(self.seed)

    def observe(self, obs: PolicyObservation) -> None:
        """Add an observation to the history without sampling (call at every frame when chunks are
        requested less often than the 1/fps training spacing). Raises ValueError on bad input
        (a language-conditioned policy: also on a missing or empty `obs.instruction`)."""
        batch, _ = self._normalise(obs)  # the instruction is checked; the next chunk's conditions the window
        with self._lock:
            self._push(batch, float(obs.stamp_s))

    def predict_action_chunk(self, obs: PolicyObservation) -> ActionChunk:
        """Observe `obs` and sample a chunk: actions (n_action_steps, 7) (rad + gripper 0..1),
        t0_s = obs.stamp_s + 1/fps (a recorded action is the target one period after its frame),
        dt_s = 1/fps. Raises ValueError on a wrong shape, NaN/inf input, a stamp older than the
        previous observation, or (language-conditioned) a missing or empty `obs.instruction`."""
        import torch

        batch, text = self._normalise(obs)
        with self._lock:
            self._push(batch, float(obs.stamp_s))
            window = {k: torch.stack(list(q), dim=1) for k, q in self._history.items()}  # (1, n_obs, F)
            if text is not None:  # the current instruction conditions every step of the window
                n_obs = window[OBS_EMBEDDING].shape[1]
                window[OBS_EMBEDDING] = torch.cat(  # (1, n_obs, D + T)
                    [window[OBS_EMBEDDING], text[:, None, :].expand(1, n_obs, text.shape[-1])], dim=-1
                )
            guided = guided_sampler(self, obs)  # real-time chunking: continue the committed actions
            with torch.inference_mode():
                actions = self._sample(window, guided)  # (1, n_action_steps, 7) normalised
                actions = self.postprocessor(actions)  # (1, n_action_steps, 7) rad / gripper
        out = actions[0].detach().cpu().numpy().astype(np.float32)  # (n_action_steps, 7) model frame
        mc = self.model_config
        if mc.action_frame == "tcp_relative":  # inverse kinematics from the measured joints
            from dynaflip_ros.policies.tcp_frame import chunk_to_joints

            out, missed = chunk_to_joints(out, np.asarray(obs.state, np.float32), mc.tcp_offset_m)
            self.ik_unconverged += missed
        else:
            out = from_model_frame(out, np.asarray(obs.state, np.float32), mc.action_frame)
        if not np.all(np.isfinite(out)):
            raise RuntimeError("policy produced non-finite actions")
        return ActionChunk(actions=out, t0_s=float(obs.stamp_s) + self.dt_s, dt_s=self.dt_s)

    def embed_instruction(self, instruction: str) -> np.ndarray:
        """(T,) float32 text embedding of `instruction` (cached per string; call once at start-up
        to load the text model before the first episode). Raises ValueError on None / empty,
        RuntimeError when the policy is image-only."""
        if not self.language_conditioned:
            raise RuntimeError("this policy is image-only (model.language_conditioning false)")
        text = check_instruction(instruction)
        cached = self._instructions.get(text)
        if cached is None:
            cached = embed_texts(self.text_encoder, [text])[0]  # (T,)
            if len(self._instructions) >= _INSTRUCTION_CACHE_SIZE:
                self._instructions.pop(next(iter(self._instructions)))
            self._instructions[text] = cached
        return cached

    # ---- internals ----------------------------------------------------------------------------
    def _normalise(self, obs: PolicyObservation) -> tuple[dict, Any]:
        """Normalised ({state (1, state_dim), image embedding (1, D)}, instruction (1, T) or None)."""
        import torch

        emb = np.asarray(obs.embedding)
        state = np.asarray(obs.state)
        if emb.shape != (self.embedding_dim,):
            raise ValueError(f"embedding must have shape ({self.embedding_dim},), got {emb.shape}")
        if state.shape != (schema.STATE_DIM,):
            raise ValueError(f"state must have shape ({schema.STATE_DIM},), got {state.shape}")
        if not np.issubdtype(emb.dtype, np.floating) or not np.issubdtype(state.dtype, np.floating):
            raise ValueError(f"embedding/state must be floating point, got {emb.dtype}/{state.dtype}")
        if not np.all(np.isfinite(emb)):
            raise ValueError("embedding contains NaN or inf")
        if not np.all(np.isfinite(state)):
            raise ValueError("state contains NaN or inf")
        if not np.isfinite(obs.stamp_s):
            raise ValueError(f"stamp_s must be finite, got {obs.stamp_s}")
        env = emb.astype(np.float32)  # (D,)
        if self.language_conditioned:
            env = np.concatenate([env, self.embed_instruction(obs.instruction)])  # (D + T,)
        raw = {
            OBS_STATE: torch.from_numpy(model_state(state, self.model_config)),  # (state_dim,)
            OBS_EMBEDDING: torch.from_numpy(env),  # (D,) or (D + T,)
        }
        with torch.inference_mode():
            out = self.preprocessor(raw)
        d = self.embedding_dim
        text = out[OBS_EMBEDDING][:, d:] if self.language_conditioned else None  # (1, T)
        return {OBS_STATE: out[OBS_STATE], OBS_EMBEDDING: out[OBS_EMBEDDING][:, :d]}, text  # (1, S), (1, D)

    def _push(self, batch: dict, stamp_s: float) -> None:
        from lerobot.policies.utils import populate_queues

        stamps = self._stamps
        if stamps:
            last = stamps[-1]
            if stamp_s < last:
                raise ValueError(f"observation stamp {stamp_s} is older than the previous one ({last})")
            if stamp_s == last:  # the same frame again: replace it, don't shift the window
                for q in (*self._history.values(), stamps):
                    q.pop()
                if stamps and all(s == stamp_s for s in stamps):  # window was copies of this frame
                    for q in (*self._history.values(), stamps):
                        q.clear()
            elif stamp_s - last > self.model_config.max_obs_gap_s:  # stale window: restart it
                for q in (*self._history.values(), stamps):
                    q.clear()
                self.stale_history_resets += 1
        populate_queues(self._history, batch)
        while len(stamps) < stamps.maxlen - 1:  # first frame fills the window (LeRobot semantics)
            stamps.append(stamp_s)
        stamps.append(stamp_s)

    def _sample(self, window: dict, guided=None):
        """(1, n_action_steps, 7) normalised actions from the current step: the mean of `samples_per_chunk`
        chunks denoised in one batch; guided: the inpainting sampler of `policies.rtc.guided_sampler`."""
        import torch

        k = self._samples_per_chunk
        if k > 1:  # (1, n_obs, F) -> (K, n_obs, F): one window, K initial noises
            window = {name: v.expand(k, *v.shape[1:]) for name, v in window.items()}

        generate = guided or self.policy.diffusion.generate_actions
        if self._generator is None:
            actions = generate(window)
        else:
            call_seed = int(torch.randint(0, 2**62, (1,), generator=self._generator))
            with torch.random.fork_rng(devices=[]):  # reproducible, global RNG untouched
                torch.manual_seed(call_seed)
                actions = generate(window)
        return actions.mean(0, keepdim=True) if k > 1 else actions  # (1, n_action_steps, 7)

    # ---- persistence --------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write the checkpoint directory (see module docstring). Returns the directory."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.policy.save_pretrained(directory)
        self.preprocessor.save_pretrained(directory)
        self.postprocessor.save_pretrained(directory)
        files = sorted(  # what LeRobot's save_pretrained wrote (not e.g. train_log.jsonl next to it)
            p.name
            for p in directory.iterdir()
            if p.is_file()
            and (p.name in ("model.safetensors", "config.json") or p.name.startswith(_PROCESSOR_PREFIXES))
        )
        import lerobot

        meta = {
            "format_version": FORMAT_VERSION,
            "policy_type": POLICY_TYPE,
            "lerobot_version": lerobot.__version__,
            "model": to_dict(self.model_config),
            "embedding_dim": self.embedding_dim,
            "environment_state_dim": environment_dim(self.model_config, self.embedding_dim),
            "state_dim": schema.STATE_DIM,
            "action_dim": schema.ACTION_DIM,
            "fps": self.fps,
            "num_parameters": self.num_parameters,
            "action_indexing": (
                "chunk = horizon[n_obs_steps-1 : n_obs_steps-1+n_action_steps]; action i due at obs stamp + (i+1)/fps"
            ),
            "encoder": {"weights_sha256": self.encoder_sha256, "manifest": self.encoder_manifest},
            "text_encoder": self.text_info,
            "input": (
                "observation.environment_state = [image embedding (D,), instruction embedding (T,)]"
                if self.language_conditioned
                else "observation.environment_state = image embedding (D,)"
            ),
            "train": self.train_info,
            "files_sha256": {name: sha256_file(directory / name) for name in files},
        }
        self.weights_sha256 = meta["files_sha256"].get("model.safetensors")
        (directory / POLICY_JSON).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return directory

    @staticmethod
    def read_metadata(directory: str | Path) -> dict[str, Any]:
        """policy.json of a checkpoint. Raises FileNotFoundError, PolicyCheckpointError (a
        ValueError: unreadable JSON or an unsupported format)."""
        path = Path(directory) / POLICY_JSON
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found (not a policy checkpoint directory)")
        try:
            meta = json.loads(path.read_text())
        except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
            raise PolicyCheckpointError(f"{path}: unreadable (damaged or truncated? copy the checkpoint again): {e}") from e
        if not isinstance(meta, dict):
            raise PolicyCheckpointError(f"{path}: not a policy description (a JSON object expected)")
        if meta.get("format_version") not in READABLE_FORMATS or meta.get("policy_type") != POLICY_TYPE:
            raise PolicyCheckpointError(
                f"{path}: unsupported policy format {meta.get('policy_type')!r} v{meta.get('format_version')}"
            )
        return meta

    @staticmethod
    def model_config_of(meta: dict[str, Any], where: str = POLICY_JSON) -> DiffusionModelConfig:
        """The DiffusionModelConfig recorded in policy.json; a checkpoint without
        `language_conditioning` (format 1, before instructions) is image-only, one without
        `condition_fusion` concatenates (LeRobot's conditioning)."""
        model = dict(meta["model"])
        model.setdefault("language_conditioning", False)
        model.setdefault("condition_fusion", "concat")
        return from_dict(DiffusionModelConfig, model, f"{where}:model")

    @classmethod
    def load(
        cls,
        directory: str | Path,
        *,
        encoder_sha256: str | None,
        seed: int | None = None,
        text_encoder=None,
        samples_per_chunk: int = 1,
    ) -> DiffusionPolicyRunner:
        """Load a checkpoint written by `save`.

        samples_per_chunk: chunks averaged per prediction (module docstring; ValueError outside 1..64).

        encoder_sha256: weights_sha256 of the encoder that will produce the embeddings; raises
        EncoderMismatchError when it differs from the one the policy was trained on (pass None
        only to inspect a checkpoint without running it on an encoder; that skips the text
        encoder check too). text_encoder (language-conditioned policies; default the shipped
        MiniLM, `policies.language`): raises TextEncoderMismatchError (an EncoderMismatchError)
        when its weights sha256 differs from the recorded one. The checkpoint's files are
        checked against policy.json first. Raises FileNotFoundError on missing files and
        PolicyCheckpointError (a ValueError) when a file is damaged or truncated, or its sha256
        differs from policy.json (corrupt or mixed checkpoint).
        """
        directory = Path(directory)
        meta = cls.read_metadata(directory)
        for name, digest in meta["files_sha256"].items():
            path = directory / name
            if not path.is_file():
                raise FileNotFoundError(f"{path} missing from the policy checkpoint")
            try:
                actual = check_recorded_sha256(path, digest, f"{POLICY_JSON} files_sha256")
            except EncoderArtifactError as e:  # a broken safetensors layout: damaged or truncated
                raise PolicyCheckpointError(str(e)) from e
            if actual != digest:
                raise PolicyCheckpointError(f"{path}: sha256 differs from {POLICY_JSON} (corrupt or mixed checkpoint)")
        trained_on = meta["encoder"]["weights_sha256"]
        if encoder_sha256 is not None and encoder_sha256 != trained_on:
            raise EncoderMismatchError(
                f"policy {directory} was trained on embeddings of encoder {trained_on[:16]}..., "
                f"but the running encoder is {encoder_sha256[:16]}...; retrain the policy "
                f"(dynaflip train-policy) or deploy the matching encoder"
            )
        model_config = cls.model_config_of(meta, str(directory / POLICY_JSON))
        text_info = meta.get("text_encoder")
        if model_config.language_conditioning:
            if not isinstance(text_info, dict) or not {"name", "dim", "weights_sha256"} <= set(text_info):
                raise PolicyCheckpointError(f"{directory / POLICY_JSON}: language-conditioned but no text_encoder record")
            if text_encoder is None:
                text_encoder = MiniLMTextEncoder()
            if encoder_sha256 is not None:
                check_text_encoder(text_info, text_encoder, directory)

        import_lerobot()
        import torch
        from lerobot.policies.factory import make_pre_post_processors
        from safetensors.torch import load_model

        cfg = make_lerobot_config(model_config, meta["embedding_dim"])
        policy = build_policy(cfg, model_config, meta["embedding_dim"], meta["encoder"]["manifest"])
        load_model(policy, str(directory / "model.safetensors"), strict=True, device="cpu")
        policy.eval()
        with torch.inference_mode():
            pre, post = make_pre_post_processors(cfg, pretrained_path=str(directory))
        runner = cls(
            policy,
            pre,
            post,
            model_config,
            meta["embedding_dim"],
            meta["fps"],
            meta["encoder"]["manifest"] or {"weights_sha256": trained_on},
            train_info=meta.get("train"),
            seed=seed,
            text_encoder=text_encoder,
            text_info=text_info,
            samples_per_chunk=samples_per_chunk,
        )
        runner.weights_sha256 = meta["files_sha256"].get("model.safetensors")
        return runner

