"""Named encoder recipes: DynaFLIP, its ablations and the baselines it is compared with, each
trained (or not) on the same data, with the same backbone, input size and budget
(`dynaflip train-encoder --recipe NAME`; docs/method.md §7).

A recipe is a set of overrides of the loss and model configs plus whether the encoder is trained
at all. What each one tests:

| recipe | objective | source |
|---|---|---|
| dynaflip | triangle InfoNCE over image transition, language, 3D flow, all six mismatched-modality negative sets, lambda_cos 1, + TCN + actor (the shipped recipe) | DynaFLIP §2 |
| area_only | dynaflip without the language-flow cosine regulariser (lambda_cos 0) | DynaFLIP ablation "no cosine regulariser" |
| no_flow | image transition - language pairwise InfoNCE (CLIP's) + TCN + actor | DynaFLIP ablation "no flow" |
| no_language | image transition - flow pairwise InfoNCE + TCN + actor | DynaFLIP ablation "no language" |
| no_aux | dynaflip without TCN and actor (lambda_tcn = lambda_act = 0) | DynaFLIP ablation (auxiliary losses) |
| no_mismatched_negatives | triangle InfoNCE whose negatives are only other samples' whole tuples (I_j, L_j, F_j) | DynaFLIP ablation "no mismatched-modality negatives" (our reading: no tuple mixes modalities of two samples) |
| tcn | the time-contrastive loss alone (lambda_tcn 1, no alignment, no actor) | R3M / TCN (Nair et al. 2022; Sermanet et al. 2018) |
| clip | image transition - language pairwise InfoNCE alone (no TCN, no actor) | CLIP-style (Radford et al. 2021) |
| dynamo | DynaMo's dynamics loss alone: an inverse model infers a latent transition z from (f(o_t), f(o_t+k)), a forward model predicts f(o_t+k) from (f(o_t), z); 1 - cos to the stop-gradient target + 0.04 VICReg covariance | DynaMo (Cui et al. 2024), on one transition instead of its causal window of frames |
| imagenet | not trained: the ImageNet EfficientNet-Lite0 trunk + the keypoint head at its seeded initialisation, frozen | ImageNet baseline |
| random | not trained: the whole image encoder at its seeded random initialisation, frozen | random-init baseline |
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dynaflip_ros.configs.encoder import WHOLE_TUPLE, EncoderConfig


RECIPE_KINDS = ("method", "ablation", "baseline")


@dataclass(frozen=True)
class Recipe:
    """name; summary (one line); kind: one of RECIPE_KINDS ("method": DynaFLIP itself,
    "ablation": DynaFLIP less one part, "baseline": another method); loss / model: field
    overrides of AlignmentLossConfig / EncoderModelConfig; trained: False = the encoder is saved
    at its initialisation (a frozen baseline; no data needed)."""

    name: str
    summary: str
    kind: str
    loss: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    trained: bool = True

    def __post_init__(self) -> None:
        if self.kind not in RECIPE_KINDS:
            raise ValueError(f"recipe {self.name!r}: kind {self.kind!r} is not one of {RECIPE_KINDS}")


RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("dynaflip", "DynaFLIP: triangle InfoNCE (image transition, language, flow) + TCN + actor", "method"),
    Recipe("area_only", "DynaFLIP without the cosine regulariser", "ablation", loss={"lambda_cos": 0.0}),
    Recipe("no_flow", "image transition - language pairwise InfoNCE + TCN + actor", "ablation",
           loss={"alignment": "image_language"}),
    Recipe("no_language", "image transition - flow pairwise InfoNCE + TCN + actor", "ablation",
           loss={"alignment": "image_flow"}),
    Recipe("no_aux", "DynaFLIP alignment without TCN and actor", "ablation", loss={"lambda_tcn": 0.0, "lambda_act": 0.0}),
    Recipe("no_mismatched_negatives", "triangle InfoNCE with other samples' whole tuples as the only negatives",
           "ablation", loss={"negative_sets": (WHOLE_TUPLE,)}),
    Recipe("tcn", "time-contrastive loss alone", "baseline",
           loss={"alignment": "none", "lambda_tcn": 1.0, "lambda_act": 0.0}),
    Recipe("clip", "image transition - language pairwise InfoNCE alone", "baseline",
           loss={"alignment": "image_language", "lambda_tcn": 0.0, "lambda_act": 0.0}),
    Recipe("dynamo", "DynaMo: inverse + forward dynamics in embedding space, covariance-regularised", "baseline",
           loss={"alignment": "none", "lambda_tcn": 0.0, "lambda_act": 0.0, "lambda_dyn": 1.0}),
    Recipe("imagenet", "ImageNet EfficientNet-Lite0 trunk + keypoint head at init, frozen", "baseline",
           model={"pretrained": True}, trained=False),
    Recipe("random", "random initialisation, frozen", "baseline", model={"pretrained": False}, trained=False),
)}


def get_recipe(name: str) -> Recipe:
    """Raises ValueError for an unknown name (listing the known ones)."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; one of {', '.join(RECIPES)}")
    return RECIPES[name]


def apply_recipe(cfg: EncoderConfig, name: str) -> EncoderConfig:
    """A copy of `cfg` with the recipe's loss and model overrides (validated by the configs).
    Raises ValueError for an unknown recipe or an invalid resulting config."""
    r = get_recipe(name)
    return dataclasses.replace(cfg, loss=dataclasses.replace(cfg.loss, **r.loss),
                               model=dataclasses.replace(cfg.model, **r.model))


def save_untrained(out_dir: str | Path, cfg: EncoderConfig, name: str, seed: int = 0):
    """Write the encoder artifact of an untrained recipe (`Recipe.trained` False): the networks
    at their initialisation under torch seed `seed` (the ImageNet trunk when
    `cfg.model.pretrained`). Returns the EncoderManifest. Raises ValueError for a trained recipe."""
    import torch

    from dynaflip_ros.encoder.model import DynaFlipModel, save_encoder

    r = get_recipe(name)
    if r.trained:
        raise ValueError(f"recipe {name!r} is trained: use `dynaflip train-encoder --recipe {name} --dataset ...`")
    torch.manual_seed(seed)
    model = DynaFlipModel(cfg, imagenet_init=cfg.model.pretrained).eval()
    return save_encoder(out_dir, model, cfg, {"recipe": name, "trained": False, "seed": seed, "complete": True})
