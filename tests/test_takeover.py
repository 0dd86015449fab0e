"""Expert takeover (`dynaflip record --sim --policy --encoder`): a learner drives, the scripted
expert takes over from the state it reached; the marks, the draws and the driver adapter."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from dynaflip_ros.configs.record import RecordConfig
from dynaflip_ros.data import dataset_io, schema
from dynaflip_ros.policies.base import ActionChunk
from dynaflip_ros.sim.record_demos import record_sim_episodes, takeover_time

HW = (48, 64)


class HoldDriver:
    """Holds the arm where it is (gripper open); closes from step `close_at` on (None: never)."""

    def __init__(self, close_at=None) -> None:
        self.close_at, self.steps, self.resets = close_at, 0, []

    def reset(self, seed=None, instruction=None) -> None:
        self.steps = 0
        self.resets.append((seed, instruction))

    def act(self, frame, state, t_s) -> np.ndarray:
        closing = self.close_at is not None and self.steps >= self.close_at
        self.steps += 1
        return np.concatenate([state.q, [1.0 if closing else 0.0]])


class OffsetExpertDriver:
    """A learner that misses: the scripted expert aiming 3 cm beside the object (closes there)."""

    def __init__(self, env, config, offset_m=(0.0, 0.03)) -> None:
        from dynaflip_ros.sim.expert import ScriptedExpert

        self.env, self.expert, self.offset = env, ScriptedExpert(config), np.asarray(offset_m)

    def reset(self, seed=None, instruction=None) -> None:
        self.expert.reset(self.env, grasp_offset_m=self.offset)

    def act(self, frame, state, t_s) -> np.ndarray:
        return self.expert.act(state, t_s)[0]


@pytest.fixture(scope="module")
def env():
    from dynaflip_ros.configs.sim import SimConfig
    from dynaflip_ros.sim.pick_into_sink import PickIntoSinkEnv

    e = PickIntoSinkEnv(SimConfig(image_hw=(16, 16)))
    yield e
    e.close()


def test_the_learner_drives_until_the_takeover_time_then_the_expert_succeeds(env):
    from dynaflip_ros.sim.expert import ScriptedExpert
    from dynaflip_ros.sim.rollout import SimRunner

    runner = SimRunner(env)
    info = runner.reset(seed=1)
    driver, phases = HoldDriver(), []
    result = runner.run_expert_episode(ScriptedExpert(env.config), driver=driver, takeover_s=0.5,
                                       on_frame=lambda f, s, a, phase, *_: phases.append(phase))
    assert driver.resets == [(1, info.instruction)]
    assert result.success and result.demonstration_start_step == 5 and driver.steps == 5
    assert len(phases) == result.steps and phases[:5] == [schema.PHASES.index("approach")] * 5
    # a learner that closes the gripper hands over at that step, before its close is executed
    runner.reset(seed=1)
    early = runner.run_expert_episode(ScriptedExpert(env.config), driver=HoldDriver(close_at=3), takeover_s=5.0)
    assert early.success and early.demonstration_start_step == 3
    with pytest.raises(ValueError, match="takeover_s"):
        runner.reset(seed=1)
        runner.run_expert_episode(ScriptedExpert(env.config), driver=HoldDriver(), takeover_s=None)


def test_the_expert_corrects_a_missed_grasp_sideways_from_low(env):
    from dynaflip_ros.sim.expert import ScriptedExpert
    from dynaflip_ros.sim.rollout import SimRunner

    runner = SimRunner(env)
    runner.reset(seed=2)
    expert, frames = ScriptedExpert(env.config), []
    result = runner.run_expert_episode(expert, driver=OffsetExpertDriver(env, env.config), takeover_s=10.0,
                                       on_frame=lambda f, s, a, phase, *_: frames.append(s))
    k = result.demonstration_start_step
    assert result.success and k > 0  # the learner descended 3 cm off and started to close: taken over there
    z_takeover = expert.ik.fk(frames[k].q)[0][2]
    times, q, gripper, phase = expert.plan
    approach_z = [expert.ik.fk(qi)[0][2] for qi, ph in zip(q, phase) if ph == schema.PHASES.index("approach")]
    assert z_takeover < 0.12 and max(approach_z) <= z_takeover + 1e-3  # sideways, no climb to the approach height
    assert gripper[phase == schema.PHASES.index("approach")].max() == 0.0  # the fingers stay open until the grasp


def test_takeover_time_is_seeded_within_the_window():
    draws = [takeover_time(s, (1.0, 6.0)) for s in range(200)]
    assert all(1.0 <= d <= 6.0 for d in draws) and np.std(draws) > 1.0
    assert takeover_time(7, (1.0, 6.0)) == takeover_time(7, (1.0, 6.0)) != takeover_time(8, (1.0, 6.0))
    with pytest.raises(ValueError, match="takeover_window_s"):
        RecordConfig(takeover_window_s=(3.0, 1.0))


def test_recording_marks_the_learner_frames_as_context(tmp_path):
    out = tmp_path / "takeover"
    summary = record_sim_episodes(2, out, seed=1, image_hw=HW, progress=False, driver=HoldDriver(),
                                  driver_info={"encoder": "e" * 64, "policy": "p" * 64}, takeover_window_s=(0.3, 0.6))
    assert summary["episodes_kept"] == 2
    records = dataset_io.read_episode_records(out)
    starts = [r["extra"]["demonstration_start_frame"] for r in records]
    assert all(3 <= s <= 6 for s in starts) and summary["takeover_frames"] == sum(starts)
    for r in records:
        assert r["extra"]["takeover_s"] == pytest.approx(takeover_time(r["seed"], (0.3, 0.6)))
        assert r["extra"]["takeover_driver"] == {"encoder": "e" * 64, "policy": "p" * 64}
    with pytest.raises(ValueError, match="takeover_window_s"):
        record_sim_episodes(1, tmp_path / "bad", image_hw=HW, progress=False, driver=HoldDriver(),
                            takeover_window_s=(2.0, 1.0))


def test_policy_driver_follows_chunks_one_action_per_step():
    from dynaflip_ros.eval.closed_loop import PolicyDriver

    class Encoder:
        def embed(self, images):
            return np.zeros((len(images), 4), np.float32)

    class Policy:
        def __init__(self):
            self.predicted, self.observed, self.seeds = 0, 0, []

        def reset(self, seed=None):
            self.seeds.append(seed)

        def observe(self, obs):
            self.observed += 1

        def predict_action_chunk(self, obs):
            assert obs.instruction == "put the red cube in the sink"
            k = self.predicted
            self.predicted += 1
            return ActionChunk(np.full((3, 7), float(k), np.float32) + np.arange(3)[:, None] / 10, obs.stamp_s + 0.1, 0.1)

    policy = Policy()
    driver = PolicyDriver(Encoder(), policy)
    driver.reset(seed=4, instruction="put the red cube in the sink")
    frame = SimpleNamespace(rgb=np.zeros((8, 8, 3), np.uint8))
    state = SimpleNamespace(q=np.zeros(6), gripper=0.0)
    got = [driver.act(frame, state, 0.1 * i)[0] for i in range(5)]
    np.testing.assert_allclose(got, [0.0, 0.1, 0.2, 1.0, 1.1])
    assert policy.predicted == 2 and policy.observed == 3 and policy.seeds == [4]


def test_cli_needs_both_learner_models(tmp_path, capsys):
    from dynaflip_ros.cli import main

    rc = main(["record", "--sim", "--episodes", "1", "--policy", str(tmp_path), "--out", str(tmp_path / "d")])
    assert rc == 2 and "needs both --policy and --encoder" in capsys.readouterr().err
