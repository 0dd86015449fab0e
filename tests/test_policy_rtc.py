"""policies/rtc.py: real-time chunking. The soft-mask weights, the committed actions reproduced by
an untrained DiffusionPolicyRunner (frozen ones exactly, in every action frame, through the
ensemble), the wrapper passing the previous chunk and the schedule's delay, and the config /
flag plumbing."""
from __future__ import annotations

import math

import numpy as np
import pytest

from dynaflip_ros.policies.base import ActionChunk, CommittedActions, PolicyObservation
from dynaflip_ros.policies.rtc import RealTimeChunkingPolicy, committed_targets, horizon_times, inpaint_weights

DIM = 16
SHA = "d" * 64


def test_weights_frozen_then_decaying_then_zero():
    times = np.arange(16) * 0.1  # horizon times 0.0 .. 1.5 s
    committed = CommittedActions(times_s=np.arange(2, 10) * 0.1, actions=np.zeros((8, 7)), frozen_until_s=0.45)
    w = inpaint_weights(times, committed)
    assert np.all(w[:2] == 0)  # before the committed actions
    assert np.all(w[2:5] == 1)  # 0.2, 0.3, 0.4 s: due before the chunk arrives
    soft = w[5:10]
    assert np.all((soft > 0) & (soft < 1)) and np.all(np.diff(soft) < 0)  # RTC's decaying mask
    d, n = 3, 8  # frozen, overlap
    c = (n - d) / (n - d + 1)
    assert soft[0] == pytest.approx(c * (math.exp(c) - 1) / (math.e - 1))
    assert np.all(w[10:] == 0)  # beyond the previous chunk


def test_targets_interpolate_and_horizon_times_match_the_runner():
    committed = CommittedActions(times_s=np.array([0.0, 1.0]), actions=np.array([[0.0] * 7, [1.0] * 7]),
                                 frozen_until_s=0.0)
    np.testing.assert_allclose(committed_targets(np.array([0.25, 0.5, 2.0]), committed)[:, 0], [0.25, 0.5, 1.0])
    # n_obs_steps 2: index 1 is the current step, whose returned action is due one period later.
    np.testing.assert_allclose(horizon_times(10.0, 4, 2, 0.1), [10.0, 10.1, 10.2, 10.3])


class _Recorder:
    """A policy that records the observations it gets and returns 8-action chunks."""

    dt_s = 0.1

    def __init__(self) -> None:
        self.seen: list[PolicyObservation] = []

    def reset(self, seed=None) -> None:
        self.seen.clear()

    def observe(self, obs) -> None:
        pass

    def predict_action_chunk(self, obs):
        self.seen.append(obs)
        return ActionChunk(actions=np.full((8, 7), obs.stamp_s, np.float32), t0_s=obs.stamp_s + 0.1, dt_s=0.1)


def test_wrapper_passes_the_previous_chunk_frozen_for_the_delay():
    from dynaflip_ros.policies.replan import ReplanSchedule, step

    inner = _Recorder()
    policy = RealTimeChunkingPolicy(inner)
    schedule = ReplanSchedule(0.1, n_action_steps=4)
    obs = [PolicyObservation(np.zeros(DIM, np.float32), np.zeros(7, np.float32), 0.1 * i) for i in range(7)]
    chunk, _ = step(policy, schedule, obs[0])
    assert inner.seen[-1].committed is None  # nothing in flight yet
    schedule.chunk_sent(chunk, 0.25)
    for o in obs[1:5]:
        assert step(policy, schedule, o)[0] is None  # not due (4 actions per chunk): history only
    assert step(policy, schedule, obs[5])[0] is not None
    c = inner.seen[-1].committed
    np.testing.assert_allclose(c.times_s, chunk.times_s())
    assert c.frozen_until_s == pytest.approx(0.5 + 0.25 + 0.1)  # the schedule's expected latency, rounded up
    policy.reset()
    step(policy, ReplanSchedule(0.1), obs[6])
    assert inner.seen[-1].committed is None  # a new episode starts free


@pytest.fixture(scope="module")
def runners():
    pytest.importorskip("torch")
    pytest.importorskip("lerobot")
    import torch

    from dynaflip_ros.configs.policy import DiffusionModelConfig
    from dynaflip_ros.policies.diffusion import DiffusionPolicyRunner

    def stats(n, lo=-2.0, hi=2.0):
        return {"mean": np.zeros(n), "std": np.ones(n), "min": np.full(n, lo), "max": np.full(n, hi)}

    out = {}
    for frame in ("absolute", "relative", "tcp_relative"):
        torch.manual_seed(0)
        cfg = DiffusionModelConfig(language_conditioning=False, action_frame=frame)
        state_dim = cfg.state_dim
        s = {"observation.state": stats(state_dim), "observation.environment_state": stats(DIM),
             "action": stats(7, -3.0, 5.0)}  # asymmetric: the normalisation's offset matters
        out[frame] = DiffusionPolicyRunner.create(cfg, DIM, s, 10.0, {"weights_sha256": SHA}, seed=0)
    return out


def _obs(stamp_s: float, committed=None) -> PolicyObservation:
    rng = np.random.default_rng(7)
    state = np.array([0.1, -1.2, 1.3, -1.6, -1.5, 0.2, 0.0], np.float32)
    return PolicyObservation(rng.normal(size=DIM).astype(np.float32), state, stamp_s, committed=committed)


@pytest.mark.parametrize("frame", ["absolute", "relative"])
def test_runner_reproduces_frozen_actions_and_follows_free(runners, frame):
    runner = runners[frame]
    runner.reset(seed=0)
    free = runner.predict_action_chunk(_obs(1.0))
    # Commit a smooth plan different from the free sample, frozen for its first 3 actions.
    base = np.asarray(_obs(1.0).state)
    plan_t = 1.0 + 0.1 * np.arange(1, 9)
    plan = np.tile(base, (8, 1)) + np.linspace(0.0, 0.3, 8)[:, None]
    plan[:, 6] = 1.0
    committed = CommittedActions(plan_t, plan, frozen_until_s=1.3 + 1e-9)
    runner.reset(seed=0)
    guided = runner.predict_action_chunk(_obs(1.0, committed))
    np.testing.assert_allclose(guided.times_s(), free.times_s())
    np.testing.assert_allclose(guided.actions[:3], plan[:3], atol=1e-4)  # frozen: exactly the committed actions
    assert np.max(np.abs(free.actions[:3] - plan[:3])) > 1e-2  # (the free sample was elsewhere)
    # Softly guided later actions lie between the free sample and the plan, on average closer to the plan.
    err_guided = np.abs(guided.actions[3:] - plan[3:]).mean()
    err_free = np.abs(free.actions[3:] - plan[3:]).mean()
    assert err_guided < err_free


def test_tcp_frame_and_ensemble_reproduce_frozen_actions(runners, tmp_path):
    from dynaflip_ros.policies.checkpoint_ensemble import CheckpointEnsemble

    runner = runners["tcp_relative"]
    runner.reset(seed=0)
    base = np.asarray(_obs(1.0).state)
    plan = np.tile(base, (8, 1)) + np.linspace(0.0, 0.05, 8)[:, None]
    committed = CommittedActions(1.0 + 0.1 * np.arange(1, 9), plan, frozen_until_s=1.2 + 1e-9)
    guided = runner.predict_action_chunk(_obs(1.0, committed))
    np.testing.assert_allclose(guided.actions[:2, :6], plan[:2, :6], atol=2e-3)  # through FK and IK
    ens = CheckpointEnsemble([runners["absolute"], runners["relative"]])
    ens.reset(seed=0)
    out = ens.predict_action_chunk(_obs(1.0, committed))
    np.testing.assert_allclose(out.actions[:2], plan[:2], atol=1e-4)  # every member continues the plan


def test_flags_and_config_refuse_rtc_with_temporal_ensembling():
    from dynaflip_ros.configs.io import ConfigError
    from dynaflip_ros.configs.ros import PolicyNodeConfig

    assert PolicyNodeConfig(real_time_chunking=True).real_time_chunking
    with pytest.raises(ConfigError, match="choose one"):
        PolicyNodeConfig(real_time_chunking=True, temporal_ensemble_coeff=0.01)
