"""Instruction-image fusion in front of the diffusion UNet (`DiffusionModelConfig.condition_fusion`).

LeRobot 0.4.4's DiffusionModel conditions its UNet on the concatenation [state, environment_state]
of every observation step, and each residual block turns that vector into FiLM scale and bias
with Linear(Mish(cond)): the instruction and the image embedding only add up there. Following an
instruction among several objects needs a product of the two ("the position of the object the
sentence names"), which that path can form only indirectly. "film_mlp" puts a small fusion
network first, as language-conditioned visuomotor policies do (FiLM of visual features by the
instruction: Perez et al. 2018 "FiLM"; RT-1, Brohan et al. 2022; BC-Z, Jang et al. 2021):

    image' = image * (1 + gamma(text)) + beta(text)              gamma, beta: Linear(T -> D), zero-initialised
    fused  = Linear(Mish(Linear([image', text]))) (F,)           hidden H

The UNet then sees [state (7,), fused (F,)] per observation step. "concat" is LeRobot's own
path, unchanged (and the only one of checkpoints written before this option existed).

"token_readout" also reads the encoder's patch tokens (an encoder exported with
`output_tokens`; `encoder.manifest.TokenLayout`), where a pooled embedding cannot say where
each of several objects is. Each token x_c (C,) of the h x w grid goes through a small MLP whose
hidden layer the instruction FiLM-modulates (the FiLM placement of RT-1's instruction-
conditioned EfficientNet, Brohan et al. 2022), giving K logit maps; a spatial softmax per map
(Levine et al. 2016; Diffusion Policy's obs encoder, Chi et al. 2023) gives its expected cell
position (x, y) in [-1, 1] and its peak logit (how sure the map is):

    a = Linear(Mish(Linear(x_c) * (1 + gamma'(text)) + beta'(text)))  (K,) per cell
    keypoints_k = sum_c softmax_c(a_k) grid_c,  peak_k = max_c a_k
    fused = Linear(Mish(Linear([image', keypoints (2K,), peak (K,), text])))

so "where is the object this sentence names" is one map's softmax. gamma', beta' start at zero.
With `readout_target_weight` > 0 (`configs.policy.DiffusionModelConfig`), a linear head reads
[keypoints, peak] (3K,) to the instructed object's standardised 3-D centre, and training adds
that weight times its squared error (batch keys TARGET_CENTRE (B, S, 3) and TARGET_VALID (B, S))
to the diffusion loss, so the maps are taught where the named object is. What the head predicts
is `readout_target_frame`: the centre in the camera frame, or ("fingers") the centre minus the
finger pads' midpoint. With `readout_target_input` its prediction t (3,), gradient stopped, also
joins the MLP, fused = Linear(Mish(Linear([image', keypoints, peak, t, text]))): a policy handed
the finger-to-object offset explicitly grasps far more precisely than one that must form the
difference of two positions itself (docs/method.md §3). Otherwise run time ignores the head.

Shapes: environment_state (B, S, D + T) -> (B, S, F); S = n_obs_steps; with tokens
D = D_f + h*w*C (the encoder's output_dim).
"""
from __future__ import annotations

import torch
from torch import nn

from dynaflip_ros.encoder.model import keypoint_grid

FUSIONS = ("concat", "film_mlp", "token_readout")
TARGET_CENTRE = "observation.target_centre"  # (B, S, 3) standardised readout target (readout_target_frame)
TARGET_VALID = "observation.target_centre_is_valid"  # (B, S) bool: the centre is known


class ConditionFusion(nn.Module):
    """(..., D + T) [image embedding, instruction embedding] -> (..., F) (module docstring)."""

    def __init__(self, image_dim: int, text_dim: int, hidden_dim: int, out_dim: int):
        super().__init__()
        if min(image_dim, text_dim, hidden_dim, out_dim) < 1:
            raise ValueError(f"fusion dims must be >= 1, got D={image_dim} T={text_dim} H={hidden_dim} F={out_dim}")
        self.image_dim, self.text_dim = int(image_dim), int(text_dim)
        self.film = nn.Linear(text_dim, 2 * image_dim)
        nn.init.zeros_(self.film.weight)  # starts as the identity on the image embedding
        nn.init.zeros_(self.film.bias)
        self.mlp = nn.Sequential(nn.Linear(image_dim + text_dim, hidden_dim), nn.Mish(), nn.Linear(hidden_dim, out_dim))

    def forward(self, env: torch.Tensor) -> torch.Tensor:
        if env.shape[-1] != self.image_dim + self.text_dim:
            raise ValueError(f"expected (..., {self.image_dim + self.text_dim}) input, got {tuple(env.shape)}")
        image, text = env[..., : self.image_dim], env[..., self.image_dim :]
        gamma, beta = self.film(text).chunk(2, dim=-1)
        image = image * (1.0 + gamma) + beta
        return self.mlp(torch.cat([image, text], dim=-1))


class TokenReadoutFusion(nn.Module):
    """(..., D_f + h*w*C + T) [image embedding, patch tokens, instruction] -> (..., F) (module
    docstring, "token_readout"). layout: `encoder.manifest.TokenLayout`; target_head: also build
    the linear head [keypoints, peak] (3K,) -> instructed object's centre (3,) (`predict_target`);
    target_state_dim > 0: that head is instead an MLP (hidden `hidden_dim`) of [keypoints, peak,
    observation state (target_state_dim,)], so where the fingers are can come from the joints;
    target_input: its prediction also joins the fused input (needs target_head; ValueError)."""

    def __init__(self, layout, text_dim: int, keypoints: int, readout_hidden_dim: int, hidden_dim: int, out_dim: int,
                 target_head: bool = False, target_input: bool = False, target_state_dim: int = 0):
        super().__init__()
        if min(text_dim, keypoints, readout_hidden_dim, hidden_dim, out_dim) < 1:
            raise ValueError("token readout dims must be >= 1")
        if target_input and not target_head:
            raise ValueError("target_input needs the target head")
        self.target_input = bool(target_input)
        self.layout = layout
        self.text_dim = int(text_dim)
        h, w = layout.grid
        self.token_in = nn.Linear(layout.channels, readout_hidden_dim)
        self.token_film = nn.Linear(text_dim, 2 * readout_hidden_dim)
        nn.init.zeros_(self.token_film.weight)
        nn.init.zeros_(self.token_film.bias)
        self.token_out = nn.Linear(readout_hidden_dim, keypoints)
        self.register_buffer("grid", keypoint_grid(h, w), persistent=False)  # (h*w, 2), encoder's convention
        self.image = ConditionFusion(layout.embedding_dim + 3 * keypoints + 3 * self.target_input, text_dim,
                                     hidden_dim, out_dim)
        self.target_state_dim = int(target_state_dim)
        if not target_head:
            self.target_head = None
        elif self.target_state_dim > 0:
            self.target_head = nn.Sequential(nn.Linear(3 * keypoints + self.target_state_dim, hidden_dim), nn.Mish(),
                                             nn.Linear(hidden_dim, 3))
        else:
            self.target_head = nn.Linear(3 * keypoints, 3)

    def readout(self, env: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(..., D_f + h*w*C + T) -> (embedding (..., D_f), [keypoints (2K), peak (K)] (..., 3K),
        instruction (..., T))."""
        lay = self.layout
        d, n_tok, c = lay.embedding_dim, lay.grid[0] * lay.grid[1], lay.channels
        if env.shape[-1] != d + lay.token_dim + self.text_dim:
            raise ValueError(f"expected (..., {d + lay.token_dim + self.text_dim}) input, got {tuple(env.shape)}")
        lead = env.shape[:-1]
        emb, text = env[..., :d], env[..., d + lay.token_dim :]  # (..., D_f), (..., T)
        tokens = env[..., d : d + lay.token_dim].reshape(*lead, n_tok, c)  # (..., h*w, C)
        gamma, beta = self.token_film(text).chunk(2, dim=-1)  # (..., H) each
        hidden = self.token_in(tokens) * (1.0 + gamma[..., None, :]) + beta[..., None, :]  # (..., h*w, H)
        logits = self.token_out(nn.functional.mish(hidden)).transpose(-1, -2)  # (..., K, h*w)
        attn = torch.softmax(logits, dim=-1)
        keypoints = (attn @ self.grid).flatten(-2)  # (..., 2K)
        peak = logits.max(dim=-1).values  # (..., K)
        return emb, torch.cat([keypoints, peak], dim=-1), text

    def fuse(self, emb: torch.Tensor, points: torch.Tensor, text: torch.Tensor,
             state: torch.Tensor | None = None, target: torch.Tensor | None = None) -> torch.Tensor:
        """The parts of `readout` -> (..., F); with target_input the head's prediction, detached,
        joins them (state: the normalised observation state (..., target_state_dim) its head
        reads; target (..., 3): a standardised value to feed instead, e.g. the training label)."""
        if not self.target_input:
            return self.image(torch.cat([emb, points, text], dim=-1))
        target = self.predict_target(points, state) if target is None else target
        return self.image(torch.cat([emb, points, target.detach(), text], dim=-1))

    def forward(self, env: torch.Tensor, state: torch.Tensor | None = None) -> torch.Tensor:
        return self.fuse(*self.readout(env), state)

    def predict_target(self, points: torch.Tensor, state: torch.Tensor | None = None) -> torch.Tensor:
        """[keypoints, peak] (..., 3K) of `readout` (and, for a head built with target_state_dim,
        the normalised observation state (..., target_state_dim)) -> the standardised readout
        target (..., 3). Raises RuntimeError when built without target_head, ValueError when its
        head needs the state and none is given."""
        if self.target_head is None:
            raise RuntimeError("this token readout has no target head (readout_target_weight 0)")
        if self.target_state_dim:
            if state is None or state.shape[-1] != self.target_state_dim:
                raise ValueError(f"this target head reads the observation state (..., {self.target_state_dim}), "
                                 f"got {None if state is None else tuple(state.shape)}")
            points = torch.cat([points, state], dim=-1)
        return self.target_head(points)


def make_diffusion_model(lerobot_config, fusion: str, image_dim: int, text_dim: int, hidden_dim: int, out_dim: int,
                         token_layout=None, readout_keypoints: int = 32, readout_hidden_dim: int = 64,
                         readout_target_weight: float = 0.0, readout_target_input: bool = False,
                         readout_target_head: str = "linear", readout_target_teacher_forcing: bool = False):
    """The `DiffusionModel` of a DiffusionPolicy: LeRobot's own ("concat") or one whose global
    conditioning runs the environment state through `ConditionFusion` ("film_mlp") or
    `TokenReadoutFusion` ("token_readout", which needs the encoder's `token_layout`), its UNet
    sized for [state, fused] per step. With readout_target_weight > 0 its training loss adds the
    target-centre term of the module docstring for batches that carry TARGET_CENTRE, and with
    readout_target_input the fusion also conditions on that head's prediction; readout_target_head
    "mlp_state" makes that head an MLP that also reads the observation state, and
    readout_target_teacher_forcing feeds the label instead of the prediction in training where
    the label is known. Raises
    ValueError on an unknown fusion, or "token_readout" without a token layout (an encoder
    without output_tokens)."""
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionConditionalUnet1d, DiffusionModel
    from lerobot.utils.constants import OBS_ENV_STATE, OBS_STATE

    if fusion == "concat":
        return DiffusionModel(lerobot_config)
    if fusion not in FUSIONS:
        raise ValueError(f"condition_fusion must be one of {FUSIONS}, got {fusion!r}")
    if fusion == "token_readout" and token_layout is None:
        raise ValueError("condition_fusion 'token_readout' needs an encoder whose output holds patch tokens "
                         "(model.output_tokens: true in its encoder config)")

    target_weight = float(readout_target_weight) if fusion == "token_readout" else 0.0

    class FusedDiffusionModel(DiffusionModel):
        """DiffusionModel with `ConditionFusion` on observation.environment_state."""

        def __init__(self, config):
            super().__init__(config)
            state_dim = config.robot_state_feature.shape[0]
            if fusion == "token_readout":
                self.fusion = TokenReadoutFusion(
                    token_layout, text_dim, readout_keypoints, readout_hidden_dim, hidden_dim, out_dim,
                    target_head=target_weight > 0, target_input=bool(readout_target_input),
                    target_state_dim=state_dim if readout_target_head == "mlp_state" else 0)
            else:
                self.fusion = ConditionFusion(image_dim, text_dim, hidden_dim, out_dim)
            self.unet = DiffusionConditionalUnet1d(config, global_cond_dim=(state_dim + out_dim) * config.n_obs_steps)
            self.last_target_loss: torch.Tensor | None = None  # the auxiliary term of the last compute_loss

        def _prepare_global_conditioning(self, batch):
            if target_weight > 0 and TARGET_CENTRE in batch:  # the readout once, for both losses
                emb, points, text = self.fusion.readout(batch[OBS_ENV_STATE])
                target = self.fusion.predict_target(points, batch[OBS_STATE])
                err = ((target - batch[TARGET_CENTRE]) ** 2).sum(-1)  # (B, S)
                valid = batch[TARGET_VALID].to(err.dtype)
                self.last_target_loss = (err * valid).sum() / valid.sum().clamp(min=1.0)
                given = target  # the prediction once, for the loss and (detached) as the input
                if readout_target_teacher_forcing:  # the exact value where known, else the estimate
                    given = torch.where(batch[TARGET_VALID][..., None], batch[TARGET_CENTRE], target)
                fused = self.fusion.fuse(emb, points, text, batch[OBS_STATE], given)  # (B, S, F)
            elif fusion == "token_readout":
                fused = self.fusion(batch[OBS_ENV_STATE], batch[OBS_STATE])  # (B, S, F)
            else:
                fused = self.fusion(batch[OBS_ENV_STATE])  # (B, S, F)
            return torch.cat([batch[OBS_STATE], fused], dim=-1).flatten(start_dim=1)  # (B, S * (7 + F))

        def compute_loss(self, batch):
            self.last_target_loss = None
            loss = super().compute_loss(batch)
            if self.last_target_loss is not None:
                loss = loss + target_weight * self.last_target_loss
            return loss

    return FusedDiffusionModel(lerobot_config)
