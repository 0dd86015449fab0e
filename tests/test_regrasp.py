"""Missed-grasp recovery data (`dynaflip record --regrasp-fraction`): the expert's offset first
grasp, its re-plan, the recorded marks and the policy samples that honour them."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from dynaflip_ros.cli import main
from dynaflip_ros.configs.record import RecordConfig
from dynaflip_ros.data import dataset_io, schema
from dynaflip_ros.sim.record_demos import record_sim_episodes, regrasp_offset

HW = (48, 64)


def test_offset_grasp_misses_then_the_expert_replans_and_succeeds():
    from dynaflip_ros.configs.sim import SimConfig
    from dynaflip_ros.sim.expert import ScriptedExpert
    from dynaflip_ros.sim.pick_into_sink import PickIntoSinkEnv
    from dynaflip_ros.sim.rollout import SimRunner

    env = PickIntoSinkEnv(SimConfig(image_hw=(16, 16)))
    try:
        runner, expert = SimRunner(env), ScriptedExpert(env.config)
        runner.reset(seed=1)
        clean = runner.run_expert_episode(expert)
        assert clean.success and clean.demonstration_start_step == 0 and clean.regrasp_missed is None
        runner.reset(seed=1)
        phases = []
        missed = runner.run_expert_episode(expert, regrasp_offset_m=np.array([0.0, -0.045]),
                                           on_frame=lambda f, s, a, phase, *_: phases.append(phase))
    finally:
        env.close()
    assert missed.success and missed.regrasp_missed is True
    k = missed.demonstration_start_step
    assert 0 < k < missed.steps and missed.duration_s > clean.duration_s + 1.0  # the retry takes time
    lift, approach = schema.PHASES.index("lift"), schema.PHASES.index("approach")
    assert phases[k - 1] == lift and phases[k] == approach  # the re-plan starts over at the approach
    assert schema.PHASES.index("grasp") in phases[k:]  # and grasps again


def test_regrasp_offset_is_seeded_and_drawn_for_the_fraction():
    draws = [regrasp_offset(s, 0.3, (0.025, 0.05)) for s in range(400)]
    hits = [d for d in draws if d is not None]
    assert 0.22 < len(hits) / len(draws) < 0.38
    assert all(0.025 <= np.hypot(*d) <= 0.05 for d in hits)
    np.testing.assert_array_equal(regrasp_offset(7, 1.0, (0.03, 0.03)), regrasp_offset(7, 1.0, (0.03, 0.03)))
    assert regrasp_offset(7, 0.0, (0.03, 0.03)) is None
    with pytest.raises(ValueError, match="regrasp_fraction"):
        RecordConfig(regrasp_fraction=1.5)
    with pytest.raises(ValueError, match="regrasp_offset_m"):
        RecordConfig(regrasp_offset_m=(0.05, 0.02))
    with pytest.raises(ValueError, match="regrasp_offset_m"):
        RecordConfig(regrasp_offset_m=(0.0, 0.02))


def test_recording_marks_context_frames_and_training_skips_them(tmp_path):
    from dynaflip_ros.policies.embeddings import EmbeddedEpisodes
    from dynaflip_ros.policies.samples import Samples
    from dynaflip_ros.policies.train import with_demonstration_marks

    out = tmp_path / "demos"
    summary = record_sim_episodes(2, out, seed=1, image_hw=HW, progress=False, regrasp_fraction=1.0)
    assert summary["episodes_kept"] == 2 and summary["regrasp_recovered"] == 2 and summary["regrasp_held"] == 0
    records = dataset_io.read_episode_records(out)
    starts = [r["extra"]["demonstration_start_frame"] for r in records]
    assert all(r["extra"]["regrasp_fraction"] == 1.0 and len(r["extra"]["regrasp_offset_m"]) == 2 for r in records)
    assert all(s > 0 for s in starts) and all(r["extra"]["regrasp_missed"] for r in records)  # seeds 1, 2 miss
    # --resume never mixes recovery and plain episodes in one dataset
    with pytest.raises(ValueError, match="--regrasp-fraction 1"):
        record_sim_episodes(3, out, seed=1, image_hw=HW, progress=False)

    lengths = [r["length"] for r in records]
    n = sum(lengths)
    eps = EmbeddedEpisodes(
        embedding=np.zeros((n, 2), np.float32), state=np.zeros((n, 7), np.float32),
        action=np.zeros((n, 7), np.float32), episode_index=np.repeat([0, 1], lengths),
        frame_index=np.concatenate([np.arange(k) for k in lengths]), task=np.full(n, "t"), fps=10.0,
        encoder_sha256="0" * 64, dataset_fingerprint="0" * 64)
    marked = with_demonstration_marks(eps, out)
    assert (~marked.demonstrated).sum() == sum(starts)
    from dynaflip_ros.configs.policy import DiffusionModelConfig

    model = DiffusionModelConfig(n_obs_steps=2, horizon=8, n_action_steps=4, language_conditioning=False)
    every = Samples(eps, model)
    kept = Samples(marked, model)
    # no anchor whose observation window reaches a context-only frame; everything else stays
    assert marked.demonstrated[kept.obs_idx].all()
    assert len(every) - len(kept) == sum(s + 1 for s in starts)
    assert marked.select_episodes(np.array([1])).demonstrated.sum() == lengths[1] - starts[1]
    assert with_demonstration_marks(eps, tmp_path / "no_records_here").demonstrated is None
    with pytest.raises(ValueError, match="demonstrated"):
        dataclasses.replace(eps, demonstrated=np.ones(n, np.float32))


def test_cli_record_regrasp_flag(tmp_path, capsys):
    out = tmp_path / "demos"
    assert main(["record", "--sim", "--out", str(out), "--regrasp-fraction", "2", "--no-progress"]) == 2
    assert "regrasp_fraction" in capsys.readouterr().err and not out.exists()
    assert main(["record", "--sim", "--episodes", "1", "--seed", "2", "--image-size", "48x64", "--out", str(out),
                 "--no-progress", "--regrasp-fraction", "1"]) == 0
    (rec,) = dataset_io.read_episode_records(out)
    assert rec["extra"]["regrasp_fraction"] == 1.0 and rec["extra"]["demonstration_start_frame"] > 0
