"""Policy data path: embedding a LeRobotDataset v3 (cache), LeRobot delta-timestamp parity of the
training samples, and `dynaflip train-policy` end to end with a fake encoder backend."""
from __future__ import annotations

import dataclasses

import json
import shutil

import numpy as np
import pytest

from dynaflip_ros.configs.policy import DiffusionModelConfig
from dynaflip_ros.data import schema
from dynaflip_ros.encoder.manifest import EncoderManifest
from fake_text import FakeText  # noqa: E402

EPISODE_LENGTHS = (7, 9, 12)
IMAGE_HW = (24, 32)


class FakeBackend:
    """EncoderBackend stand-in: (B, H, W, 3) uint8 -> (B, 5) float32 of exact pixel statistics."""

    def __init__(self, sha: str = "1" * 64, out_dim: int | None = None, nan: bool = False):
        self.manifest = EncoderManifest(
            input_hw=IMAGE_HW, mean=(0.5,) * 3, std=(0.5,) * 3, embedding_dim=5, weights_sha256=sha, architecture="fake"
        )
        self.calls = 0
        self.out_dim = out_dim
        self.nan = nan

    def embed(self, images: np.ndarray) -> np.ndarray:
        assert images.dtype == np.uint8 and images.ndim == 4 and images.shape[-1] == 3
        self.calls += 1
        x = images.astype(np.float32) / 255.0
        out = np.concatenate(
            [x.mean(axis=(1, 2)), x[:, 0, 0, :1], x[:, -1, -1, 2:]], axis=1
        ).astype(np.float32)  # (B, 5)
        if self.out_dim is not None:
            out = out[:, : self.out_dim]
        if self.nan:
            out[:, 0] = np.nan
        return out


def make_dataset(root, seed: int = 0, lengths=EPISODE_LENGTHS) -> None:
    """Tiny LeRobotDataset v3 with the recording schema (random images, smooth joint motion)."""
    from dynaflip_ros._compat import torchvision_shim

    torchvision_shim.apply()
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    rng = np.random.default_rng(seed)
    ds = LeRobotDataset.create(
        repo_id="local/policy_test", fps=schema.RECORD_FPS, root=root, features=schema.features(IMAGE_HW), use_videos=False
    )
    for ep, length in enumerate(lengths):
        q = np.cumsum(rng.normal(0, 0.05, (length + 1, 7)), axis=0).astype(np.float32)
        for i in range(length):
            ds.add_frame(
                {
                    schema.IMAGE_KEY: rng.integers(0, 256, (*IMAGE_HW, 3), dtype=np.uint8),
                    schema.STATE_KEY: q[i],
                    schema.ACTION_KEY: q[i + 1],
                    schema.TRACKS_KEY: rng.normal(size=(schema.N_TRACK, 3)).astype(np.float32),
                    schema.VALID_KEY: np.ones(schema.N_TRACK, np.float32),
                    schema.PHASE_KEY: np.array([i % len(schema.PHASES)], np.int64),
                    "task": ["Pick the red cube into the sink", "Pick the blue cup into the sink"][ep % 2],
                }
            )
        ds.save_episode()
    ds.finalize()


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("policy_data") / "demos"
    make_dataset(root)
    return root


def test_compute_embeddings_matches_frames_and_caches(dataset_root, tmp_path):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from dynaflip_ros.policies.embeddings import EmbeddedEpisodes, cache_path, compute_embeddings

    enc = FakeBackend()
    cache = tmp_path / "cache"
    emb = compute_embeddings(dataset_root, enc, batch_size=4, cache_dir=cache, progress=False)
    n = sum(EPISODE_LENGTHS)
    assert emb.embedding.shape == (n, 5) and emb.embedding.dtype == np.float32
    assert emb.state.shape == (n, 7) and emb.action.shape == (n, 7)
    assert np.array_equal(emb.episode_index, np.repeat(np.arange(3), EPISODE_LENGTHS))
    assert np.array_equal(emb.frame_index, np.concatenate([np.arange(k) for k in EPISODE_LENGTHS]))
    assert emb.task[0] == "Pick the red cube into the sink" and emb.task[-1] == "Pick the red cube into the sink"
    assert emb.task[EPISODE_LENGTHS[0]] == "Pick the blue cup into the sink"
    assert emb.fps == schema.RECORD_FPS and emb.encoder_sha256 == "1" * 64
    assert enc.calls == int(np.ceil(n / 4))

    # independent read path: LeRobotDataset.__getitem__ (float CHW in [0, 1]) -> same uint8 pixels
    ds = LeRobotDataset("local/policy_test", root=dataset_root)
    for row in (0, 8, n - 1):
        item = ds[row]
        img = np.round(item[schema.IMAGE_KEY].numpy().transpose(1, 2, 0) * 255).astype(np.uint8)
        np.testing.assert_allclose(emb.embedding[row], FakeBackend().embed(img[None])[0], rtol=0, atol=1e-6)
        np.testing.assert_array_equal(emb.state[row], item[schema.STATE_KEY].numpy())
        np.testing.assert_array_equal(emb.action[row], item[schema.ACTION_KEY].numpy())

    # cache hit: no encoder call, identical arrays; the file is a plain (pickle-free) npz
    path = cache_path(cache, enc.manifest, emb.dataset_fingerprint)
    assert path.is_file()
    with np.load(path, allow_pickle=False) as z:
        assert z["embedding"].shape == (n, 5)
    enc2 = FakeBackend()
    again = compute_embeddings(dataset_root, enc2, batch_size=4, cache_dir=cache, progress=False)
    assert enc2.calls == 0
    np.testing.assert_array_equal(again.embedding, emb.embedding)
    assert isinstance(EmbeddedEpisodes.load_npz(path), EmbeddedEpisodes)

    # another encoder sha -> recomputed into its own cache file
    enc3 = FakeBackend(sha="2" * 64)
    compute_embeddings(dataset_root, enc3, batch_size=64, cache_dir=cache, progress=False)
    assert enc3.calls == 1 and len(list(cache.glob("*.npz"))) == 2

    # the same weights with another output width (exported with / without patch tokens) -> its own file
    wide = FakeBackend()
    wide.manifest = dataclasses.replace(wide.manifest, embedding_dim=3)
    wide.out_dim = 3
    assert compute_embeddings(dataset_root, wide, batch_size=64, cache_dir=cache, progress=False).embedding_dim == 3
    assert wide.calls == 1 and len(list(cache.glob("*.npz"))) == 3

    # the same weights and width at another input size (other pixels, other embeddings) -> its own file
    resized = FakeBackend()
    resized.manifest = dataclasses.replace(resized.manifest, input_hw=(IMAGE_HW[0] // 2, IMAGE_HW[1] // 2))
    compute_embeddings(dataset_root, resized, batch_size=64, cache_dir=cache, progress=False)
    assert resized.calls == 1 and len(list(cache.glob("*.npz"))) == 4


def test_dataset_fingerprint_tracks_content_not_path(dataset_root, tmp_path):
    from dynaflip_ros.policies.embeddings import dataset_fingerprint

    copy = tmp_path / "copy"
    shutil.copytree(dataset_root, copy)
    assert dataset_fingerprint(copy) == dataset_fingerprint(dataset_root)
    other = tmp_path / "other"
    make_dataset(other, seed=1)
    assert dataset_fingerprint(other) != dataset_fingerprint(dataset_root)
    with pytest.raises(FileNotFoundError):
        dataset_fingerprint(tmp_path / "missing")


def test_compute_embeddings_rejects_bad_backend_output(dataset_root):
    from dynaflip_ros.policies.embeddings import compute_embeddings

    with pytest.raises(ValueError, match="expected"):
        compute_embeddings(dataset_root, FakeBackend(out_dim=3), progress=False)
    with pytest.raises(ValueError, match="NaN"):
        compute_embeddings(dataset_root, FakeBackend(nan=True), progress=False)
    with pytest.raises(ValueError, match="no feature"):
        compute_embeddings(dataset_root, FakeBackend(), image_key="observation.images.wrist", progress=False)



def test_compute_embeddings_refuses_a_dataset_caught_mid_recording(dataset_root, tmp_path):
    """Frames that name a task meta/tasks.parquet does not list yet (the recorder is still
    writing) give a clear ValueError, not an IndexError."""
    import pandas as pd

    from dynaflip_ros.policies.embeddings import compute_embeddings

    copy = tmp_path / "copy"
    shutil.copytree(dataset_root, copy)
    tasks = pd.read_parquet(copy / "meta" / "tasks.parquet")
    assert len(tasks) > 1
    tasks.iloc[:1].to_parquet(copy / "meta" / "tasks.parquet")
    with pytest.raises(ValueError, match="still writing"):
        compute_embeddings(copy, FakeBackend(), progress=False)

@pytest.mark.parametrize("n_obs_steps,horizon,n_action_steps", [(2, 16, 8), (1, 8, 4), (3, 8, 6)])
def test_training_samples_match_lerobot_delta_timestamps(dataset_root, n_obs_steps, horizon, n_action_steps):
    """Our vectorised (obs rows, action rows, is_pad) == LeRobotDataset(delta_timestamps=...)."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from dynaflip_ros.policies.embeddings import compute_embeddings
    from dynaflip_ros.policies.train import delta_indices, query_indices

    model = DiffusionModelConfig(
        n_obs_steps=n_obs_steps, horizon=horizon, n_action_steps=n_action_steps, down_dims=(16, 32)
    )
    emb = compute_embeddings(dataset_root, FakeBackend(), progress=False)
    obs_d, act_d = delta_indices(model)
    assert obs_d == list(range(1 - n_obs_steps, 1))
    assert act_d == list(range(1 - n_obs_steps, 1 - n_obs_steps + horizon))
    fps = schema.RECORD_FPS
    ds = LeRobotDataset(
        "local/policy_test",
        root=dataset_root,
        delta_timestamps={schema.STATE_KEY: [d / fps for d in obs_d], schema.ACTION_KEY: [d / fps for d in act_d]},
    )
    anchors = np.arange(len(emb.state))
    obs_idx, obs_pad = query_indices(emb.episode_index, anchors, obs_d)
    act_idx, act_pad = query_indices(emb.episode_index, anchors, act_d)
    for row in anchors:
        item = ds[int(row)]
        np.testing.assert_array_equal(emb.state[obs_idx[row]], item[schema.STATE_KEY].numpy())
        np.testing.assert_array_equal(obs_pad[row], item[f"{schema.STATE_KEY}_is_pad"].numpy())
        np.testing.assert_array_equal(emb.action[act_idx[row]], item[schema.ACTION_KEY].numpy())
        np.testing.assert_array_equal(act_pad[row], item[f"{schema.ACTION_KEY}_is_pad"].numpy())


def test_anchor_rows_drop_episode_tails():
    from dynaflip_ros.policies.embeddings import EmbeddedEpisodes
    from dynaflip_ros.policies.train import anchor_rows

    lengths = (5, 9)
    n = sum(lengths)
    eps = EmbeddedEpisodes(
        embedding=np.zeros((n, 2), np.float32),
        state=np.zeros((n, 7), np.float32),
        action=np.zeros((n, 7), np.float32),
        episode_index=np.repeat([3, 4], lengths),
        frame_index=np.concatenate([np.arange(k) for k in lengths]),
        task=np.full(n, "t"),
        fps=10.0,
        encoder_sha256="0" * 64,
        dataset_fingerprint="0" * 64,
    )
    assert anchor_rows(eps, 0).tolist() == list(range(n))
    assert anchor_rows(eps, 7).tolist() == [5, 6]  # episode 3 (5 frames) has no anchor left
    with pytest.raises(ValueError, match="frame_index"):
        EmbeddedEpisodes(**{**eps.__dict__, "frame_index": np.arange(n)})
    with pytest.raises(ValueError, match="NaN"):
        bad = eps.embedding.copy()
        bad[0, 0] = np.nan
        EmbeddedEpisodes(**{**eps.__dict__, "embedding": bad})


def test_train_policy_cli_end_to_end(dataset_root, tmp_path, monkeypatch, capsys):
    from dynaflip_ros import cli
    from dynaflip_ros.policies import train as train_mod
    from dynaflip_ros.policies.base import EncoderMismatchError
    from dynaflip_ros.policies.diffusion import DiffusionPolicyRunner

    enc = FakeBackend(sha="3" * 64)
    seen = {}

    def fake_loader(encoder_dir, backend, num_threads=2):
        seen.update(encoder_dir=str(encoder_dir), backend=backend)
        return enc

    monkeypatch.setattr(train_mod, "load_encoder_backend", fake_loader)
    monkeypatch.setattr(train_mod, "load_text_encoder", FakeText)
    encoder_dir = tmp_path / "encoder"
    encoder_dir.mkdir()
    config = tmp_path / "policy.yaml"
    config.write_text(
        "model:\n  down_dims: [16, 32]\n  diffusion_step_embed_dim: 16\n"
        "train:\n  log_every_steps: 2\n  eval_every_steps: 3\n  val_fraction: 0.34\n  checkpoint_every_steps: 2\n"
        "  num_threads: 1\n"
    )
    out = tmp_path / "policy"
    rc = cli.main(
        [
            "train-policy", "--dataset", str(dataset_root), "--encoder", str(encoder_dir), "--out", str(out),
            "--config", str(config), "--steps", "4", "--batch-size", "8", "--seed", "5",
            "--cache-dir", str(tmp_path / "cache"), "--no-progress",
        ]
    )  # fmt: skip
    assert rc == 0
    assert seen == {"encoder_dir": str(encoder_dir), "backend": "onnxruntime"}
    summary = json.loads(capsys.readouterr().out.split("policy written to")[0])
    assert summary["steps"] == 4 and summary["checkpoint_bytes"] > 0
    meta = json.loads((out / "policy.json").read_text())
    assert meta["encoder"]["weights_sha256"] == "3" * 64
    assert meta["encoder"]["manifest"]["architecture"] == "fake"
    assert meta["train"]["seed"] == 5 and meta["train"]["batch_size"] == 8
    assert meta["train"]["train_time_s"] > 0 and len(meta["train"]["val_episodes"]) == 1
    assert meta["model"]["down_dims"] == [16, 32]
    assert not list(out.glob("*.pt")) and not list(out.glob("*.pkl")) and not list(out.glob("*.bin"))
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["event"] == "train"] == [2, 4]
    assert [r["step"] for r in log if r["event"] == "eval"] == [3, 4]
    assert "model.safetensors" in meta["files_sha256"] and "train_log.jsonl" not in meta["files_sha256"]
    # language conditioning (the default): text encoder + data, recipe and steps recorded
    assert meta["model"]["language_conditioning"] is True and meta["environment_state_dim"] == 5 + 384
    assert meta["text_encoder"] == {"name": "fake-text", "dim": 384, "weights_sha256": "e" * 64}
    assert meta["train"]["dataset"]["root"] == str(dataset_root.resolve())
    assert meta["train"]["dataset"]["fingerprint"] == meta["train"]["dataset_fingerprint"]
    assert meta["train"]["dataset"]["episodes"] == 3 and meta["train"]["dataset"]["instructions"] == 2
    assert meta["train"]["init"] is None and meta["train"]["total_steps"] == 4 and meta["train"]["config"]["train"]["steps"] == 4
    assert not (out / "checkpoints").exists()  # resumable checkpoints are deleted once the policy is written
    (out / "train_log.jsonl").unlink()  # logs are not part of the checkpoint
    runner = DiffusionPolicyRunner.load(out, encoder_sha256="3" * 64, text_encoder=FakeText())
    assert runner.embedding_dim == 5 and runner.model_config.down_dims == (16, 32)
    with pytest.raises(EncoderMismatchError):
        DiffusionPolicyRunner.load(out, encoder_sha256="4" * 64, text_encoder=FakeText())

    # --init from it: the init's checkpoint sha256 is recorded, steps add up
    out2 = tmp_path / "policy2"
    base = ["train-policy", "--dataset", str(dataset_root), "--encoder", str(encoder_dir), "--config", str(config),
            "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--steps", "2", "--batch-size", "8"]
    assert cli.main([*base, "--out", str(out2), "--init", str(out)]) == 0
    capsys.readouterr()
    meta2 = json.loads((out2 / "policy.json").read_text())
    assert meta2["train"]["init"]["weights_sha256"] == meta["files_sha256"]["model.safetensors"]
    assert meta2["train"]["init"]["same_encoder"] is True and meta2["train"]["total_steps"] == 6
    # --resume (as train-encoder's): a complete run in --out is left as it is; none there: a fresh run
    weights = (out2 / "model.safetensors").read_bytes()
    assert cli.main([*base, "--out", str(out2), "--init", str(out), "--resume"]) == 0
    assert "already complete" in capsys.readouterr().out and (out2 / "model.safetensors").read_bytes() == weights
    assert cli.main([*base, "--out", str(out2), "--resume"]) == 0  # not the same run (no --init): trained afresh
    assert "policy written to" in capsys.readouterr().out
    assert json.loads((out2 / "policy.json").read_text())["train"]["init"] is None
    assert cli.main([*base, "--out", str(tmp_path / "o3"), "--init", str(tmp_path / "nope")]) == 2
    assert "--init" in capsys.readouterr().err


def test_train_policy_cli_rejects_bad_arguments(tmp_path, capsys):
    from dynaflip_ros import cli

    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  horizon: 10\n")  # not a multiple of 2**len(down_dims)
    args = ["train-policy", "--dataset", str(tmp_path), "--encoder", str(tmp_path), "--out", str(tmp_path / "o")]
    assert cli.main(args + ["--config", str(bad)]) == 2
    assert "horizon" in capsys.readouterr().err
    assert cli.main(["train-policy", "--dataset", str(tmp_path / "nope"), "--encoder", str(tmp_path), "--out", "x"]) == 2
    with pytest.raises(SystemExit):
        cli.main(["train-policy", "--help"])
    assert "dynaflip train-policy --dataset" in capsys.readouterr().out


def test_paraphrases_come_from_the_side_records(dataset_root, tmp_path):
    """extra["instruction_paraphrases"] of the recorder's side file join each episode's task string;
    every distinct string is embedded once and cached with the text encoder's sha256."""
    from dynaflip_ros.data.dataset_io import EPISODES_SIDE_PATH
    from dynaflip_ros.policies.embeddings import compute_embeddings

    root = shutil.copytree(dataset_root, tmp_path / "demos")
    paras = {0: ["put the red cube in the sink", "drop the red block into the basin"], 1: [], 2: ["put the red cube in the sink"]}
    lines = [json.dumps({"episode_index": ep, "task": "t", "extra": {"instruction_paraphrases": p}}) for ep, p in paras.items()]
    (root / EPISODES_SIDE_PATH).write_text("\n".join(lines) + "\n")
    text = FakeText()
    emb = compute_embeddings(root, FakeBackend(), cache_dir=tmp_path / "cache", progress=False, text_encoder=text)
    assert emb.paraphrases(0) == ["Pick the red cube into the sink", *paras[0]]
    assert emb.paraphrases(1) == ["Pick the blue cup into the sink"]
    assert emb.paraphrases(2) == ["Pick the red cube into the sink", "put the red cube in the sink"]
    assert len(emb.instruction_texts) == 4 and emb.instruction_embedding.shape == (4, 384)
    assert len(text.calls) == 1 and sorted(text.calls[0]) == sorted(emb.instruction_texts.tolist())
    assert emb.text_encoder_sha256 == "e" * 64
    again = compute_embeddings(root, FakeBackend(), cache_dir=tmp_path / "cache", progress=False, text_encoder=FakeText())
    np.testing.assert_array_equal(again.instruction_embedding, emb.instruction_embedding)  # cached
    other = FakeText(sha="d" * 64)
    compute_embeddings(root, FakeBackend(), cache_dir=tmp_path / "cache", progress=False, text_encoder=other)
    assert len(other.calls) == 1  # another text encoder: its own text embeddings
    (root / EPISODES_SIDE_PATH).write_text(json.dumps({"episode_index": 0, "extra": {"instruction_paraphrases": [""]}}))
    with pytest.raises(ValueError, match="instruction_paraphrases"):
        compute_embeddings(root, FakeBackend(), progress=False)
