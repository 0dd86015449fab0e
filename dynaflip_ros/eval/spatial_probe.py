"""Spatial readout probe of patch tokens: can a small learned readout say where each object is?

The linear probe (`eval.probe`) asks whether a position is a linear function of the pooled
embedding. A policy that reads an encoder's patch tokens (`configs.encoder.EncoderModelConfig.
output_tokens`, `policies.fusion` "token_readout") pools them with a spatial softmax instead, so
its question is different: is there a per-cell score whose soft-argmax lands on the object? This
probe trains exactly that and nothing larger, per catalogue object, without language:

    logits_o(c) = Linear(Mish(Linear(x_c)))_o          one map per catalogue object, x_c (C,) a token
    keypoint_o  = sum_c softmax_c(logits_o) grid_c      (x, y) in [-1, 1] (encoder.model.keypoint_grid)
    centre      = Linear([keypoint_1, ..., keypoint_O])  (O, 3), metres after de-normalisation

trained with Adam on the squared error of the normalised centres of the objects on the table
(absent objects are masked out), on the training episodes; the score is the median 3-D error on
held-out episodes (the split is by episode, as in `eval.probe`) next to the error of predicting
the training mean. Tokens are standardised per dimension with training statistics. The keypoint
readout is Levine et al. 2016 / Diffusion Policy's spatial softmax; as a probe of frozen features
it plays the role of the "control-relevant" probes of representation papers (R3M, DynaMo).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class SpatialProbeReport:
    """median_error_m / mean_error_m: held-out 3-D error over every (frame, present object);
    baseline_median_m: the same for predicting the training mean; per_object: catalogue index
    -> median error (m) of objects with held-out frames; grid (h, w); steps; n_train / n_test
    frames; test_episodes."""

    median_error_m: float
    mean_error_m: float
    baseline_median_m: float
    per_object: dict[int, float]
    grid: tuple[int, int]
    steps: int
    n_train: int
    n_test: int
    test_episodes: list[int]

    def to_dict(self) -> dict:
        return asdict(self)


def spatial_object_probe(tokens: np.ndarray, centres: np.ndarray, episode_index: np.ndarray, *,
                         heldout_fraction: float = 0.2, seed: int = 0, steps: int = 3000, batch_size: int = 128,
                         hidden_dim: int = 64, lr: float = 1e-3, eval_batch: int = 1024) -> SpatialProbeReport:
    """Train and score the readout of the module docstring.

    tokens: (M, h, w, C) float32 patch tokens of M frames; centres: (M, O, 3) object centres
    (metres, any fixed frame; NaN where the object is absent, `eval.probe.object_centres`);
    episode_index: (M,). Deterministic for a seed (torch and numpy generators seeded here).
    Raises ValueError on mismatched shapes, fewer than two episodes, heldout_fraction outside
    (0, 1), steps < 1, or no present object on either side of the split.
    """
    import torch

    from dynaflip_ros.encoder.model import keypoint_grid
    from dynaflip_ros.eval.probe import split_episodes
    from dynaflip_ros.policies.embeddings import column_stats

    tokens = np.asarray(tokens)
    centres = np.asarray(centres, np.float64)
    m = len(tokens)
    if tokens.ndim != 4 or centres.ndim != 3 or centres.shape[-1] != 3 or len(centres) != m or len(episode_index) != m:
        raise ValueError(f"need tokens (M, h, w, C), centres (M, O, 3) and episode_index (M,), got "
                         f"{tokens.shape}, {centres.shape}, {np.shape(episode_index)}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    test_ids, te = split_episodes(np.asarray(episode_index), heldout_fraction, seed)  # by episode, as eval.probe
    present = ~np.isnan(centres).any(-1)  # (M, O)
    train_rows = np.flatnonzero(~te & present.any(1))
    test_rows = np.flatnonzero(te & present.any(1))
    if len(train_rows) == 0 or len(test_rows) == 0:
        raise ValueError("no object on the table in the training or the held-out frames")
    _, h, w, c = tokens.shape
    n_obj = centres.shape[1]
    flat = tokens.reshape(m, h * w, c)  # (M, h*w, C), no copy
    moments = column_stats(flat.reshape(m, h * w * c), np.flatnonzero(~te))  # chunked: no copy of the tokens
    mu = moments["mean"].reshape(h * w, c)
    sd = moments["std"].reshape(h * w, c) + 1e-6
    seen = centres[~te][present[~te]]
    c_mean, c_std = seen.mean(0), seen.std(0) + 1e-9  # (3,)
    target = np.nan_to_num((centres - c_mean) / c_std).astype(np.float32)  # (M, O, 3)

    torch.manual_seed(seed)
    maps = torch.nn.Sequential(torch.nn.Linear(c, hidden_dim), torch.nn.Mish(), torch.nn.Linear(hidden_dim, n_obj))
    head = torch.nn.Linear(2 * n_obj, 3 * n_obj)
    grid = keypoint_grid(h, w)  # (h*w, 2)

    def predict(rows: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy((flat[rows] - mu) / sd)  # (B, h*w, C)
        attn = torch.softmax(maps(x).transpose(1, 2), dim=-1)  # (B, O, h*w)
        return head((attn @ grid).flatten(1)).view(-1, n_obj, 3)  # (B, O, 3) normalised

    opt = torch.optim.Adam([*maps.parameters(), *head.parameters()], lr=lr)
    rng = np.random.default_rng(seed)
    for _ in range(int(steps)):
        rows = rng.choice(train_rows, size=min(batch_size, len(train_rows)), replace=False)
        mask = torch.from_numpy(present[rows])  # (B, O)
        err = ((predict(rows) - torch.from_numpy(target[rows])) ** 2).sum(-1)  # (B, O)
        loss = (err * mask).sum() / mask.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = np.concatenate([predict(test_rows[i : i + eval_batch]).numpy() for i in range(0, len(test_rows), eval_batch)])
    pred = pred * c_std + c_mean  # (T, O, 3) metres
    ok = present[test_rows]  # (T, O)
    dist = np.linalg.norm(pred - centres[test_rows], axis=-1)  # (T, O), NaN where absent
    base = np.linalg.norm(c_mean - centres[test_rows], axis=-1)
    per_object = {int(j): float(np.median(dist[ok[:, j], j])) for j in range(n_obj) if ok[:, j].any()}
    return SpatialProbeReport(median_error_m=float(np.median(dist[ok])), mean_error_m=float(dist[ok].mean()),
                              baseline_median_m=float(np.median(base[ok])), per_object=per_object, grid=(h, w),
                              steps=int(steps), n_train=len(train_rows), n_test=len(test_rows),
                              test_episodes=[int(i) for i in test_ids])
