"""Held-out retrieval of `dynaflip train-encoder` (docs/method.md §1 "Held-out retrieval").

On clips of episodes the encoder never trained on (`TripletDataConfig.heldout_fraction`):
- image transition -> language: for each clip, rank the distinct language groups of the
  held-out clips (a group's embedding = the normalised mean of h_L over its paraphrases) by the
  cosine with z_I; top-1 = share of clips whose own group ranks first; chance = 1 / groups.
- image transition -> flow: rank the z_F of every held-out clip by the cosine with z_I; top-1 =
  share of clips whose own flow ranks first; chance = 1 / clips. (z_F is conditioned on its own
  clip's detached image feature, as in training, where these are the "flow" negatives.)
The model runs in eval mode (BatchNorm running statistics, as deployed) without gradients and
is put back in its previous mode; no random number generator is used.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def retrieval_top1(
    z_image: torch.Tensor, z_flow: torch.Tensor, z_groups: torch.Tensor, group_of_clip: torch.Tensor
) -> dict[str, float | int]:
    """Top-1 retrieval from (C, J) z_image against (G, J) z_groups (clip c's answer:
    group_of_clip[c] in [0, G)) and against (C, J) z_flow (answer: c). Unit vectors expected.
    Returns transition_to_language_top1, chance_language, transition_to_flow_top1, chance_flow,
    clips, language_groups."""
    c, g = z_image.shape[0], z_groups.shape[0]
    lang = (z_image @ z_groups.T).argmax(dim=1)  # (C,)
    flow = (z_image @ z_flow.T).argmax(dim=1)  # (C,)
    return {
        "transition_to_language_top1": float((lang == group_of_clip).double().mean()),
        "chance_language": 1.0 / g,
        "transition_to_flow_top1": float((flow == torch.arange(c, device=flow.device)).double().mean()),
        "chance_flow": 1.0 / c,
        "clips": int(c),
        "language_groups": int(g),
    }


@torch.no_grad()
def heldout_retrieval(
    model, images: torch.Tensor, flow: torch.Tensor, flow_valid: torch.Tensor, language_ids: np.ndarray,
    group_text_embeddings: dict[int, torch.Tensor], chunk: int = 64,
) -> dict[str, float | int]:
    """Retrieval top-1 of a `DynaFlipModel` on held-out clips (module docstring).

    images: (C, 2, 3, H, W) normalised o_t, o_t+k; flow: (C, T, N, 3) metres; flow_valid: (C, N)
    bool; language_ids: (C,) language group of each clip; group_text_embeddings: group id ->
    (n_paraphrases, text_dim) frozen sentence embeddings, for every group in language_ids.
    """
    was_training = model.training
    model.eval()
    try:
        z_i, z_f = [], []
        text_dim = model.cfg.model.text_dim
        for s in range(0, images.shape[0], chunk):
            x = images[s : s + chunk]
            out = model(x, x.new_zeros(x.shape[0], text_dim), flow[s : s + chunk], flow_valid[s : s + chunk])
            z_i.append(out.z_image)
            z_f.append(out.z_flow)
        groups = sorted(set(int(g) for g in language_ids))
        z_groups = torch.stack([
            F.normalize(F.normalize(model.language_head(group_text_embeddings[g]), dim=-1).mean(0), dim=0) for g in groups
        ])  # (G, J)
        index = {g: i for i, g in enumerate(groups)}
        answer = torch.tensor([index[int(g)] for g in language_ids], device=z_groups.device)
        return retrieval_top1(torch.cat(z_i), torch.cat(z_f), z_groups, answer)
    finally:
        model.train(was_training)
