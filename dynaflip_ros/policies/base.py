"""The policy interface: observation in, timestamped action chunk out (docs/timing.md), and the
errors a policy checkpoint raises."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from dynaflip_ros.errors import UserError


@dataclass(frozen=True)
class CommittedActions:
    """Actions already sent to the arm that the next chunk should continue (real-time chunking,
    `policies.rtc`): actions (P, 7) joint targets (rad) + gripper at times_s (P,) increasing
    (the observations' clock, s). Those due at or before `frozen_until_s` execute before the
    next chunk can arrive (the inference delay) and are reproduced; later ones are followed with
    decaying weight."""

    times_s: np.ndarray
    actions: np.ndarray
    frozen_until_s: float


@dataclass(frozen=True)
class PolicyObservation:
    """embedding: (D,) float32 image embedding of the frame; state: (7,) float32 joint positions
    (rad) + gripper (0 open..1 closed); stamp_s: capture time of the image (s); instruction: the
    episode's instruction ("put the red cube in the sink"), required by a language-conditioned
    policy (a ValueError without it), ignored by an image-only one; it may change mid-episode;
    committed: the actions in flight the chunk must continue (`CommittedActions`, set by
    `policies.rtc.RealTimeChunkingPolicy`), None to sample freely."""

    embedding: np.ndarray
    state: np.ndarray
    stamp_s: float
    instruction: str | None = None
    committed: CommittedActions | None = None


@dataclass(frozen=True)
class ActionChunk:
    """actions: (H, 7) joint targets (rad) + gripper command; action i is due at
    t0_s + i * dt_s (same clock as the observation stamp)."""

    actions: np.ndarray
    t0_s: float
    dt_s: float

    def times_s(self) -> np.ndarray:
        return self.t0_s + self.dt_s * np.arange(len(self.actions))


class EncoderMismatchError(RuntimeError, UserError):
    """The policy was trained on embeddings of a different encoder (sha256 differs)."""


class TextEncoderMismatchError(EncoderMismatchError):
    """A language-conditioned policy was trained with another text encoder (the sha256 of the
    sentence encoder's weights differs from the one the policy recorded)."""


class PolicyDataError(ValueError, UserError):
    """The embedded episodes cannot train this policy (too short for its horizon, other encoder)."""


class PolicyCheckpointError(ValueError, UserError):
    """A policy checkpoint directory is damaged, truncated, mixed, or of an unsupported format."""


@runtime_checkable
class Policy(Protocol):
    encoder_sha256: str

    def reset(self) -> None: ...

    def predict_action_chunk(self, obs: PolicyObservation) -> ActionChunk: ...


WARM_UP_INSTRUCTION = "put the red cube in the sink"  # any sentence: warm-up chunks are discarded


def warm_up(policy) -> float:
    """Two throw-away chunks from zero observations (the first inference calls are several
    times slower: allocations), with `policy.reset()` before and after; returns the seconds it took."""
    t0 = time.perf_counter()
    policy.reset()
    for i in range(2):
        policy.predict_action_chunk(PolicyObservation(
            embedding=np.zeros(policy.embedding_dim, np.float32), state=np.zeros(7, np.float32),
            stamp_s=0.1 * i, instruction=WARM_UP_INSTRUCTION))
    policy.reset()
    return time.perf_counter() - t0
