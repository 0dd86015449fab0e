"""`dynaflip train-encoder --resume` and `--init` (encoder/checkpoint.py) on a tiny synthetic dataset.

A run killed after its last checkpoint and resumed ends with the same weights and log as an
uninterrupted run of the same seed; --resume without a checkpoint starts fresh, of a complete
run does nothing; --init starts from another artifact's weights and refuses another
architecture.
"""
import json
import shutil

import numpy as np
import pytest
import torch

from dynaflip_ros.configs.encoder import EncoderConfig, EncoderModelConfig, EncoderTrainConfig, TripletDataConfig
from synthetic_dataset import write_synthetic_dataset
from test_encoder_train import HashTextEmbedder

torch.set_num_threads(1)
_TIMING = {"step_time_s", "elapsed_s"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("synth") / "ds", n_episodes=4, length=20, idle_tail=4)


def _cfg(model=None, data=None, **train_kw) -> EncoderConfig:
    train = dict(steps=6, batch_size=4, lr=1e-3, warmup_steps=2, log_every=1, save_every=2, eval_every=3,
                 retrieval_clips=8, seed=3, num_threads=1)
    train.update(train_kw)
    return EncoderConfig(model=model or EncoderModelConfig(input_hw=(64, 64)), data=data or TripletDataConfig(),
                         train=EncoderTrainConfig(**train))


def _train(dataset, out, cfg, **kw):
    from dynaflip_ros.encoder.train import train_encoder

    return train_encoder(dataset, out, cfg, text_embedder=HashTextEmbedder(), progress=False, verbose=False, **kw)


def _log(out):
    return [{k: v for k, v in json.loads(line).items() if k not in _TIMING}
            for line in (out / "train_log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def uninterrupted(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("enc") / "a"
    return out, _train(dataset, out, _cfg())


def test_resume_after_a_crash_equals_the_uninterrupted_run(dataset, uninterrupted, tmp_path, monkeypatch):
    from dynaflip_ros.encoder import checkpoint as ckpt
    from dynaflip_ros.encoder import losses

    ref_out, ref = uninterrupted
    out = tmp_path / "b"
    real_loss, calls = losses.dynaflip_loss, []

    def dies_in_step_5(*args, **kwargs):
        calls.append(1)
        if len(calls) == 6:  # steps 0..4 done, the checkpoint holds steps 0..3
            raise KeyboardInterrupt("killed")
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(losses, "dynaflip_loss", dies_in_step_5)
    with pytest.raises(KeyboardInterrupt):
        _train(dataset, out, _cfg())
    monkeypatch.setattr(losses, "dynaflip_loss", real_loss)
    latest = json.loads((out / "checkpoints" / "latest.json").read_text())
    assert latest["step"] == 4 and sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "latest.json", "step_00000004.model.safetensors", "step_00000004.optim.safetensors"]
    assert json.loads((out / "manifest.json").read_text())["config"]["run"]["complete"] is False
    assert [r["step"] for r in _log(out) if r["event"] == "train"] == [0, 1, 2, 3, 4]  # step 4 is lost

    # another config or a damaged file is refused, naming what differs
    with pytest.raises(ckpt.EncoderCheckpointError, match="train.lr"):
        _train(dataset, out, _cfg(lr=2e-3), resume=True)
    damaged = tmp_path / "damaged"
    shutil.copytree(out, damaged)
    f = damaged / "checkpoints" / "step_00000004.optim.safetensors"
    f.write_bytes(f.read_bytes()[:-8])
    with pytest.raises(ckpt.EncoderCheckpointError, match="damaged"):
        _train(dataset, damaged, _cfg(), resume=True)

    # resumed (log_every / eval_every / threads may differ): same weights, same log as run a
    result = _train(dataset, out, _cfg(num_threads=1), resume=True)
    assert result.manifest.weights_sha256 == ref.manifest.weights_sha256
    assert (out / "heads.safetensors").read_bytes() == (ref_out / "heads.safetensors").read_bytes()
    assert _log(out) == _log(ref_out)
    run = result.manifest.config["run"]
    assert run["complete"] is True and run["resumed_from_step"] == 4 and run["retrieval"] == ref.retrieval
    # a complete run keeps its final checkpoint: resuming it trains nothing and changes no weight
    assert json.loads((out / "checkpoints" / "latest.json").read_text())["step"] == 6
    again = _train(dataset, out, _cfg(), resume=True)
    assert again.manifest.weights_sha256 == ref.manifest.weights_sha256 and _log(out) == _log(ref_out)
    assert again.manifest.config["run"]["resumed_from_step"] == 6


def test_resume_without_a_checkpoint_starts_fresh(dataset, uninterrupted, tmp_path, capsys):
    from dynaflip_ros.encoder.train import train_encoder

    _, ref = uninterrupted
    result = train_encoder(dataset, tmp_path / "fresh", _cfg(), text_embedder=HashTextEmbedder(), progress=False,
                           verbose=True, resume=True)
    printed = capsys.readouterr().out
    assert "--resume: no checkpoint" in printed and "starting a fresh run" in printed
    assert result.manifest.weights_sha256 == ref.manifest.weights_sha256


def test_checkpoint_round_trip_restores_every_state(tmp_path):
    """Model buffers, optimiser moments, torch and numpy RNG states come back bit for bit."""
    from dynaflip_ros.encoder import checkpoint as ckpt

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    rng = np.random.default_rng(5)
    rng.random(3)
    ckpt.save_checkpoint(tmp_path, 1, model, opt, rng, [{"step": 0}], {"config": {"a": 1}})
    expect_np, expect_torch = rng.random(), torch.rand(1)

    torch.manual_seed(99)
    model2 = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    opt2 = torch.optim.AdamW(model2.parameters(), lr=1e-2)
    rng2 = np.random.default_rng(0)
    with pytest.raises(ckpt.EncoderCheckpointError, match="config.a"):
        ckpt.load_checkpoint(tmp_path, model2, opt2, rng2, {"config": {"a": 2}})
    state = ckpt.load_checkpoint(tmp_path, model2, opt2, rng2, {"config": {"a": 1}})
    assert state.step == 1 and state.log == [{"step": 0}]
    for (k, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), k
    for sa, sb in zip(opt.state_dict()["state"].values(), opt2.state_dict()["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in ("exp_avg", "exp_avg_sq", "step"))
    assert rng2.random() == expect_np and torch.equal(torch.rand(1), expect_torch)
    assert not any(p.suffix == ".pt" or p.suffix == ".pkl" for p in (tmp_path / "checkpoints").iterdir())


def test_init_from_an_artifact(dataset, uninterrupted, tmp_path):
    from dynaflip_ros.encoder.checkpoint import EncoderInitError, init_from_artifact
    from dynaflip_ros.encoder.model import DynaFlipModel, load_dynaflip_model

    ref_out, ref = uninterrupted
    trained, _, _ = load_dynaflip_model(ref_out)
    model = DynaFlipModel(_cfg(), imagenet_init=False)
    info = init_from_artifact(model, ref_out, _cfg(model=EncoderModelConfig(input_hw=(64, 64), bn_mode="frozen")))
    assert info["heads"] is True and info["weights_sha256"] == ref.manifest.weights_sha256
    for (k, a), b in zip(trained.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), k

    # another architecture: every differing field named
    with pytest.raises(EncoderInitError, match="model.embedding_dim 128 != 64"):
        init_from_artifact(DynaFlipModel(_cfg(), imagenet_init=False), ref_out,
                           _cfg(model=EncoderModelConfig(input_hw=(64, 64), embedding_dim=64)))
    with pytest.raises(EncoderInitError, match="data.flow_window 6 != 4"):
        init_from_artifact(model, ref_out, _cfg(data=TripletDataConfig(frame_offset=3, flow_window=4)))
    # an exported directory without heads: only the image encoder (no flow-shape constraint)
    enc_only = tmp_path / "exported"
    enc_only.mkdir()
    for name in ("image_encoder.safetensors", "manifest.json"):
        shutil.copy(ref_out / name, enc_only / name)
    other = DynaFlipModel(_cfg(data=TripletDataConfig(frame_offset=3, flow_window=4)), imagenet_init=False)
    assert init_from_artifact(other, enc_only, _cfg(data=TripletDataConfig(frame_offset=3, flow_window=4)))["heads"] is False
    assert torch.equal(other.image_encoder.fc.weight, trained.image_encoder.fc.weight)

    # a training run from it records where it started
    result = _train(dataset, tmp_path / "c", _cfg(steps=2, save_every=0, eval_every=0), init=ref_out)
    assert result.manifest.config["run"]["init"]["weights_sha256"] == ref.manifest.weights_sha256


def test_cli_init_and_resume_errors_are_one_line(dataset, tmp_path, capsys):
    from dynaflip_ros.cli import main

    base = ["train-encoder", "--dataset", str(dataset), "--out", str(tmp_path / "x"), "--no-progress"]
    assert main(base + ["--init", str(tmp_path / "missing")]) == 2
    assert "--init" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train-encoder", "--help"])
    help_text = capsys.readouterr().out
    assert "--init DIR" in help_text and "--resume" in help_text
