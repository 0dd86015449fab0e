"""`dynaflip eval`: the episode / swap-pair counts and the record it writes (fake models)."""
from __future__ import annotations

import json

import pytest

from dynaflip_ros.errors import UserError
from dynaflip_ros.eval.cli import episode_count, sim_config_for


def test_episode_count_defaults_and_errors():
    assert episode_count(None, 0) == 20  # regular episodes only
    assert episode_count(None, 5) == 0  # --swap-pairs alone runs only the pairs
    assert episode_count(7, 5) == 7 and episode_count(0, 1) == 0 and episode_count(3, 0) == 3
    for episodes, pairs in ((0, 0), (-1, 2), (None, -1), (2, -1)):
        with pytest.raises(UserError):
            episode_count(episodes, pairs)


def test_objects_and_object_pool_make_the_scene():
    cfg = sim_config_for(1, "red cube, blue bar")
    assert cfg.objects == ("red cube", "blue bar") and cfg.objects_per_episode == (1, 1) and cfg.episode_split == "any"
    default = sim_config_for(None, None)
    assert default.objects == () and default.objects_per_episode == (2, 4) and default.episode_split == "train"
    assert sim_config_for(3, None).objects_per_episode == (3, 3)
    for objects, pool, match in ((5, None, "1..4"), (0, None, "1..4"), (None, "red cube,teal torus", "unknown"),
                                 (None, ",", "unknown"), (3, "red cube,blue bar", "fewer than")):
        with pytest.raises(UserError, match=match):
            sim_config_for(objects, pool)


def test_bad_counts_fail_before_loading_anything(tmp_path, capsys):
    from dynaflip_ros.cli import main

    rc = main(["eval", "--sim", "--encoder", str(tmp_path / "none"), "--policy", str(tmp_path / "none"),
               "--swap-pairs", "-2"])
    assert rc == 2 and "--swap-pairs must be >= 0" in capsys.readouterr().err


def test_eval_writes_rates_and_swap_accuracy(tmp_path, monkeypatch, capsys):
    pytest.importorskip("mujoco")
    pytest.importorskip("torch")
    import dataclasses
    from types import SimpleNamespace

    import numpy as np

    from dynaflip_ros.cli import main
    from dynaflip_ros.eval import closed_loop
    from dynaflip_ros.inference import factory
    from dynaflip_ros.policies import diffusion
    from dynaflip_ros.policies.base import ActionChunk

    class FakeEncoder:
        manifest = SimpleNamespace(weights_sha256="e" * 64)

        def embed(self, images):
            return np.zeros((len(images), 8), np.float32)  # (B, D)

    class HoldPolicy:
        weights_sha256 = "p" * 64
        model_config = SimpleNamespace(n_action_steps=8)
        chunks = 0

        def reset(self, seed=None):
            pass

        def observe(self, obs):
            pass

        def predict_action_chunk(self, obs):
            assert obs.instruction  # every observation carries the episode's instruction
            HoldPolicy.chunks += 1
            return ActionChunk(obs.state[None].repeat(8, 0), obs.stamp_s + 0.1, 0.1)

    real = closed_loop.evaluate_in_sim
    monkeypatch.setattr(factory, "load_encoder_backend", lambda *a, **k: FakeEncoder())
    loads = []
    monkeypatch.setattr(diffusion.DiffusionPolicyRunner, "load", staticmethod(lambda *a, **k: loads.append(k) or HoldPolicy()))
    monkeypatch.setattr(closed_loop, "evaluate_in_sim",
                        lambda *a, sim_config, **k: real(*a, sim_config=dataclasses.replace(sim_config, image_hw=(16, 16)), **k))
    out = tmp_path / "eval.json"
    rc = main(["eval", "--sim", "--encoder", str(tmp_path), "--policy", str(tmp_path), "--episodes", "1",
               "--swap-pairs", "1", "--episode-timeout-s", "0.3", "--seed", "100", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    d = json.loads(out.read_text())
    s = d["summary"]
    assert s["episodes"] == 1 and s["timeout_rate"] == 1.0 and s["success_rate"] == 0.0
    assert s["wrong_object_rate"] == 0.0 and len(s["wrong_object_ci95"]) == 2
    assert s["swap_pairs"] == 1 and s["swap_accuracy"] == 0.0 and s["swap_accuracy_ci95"][0] == 0.0
    assert d["config"]["swap_pairs"] == 1 and d["config"]["episodes"] == 1
    assert len(d["pairs"]) == 1 and [r["outcome"] for r in d["pairs"][0]["runs"]] == ["timeout", "timeout"]
    assert "[eval] episode 1/1 seed=100 target=" in text and "[eval] swap pair 1/1 seed=100" in text
    assert "instruction swap: 0/1 pairs correct" in text and f"results: {out}" in text
    assert HoldPolicy.chunks == 3 and d["config"]["n_action_steps"] == 8  # one chunk per 0.3 s run
    # the deployment default of chunks averaged per prediction reaches the runner and the record
    from dynaflip_ros.configs.policy import DEFAULT_SAMPLES_PER_CHUNK
    assert loads[-1]["samples_per_chunk"] == DEFAULT_SAMPLES_PER_CHUNK == d["config"]["samples_per_chunk"]
    rc = main(["eval", "--sim", "--encoder", str(tmp_path), "--policy", str(tmp_path), "--episodes", "1",
               "--episode-timeout-s", "0.1", "--samples-per-chunk", "1", "--out", str(out)])
    assert rc == 0 and loads[-1]["samples_per_chunk"] == 1 == json.loads(out.read_text())["config"]["samples_per_chunk"]
    for bad in ("0", "65"):
        rc = main(["eval", "--sim", "--encoder", str(tmp_path), "--policy", str(tmp_path), "--samples-per-chunk", bad])
        assert rc == 2 and "--samples-per-chunk must be in 1..64" in capsys.readouterr().err

    # --n-action-steps 1: a new chunk every 0.1 s step (3 per run), as the policy node's parameter
    HoldPolicy.chunks = 0
    rc = main(["eval", "--sim", "--encoder", str(tmp_path), "--policy", str(tmp_path), "--episodes", "1",
               "--episode-timeout-s", "0.3", "--seed", "100", "--n-action-steps", "1", "--out", str(out)])
    assert rc == 0 and HoldPolicy.chunks == 3 and json.loads(out.read_text())["config"]["n_action_steps"] == 1
    for bad in ("9", "-1"):
        rc = main(["eval", "--sim", "--encoder", str(tmp_path), "--policy", str(tmp_path), "--n-action-steps", bad])
        assert rc == 2 and "--n-action-steps must be in 0..8" in capsys.readouterr().err

    # --temporal-ensemble-coeff: the policy is queried at every step and its chunks ensembled
    HoldPolicy.chunks = 0
    rc = main(["eval", "--sim", "--encoder", str(tmp_path), "--policy", str(tmp_path), "--episodes", "1",
               "--episode-timeout-s", "0.3", "--seed", "100", "--temporal-ensemble-coeff", "0.01", "--out", str(out)])
    config = json.loads(out.read_text())["config"]
    assert rc == 0 and HoldPolicy.chunks == 3
    assert config["n_action_steps"] == 1 and config["temporal_ensemble_coeff"] == 0.01
    for bad in (["--temporal-ensemble-coeff", "0.01", "--n-action-steps", "4"], ["--temporal-ensemble-coeff", "nan"]):
        rc = main(["eval", "--sim", "--encoder", str(tmp_path), "--policy", str(tmp_path), *bad])
        assert rc == 2 and "--temporal-ensemble-coeff must be finite" in capsys.readouterr().err
