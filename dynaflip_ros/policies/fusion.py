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

Shapes: environment_state (B, S, D + T) -> (B, S, F); S = n_obs_steps.
"""
from __future__ import annotations

import torch
from torch import nn

FUSIONS = ("concat", "film_mlp")


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


def make_diffusion_model(lerobot_config, fusion: str, image_dim: int, text_dim: int, hidden_dim: int, out_dim: int):
    """The `DiffusionModel` of a DiffusionPolicy: LeRobot's own ("concat") or one whose global
    conditioning runs the environment state through `ConditionFusion` ("film_mlp", its UNet
    sized for [state, fused] per step). Raises ValueError on an unknown fusion."""
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionConditionalUnet1d, DiffusionModel
    from lerobot.utils.constants import OBS_ENV_STATE, OBS_STATE

    if fusion == "concat":
        return DiffusionModel(lerobot_config)
    if fusion != "film_mlp":
        raise ValueError(f"condition_fusion must be one of {FUSIONS}, got {fusion!r}")

    class FusedDiffusionModel(DiffusionModel):
        """DiffusionModel with `ConditionFusion` on observation.environment_state."""

        def __init__(self, config):
            super().__init__(config)
            self.fusion = ConditionFusion(image_dim, text_dim, hidden_dim, out_dim)
            state_dim = config.robot_state_feature.shape[0]
            self.unet = DiffusionConditionalUnet1d(config, global_cond_dim=(state_dim + out_dim) * config.n_obs_steps)

        def _prepare_global_conditioning(self, batch):
            fused = self.fusion(batch[OBS_ENV_STATE])  # (B, S, F)
            return torch.cat([batch[OBS_STATE], fused], dim=-1).flatten(start_dim=1)  # (B, S * (7 + F))

    return FusedDiffusionModel(lerobot_config)
