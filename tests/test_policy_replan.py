"""`policies.replan`: the policy node's step (observe, or a new chunk when the schedule says so)
and the joint-state pairing by stamp, shared by the node and the in-process real-time run."""
from __future__ import annotations

import numpy as np

from dynaflip_ros.policies.base import ActionChunk, PolicyObservation
from dynaflip_ros.policies.replan import JointStateBuffer, ReplanSchedule, step


class CountingPolicy:
    def __init__(self) -> None:
        self.observed, self.predicted = 0, 0

    def observe(self, obs) -> None:
        self.observed += 1

    def predict_action_chunk(self, obs) -> ActionChunk:
        self.predicted += 1
        return ActionChunk(np.zeros((8, 7)), obs.stamp_s, 0.1)


def _obs(t: float) -> PolicyObservation:
    return PolicyObservation(embedding=np.zeros(4, np.float32), state=np.zeros(7, np.float32), stamp_s=t)


def test_step_predicts_when_due_and_observes_otherwise():
    policy, schedule = CountingPolicy(), ReplanSchedule(0.1, n_action_steps=0)
    chunk, inference_s = step(policy, schedule, _obs(0.0))
    assert chunk is not None and inference_s >= 0.0 and policy.predicted == 1
    schedule.chunk_sent(chunk, 0.05)
    for k in range(1, 6):  # the 8-action chunk lasts until 0.7 s: observe only
        assert step(policy, schedule, _obs(0.1 * k)) == (None, 0.0)
    assert policy.observed == 5 and policy.predicted == 1
    chunk, _ = step(policy, schedule, _obs(0.6))  # 0.6 + latency 0.05 + 0.1 >= 0.7: replan before it runs dry
    assert chunk is not None and policy.predicted == 2


def test_joint_states_pair_by_stamp_and_go_stale():
    buf = JointStateBuffer(maxlen=3)
    assert buf.nearest(1.0, 1.0, 0.5) is None
    for t in (0.0, 0.1, 0.2, 0.3):  # the first one falls out (maxlen 3)
        buf.add(t, t + 0.01, np.full(7, t))
    assert buf.nearest(0.12, 0.32, 0.5)[0] == 0.1 and buf.nearest(-5.0, 0.32, 0.5)[0] == 0.1
    assert buf.nearest(0.3, 0.9, 0.5) is None  # the newest arrived 0.59 s ago
