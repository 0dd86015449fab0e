"""policies/checkpoint_ensemble.py and `dynaflip ensemble-policy`: members written and checked,
chunks averaged, samples split, damaged / mixed / incompatible ensembles refused."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("lerobot")

from dynaflip_ros.configs.policy import DiffusionModelConfig  # noqa: E402
from dynaflip_ros.encoder.manifest import EncoderManifest  # noqa: E402
from dynaflip_ros.policies.base import EncoderMismatchError, PolicyCheckpointError, PolicyObservation  # noqa: E402

DIM = 16
SHA = "c" * 64


def _stats(dim: int) -> dict:
    def s(n):
        return {"mean": np.zeros(n), "std": np.ones(n), "min": -np.ones(n) * 2, "max": np.ones(n) * 2}

    return {"observation.state": s(7), "observation.environment_state": s(dim), "action": s(7)}


def _member(tmp_path: Path, name: str, init_seed: int, encoder_sha: str = SHA, **model) -> Path:
    """An untrained (random) policy checkpoint: enough to check the plumbing, fast."""
    import torch

    from dynaflip_ros.policies.diffusion import DiffusionPolicyRunner

    torch.manual_seed(init_seed)
    cfg = DiffusionModelConfig(language_conditioning=False, **model)
    manifest = EncoderManifest(input_hw=(8, 8), mean=(0.5,) * 3, std=(0.5,) * 3, embedding_dim=DIM,
                               weights_sha256=encoder_sha, architecture="fake")
    runner = DiffusionPolicyRunner.create(cfg, DIM, _stats(DIM), 10.0, manifest)
    return runner.save(tmp_path / name)


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("members")
    return tmp, [_member(tmp, "s0", 0), _member(tmp, "s1", 1)]


def _obs(i: int) -> PolicyObservation:
    """Observation i, stamped 0.1 * i s."""
    rng = np.random.default_rng(i)
    return PolicyObservation(embedding=rng.normal(size=DIM).astype(np.float32),
                             state=rng.uniform(-0.5, 0.5, 7).astype(np.float32), stamp_s=0.1 * i)


def test_ensemble_chunk_is_the_mean_of_its_members(members, tmp_path):
    from dynaflip_ros.policies.checkpoint_ensemble import CheckpointEnsemble, load_policy, write_ensemble
    from dynaflip_ros.policies.diffusion import DiffusionPolicyRunner
    from dynaflip_ros.encoder.manifest import sha256_file

    _, dirs = members
    out = write_ensemble(dirs, tmp_path / "ens")
    doc = json.loads((out / "ensemble.json").read_text())
    assert doc["members"] == ["member_0", "member_1"] and sorted(p.name for p in out.iterdir()) == [
        "ensemble.json", "member_0", "member_1"]
    ens = load_policy(out, encoder_sha256=SHA, seed=5, samples_per_chunk=4)
    assert isinstance(ens, CheckpointEnsemble) and ens.weights_sha256 == sha256_file(out / "ensemble.json")
    assert [m.samples_per_chunk for m in ens.members] == [2, 2] and ens.samples_per_chunk == 4
    assert ens.encoder_sha256 == SHA and ens.fps == 10.0 and ens.dt_s == pytest.approx(0.1)
    assert ens.model_config.n_action_steps == 8 and ens.embedding_dim == DIM and not ens.language_conditioned
    # the same members loaded alone, seeded as the ensemble seeds them (member i: seed + i)
    alone = [DiffusionPolicyRunner.load(d, encoder_sha256=SHA, seed=5 + i, samples_per_chunk=2)
             for i, d in enumerate(dirs)]
    for i in range(0, 6, 2):  # predict at 0, 0.2, 0.4 s; observe only at 0.1, 0.3 s
        if i:
            ens.observe(_obs(i - 1))
            for m in alone:
                m.observe(_obs(i - 1))
        chunk = ens.predict_action_chunk(_obs(i))
        parts = [m.predict_action_chunk(_obs(i)) for m in alone]
        assert chunk.actions.shape == (8, 7) and chunk.t0_s == parts[0].t0_s
        np.testing.assert_allclose(chunk.actions, (parts[0].actions + parts[1].actions) / 2, atol=1e-6)
        assert not np.allclose(parts[0].actions, parts[1].actions)  # two different networks
    # samples: ceil(K / M) per member; bad K refused, the split unchanged
    ens.samples_per_chunk = 3
    assert [m.samples_per_chunk for m in ens.members] == [2, 2]
    for bad in (0, 65, 1.5, True):
        with pytest.raises(ValueError, match="samples_per_chunk must be an integer in 1..64"):
            ens.samples_per_chunk = bad
    assert ens.samples_per_chunk == 4
    # a single checkpoint still loads as a runner
    assert isinstance(load_policy(dirs[0], encoder_sha256=SHA), DiffusionPolicyRunner)
    with pytest.raises(EncoderMismatchError):
        load_policy(out, encoder_sha256="d" * 64)


def test_write_ensemble_refuses_bad_members(members, tmp_path):
    from dynaflip_ros.policies.checkpoint_ensemble import write_ensemble

    tmp, dirs = members
    with pytest.raises(ValueError, match="at least 2 members"):
        write_ensemble(dirs[:1], tmp_path / "one")
    with pytest.raises(ValueError, match="is one of the members"):
        write_ensemble(dirs, dirs[1])
    other_encoder = _member(tmp_path, "enc", 2, encoder_sha="d" * 64)
    with pytest.raises(PolicyCheckpointError, match=r"differ in \['encoder_sha256'\]"):
        write_ensemble([dirs[0], other_encoder], tmp_path / "mixed")
    other_chunk = _member(tmp_path, "chunk", 3, n_action_steps=4)
    with pytest.raises(PolicyCheckpointError, match="n_action_steps"):
        write_ensemble([dirs[0], other_chunk], tmp_path / "mixed")
    assert not (tmp_path / "mixed").exists() and not (tmp_path / "mixed.tmp").exists()
    # a damaged member file is caught while copying; nothing is left behind
    import shutil

    damaged = shutil.copytree(dirs[1], tmp_path / "damaged")
    weights = damaged / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(PolicyCheckpointError, match="damaged member"):
        write_ensemble([dirs[0], damaged], tmp_path / "mixed")
    assert not (tmp_path / "mixed").exists() and not (tmp_path / "mixed.tmp").exists()
    # an existing --out survives a refused write
    good = write_ensemble(dirs, tmp_path / "keep")
    before = (good / "ensemble.json").read_bytes()
    with pytest.raises(PolicyCheckpointError):
        write_ensemble([dirs[0], other_chunk], good)
    assert (good / "ensemble.json").read_bytes() == before


def test_load_refuses_damaged_or_mixed_ensembles(members, tmp_path):
    import shutil

    from dynaflip_ros.policies.checkpoint_ensemble import CheckpointEnsemble, write_ensemble

    _, dirs = members
    out = write_ensemble(dirs, tmp_path / "ens")
    doc = json.loads((out / "ensemble.json").read_text())

    def load_with(mutated: dict | str):
        bad = tmp_path / "bad"
        shutil.rmtree(bad, ignore_errors=True)
        shutil.copytree(out, bad)
        (bad / "ensemble.json").write_text(mutated if isinstance(mutated, str) else json.dumps(mutated))
        return CheckpointEnsemble.load(bad, encoder_sha256=SHA)

    with pytest.raises(PolicyCheckpointError, match="not an ensemble record"):
        load_with("{not json")
    with pytest.raises(PolicyCheckpointError, match="expected"):
        load_with({**doc, "format": "other/9"})
    with pytest.raises(PolicyCheckpointError, match="bad member name"):
        load_with({**doc, "members": ["member_0", "../s0"],
                   "members_policy_json_sha256": {"member_0": "0", "../s0": "0"}})
    with pytest.raises(FileNotFoundError, match="missing from the ensemble"):
        load_with({**doc, "members": ["member_0", "member_9"],
                   "members_policy_json_sha256": {"member_0": doc["members_policy_json_sha256"]["member_0"],
                                                  "member_9": "0"}})
    # a member swapped for another checkpoint: its policy.json no longer matches the record
    shutil.rmtree(out / "member_1")
    shutil.copytree(dirs[0], out / "member_1")
    with pytest.raises(PolicyCheckpointError, match="sha256 differs"):
        CheckpointEnsemble.load(out, encoder_sha256=SHA)


def test_ensemble_policy_cli(members, tmp_path, capsys):
    from dynaflip_ros.cli import main

    _, dirs = members
    out = tmp_path / "ens"
    assert main(["ensemble-policy", "--member", str(dirs[0]), "--member", str(dirs[1]), "--out", str(out)]) == 0
    assert "ensemble of 2 policies written" in capsys.readouterr().out and (out / "ensemble.json").is_file()
    assert main(["ensemble-policy", "--member", str(dirs[0]), "--out", str(tmp_path / "x")]) == 2
    assert "at least 2 members" in capsys.readouterr().err
    assert main(["ensemble-policy", "--member", str(dirs[0]), "--member", str(tmp_path / "nope"),
                 "--out", str(tmp_path / "x")]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_init_from_an_ensemble_names_a_member(members, tmp_path):
    from dynaflip_ros.policies.checkpoint import load_init
    from dynaflip_ros.policies.checkpoint_ensemble import write_ensemble

    _, dirs = members
    out = write_ensemble(dirs, tmp_path / "ens")
    with pytest.raises(PolicyCheckpointError, match="start from one of its members, e.g. --init .*member_0"):
        load_init(out, DiffusionModelConfig(language_conditioning=False), DIM, SHA, None, "recompute")
    runner, _ = load_init(out / "member_0", DiffusionModelConfig(language_conditioning=False), DIM, SHA, None,
                          "recompute")
    assert runner.encoder_sha256 == SHA


def test_load_deployed_policy_warms_up_and_wraps_a_temporal_ensemble(members, tmp_path):
    from dynaflip_ros.policies.checkpoint_ensemble import CheckpointEnsemble, load_deployed_policy, write_ensemble
    from dynaflip_ros.policies.ensemble import TemporallyEnsembledPolicy

    _, dirs = members
    out = write_ensemble(dirs, tmp_path / "ens")
    plain, warm_s = load_deployed_policy(out, encoder_sha256=SHA, samples_per_chunk=2, num_threads=1)
    assert isinstance(plain, CheckpointEnsemble) and warm_s > 0.0
    te, _ = load_deployed_policy(out, encoder_sha256=SHA, samples_per_chunk=2, num_threads=1,
                                 temporal_ensemble_coeff=0.01)
    assert isinstance(te, TemporallyEnsembledPolicy) and te.weights_sha256 == plain.weights_sha256
    first, second = te.predict_action_chunk(_obs(0)), te.predict_action_chunk(_obs(1))
    assert first.actions.shape == second.actions.shape and second.t0_s > first.t0_s
