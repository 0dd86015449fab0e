"""Training samples of the diffusion policy: LeRobot delta-timestamp indexing, normalisation
stats, the episode split, instruction sampling and held-out evaluation (`policies.train`).

Samples follow LeRobot's delta-timestamp semantics exactly (`LeRobotDataset._get_query_indices`
with the `DiffusionConfig.observation_delta_indices` / `action_delta_indices`): for an anchor
frame t of an episode [start, end), observations are read at t + (1-n_obs_steps .. 0) and actions
at t + (1-n_obs_steps .. horizon-n_obs_steps), indices clamped into the episode (copy padding)
and `action_is_pad` marking the clamped ones. Anchors skip the last `drop_n_last_frames` frames
of each episode (LeRobot `EpisodeAwareSampler`).

Instructions (language-conditioned policies, docs/method.md §3): each training sample draws one
of its episode's paraphrases (`EmbeddedEpisodes.paraphrases`) uniformly at every use, so every
epoch sees other wording; the whole observation window gets that one instruction. Validation
uses each episode's first instruction (the recorded task string).
"""
from __future__ import annotations

import math
import numpy as np

from dynaflip_ros.configs.policy import DiffusionModelConfig
from dynaflip_ros.policies.action_frame import from_model_frame, model_state, to_model_frame
from dynaflip_ros.policies.diffusion import (
    ACTION,
    OBS_EMBEDDING,
    OBS_STATE,
    DiffusionPolicyRunner,
    import_lerobot,
    make_lerobot_config,
)
from dynaflip_ros.policies.embeddings import EmbeddedEpisodes, column_stats
from dynaflip_ros.policies.fusion import TARGET_CENTRE, TARGET_VALID
from dynaflip_ros.policies.language import TEXT_STATS_KEY, text_stats
from dynaflip_ros.policies.tcp_frame import batch_fk


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
    episodes: EmbeddedEpisodes, action_targets: np.ndarray | None = None, text_weights: np.ndarray | None = None,
    states: np.ndarray | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """Per-feature min/max/mean/std (LeRobot `compute_stats.get_feature_stats`; the embedding's by
    `policies.embeddings.column_stats`, the same quantities without copying it): the
    `dataset_stats` of the normalisers. State and embedding over all rows; actions over
    `action_targets` (M, 7) when given (model-frame targets of the training samples), else over
    the recorded actions; states over `states` (N, S) when given (the model's observation.state,
    `policies.diffusion.model_state`), else the recorded ones. With `text_weights` (U,) (how
    often each instruction string is drawn), also "observation.instruction"
    (`policies.language.text_stats` of the instruction embeddings)."""
    import_lerobot()
    from lerobot.datasets.compute_stats import get_feature_stats

    actions = episodes.action if action_targets is None else action_targets
    states = episodes.state if states is None else states
    out = {}
    for key, arr in ((OBS_STATE, states), (ACTION, actions)):
        st = get_feature_stats(np.asarray(arr, np.float64), axis=0, keepdims=False)
        out[key] = {k: np.asarray(st[k], np.float32) for k in ("min", "max", "mean", "std")}
    out[OBS_EMBEDDING] = column_stats(episodes.embedding)  # chunked: patch tokens make this gigabytes
    if text_weights is not None:
        if episodes.instruction_embedding is None:
            raise ValueError("the instructions are not embedded (EmbeddedEpisodes.with_instruction_embeddings)")
        out[TEXT_STATS_KEY] = text_stats(episodes.instruction_embedding, text_weights)
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


class Samples:
    """Index tables of one split: anchors (S,), obs rows (S, n_obs), action rows + pads (S, H) and
    the model-frame action targets (S, H, 7); with language conditioning each anchor's range in
    the (episode-sorted) paraphrase table: text_offset (S,), text_count (S,) into text_flat (P,).
    `normalise(runner)` adds normalised tensors."""

    def __init__(self, episodes: EmbeddedEpisodes, model: DiffusionModelConfig):
        obs_deltas, act_deltas = delta_indices(model)
        self.anchors = anchor_rows(episodes, model.drop_n_last_frames)  # (S,)
        self.obs_idx, _ = query_indices(episodes.episode_index, self.anchors, obs_deltas)  # (S, n_obs)
        if episodes.demonstrated is not None:  # whole observation window past the context-only frames
            keep = episodes.demonstrated[self.obs_idx].all(axis=1)
            self.anchors, self.obs_idx = self.anchors[keep], self.obs_idx[keep]
        self.act_idx, self.act_pad = query_indices(episodes.episode_index, self.anchors, act_deltas)  # (S, H)
        self.episodes = episodes
        self.action_frame = model.action_frame
        self.targets = to_model_frame(  # (S, H, 7)
            episodes.action[self.act_idx], episodes.state[self.anchors], model.action_frame, model.tcp_offset_m
        )
        self.model_state = model_state(episodes.state, model)  # (N, model.state_dim)
        self.language = bool(model.language_conditioning)
        self.target_stats: tuple[np.ndarray, np.ndarray] | None = None  # (mean (3,), std (3,)) m, `normalise`
        order = np.argsort(episodes.paraphrase_episode, kind="stable")  # keeps each episode's order
        pair_episode = episodes.paraphrase_episode[order]  # (P,) sorted
        self.text_flat = episodes.paraphrase_text[order]  # (P,) string index
        anchor_episode = episodes.episode_index[self.anchors]  # (S,)
        self.text_offset = np.searchsorted(pair_episode, anchor_episode, side="left")  # (S,)
        self.text_count = np.searchsorted(pair_episode, anchor_episode, side="right") - self.text_offset  # (S,)

    def text_weights(self) -> np.ndarray:
        """(U,) expected number of draws of each instruction string over one pass of the anchors."""
        weights = np.zeros(len(self.episodes.instruction_texts))
        for k in np.unique(self.text_count):
            rows = np.flatnonzero(self.text_count == k)
            for j in range(k):
                np.add.at(weights, self.text_flat[self.text_offset[rows] + j], 1.0 / k)
        return weights

    def draw_texts(self, sel: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(B,) string index per sample, one of its episode's paraphrases uniformly."""
        return self.text_flat[self.text_offset[sel] + rng.integers(0, self.text_count[sel])]

    def first_texts(self, sel: np.ndarray) -> np.ndarray:
        """(B,) string index of each sample's first instruction (the recorded task string)."""
        return self.text_flat[self.text_offset[sel]]

    def __len__(self) -> int:
        return len(self.anchors)

    def normalise(self, runner: DiffusionPolicyRunner,
                  target_stats: tuple[np.ndarray, np.ndarray] | None = None) -> Samples:
        """Normalise state and action targets with `runner`'s stats; the environment state
        ([embedding, instruction]) is normalised per batch by the same preprocessor (`batch`), so
        the embedding, gigabytes with patch tokens, is never copied. target_stats (mean (3,),
        std (3,), m; `target_centre_stats` of the training split): batches also carry the
        instructed object's standardised centre (`policies.fusion.TARGET_CENTRE`); needs
        episodes.target_centre (ValueError otherwise)."""
        import torch

        if target_stats is not None:
            if self.episodes.target_centre is None:
                raise ValueError("target_stats given but the episodes carry no target_centre")
            self.target_stats = (np.asarray(target_stats[0], np.float32), np.asarray(target_stats[1], np.float32))

        if self.language and self.episodes.instruction_embedding is None:
            raise ValueError("the instructions are not embedded (EmbeddedEpisodes.with_instruction_embeddings)")
        norm = normalise_arrays(runner, {OBS_STATE: self.model_state, ACTION: self.targets})
        self.state = norm[OBS_STATE]  # (N, state_dim) normalised
        self.action = norm[ACTION]  # (S, H, 7)
        self.embedding = torch.from_numpy(self.episodes.embedding)  # (N, D) raw, shares memory
        self.text = torch.from_numpy(self.episodes.instruction_embedding) if self.language else None  # (U, T) raw
        self._preprocessor = runner.preprocessor
        return self

    def batch(self, sel: np.ndarray, text_ids: np.ndarray | None = None) -> dict:
        """LeRobot training batch of samples `sel` (B,); text_ids (B,): each sample's instruction
        (language conditioning; None: the first one). Needs `normalise` first."""
        import torch

        o = torch.from_numpy(self.obs_idx[sel])  # (B, n_obs)
        env = self.embedding[o]  # (B, n_obs, D)
        if self.language:
            ids = self.first_texts(sel) if text_ids is None else text_ids
            text = self.text[torch.from_numpy(np.asarray(ids, np.int64))]  # (B, T)
            env = torch.cat([env, text[:, None, :].expand(-1, env.shape[1], -1)], dim=-1)  # (B, n_obs, D + T)
        with torch.no_grad():
            env = self._preprocessor({OBS_EMBEDDING: env})[OBS_EMBEDDING].float()  # normalised, as at run time
        out = {
            OBS_STATE: self.state[o],  # (B, n_obs, state_dim)
            OBS_EMBEDDING: env,  # (B, n_obs, D [+ T])
            ACTION: self.action[torch.from_numpy(sel)],  # (B, H, 7)
            "action_is_pad": torch.from_numpy(self.act_pad[sel]),  # (B, H)
        }
        if self.target_stats is not None:
            centre = self.episodes.target_centre[self.obs_idx[sel]]  # (B, n_obs, 3) m, NaN unknown
            valid = ~np.isnan(centre).any(-1)
            standard = np.nan_to_num((centre - self.target_stats[0]) / self.target_stats[1])
            out[TARGET_CENTRE] = torch.from_numpy(standard.astype(np.float32))
            out[TARGET_VALID] = torch.from_numpy(valid)
        return out


def target_centre_stats(episodes: EmbeddedEpisodes) -> tuple[np.ndarray, np.ndarray]:
    """(mean (3,), std (3,)) in metres of the known instructed-object centres of `episodes`
    (std + 1e-6), the standardisation of the token readout's auxiliary target. Raises
    PolicyDataError when the episodes carry none (a recording without point tracks)."""
    from dynaflip_ros.policies.base import PolicyDataError

    centre = episodes.target_centre
    known = None if centre is None else centre[~np.isnan(centre).any(-1)]
    if known is None or len(known) == 0:
        raise PolicyDataError("model.readout_target_weight > 0 needs the instructed object's centre in the "
                              "training frames, read from the demos' point tracks (recordings of dynaflip record "
                              "--sim have them; teleop recordings do not): set readout_target_weight: 0")
    return known.mean(0, dtype=np.float64).astype(np.float32), (known.std(0, dtype=np.float64) + 1e-6).astype(np.float32)


def evaluate(runner: DiffusionPolicyRunner, samples: Samples, max_samples: int, seed: int) -> dict[str, float]:
    """Held-out metrics: diffusion `loss` (fixed noise), and for sampled chunks (n_action_steps from
    the current step, non-padded targets only) joint RMSE (rad), gripper MAE and the RMSE of the
    TCP position (m; forward kinematics with model.tcp_offset_m, whatever the action frame),
    with the same errors for the baseline that holds the current state. Each sample gets its episode's first
    instruction. Leaves the global RNG untouched."""
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
        target_error = _target_error_m(policy.diffusion, batch, samples.target_stats)
    policy.train(was_training)
    current = samples.episodes.state[samples.anchors[sel]]  # (B, 7)
    pred = from_model_frame(pred, current, model.action_frame, model.tcp_offset_m)  # (B, n_act, 7) absolute
    k0, k1 = model.n_obs_steps - 1, model.n_obs_steps - 1 + model.n_action_steps
    target = samples.episodes.action[samples.act_idx[sel, k0:k1]]  # (B, n_act, 7)
    valid = ~samples.act_pad[sel, k0:k1]  # (B, n_act)
    hold = np.broadcast_to(current[:, None, :], target.shape)  # (B, n_act, 7)

    p_target, _ = batch_fk(target[..., :6], model.tcp_offset_m)  # (B, n_act, 3)

    def errors(x: np.ndarray) -> tuple[float, float, float]:
        d = (x - target)[valid]  # (M, 7)
        tcp = np.linalg.norm(batch_fk(x[..., :6], model.tcp_offset_m)[0] - p_target, axis=-1)[valid]  # (M,)
        return float(np.sqrt(np.mean(d[:, :6] ** 2))), float(np.mean(np.abs(d[:, 6]))), float(np.sqrt(np.mean(tcp**2)))

    joint, grip, tcp = errors(pred)
    hold_joint, hold_grip, hold_tcp = errors(hold)
    return {
        "val_loss": float(loss),
        "val_joint_rmse_rad": joint,
        "val_gripper_mae": grip,
        "val_tcp_rmse_m": tcp,
        "hold_joint_rmse_rad": hold_joint,
        "hold_gripper_mae": hold_grip,
        "hold_tcp_rmse_m": hold_tcp,
        "val_samples": len(sel),
        **({} if target_error is None else {"val_target_median_error_m": target_error}),
    }


def _target_error_m(model, batch: dict, target_stats) -> float | None:
    """Median 3-D error (m) of the token readout's instructed-object centre over the batch's
    known centres (every observation step), or None without a target head or targets."""
    fusion = getattr(model, "fusion", None)
    if target_stats is None or TARGET_CENTRE not in batch or getattr(fusion, "target_head", None) is None:
        return None
    _, points, _ = fusion.readout(batch[OBS_EMBEDDING])
    err = (fusion.predict_target(points, batch[OBS_STATE]) - batch[TARGET_CENTRE]).numpy() * target_stats[1]  # (B, S, 3) m
    known = batch[TARGET_VALID].numpy()
    return float(np.median(np.linalg.norm(err[known], axis=-1))) if known.any() else None


def normalise_arrays(runner: DiffusionPolicyRunner, arrays: dict[str, np.ndarray]) -> dict:
    """Normalise training arrays with `runner`'s preprocessor: "observation.state" (...,
    state_dim) and "action" (..., 7), each on its own leading shape. Returns float32 tensors."""
    import torch

    raw = {k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in arrays.items()}
    if set(raw) - {OBS_STATE, ACTION}:
        raise ValueError(f"normalise_arrays takes {OBS_STATE!r} and {ACTION!r}, got {sorted(raw)}")
    with torch.no_grad():
        norm = runner.preprocessor(raw)
    return {k: norm[k].float() for k in raw}


def environment_stats(runner: DiffusionPolicyRunner) -> dict[str, np.ndarray]:
    """The environment_state normalisation stats of `runner`: {"mean", "std", "min", "max"}."""
    for step in runner.preprocessor.steps:
        stats = getattr(step, "stats", None)
        if stats and OBS_EMBEDDING in stats:
            return {k: np.asarray(v, np.float32) for k, v in stats[OBS_EMBEDDING].items()}
    raise RuntimeError("the preprocessor has no environment_state stats")
