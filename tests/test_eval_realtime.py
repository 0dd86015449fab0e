"""In-process real-time evaluation (dynaflip_ros/eval/realtime.py) on a real MuJoCo cell with a
fake encoder and fake policies: physics and the servo loop follow the wall clock in their own
thread while the camera -> encoder -> policy loop runs in the caller's, so inference takes
simulated time here (unlike lock-step). Outcomes are decided by an oracle that teleports the
named object (as in tests/test_eval_closed_loop.py); no assertion depends on how fast this
machine is, only on a policy that sleeps far longer than a camera period."""
from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("mujoco")

from dynaflip_ros import resources  # noqa: E402
from dynaflip_ros.configs.params_file import read_params_file  # noqa: E402
from dynaflip_ros.configs.sim import SimConfig  # noqa: E402
from dynaflip_ros.episodes.protocol import Outcome  # noqa: E402
from dynaflip_ros.eval.realtime import RealtimeCell, evaluate_realtime, realtime_settings, run_realtime_episode  # noqa: E402
from dynaflip_ros.policies.base import ActionChunk  # noqa: E402
from dynaflip_ros.task.instructions import instruction_paraphrases  # noqa: E402


class FakeEncoder:
    manifest = SimpleNamespace(weights_sha256="e" * 64)

    def embed(self, images: np.ndarray) -> np.ndarray:
        return np.zeros((len(images), 8), np.float32)  # (B, D)


class HoldPolicy:
    """Chunks that hold the measured state (8 actions at 0.1 s). `pick`: teleport the object
    the instruction names into the basin at the first chunk; `sleep_s`: wall seconds each chunk
    takes."""

    weights_sha256 = "p" * 64
    dt_s = 0.1
    embedding_dim = 8

    def __init__(self, env=None, pick: bool = False, sleep_s: float = 0.0) -> None:
        self.env, self.pick, self.sleep_s = env, pick, sleep_s
        self.instructions: list[str | None] = []
        self.chunks = 0

    def reset(self, seed=None) -> None:
        self._first = True

    def observe(self, obs) -> None:
        self.instructions.append(obs.instruction)

    def predict_action_chunk(self, obs) -> ActionChunk:
        self.instructions.append(obs.instruction)
        if self.sleep_s:
            time.sleep(self.sleep_s)
        if self.pick and self.env is not None and obs.instruction and self._first:
            objects = self.env.episode.objects
            name = next(n for n in objects if obs.instruction in instruction_paraphrases(n, objects))
            x, y = self.env.config.sink_center_xy_m
            self.env.place_object(name, x, y)
        self._first = False
        self.chunks += 1
        return ActionChunk(np.tile(obs.state, (8, 1)), obs.stamp_s, self.dt_s)  # (8, 7)


@pytest.fixture(scope="module")
def settings():
    return realtime_settings(read_params_file(resources.params_file("pick_into_sink")))


@pytest.fixture(scope="module")
def cell(settings):
    with RealtimeCell(settings, SimConfig(image_hw=(16, 16))) as c:
        yield c


def test_settings_are_the_graphs_params_file(settings):
    from dynaflip_ros.configs.safety import SafetyConfig

    assert settings.camera_rate_hz == 10.0 and settings.n_action_steps == 0
    assert settings.driver.backend == "sim" and settings.driver.servo_rate_hz == 125.0
    assert settings.driver.safety.joint_limits_rad == SafetyConfig().joint_limits_rad  # flat list -> pairs
    assert settings.driver.safety.watchdog_timeout_s == 0.05
    assert realtime_settings(read_params_file(resources.params_file("pick_into_sink")), n_action_steps=4).n_action_steps == 4


def test_success_with_the_instruction_and_the_records_counters(cell):
    policy = HoldPolicy(cell.env, pick=True)
    record, samples = run_realtime_episode(cell, FakeEncoder(), policy, episode=3, seed=7, max_duration_s=3.0)
    assert record.outcome is Outcome.SUCCESS and record.episode == 3 and record.seed == 7
    assert record.target == cell.env.episode.object_name and set(policy.instructions) == {record.instruction}
    assert set(samples) == {"capture", "encode", "policy", "command"}
    assert record.driver["chunks"]["received"] == record.driver["chunks"]["queued"] >= 1
    assert record.driver["frames"] >= 1 and record.action_age["bins"] and record.safety["watchdog_stops"] == 0


def test_holding_until_the_timeout_executes_fresh_actions_without_a_watchdog_trip(cell):
    policy = HoldPolicy()
    record, _ = run_realtime_episode(cell, FakeEncoder(), policy, episode=0, seed=11, max_duration_s=0.6)
    assert record.outcome is Outcome.TIMEOUT and record.episode_sim_time_s >= 0.6 - 1e-9
    assert record.safety["watchdog_stops"] == 0 and record.action_age_ms["n"] > 0
    assert record.action_age_ms["max_bin"] <= 1000.0  # never older than one chunk (0.8 s) + a period


def test_inference_takes_simulated_time_and_frames_are_missed(cell):
    policy = HoldPolicy(sleep_s=0.35)  # 3.5 camera periods of wall time per chunk
    record, samples = run_realtime_episode(cell, FakeEncoder(), policy, episode=0, seed=12, max_duration_s=1.0)
    assert record.driver["frames_missed"] >= 2
    assert min(samples["command"]) >= 200.0  # the image is >= 0.2 s old when its chunk is queued (sim time)


def test_evaluate_realtime_report(settings):
    report = evaluate_realtime(FakeEncoder(), HoldPolicy(), 2, settings=settings, seed=20, max_duration_s=0.3,
                               sim_config=SimConfig(image_hw=(16, 16)))
    assert report.mode == "realtime" and [e.seed for e in report.episodes] == [20, 21]
    assert report.models == {"encoder": "e" * 64, "policy": "p" * 64}
    s = report.summary()
    assert s["episodes"] == 2 and s["action_age_ms"]["n"] > 0 and "capture" in s["latency_ms"]
    with pytest.raises(ValueError):
        evaluate_realtime(FakeEncoder(), HoldPolicy(), 0, settings=settings)
