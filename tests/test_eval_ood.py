"""`dynaflip eval-ood` sessions (eval/ood.py, eval/ood_cli.py): matched conditions on the same
seeds, one line per finished episode, resume after an interruption or a cut line, refusal of
another session or version before any episode, the ROS path's import of the episode manager's
lines, and bad command lines (exit 2 before any episode)."""
from __future__ import annotations

import json
import re
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("mujoco")

from dynaflip_ros.configs.sim import SimConfig  # noqa: E402
from dynaflip_ros.episodes.record import EpisodeRecord  # noqa: E402
from dynaflip_ros.episodes.protocol import Outcome  # noqa: E402
from dynaflip_ros.eval.ood import run_session, run_session_ros  # noqa: E402
from dynaflip_ros.eval.ood_records import (  # noqa: E402
    EPISODES_FILE, SESSION_FILE, OodModel, SessionFileError, read_episodes, read_session,
)
from dynaflip_ros.policies.base import ActionChunk  # noqa: E402
from dynaflip_ros.sim.pick_into_sink import PickIntoSinkEnv  # noqa: E402

CONDITIONS = ["nominal", "distractors:1", "lighting:1"]
SEEDS = [100000, 100001, 100002]


class FakeEncoder:
    manifest = SimpleNamespace(weights_sha256="e" * 64)

    def embed(self, images: np.ndarray) -> np.ndarray:
        return np.zeros((len(images), 8), np.float32)  # (B, D)


class FakePolicy:
    """Holds the arm; at the first chunk teleports the target into the basin unless the scene is
    under a lighting condition (then the episode times out). Counts its episodes."""

    weights_sha256 = "p" * 64

    def __init__(self, env: PickIntoSinkEnv) -> None:
        self.env, self.episodes, self._first = env, 0, True

    def reset(self, seed=None) -> None:
        self._first = True
        self.episodes += 1

    def observe(self, obs) -> None:
        pass

    def predict_action_chunk(self, obs) -> ActionChunk:
        if self._first:
            self._first = False
            if "lighting" not in self.env.episode.scene.get("perturbation", {}):
                self.env.place_object(self.env.episode.object_name, *self.env.config.sink_center_xy_m)
        return ActionChunk(np.tile(obs.state, (8, 1)), obs.stamp_s + 0.1, 0.1)  # (8, 7)


@pytest.fixture(scope="module")
def env():
    e = PickIntoSinkEnv(SimConfig(image_hw=(32, 32)))
    yield e
    e.close()


def models(env):
    policy = FakePolicy(env)
    return {"fake": (FakeEncoder(), policy, OodModel("enc", "pol", "e" * 64, "p" * 64))}, policy


def run(env, out, progress=lambda line: None, conditions=CONDITIONS, seeds=SEEDS):
    m, policy = models(env)
    run_session(out, m, conditions, seeds, max_duration_s=1.0, env=env, progress=progress)
    return policy


def test_session_runs_every_condition_on_the_same_seeds(env, tmp_path):
    run(env, tmp_path)
    eps = read_episodes(tmp_path)
    assert sorted(e.key for e in eps) == sorted(("fake", c, s) for c in CONDITIONS for s in SEEDS)
    assert [e.condition for e in eps[:3]] == CONDITIONS  # seed-major: a seed's matched set first
    for e in eps:
        assert e.outcome == ("timeout" if e.condition == "lighting:1" else "success"), e
        assert e.models == {"encoder": "e" * 64, "policy": "p" * 64} and e.mode == "lockstep" and e.commit
        assert e.camera["image_hw"] == [32, 32] and len(e.camera["rotation"]) == 3
    by = {(e.condition, e.seed): e for e in eps}
    for s in SEEDS:  # matched twins: the nominal objects are all there, the target the same
        nominal, cluttered = by[("nominal", s)], by[("distractors:1", s)]
        assert cluttered.target == nominal.target and cluttered.objects[:len(nominal.objects)] == nominal.objects
        assert len(cluttered.objects) > len(nominal.objects) and cluttered.scene["distractors"]["added"]
        assert by[("lighting:1", s)].scene["lighting"]["shadows"] is True
    frames = [e.frame for e in eps if e.frame]
    assert len(frames) == len(CONDITIONS) and all((tmp_path / f).is_file() for f in frames)
    assert read_session(tmp_path).conditions == CONDITIONS


def test_interrupted_session_resumes_without_redoing_episodes(env, tmp_path):
    lines = []

    def stop_after_four(line: str) -> None:
        lines.append(line)
        if sum(line.startswith("[eval-ood ") for line in lines) == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(env, tmp_path, progress=stop_after_four)
    first = (tmp_path / EPISODES_FILE).read_text().splitlines()
    assert len(first) == 4
    with open(tmp_path / EPISODES_FILE, "a") as f:  # a crash in the middle of writing a line
        f.write(first[0][:40])
    policy = run(env, tmp_path)
    assert policy.episodes == len(CONDITIONS) * len(SEEDS) - 4
    text = (tmp_path / EPISODES_FILE).read_text().splitlines()
    assert text[:4] == first and len(text) == 9
    assert len({e.key for e in read_episodes(tmp_path)}) == 9


def test_another_session_or_version_is_refused_before_any_episode(env, tmp_path):
    run(env, tmp_path, conditions=["nominal"], seeds=SEEDS[:1])
    m, policy = models(env)
    with pytest.raises(SessionFileError, match="other conditions"):
        run_session(tmp_path, m, ["nominal", "texture:1"], SEEDS[:1], max_duration_s=1.0, env=env,
                    progress=lambda line: None)
    with pytest.raises(SessionFileError, match="other seeds"):
        run_session(tmp_path, m, ["nominal"], SEEDS, max_duration_s=1.0, env=env, progress=lambda line: None)
    doc = json.loads((tmp_path / SESSION_FILE).read_text())
    (tmp_path / SESSION_FILE).write_text(json.dumps({**doc, "format": "dynaflip_ros.ood_session/0"}))
    with pytest.raises(SessionFileError, match="this version reads"):
        run_session(tmp_path, m, ["nominal"], SEEDS[:1], max_duration_s=1.0, env=env, progress=lambda line: None)
    assert policy.episodes == 0


def test_ros_session_keeps_the_episodes_of_a_launch_that_died(tmp_path):
    """The episode manager's lines become session episodes even when the launch fails after them;
    the next run launches only the seeds still missing."""
    calls, fail_once = [], {"lighting:1"}

    def launch(model, condition, seeds, episodes_path, results_path):
        calls.append((condition, list(seeds)))
        with open(episodes_path, "a") as f:
            rec = EpisodeRecord(episode=0, seed=seeds[0], outcome=Outcome.SUCCESS, time_to_success_s=4.0,
                                episode_sim_time_s=4.0, latency_ms={"policy": {"p50": 100.0}}, safety={"rejected": 0})
            f.write(json.dumps(rec.to_dict()) + "\n")
        if condition in fail_once:
            fail_once.discard(condition)
            raise RuntimeError("the ROS graph failed")

    model = {"fake": OodModel("enc", "pol", "e" * 64, "p" * 64)}
    cfg = SimConfig(image_hw=(32, 32))
    with pytest.raises(RuntimeError, match="graph failed"):
        run_session_ros(tmp_path, model, ["nominal", "lighting:1"], SEEDS[:2], launch, sim_config=cfg,
                        progress=lambda line: None)
    assert calls == [("nominal", SEEDS[:2]), ("lighting:1", SEEDS[:2])]
    eps = read_episodes(tmp_path)
    assert [(e.condition, e.seed) for e in eps] == [("nominal", SEEDS[0]), ("lighting:1", SEEDS[0])]
    assert eps[1].scene["lighting"]["shadows"] and eps[1].mode == "ros" and eps[0].frame and eps[1].frame
    calls.clear()
    run_session_ros(tmp_path, model, ["nominal", "lighting:1"], SEEDS[:2], launch, sim_config=cfg,
                    progress=lambda line: None)
    assert calls == [("nominal", SEEDS[1:2]), ("lighting:1", SEEDS[1:2])]
    assert len(read_episodes(tmp_path)) == 4


@pytest.mark.parametrize("argv, message", [
    (["--conditions", "fog"], "unknown condition 'fog'"),
    (["--conditions", "lighting:1.5"], r"severity must be in \[0, 1\]"),
    (["--conditions", "texture@novel"], "distractors only"),
    (["--conditions", "lighting", "--seeds", "5-x"], "--seeds"),
    (["--conditions", "lighting", "--model", "other=nowhere,nowhere"], "does not exist"),
])
def test_cli_refuses_bad_input_before_any_episode(tmp_path, capsys, argv, message):
    from dynaflip_ros.cli import main

    out = tmp_path / "session"
    rc = main(["eval-ood", "--model", "shipped=models/encoder,models/policy", *argv, "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and not out.exists() and "dynaflip eval-ood:" in err
    assert re.search(message, err), err


def test_cli_refuses_a_pair_that_fails_the_encoder_guard(tmp_path, capsys, monkeypatch):
    from dynaflip_ros.cli import main
    from dynaflip_ros.eval import cli as eval_cli
    from dynaflip_ros.policies.base import EncoderMismatchError

    def mismatch(args):
        raise EncoderMismatchError("the policy was trained on encoder 2f2c0252..., this is 9a1b...")

    monkeypatch.setattr(eval_cli, "load_models", mismatch)
    (tmp_path / "enc").mkdir()
    (tmp_path / "pol").mkdir()
    out = tmp_path / "session"
    rc = main(["eval-ood", "--model", f"a={tmp_path / 'enc'},{tmp_path / 'pol'}", "--conditions", "lighting",
               "--out", str(out)])
    assert rc == 2 and not out.exists()
    assert "--model a: EncoderMismatchError" in capsys.readouterr().err


def test_cli_real_brings_up_the_cell_and_the_operator_node(tmp_path, monkeypatch):
    """--real: the real cell's processes plus ood_session_node reading this terminal, with the
    session's parameters in the overrides file; no hardware here (run_graph is replaced)."""
    import yaml

    from dynaflip_ros.cli import main
    from dynaflip_ros.eval import cli as eval_cli
    from dynaflip_ros.ros import bringup

    monkeypatch.setattr(eval_cli, "load_models", lambda args: (FakeEncoder(), FakePolicy(None), None))
    seen = {}

    def fake_run_graph(specs, params_files, main=None, interactive=None, **kw):
        seen.update(names=[s.name for s in specs], main=main, interactive=interactive,
                    overrides=yaml.safe_load(open(params_files[1])))
        return bringup.GraphResult(exit_code=0)

    monkeypatch.setattr(bringup, "run_graph", fake_run_graph)
    out = tmp_path / "real"
    rc = main(["eval-ood", "--real", "--model", "cell=models/encoder,models/policy", "--conditions", "lighting:0.5",
               "--seeds", "100000-100001", "--robot-ip", "192.168.1.102", "--out", str(out)])
    assert rc == 0
    assert seen["names"] == ["camera", "ur3_driver", "encoder", "policy", "ood_session"]
    assert seen["main"] == seen["interactive"] == "ood_session"
    session = seen["overrides"]["ood_session"]["ros__parameters"]
    assert session["session_dir"] == str(out) and session["seeds"] == [100000, 100001]
    assert session["conditions"] == "nominal,lighting:0.5" and session["keyboard"] is True and session["model"] == "cell"
    assert seen["overrides"]["encoder"]["ros__parameters"]["model_dir"] == "models/encoder"
    rc = main(["eval-ood", "--real", "--model", "a=models/encoder,models/policy", "--model",
               "b=models/encoder,models/policy", "--conditions", "lighting", "--out", str(out)])
    assert rc == 2
