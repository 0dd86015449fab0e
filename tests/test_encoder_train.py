"""DynaFLIP pre-training loop and `dynaflip train-encoder` on a tiny synthetic dataset."""
import hashlib
import json

import numpy as np
import pytest
import torch
import yaml

from dynaflip_ros.configs.encoder import EncoderConfig, EncoderModelConfig, EncoderTrainConfig
from dynaflip_ros.configs.io import to_dict
from synthetic_dataset import write_synthetic_dataset

torch.set_num_threads(1)  # a shared 2-core machine: 1 thread avoids OpenMP oversubscription


class HashTextEmbedder:
    """Test double for encoder.text.TextEmbedder: a fixed random unit vector per string."""

    def embed(self, texts):
        out = []
        for t in texts:
            rng = np.random.default_rng(int(hashlib.sha256(t.encode()).hexdigest()[:8], 16))
            v = rng.normal(size=384)
            out.append(v / np.linalg.norm(v))
        return np.asarray(out, np.float32)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("synth") / "ds", n_episodes=6, length=30, idle_tail=6)


def _cfg(steps, batch_size, seed=0, **train_kw) -> EncoderConfig:
    train = dict(steps=steps, batch_size=batch_size, lr=1e-3, warmup_steps=0, log_every=1, save_every=0, seed=seed,
                 num_threads=1, eval_every=0, retrieval_clips=16)
    train.update(train_kw)
    return EncoderConfig(model=EncoderModelConfig(input_hw=(64, 64)), train=EncoderTrainConfig(**train))


def _fixed_batch_loss(model, cfg, sampler, text_emb):
    """The full objective on one fixed, un-augmented batch (train-mode BatchNorm, no grad)."""
    from dynaflip_ros.encoder.losses import dynaflip_loss
    from dynaflip_ros.encoder.train import images_to_tensor

    batch = sampler.sample(32, np.random.default_rng(123))
    text_ids = torch.from_numpy(batch.text_ids)
    valid = torch.from_numpy(batch.flow_valid)
    model.train()
    with torch.no_grad():
        out = model(images_to_tensor(batch.images), text_emb[text_ids], torch.from_numpy(batch.flow), valid)
        terms = dynaflip_loss(out.z_image, out.z_language, out.z_flow, model.logit_scale,
                              out.image_features[:, list(batch.tcn_views)], torch.from_numpy(batch.episode_ids),
                              out.flow_pred, out.flow_target, cfg.loss, text_ids, torch.from_numpy(batch.language_ids),
                              valid)
    return terms.stats


@pytest.mark.slow
def test_twenty_step_training_smoke_loss_decreases(dataset, tmp_path):
    from dynaflip_ros.data.triplets import TripletSampler, load_episode_frames
    from dynaflip_ros.encoder.manifest import sha256_file
    from dynaflip_ros.encoder.model import DynaFlipModel, load_dynaflip_model, load_image_encoder
    from dynaflip_ros.encoder.train import train_encoder

    cfg = _cfg(steps=20, batch_size=8, save_every=10, eval_every=10)
    out = tmp_path / "enc"
    result = train_encoder(dataset, out, cfg, text_embedder=HashTextEmbedder(), progress=False, verbose=False)

    lines = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    records = [r for r in lines if r["event"] == "train"]
    assert [r["step"] for r in records] == list(range(20))
    # held-out retrieval every eval_every steps and at the end, next to its chance level
    evals = [r for r in lines if r["event"] == "retrieval"]
    assert [r["step"] for r in evals] == [9, 19]
    for r in evals:
        assert 0.0 <= r["transition_to_language_top1"] <= 1.0 and 0.0 <= r["transition_to_flow_top1"] <= 1.0
        assert r["chance_language"] == pytest.approx(1.0 / r["language_groups"])
        assert r["chance_flow"] == pytest.approx(1.0 / r["clips"]) and 2 <= r["clips"] <= 16
    run = result.manifest.config["run"]
    assert run["retrieval"] == result.retrieval and {"event": "retrieval", **result.retrieval} == evals[-1]
    assert set(run["retrieval"]) >= {"transition_to_language_top1", "chance_language", "transition_to_flow_top1",
                                     "chance_flow", "clips"}
    assert run["data"]["episodes_heldout"] == 1 and run["data"]["clips_heldout"] > 0
    assert json.loads((out / "checkpoints" / "latest.json").read_text())["step"] == 20  # --resume: nothing to do
    for r in records:
        for key in ("loss", "loss_align", "loss_tcn", "loss_actor", "lr", "grad_norm", "temperature"):
            assert np.isfinite(r[key]), key
        assert r["loss"] == pytest.approx(r["loss_align"] + 0.5 * r["loss_tcn"] + 0.5 * r["loss_actor"], rel=1e-4)
    losses = [r["loss"] for r in records]
    assert np.mean(losses[-5:]) < np.mean(losses[:5]), losses

    # the artifact: final, complete, loadable, sha256 consistent
    assert result.manifest.weights_sha256 == sha256_file(out / "image_encoder.safetensors")
    assert result.manifest.config["run"]["complete"] is True and result.manifest.config["run"]["step"] == 20
    assert result.data["clips_kept"] > 0 and result.seconds_per_step > 0
    enc, manifest = load_image_encoder(out)
    assert manifest.embedding_dim == 128 and tuple(manifest.input_hw) == (64, 64)

    # on a fixed batch the trained networks beat their own initialisation
    frames = load_episode_frames(dataset, (64, 64), progress=False)
    sampler = TripletSampler(frames, cfg.data)
    text_emb = torch.from_numpy(HashTextEmbedder().embed(sampler.texts))
    trained, _, _ = load_dynaflip_model(out)
    torch.manual_seed(cfg.train.seed)
    initial = DynaFlipModel(cfg, imagenet_init=True)  # the same init train_encoder started from
    initial.flow_normalizer.load_state_dict(trained.flow_normalizer.state_dict())
    before = _fixed_batch_loss(initial, cfg, sampler, text_emb)
    after = _fixed_batch_loss(trained, cfg, sampler, text_emb)
    assert after["loss"] < before["loss"] - 0.1, (before, after)
    assert after["loss_align"] < before["loss_align"], (before, after)


def test_training_is_deterministic_for_a_seed(dataset, tmp_path):
    from dynaflip_ros.encoder.train import train_encoder

    shas = []
    for name in ("a", "b"):
        r = train_encoder(dataset, tmp_path / name, _cfg(steps=2, batch_size=4, seed=7), text_embedder=HashTextEmbedder(),
                          progress=False, verbose=False)
        shas.append(r.manifest.weights_sha256)
    assert shas[0] == shas[1]


def test_lr_schedule_warmup_then_cosine():
    from dynaflip_ros.encoder.train import lr_multiplier

    tc = EncoderTrainConfig(steps=100, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_multiplier(0, tc) == pytest.approx(0.1)
    assert lr_multiplier(9, tc) == pytest.approx(1.0)
    assert lr_multiplier(10, tc) == pytest.approx(1.0)
    assert lr_multiplier(55, tc) == pytest.approx(0.55)
    assert lr_multiplier(100, tc) == pytest.approx(0.1)
    mults = [lr_multiplier(s, tc) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(mults, mults[1:]))


@pytest.mark.slow
def test_cli_train_encoder_end_to_end_with_real_text_encoder(dataset, tmp_path, capsys):
    from dynaflip_ros.cli import main

    cfg = _cfg(steps=2, batch_size=4)
    cfg_path = tmp_path / "encoder.yaml"
    cfg_path.write_text(yaml.safe_dump(to_dict(cfg)))
    out = tmp_path / "enc"
    rc = main(["train-encoder", "--dataset", str(dataset), "--out", str(out), "--config", str(cfg_path),
               "--steps", "3", "--seed", "1", "--no-progress"])
    assert rc == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["train"]["steps"] == 3 and manifest["config"]["train"]["seed"] == 1
    run = manifest["config"]["run"]
    assert len(run["texts"]) == run["data"]["distinct_texts"] > 2 * len(run["language_groups"])  # paraphrases
    assert (out / "text_embeddings.safetensors").is_file()  # MiniLM embeddings cached per string
    printed = capsys.readouterr().out
    assert "step      0" in printed and "saved" in printed

    assert main(["train-encoder", "--dataset", str(tmp_path / "none"), "--out", str(out), "--no-progress"]) == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  stepz: 3\n")
    assert main(["train-encoder", "--dataset", str(dataset), "--out", str(out), "--config", str(bad)]) == 2
    with pytest.raises(SystemExit) as e:
        main(["train-encoder", "--help"])
    assert e.value.code == 0
    assert "dynaflip train-encoder --dataset" in capsys.readouterr().out


def test_text_embedder_cache(tmp_path):
    from dynaflip_ros.encoder.text import TEXT_DIM, TextEmbedder

    texts = ["lift the red cube off the table", "open the gripper and drop the red cube into the sink"]
    path = tmp_path / "text.safetensors"
    emb = TextEmbedder(cache_path=path)
    first = emb.embed(texts + texts[:1])
    assert first.shape == (3, TEXT_DIM) and first.dtype == np.float32
    assert np.allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(first[0], first[2]) and not np.allclose(first[0], first[1])
    # related sentences are closer than unrelated ones (a real sentence encoder, not hashing)
    more = emb.embed(["lift the red block off the table", "move the gripper away from the sink"])
    assert float(first[0] @ more[0]) > float(first[0] @ more[1])
    again = TextEmbedder(cache_path=path)  # served from the file, the model is not loaded
    assert np.array_equal(again.embed(texts), first[:2]) and again._model is None
    with pytest.raises(ValueError):
        emb.embed([""])
