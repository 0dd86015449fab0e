"""Real-time chunking: the next action chunk continues the actions already committed to the arm.

While a chunk is being sampled the arm keeps executing the previous one, so the first actions of
the new chunk (those due before it can arrive, the inference delay d) are already decided, and
the rest of the previous chunk is what the arm would do next. Sampled independently, the new
chunk can disagree with both: the switch then jerks or hesitates. Real-time chunking (Black,
Galliker and Levine, "Real-Time Execution of Action Chunking Flow Policies", 2025,
arXiv:2506.07339; LeRobot's `rtc` processor for its flow-matching policies) samples the new chunk
*conditioned* on the committed actions: it is inpainting along the time axis.

Our policy is a DDIM diffusion policy, so the conditioning here is inpainting by replacement
(RePaint, Lugmayr et al. 2022; Diffuser, Janner et al. 2022) with RTC's soft mask: after every
denoising step the committed part of the sample is blended with the committed actions noised to
the step's level, with weights (RTC eq. 5)

    w_i = 1                                   for the d actions due before the chunk arrives,
    w_i = c_i (e^c_i - 1) / (e - 1),  c_i = (n - i) / (n - d + 1)   for the rest of the overlap,
    w_i = 0                                   beyond the previous chunk (n = overlap length),

and the last step sets the frozen actions exactly. It is not RTC's guidance (a vector-Jacobian
product through the denoiser per step); replacement needs no gradients and no extra network
evaluations, so it costs nothing on the CPU.

Times: horizon index h of a chunk sampled from the observation stamped s is due at
s + (h - n_obs_steps + 2) / fps (`DiffusionPolicyRunner`: the returned actions start one period
after the frame); the committed actions are interpolated at those times.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from dynaflip_ros.policies.base import ActionChunk, CommittedActions, PolicyObservation


def horizon_times(stamp_s: float, horizon: int, n_obs_steps: int, dt_s: float) -> np.ndarray:
    """(horizon,) due times of the denoised horizon of a chunk sampled at stamp_s (module doc)."""
    return stamp_s + (np.arange(horizon) - n_obs_steps + 2) * dt_s


def inpaint_weights(times_s: np.ndarray, committed: CommittedActions) -> np.ndarray:
    """(H,) weights of the committed actions at the horizon times `times_s` (H,): 1 for times in
    [first committed, frozen_until_s], RTC's decaying soft mask up to the last committed time,
    0 outside (module docstring)."""
    t = np.asarray(times_s, dtype=float)
    ct = np.asarray(committed.times_s, dtype=float)
    eps = 1e-6
    covered = (t >= ct[0] - eps) & (t <= ct[-1] + eps)
    frozen = covered & (t <= committed.frozen_until_s + eps)
    w = frozen.astype(float)
    soft = np.flatnonzero(covered & ~frozen)
    if soft.size:
        d, n = int(frozen.sum()), int(covered.sum())
        i = d + np.arange(soft.size)  # position in the overlap
        c = (n - i) / (n - d + 1)
        w[soft] = c * np.expm1(c) / (math.e - 1)
    return w


def committed_targets(times_s: np.ndarray, committed: CommittedActions) -> np.ndarray:
    """(H, 7) the committed actions linearly interpolated at `times_s` (held at the ends)."""
    ct = np.asarray(committed.times_s, dtype=float)
    a = np.asarray(committed.actions, dtype=float)
    return np.stack([np.interp(times_s, ct, a[:, j]) for j in range(a.shape[1])], axis=1)


def action_affine(runner):
    """(scale (A,), offset (A,)) torch tensors of a `DiffusionPolicyRunner`'s action
    unnormalisation (affine in LeRobot: min-max or mean-std), read by passing 0 and 1 through its
    postprocessor (two tiny calls per guided chunk, nothing cached)."""
    import torch

    a_dim = runner.policy.config.action_feature.shape[0]
    with torch.inference_mode():
        zero = runner.postprocessor(torch.zeros(1, 1, a_dim))[0, 0].float()
        one = runner.postprocessor(torch.ones(1, 1, a_dim))[0, 0].float()
    scale = one - zero
    return torch.where(scale.abs() > 1e-12, scale, torch.ones_like(scale)), zero


def inpaint_guide(runner, obs: PolicyObservation):
    """(known (1, horizon, A) normalised model-frame actions, weights (horizon,)) torch tensors of
    the committed actions in `obs.committed` for `runner` (a `DiffusionPolicyRunner`), or None when
    none falls in its horizon."""
    import torch

    from dynaflip_ros.policies.action_frame import to_model_frame

    cfg = runner.policy.config
    times = horizon_times(float(obs.stamp_s), cfg.horizon, cfg.n_obs_steps, runner.dt_s)  # (horizon,)
    weights = inpaint_weights(times, obs.committed)
    if not np.any(weights > 0):
        return None
    absolute = committed_targets(times, obs.committed).astype(np.float32)  # (horizon, 7)
    mc = runner.model_config
    model = to_model_frame(absolute, np.asarray(obs.state, np.float32), mc.action_frame, mc.tcp_offset_m)
    scale, offset = action_affine(runner)  # the postprocessor: action = scale * normalised + offset
    known = (torch.from_numpy(np.asarray(model, np.float32)) - offset) / scale
    return known[None], torch.from_numpy(weights.astype(np.float32))


def denoise_with_prefix(diffusion, window: dict, known, weights, generator=None):
    """LeRobot `DiffusionModel.conditional_sample` with inpainting: `known` (B, horizon, A)
    normalised model-frame actions, `weights` (horizon,) in [0, 1] (torch tensors). Returns the
    denoised (B, horizon, A) sample (module docstring for the blend)."""
    import torch

    global_cond = diffusion._prepare_global_conditioning(window)  # (B, cond)
    batch = global_cond.shape[0]
    sample = torch.randn((batch, *known.shape[1:]), dtype=known.dtype, device=known.device, generator=generator)
    known = known.expand(batch, *known.shape[1:])
    w = weights.to(known.dtype).view(1, -1, 1)
    scheduler = diffusion.noise_scheduler
    scheduler.set_timesteps(diffusion.num_inference_steps)
    steps = list(scheduler.timesteps)
    for k, t in enumerate(steps):
        out = diffusion.unet(sample, torch.full((batch,), t, dtype=torch.long, device=sample.device),
                             global_cond=global_cond)
        sample = scheduler.step(out, t, sample, generator=generator).prev_sample
        if k + 1 < len(steps):  # the committed actions at the next step's noise level
            noise = torch.randn(known.shape, dtype=known.dtype, device=known.device, generator=generator)
            target = scheduler.add_noise(known, noise, steps[k + 1].view(1))
        else:
            target = known
        sample = w * target + (1.0 - w) * sample
    return sample


def guided_sampler(runner, obs: PolicyObservation):
    """For a `DiffusionPolicyRunner` and an observation with committed actions: a replacement of
    `DiffusionModel.generate_actions` (window -> (B, n_action_steps, A) normalised actions from
    the current step) that inpaints them (`denoise_with_prefix`); None when `obs.committed` is
    None or none of it falls in the horizon (then sample freely)."""
    guide = inpaint_guide(runner, obs) if obs.committed is not None else None
    if guide is None:
        return None
    diffusion = runner.policy.diffusion
    cfg = diffusion.config
    start = cfg.n_obs_steps - 1  # as DiffusionModel.generate_actions
    return lambda window: denoise_with_prefix(diffusion, window, *guide)[:, start:start + cfg.n_action_steps]


class RealTimeChunkingPolicy:
    """A policy whose every chunk continues the previous one (module docstring).

    Each `predict_action_chunk(obs)` passes the wrapped policy `obs` with `committed` = the
    previous chunk of this episode, frozen up to obs.stamp_s + `expected_delay_s` + one action
    period (the observation-to-driver latency, rounded up to whole actions as RTC's d: the
    segment being executed when the chunk arrives is committed too; `policies.replan.step` sets
    the delay from the replan schedule's estimate before every call; 0 in lock-step simulation,
    where inference takes no time).
    `reset`, `observe` and unknown attributes pass through.
    """

    def __init__(self, policy) -> None:
        self.policy = policy
        self.expected_delay_s = 0.0
        self._last: ActionChunk | None = None

    def reset(self, seed: int | None = None) -> None:
        self.policy.reset(seed=seed)
        self._last = None

    def observe(self, obs: PolicyObservation) -> None:
        self.policy.observe(obs)

    def predict_action_chunk(self, obs: PolicyObservation) -> ActionChunk:
        last = self._last
        if last is not None and last.times_s()[-1] > obs.stamp_s:
            # d = ceil(delay / dt) actions (RTC): the segment the arm is on when the chunk arrives is committed too
            frozen_until_s = obs.stamp_s + max(0.0, self.expected_delay_s) + last.dt_s
            committed = CommittedActions(last.times_s(), last.actions, frozen_until_s)
            obs = dataclasses.replace(obs, committed=committed)
        chunk = self.policy.predict_action_chunk(obs)
        self._last = chunk
        return chunk

    def __getattr__(self, name: str):
        return getattr(self.policy, name)
