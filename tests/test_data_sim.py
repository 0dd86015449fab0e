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
