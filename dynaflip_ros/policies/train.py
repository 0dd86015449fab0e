"""Behaviour cloning of the diffusion policy on precomputed embeddings (`dynaflip train-policy`).

Training samples follow LeRobot's delta-timestamp semantics exactly (`LeRobotDataset.
_get_query_indices` with the `DiffusionConfig.observation_delta_indices` / `action_delta_indices`):
for an anchor frame t of an episode [start, end), observations are read at t + (1-n_obs_steps .. 0)
and actions at t + (1-n_obs_steps .. horizon-n_obs_steps), indices clamped into the episode (copy
padding) and `action_is_pad` marking the clamped ones. Anchors skip the last `drop_n_last_frames`
frames of each episode (LeRobot `EpisodeAwareSampler`). Optimiser: Adam + cosine schedule with
linear warmup (diffusers `get_scheduler`, as LeRobot's diffusion preset), gradient clipping.
Validation is by held-out episodes (floor(val_fraction * E) of the E episodes, none when that is
0, which is logged once and stated in the train info): the diffusion loss at fixed noise, and the
action error of sampled chunks against the demonstrations next to a "hold the current state"
baseline. Raises `policies.base.PolicyDataError` (a UserError) when the episodes cannot train the
policy (all too short for its horizon, embeddings of another encoder).
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dynaflip_ros.configs.io import to_dict
from dynaflip_ros.configs.policy import DiffusionModelConfig, PolicyConfig
from dynaflip_ros.policies.diffusion import (
    ACTION,
    OBS_EMBEDDING,
    OBS_STATE,
    DiffusionPolicyRunner,
    from_model_frame,
    import_lerobot,
    make_lerobot_config,
    to_model_frame,
)
from dynaflip_ros.policies.base import PolicyDataError
from dynaflip_ros.policies.embeddings import EmbeddedEpisodes, compute_embeddings, default_cache_dir

log_ = logging.getLogger(__name__)
_MAX_LENGTHS_SHOWN = 12  # episode lengths quoted in an error message


def delta_indices(model: DiffusionModelConfig) -> tuple[list[int], list[int]]:
    """(observation deltas, action deltas) in frames, read from LeRobot's DiffusionConfig."""
    cfg = make_lerobot_config(model, embedding_dim=1)
    return list(cfg.observation_delta_indices), list(cfg.action_delta_indices)


def query_indices(
    episode_index: np.ndarray, anchors: np.ndarray, deltas: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Rows to read for each anchor row, LeRobotDataset semantics.

    episode_index: (N,) episode id per row (episodes contiguous); anchors: (S,) row numbers;
    deltas: (T,) frame offsets. Returns idx (S, T) int64 clamped into the anchor's episode and
    is_pad (S, T) bool, True where anchor + delta falls outside the episode.
    """
    episode_index = np.asarray(episode_index)
    anchors = np.asarray(anchors, np.int64)
    change = np.flatnonzero(np.diff(episode_index)) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [len(episode_index)]])
    which = np.searchsorted(starts, anchors, side="right") - 1  # (S,) episode block of each anchor
    ep_start, ep_end = starts[which][:, None], ends[which][:, None]  # (S, 1)
    raw = anchors[:, None] + np.asarray(deltas, np.int64)[None, :]  # (S, T)
    is_pad = (raw < ep_start) | (raw >= ep_end)
    idx = np.clip(raw, ep_start, ep_end - 1)
    return idx.astype(np.int64), is_pad


def anchor_rows(episodes: EmbeddedEpisodes, drop_n_last_frames: int) -> np.ndarray:
    """Training anchors: every row except the last `drop_n_last_frames` of each episode
    (LeRobot `EpisodeAwareSampler(drop_n_last_frames=...)`). Returns (S,) int64."""
    import_lerobot()
    from lerobot.datasets.sampler import EpisodeAwareSampler

    starts, ends = episodes.episode_bounds()
    sampler = EpisodeAwareSampler(starts.tolist(), ends.tolist(), drop_n_last_frames=drop_n_last_frames)
    return np.asarray(sampler.indices, np.int64)


def compute_stats(
    episodes: EmbeddedEpisodes, action_targets: np.ndarray | None = None
) -> dict[str, dict[str, np.ndarray]]:
    """Per-feature min/max/mean/std (LeRobot `compute_stats.get_feature_stats`): the
    `dataset_stats` of the normalisers. State and embedding over all rows; actions over
    `action_targets` (M, 7) when given (model-frame targets of the training samples), else over
    the recorded actions."""
    import_lerobot()
    from lerobot.datasets.compute_stats import get_feature_stats

    actions = episodes.action if action_targets is None else action_targets
    out = {}
    for key, arr in ((OBS_STATE, episodes.state), (OBS_EMBEDDING, episodes.embedding), (ACTION, actions)):
        st = get_feature_stats(np.asarray(arr, np.float64), axis=0, keepdims=False)
        out[key] = {k: np.asarray(st[k], np.float32) for k in ("min", "max", "mean", "std")}
    return out


def num_val_episodes(num_episodes: int, val_fraction: float) -> int:
    """Episodes held out for validation: floor(val_fraction * E), so never more than the share
    asked for and none when that is 0 (e.g. 0.1 of 2 episodes); always < E since val_fraction < 1.
    (The 1e-9 absorbs float error: 0.29 * 100 counts as 29.)"""
    return max(0, min(num_episodes - 1, math.floor(val_fraction * num_episodes + 1e-9)))


def split_episodes(episode_ids: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random split of unique episode ids into (train, val); val gets `num_val_episodes(E,
    val_fraction)` = floor(val_fraction * E) episodes, never frames of a train episode."""
    ids = np.unique(np.asarray(episode_ids))
    n_val = num_val_episodes(len(ids), val_fraction)
    perm = np.random.default_rng(seed).permutation(ids)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


class _Samples:
    """Index tables of one split: anchors (S,), obs rows (S, n_obs), action rows + pads (S, H) and
    the model-frame action targets (S, H, 7); `normalise(runner)` adds normalised tensors."""

    def __init__(self, episodes: EmbeddedEpisodes, model: DiffusionModelConfig):
        obs_deltas, act_deltas = delta_indices(model)
        self.anchors = anchor_rows(episodes, model.drop_n_last_frames)  # (S,)
        self.obs_idx, _ = query_indices(episodes.episode_index, self.anchors, obs_deltas)  # (S, n_obs)
        self.act_idx, self.act_pad = query_indices(episodes.episode_index, self.anchors, act_deltas)  # (S, H)
        self.episodes = episodes
        self.action_frame = model.action_frame
        self.targets = to_model_frame(  # (S, H, 7)
            episodes.action[self.act_idx], episodes.state[self.anchors], model.action_frame
        )

    def __len__(self) -> int:
        return len(self.anchors)

    def normalise(self, runner: DiffusionPolicyRunner) -> _Samples:
        import torch

        with torch.no_grad():
            norm = runner.preprocessor(
                {
                    OBS_STATE: torch.from_numpy(self.episodes.state),  # (N, 7)
                    OBS_EMBEDDING: torch.from_numpy(self.episodes.embedding),  # (N, D)
                    ACTION: torch.from_numpy(self.targets),  # (S, H, 7)
                }
            )
        self.state = norm[OBS_STATE].float()  # (N, 7) normalised
        self.embedding = norm[OBS_EMBEDDING].float()  # (N, D)
        self.action = norm[ACTION].float()  # (S, H, 7)
        return self

    def batch(self, sel: np.ndarray) -> dict:
        import torch

        o = torch.from_numpy(self.obs_idx[sel])  # (B, n_obs)
        return {
            OBS_STATE: self.state[o],  # (B, n_obs, 7)
            OBS_EMBEDDING: self.embedding[o],  # (B, n_obs, D)
            ACTION: self.action[torch.from_numpy(sel)],  # (B, H, 7)
            "action_is_pad": torch.from_numpy(self.act_pad[sel]),  # (B, H)
        }


def evaluate(runner: DiffusionPolicyRunner, samples: _Samples, max_samples: int, seed: int) -> dict[str, float]:
    """Held-out metrics: diffusion `loss` (fixed noise), and for sampled chunks (n_action_steps from
    the current step, non-padded targets only) joint RMSE (rad) and gripper MAE, with the same
    errors for the baseline that holds the current state."""
    import torch

    model = runner.model_config
    sel = np.linspace(0, len(samples) - 1, min(max_samples, len(samples))).round().astype(np.int64)
    batch = samples.batch(sel)
    policy = runner.policy
    was_training = policy.training
    policy.eval()
    with torch.inference_mode(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        loss, _ = policy.forward(batch)
        obs = {OBS_STATE: batch[OBS_STATE], OBS_EMBEDDING: batch[OBS_EMBEDDING]}
        pred = runner.postprocessor(policy.diffusion.generate_actions(obs)).numpy()  # (B, n_act, 7)
    policy.train(was_training)
    current = samples.episodes.state[samples.anchors[sel]]  # (B, 7)
    pred = from_model_frame(pred, current, model.action_frame)  # (B, n_act, 7) absolute
    k0, k1 = model.n_obs_steps - 1, model.n_obs_steps - 1 + model.n_action_steps
    target = samples.episodes.action[samples.act_idx[sel, k0:k1]]  # (B, n_act, 7)
    valid = ~samples.act_pad[sel, k0:k1]  # (B, n_act)
    hold = np.broadcast_to(current[:, None, :], target.shape)  # (B, n_act, 7)

    def errors(x: np.ndarray) -> tuple[float, float]:
        d = (x - target)[valid]  # (M, 7)
        return float(np.sqrt(np.mean(d[:, :6] ** 2))), float(np.mean(np.abs(d[:, 6])))

    joint, grip = errors(pred)
    hold_joint, hold_grip = errors(hold)
    return {
        "val_loss": float(loss),
        "val_joint_rmse_rad": joint,
        "val_gripper_mae": grip,
        "hold_joint_rmse_rad": hold_joint,
        "hold_gripper_mae": hold_grip,
        "val_samples": len(sel),
    }


def _too_short_message(train: EmbeddedEpisodes, n_val: int, model: DiffusionModelConfig) -> str:
    """Why no training sample exists: every training episode is shorter than the model needs."""
    starts, ends = train.episode_bounds()
    lengths = (ends - starts).tolist() if len(train.episode_index) else []
    shown = ", ".join(str(n) for n in lengths[:_MAX_LENGTHS_SHOWN]) + (", ..." if len(lengths) > _MAX_LENGTHS_SHOWN else "")
    need = model.drop_n_last_frames + 1
    return (
        f"no training anchors: the {len(lengths)} training episodes ({n_val} more held out for validation) "
        f"have [{shown}] frames, but the policy needs episodes of at least drop_n_last_frames+1 = {need} "
        f"frames (model.horizon {model.horizon} - model.n_action_steps {model.n_action_steps} - "
        f"model.n_obs_steps {model.n_obs_steps} + 2); record longer episodes, or lower model.horizon / "
        "raise model.n_action_steps in the policy config"
    )


def train_policy(
    episodes: EmbeddedEpisodes,
    config: PolicyConfig,
    encoder_manifest,
    log_path: str | Path | None = None,
    progress: bool = True,
    log_fn: Callable[[dict], None] | None = None,
) -> tuple[DiffusionPolicyRunner, dict[str, Any]]:
    """Train a DiffusionPolicyRunner on `episodes` (embeddings of the encoder in `encoder_manifest`).

    Uses config.train (steps, batch_size, lr, seed, ...) and config.model. Writes one JSON line
    per log / eval event to `log_path` (if given). Returns (runner in eval mode, train_info dict:
    steps, batch size, seed, episode split, final losses, val metrics, train_time_s, s_per_step).
    Raises PolicyDataError (a ValueError) when the encoder sha differs from the episodes' or no
    training episode is long enough for the model's horizon (the message gives the lengths).
    """
    import torch
    from tqdm import tqdm

    tc, mc = config.train, config.model
    manifest_sha = (
        encoder_manifest["weights_sha256"] if isinstance(encoder_manifest, dict) else encoder_manifest.weights_sha256
    )
    if manifest_sha != episodes.encoder_sha256:
        raise PolicyDataError(
            f"embeddings were computed by encoder {episodes.encoder_sha256[:16]}..., not {manifest_sha[:16]}..."
        )
    torch.set_num_threads(tc.num_threads)
    torch.manual_seed(tc.seed)
    rng = np.random.default_rng(tc.seed)

    train_ids, val_ids = split_episodes(episodes.episode_index, tc.val_fraction, tc.seed)
    validation_note = None
    if len(val_ids) == 0:
        validation_note = (
            f"no validation episodes: floor(val_fraction {tc.val_fraction} * {len(train_ids)} episodes) = 0; "
            "record more episodes or raise train.val_fraction for a validation loss"
        )
        log_.warning("%s", validation_note)
    train_set = _Samples(episodes.select_episodes(train_ids), mc)
    if len(train_set) == 0:
        raise PolicyDataError(_too_short_message(train_set.episodes, len(val_ids), mc))
    stats = compute_stats(train_set.episodes, train_set.targets[~train_set.act_pad])
    runner = DiffusionPolicyRunner.create(
        mc, episodes.embedding_dim, stats, episodes.fps, encoder_manifest, seed=tc.seed
    )
    train_set.normalise(runner)
    val_set = _Samples(episodes.select_episodes(val_ids), mc) if len(val_ids) else None
    val_set = val_set.normalise(runner) if val_set is not None and len(val_set) else None

    policy = runner.policy
    policy.train()
    optimizer = torch.optim.Adam(
        policy.get_optim_params(), lr=tc.lr, betas=tc.betas, eps=tc.eps, weight_decay=tc.weight_decay
    )
    from diffusers.optimization import get_scheduler

    scheduler = get_scheduler(
        "cosine", optimizer=optimizer, num_warmup_steps=tc.warmup_steps, num_training_steps=tc.steps
    )
    stack = contextlib.ExitStack()
    log_file = None
    if log_path is not None:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        log_file = stack.enter_context(open(log_path, "w"))

    def log(record: dict) -> None:
        if log_file is not None:
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()
        if log_fn is not None:
            log_fn(record)

    order = rng.permutation(len(train_set))
    cursor = 0
    running, history_loss, evals = 0.0, [], []
    t_start = time.perf_counter()
    bar = tqdm(range(1, tc.steps + 1), desc="train-policy", unit="step", disable=not progress)
    try:
        for step in bar:
            if cursor + tc.batch_size > len(order):  # new epoch
                order, cursor = rng.permutation(len(train_set)), 0
            sel = order[cursor : cursor + tc.batch_size]
            cursor += tc.batch_size
            loss, _ = policy.forward(train_set.batch(sel))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite training loss at step {step}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), tc.grad_clip_norm)
            optimizer.step()
            scheduler.step()
            running += float(loss.detach())
            if step % tc.log_every_steps == 0 or step == tc.steps:
                n = tc.log_every_steps if step % tc.log_every_steps == 0 else step % tc.log_every_steps
                mean_loss = running / n
                running = 0.0
                history_loss.append(mean_loss)
                bar.set_postfix(loss=f"{mean_loss:.4f}")
                log(
                    {
                        "event": "train",
                        "step": step,
                        "loss": mean_loss,
                        "grad_norm": float(grad_norm),
                        "lr": scheduler.get_last_lr()[0],
                        "elapsed_s": time.perf_counter() - t_start,
                    }
                )
            if val_set is not None and (step % tc.eval_every_steps == 0 or step == tc.steps):
                metrics = evaluate(runner, val_set, tc.eval_max_samples, tc.seed)
                evals.append({"step": step, **metrics})
                log({"event": "eval", "step": step, **metrics, "elapsed_s": time.perf_counter() - t_start})
    finally:
        bar.close()
        stack.close()
    train_time_s = time.perf_counter() - t_start
    policy.eval()
    runner.reset()

    info = {
        "steps": tc.steps,
        "batch_size": tc.batch_size,
        "seed": tc.seed,
        "config": to_dict(config),
        "train_episodes": [int(i) for i in train_ids],
        "val_episodes": [int(i) for i in val_ids],
        "train_anchors": len(train_set),
        "num_frames": len(episodes.embedding),
        "embedding_dim": episodes.embedding_dim,
        "dataset_fingerprint": episodes.dataset_fingerprint,
        "final_loss": history_loss[-1] if history_loss else math.nan,
        "final_eval": evals[-1] if evals else None,
        **({"validation_note": validation_note} if validation_note else {}),
        "train_time_s": train_time_s,
        "s_per_step": train_time_s / tc.steps,
        "num_parameters": runner.num_parameters,
        "torch_threads": tc.num_threads,
    }
    runner.train_info = info
    return runner, info


def load_encoder_backend(encoder_dir: str | Path, backend: str, num_threads: int = 2):
    """`inference.factory.load_encoder_backend(encoder_dir, backend)` with `num_threads` CPU threads
    for the onnxruntime / torch backends (EncoderBackend: embed(uint8 (B,H,W,3)) -> (B,D))."""
    from dynaflip_ros.inference.factory import load_encoder_backend as _load

    return _load(
        str(encoder_dir),
        backend=backend,
        onnxruntime_options={"intra_op_num_threads": num_threads},
        torch_options={"num_threads": num_threads},
    )


def train_policy_from_dataset(
    dataset_root: str | Path,
    encoder_dir: str | Path,
    out_dir: str | Path,
    config: PolicyConfig,
    backend: str = "onnxruntime",
    cache_dir: str | Path | None = None,
    progress: bool = True,
    encoder_backend=None,
) -> dict[str, Any]:
    """Embed the dataset with the encoder at `encoder_dir` (cached), train, and save to `out_dir`.

    `encoder_backend` overrides loading from `encoder_dir` (tests). Writes `out_dir`/ (checkpoint,
    see policies.diffusion) and `out_dir/train_log.jsonl`. Returns the train info (also stored in
    policy.json), with `embedding_time_s` and `checkpoint_bytes` added.
    """
    out_dir = Path(out_dir)
    enc = encoder_backend
    if enc is None:
        enc = load_encoder_backend(encoder_dir, backend, config.train.num_threads)
    t0 = time.perf_counter()
    episodes = compute_embeddings(
        dataset_root,
        enc,
        batch_size=config.train.embed_batch_size,
        cache_dir=default_cache_dir() if cache_dir is None else cache_dir,
        progress=progress,
    )
    embedding_time_s = time.perf_counter() - t0
    if episodes.embedding_dim != enc.manifest.embedding_dim:
        raise PolicyDataError(f"embedding dim {episodes.embedding_dim} != manifest {enc.manifest.embedding_dim}")
    runner, info = train_policy(
        episodes, config, enc.manifest, log_path=out_dir / "train_log.jsonl", progress=progress
    )
    info["embedding_time_s"] = embedding_time_s
    info["dataset_root"] = str(Path(dataset_root).resolve())
    info["encoder_dir"] = str(Path(encoder_dir).resolve())
    info["encoder_backend"] = type(enc).__name__
    runner.train_info = info
    runner.save(out_dir)
    info["checkpoint_bytes"] = int(sum(p.stat().st_size for p in out_dir.iterdir() if p.is_file()))
    return info


__all__ = [
    "anchor_rows",
    "compute_stats",
    "delta_indices",
    "evaluate",
    "query_indices",
    "split_episodes",
    "train_policy",
    "train_policy_from_dataset",
]
