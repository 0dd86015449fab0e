"""record_sim_episodes and `dynaflip record`: scripted-expert MuJoCo episodes into a LeRobotDataset."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dynaflip_ros.cli import main
from dynaflip_ros.configs.io import load_yaml
from dynaflip_ros.configs.record import RecordConfig
from dynaflip_ros.data import dataset_io, schema
from dynaflip_ros.sim.record_demos import record_sim_episodes
from dynaflip_ros.task.instructions import instruction_paraphrases

HW = (48, 64)


def test_record_sim_episodes_content_and_resume(tmp_path):
    root = tmp_path / "demos"
    summary = record_sim_episodes(2, root, seed=0, image_hw=HW, progress=False)
    assert summary["episodes_attempted"] == 2 and summary["episodes_skipped_existing"] == 0
    assert summary["episodes_kept"] + summary["episodes_discarded"] == 2
    assert summary["episodes_kept"] >= 1, summary  # the scripted expert solves the task
    assert summary["dataset_episodes"] == summary["episodes_kept"]
    assert summary["dataset_frames"] == summary["frames_kept"] > 0 and summary["seconds"] > 0

    records = dataset_io.read_episode_records(root)
    assert all(r["success"] and r["source"] == "sim" and r["demonstrator"] == "expert" for r in records)
    assert {r["seed"] for r in records} <= {0, 1}
    ds = dataset_io.open_dataset(root)
    assert ds.num_episodes == len(records) and len(ds) == summary["frames_kept"]
    start = 0
    for rec in records:
        rows = [ds[start + i] for i in range(rec["length"])]
        start += rec["length"]
        extra = rec["extra"]
        assert extra["objects"][0] == rec["object_name"] and 2 <= len(extra["objects"]) <= 4
        assert rec["task"] in extra["instruction_paraphrases"]
        assert extra["instruction_paraphrases"] == instruction_paraphrases(rec["object_name"], extra["objects"])
        assert extra["scene"] == {}  # nominal scene
        assert all(r["task"] == rec["task"] for r in rows)
        phases = [r[schema.PHASE_KEY].item() for r in rows]
        assert phases[0] == 0 and phases == sorted(phases) and phases[-1] >= schema.PHASES.index("release")
        states = np.stack([r[schema.STATE_KEY].numpy() for r in rows])  # (T, 7)
        actions = np.stack([r[schema.ACTION_KEY].numpy() for r in rows])  # (T, 7)
        tracks = np.stack([r[schema.TRACKS_KEY].numpy() for r in rows])[:, :32]  # (T, 32, 3) the target's rows
        valid = np.stack([r[schema.VALID_KEY].numpy() for r in rows])  # (T, 96)
        n_other = len(extra["objects"]) - 1
        assert valid[:, 48 + 16 * n_other:].sum() == 0 and valid[:, :48].mean() > 0.9
        assert np.all((states[:, 6] >= 0) & (states[:, 6] <= 1)) and np.all((actions[:, 6] >= 0) & (actions[:, 6] <= 1))
        assert actions[:, 6].max() > 0.5 > actions[0, 6]  # the gripper closes during the episode
        assert np.abs(states[-1, :6] - states[0, :6]).max() > 0.1  # the arm moved
        assert np.all(tracks[..., 2] > 0.1)  # object in front of the camera (optical z forward, m)
        assert np.linalg.norm(tracks[-1].mean(0) - tracks[0].mean(0)) > 0.05  # the object was carried
        img = rows[0][schema.IMAGE_KEY]
        assert tuple(img.shape) == (3, *HW) and img.std() > 0.02  # a rendered scene, not blank

    again = record_sim_episodes(3, root, seed=0, image_hw=HW, progress=False)  # resume
    assert again["episodes_skipped_existing"] == len(records)
    assert again["episodes_attempted"] == 3 - len(records)
    assert again["dataset_episodes"] == len(records) + again["episodes_kept"]


def test_only_success_discards_failed_expert_episodes(tmp_path):
    # 1 s of simulated time is too short for the expert to finish: the episode fails.
    s = record_sim_episodes(1, tmp_path / "a", seed=3, image_hw=HW, progress=False, max_episode_s=1.0)
    assert (s["episodes_kept"], s["episodes_discarded"], s["dataset_episodes"]) == (0, 1, 0)
    s = record_sim_episodes(
        1, tmp_path / "b", seed=3, image_hw=HW, progress=False, max_episode_s=1.0, only_success=False
    )
    assert (s["episodes_kept"], s["frames_kept"]) == (1, 10)
    (rec,) = dataset_io.read_episode_records(tmp_path / "b")
    assert rec["success"] is False and rec["seed"] == 3 and rec["length"] == 10
    with pytest.raises(ValueError, match="n_episodes"):
        record_sim_episodes(0, tmp_path / "c")


def test_cli_record(tmp_path, capsys):
    out = tmp_path / "demos"
    assert main(["record", "--out", str(out)]) == 2  # neither --sim nor --teleop
    assert "--teleop DEVICE" in capsys.readouterr().err
    assert not out.exists()

    argv = ["record", "--sim", "--episodes", "1", "--seed", "1", "--image-size", "48x64", "--out", str(out),
            "--no-progress", "--keep-failed", "--episode-timeout-s", "1.0"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["dataset_episodes"] == 1 and summary["episodes_kept"] == 1
    assert main(argv) == 2  # the dataset exists and --resume is missing
    assert "--resume" in capsys.readouterr().err
    assert main(argv[:3] + ["2"] + argv[4:] + ["--resume"]) == 0  # seed 1 skipped, seed 2 recorded
    summary = json.loads(capsys.readouterr().out)
    assert (summary["episodes_skipped_existing"], summary["dataset_episodes"]) == (1, 2)
    assert main(["record", "--sim", "--out", str(out), "--resume", "--image-size", "32", "--episodes", "1",
                 "--seed", "9", "--no-progress"]) == 2  # image size differs from the dataset's
    assert "observation.image" in capsys.readouterr().err


def test_record_yaml_matches_dataclass_defaults():
    assert load_yaml(RecordConfig, Path(__file__).resolve().parents[1] / "config" / "record.yaml") == RecordConfig()
    with pytest.raises(ValueError, match="episodes"):
        RecordConfig(episodes=0)
    with pytest.raises(ValueError, match="image_hw"):
        RecordConfig(image_hw=(224,))


def _episode_arrays(root):
    (rec,) = dataset_io.read_episode_records(root)
    ds = dataset_io.open_dataset(root)
    rows = [ds[i] for i in range(rec["length"])]
    states = np.stack([r[schema.STATE_KEY].numpy() for r in rows])  # (T, 7)
    actions = np.stack([r[schema.ACTION_KEY].numpy() for r in rows])  # (T, 7)
    phases = np.array([r[schema.PHASE_KEY].item() for r in rows])  # (T,)
    return rec, states, actions, phases


def test_action_noise_perturbs_the_arm_and_keeps_the_expert_labels(tmp_path):
    """DART recording: same seed with and without --action-noise-rad: the recorded actions (the
    expert's open-loop plan) are the same, the recorded states leave the clean run's during the
    approach and are back on it after the grasp; the episode records the noise."""
    clean = record_sim_episodes(1, tmp_path / "clean", seed=2, image_hw=HW, progress=False)
    noisy = record_sim_episodes(1, tmp_path / "noisy", seed=2, image_hw=HW, progress=False, action_noise_rad=0.03)
    assert clean["episodes_kept"] == noisy["episodes_kept"] == 1
    rec_c, s_c, a_c, ph_c = _episode_arrays(tmp_path / "clean")
    rec_n, s_n, a_n, ph_n = _episode_arrays(tmp_path / "noisy")
    assert "action_noise_rad" not in rec_c["extra"] and rec_n["extra"]["action_noise_rad"] == 0.03
    n = min(len(a_c), len(a_n))
    np.testing.assert_allclose(a_n[:n], a_c[:n], atol=1e-6)  # labels: the clean plan
    np.testing.assert_array_equal(ph_n[:n], ph_c[:n])
    approach = ph_c[:n] == schema.PHASES.index("approach")
    dev = np.abs(s_n[:n, :6] - s_c[:n, :6]).max(axis=1)  # (n,) rad
    assert dev[approach].max() > 0.01  # the perturbed arm left the clean path
    carry = np.flatnonzero(ph_c[:n] == schema.PHASES.index("carry"))
    assert dev[carry[len(carry) // 2 :]].max() < 0.2 * dev[approach].max()  # and came back to it
    with pytest.raises(ValueError, match="action_noise_rad"):
        record_sim_episodes(1, tmp_path / "bad", action_noise_rad=-0.1)
    # --resume never mixes recipes: nominal episodes are not appended to a DART dataset (or back)
    with pytest.raises(ValueError, match="one dataset, one recipe"):
        record_sim_episodes(2, tmp_path / "noisy", seed=2, image_hw=HW, progress=False)
    with pytest.raises(ValueError, match="--action-noise-rad 0.05"):
        record_sim_episodes(2, tmp_path / "clean", seed=2, image_hw=HW, progress=False, action_noise_rad=0.05)
    assert len(dataset_io.read_episode_records(tmp_path / "clean")) == 1  # nothing appended


def test_joint_action_noise_process():
    from dynaflip_ros.sim.action_noise import JointActionNoise
    from dynaflip_ros.sim.expert import PHASE_INDEX

    noise = JointActionNoise(0.02, 0.3, 0.1)
    noise.reset(5)
    action = np.r_[np.zeros(6), 0.7]
    carry = PHASE_INDEX["carry"]
    np.testing.assert_array_equal(noise.perturb(action, carry), action)  # not driven outside its phases
    driven = np.stack([noise.perturb(action, PHASE_INDEX["approach"]) for _ in range(4000)])
    assert np.all(driven[:, 6] == 0.7)  # the gripper is never perturbed
    assert 0.017 < driven[100:, :6].std() < 0.023  # stationary std_rad
    before = np.abs(noise.current_rad).max()
    for _ in range(20):  # 2 s = 6.7 tau outside the driven phases
        noise.perturb(action, carry)
    assert np.abs(noise.current_rad).max() < 0.01 * before
    again = JointActionNoise(0.02, 0.3, 0.1)
    again.reset(5)
    np.testing.assert_array_equal(again.perturb(action, carry), action)
    np.testing.assert_array_equal(again.perturb(action, PHASE_INDEX["approach"]), driven[0])  # seeded
    with pytest.raises(ValueError, match="unknown expert phases"):
        JointActionNoise(0.02, 0.3, 0.1, phases=("wiggle",))
    with pytest.raises(ValueError, match="> 0"):
        JointActionNoise(0.0, 0.3, 0.1)


def test_cli_record_action_noise_flag(tmp_path, capsys):
    out = tmp_path / "demos"
    assert main(["record", "--sim", "--out", str(out), "--action-noise-rad", "0.5", "--no-progress"]) == 2
    assert "action_noise_rad" in capsys.readouterr().err and not out.exists()
    assert main(["record", "--sim", "--episodes", "1", "--seed", "2", "--image-size", "48x64", "--out", str(out),
                 "--no-progress", "--action-noise-rad", "0.01"]) == 0
    (rec,) = dataset_io.read_episode_records(out)
    assert rec["extra"]["action_noise_rad"] == 0.01 and rec["extra"]["action_noise_tau_s"] == 0.3


def test_cli_record_action_noise_phases(tmp_path, capsys):
    """--action-noise-phases: recorded with the episode, the descent left unperturbed (the noise
    only decays there), a resume with other phases refused, unknown names refused before anything
    is recorded (flag and YAML alike)."""
    out = tmp_path / "demos"
    with pytest.raises(SystemExit) as exc:
        main(["record", "--sim", "--out", str(out), "--action-noise-phases", "approach,wiggle",
              "--action-noise-rad", "0.03", "--no-progress"])
    assert exc.value.code == 2
    assert "unknown expert phase" in capsys.readouterr().err and not out.exists()
    bad_yaml = tmp_path / "record.yaml"
    bad_yaml.write_text("action_noise_phases: [wiggle]\n")
    assert main(["record", "--sim", "--out", str(out), "--config", str(bad_yaml), "--no-progress"]) == 2
    assert "wiggle" in capsys.readouterr().err and not out.exists()
    args = ["record", "--sim", "--episodes", "1", "--seed", "2", "--image-size", "48x64", "--out", str(out),
            "--no-progress", "--action-noise-rad", "0.03"]
    assert main([*args, "--action-noise-phases", "approach"]) == 0
    capsys.readouterr()
    (rec,) = dataset_io.read_episode_records(out)
    assert rec["extra"]["action_noise_phases"] == ["approach"]
    assert main([*args, "--episodes", "2", "--resume"]) == 2  # default phases: another recipe
    assert "phases approach,descend" in capsys.readouterr().err
    assert len(dataset_io.read_episode_records(out)) == 1


def test_action_noise_phases_reach_the_noise_process(tmp_path):
    """Approach-only noise: the recorded states leave the clean path in the approach and the
    perturbation only decays through the descent (never grows there)."""
    record_sim_episodes(1, tmp_path / "clean", seed=2, image_hw=HW, progress=False)
    record_sim_episodes(1, tmp_path / "app", seed=2, image_hw=HW, progress=False, action_noise_rad=0.05,
                        action_noise_phases=("approach",))
    _, s_c, a_c, ph_c = _episode_arrays(tmp_path / "clean")
    _, s_n, a_n, _ = _episode_arrays(tmp_path / "app")
    n = min(len(a_c), len(a_n))
    np.testing.assert_allclose(a_n[:n], a_c[:n], atol=1e-6)
    dev = np.abs(s_n[:n, :6] - s_c[:n, :6]).max(axis=1)
    approach = np.flatnonzero(ph_c[:n] == schema.PHASES.index("approach"))
    descend = np.flatnonzero(ph_c[:n] == schema.PHASES.index("descend"))
    assert dev[approach].max() > 0.02
    assert dev[descend[-1]] < dev[approach[-1]]  # decaying back to the path by the grasp
