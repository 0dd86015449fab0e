"""The frozen-encoder MetaWorld benchmark (dynaflip_ros/metaworld/): seeding, the MuJoCo 4 fix,
demos, the resumable run. Tiny sizes (one task, two demos, short rollouts)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dynaflip_ros.cli import main
from dynaflip_ros.errors import UserError

pytest.importorskip("metaworld", reason="metaworld 3.1.1 is installed by scripts/setup_env.sh")

from dynaflip_ros.metaworld.env import make_env, record_demos, task_name  # noqa: E402


def test_an_episode_seed_names_one_scene_and_the_welds_are_metaworlds():
    import mujoco

    env_a, obs_a = make_env("reach-v3", 100003, (64, 64))
    env_b, obs_b = make_env("reach-v3", 100003, (64, 64))
    _, obs_c = make_env("reach-v3", 100004, (64, 64))
    assert np.array_equal(obs_a, obs_b) and not np.array_equal(obs_a, obs_c)
    m = env_a.unwrapped.model
    welds = [i for i in range(m.neq) if m.eq_type[i] == mujoco.mjtEq.mjEQ_WELD]
    assert welds and np.allclose(m.eq_data[welds[0], :11], [0, 0, 0, 0, 0, 0, -1, 0, 0, 0, 5])
    assert env_a.render().shape == (64, 64, 3)


def test_every_environment_renders_its_own_scene():
    # two live environments moved apart, then a third after closing them: each image shows its own
    # state (a shared renderer once returned the same or stale frames)
    envs = [make_env("reach-v3", s, (64, 64))[0] for s in (1, 2)]
    first = [e.render() for e in envs]
    for e, direction in zip(envs, (1.0, -1.0)):
        for _ in range(10):
            e.step(np.array([direction, 0, 0, 0], np.float32))
    moved = [e.render() for e in envs]
    assert all(np.abs(a.astype(int) - b.astype(int)).mean() > 0.5 for a, b in zip(first, moved))
    assert np.abs(moved[0].astype(int) - moved[1].astype(int)).mean() > 0.5
    for e in envs:
        e.close()
    env, _ = make_env("reach-v3", 3, (64, 64))
    before = env.render()
    for _ in range(10):
        env.step(np.array([1.0, 0, 0, 0], np.float32))
    assert np.abs(env.render().astype(int) - before.astype(int)).mean() > 0.5
    env.close()


def test_task_names_and_expert_demos():
    assert task_name("reach") == "reach-v3"
    with pytest.raises(UserError, match="unknown MetaWorld task"):
        task_name("make-coffee")
    demos = record_demos("reach-v3", 2, (64, 64))
    assert demos.images.shape[1:] == (64, 64, 3) and len(demos.images) == len(demos.actions) == len(demos.proprio)
    assert sorted(set(demos.episode.tolist())) == [0, 1] and len(demos.seeds) == 2
    assert np.abs(demos.actions).max() <= 1.0


def test_run_resumes_and_refuses_another_protocol(tmp_path):
    assert main(["train-encoder", "--recipe", "imagenet", "--out", str(tmp_path / "enc")]) == 0
    args = ["metaworld", "--encoder", str(tmp_path / "enc"), "--tasks", "reach", "--demos", "2", "--episodes", "2",
            "--training-seeds", "0", "--mlp-steps", "20", "--max-steps", "15", "--demo-cache", str(tmp_path / "demos"),
            "--out", str(tmp_path / "run")]
    assert main(args) == 0
    lines = (tmp_path / "run" / "episodes.jsonl").read_text().splitlines()
    assert [json.loads(x)["seed"] for x in lines] == [100000, 100001]
    assert all(json.loads(x)["steps"] <= 15 for x in lines)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["recipe"] == "imagenet" and run["demo_seeds"]["reach-v3"] == [0, 1] and run["embedding_dim"] == 128
    assert main(args) == 0  # resumed: nothing left to run
    assert (tmp_path / "run" / "episodes.jsonl").read_text().splitlines() == lines
    assert main([a if a != "15" else "16" for a in args]) == 2  # another --max-steps: refused, one line
