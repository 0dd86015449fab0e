"""Resumable policy training and --init (policies.checkpoint): a run killed after a checkpoint and
resumed ends with the same weights as an uninterrupted one; the checkpoint layout is atomic and
pickle-free; resuming another run, or initialising from another architecture, is refused."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dynaflip_ros.configs.policy import DiffusionModelConfig, PolicyConfig, PolicyTrainConfig
from dynaflip_ros.errors import UserError
from dynaflip_ros.policies.base import PolicyCheckpointError
from dynaflip_ros.policies.embeddings import EmbeddedEpisodes
from fake_text import FakeText  # noqa: E402

SHA = "3" * 64
TINY = DiffusionModelConfig(down_dims=(16, 32), diffusion_step_embed_dim=16)
LENGTHS = (20, 22, 20, 21)
TASKS = ("put the red cube in the sink", "drop the blue ball into the basin")


class Crash(Exception):
    """Stands for a killed process."""


def episodes(dim: int = 8, seed: int = 0) -> EmbeddedEpisodes:
    rng = np.random.default_rng(seed)
    n = sum(LENGTHS)
    return EmbeddedEpisodes(
        embedding=rng.normal(size=(n, dim)).astype(np.float32),
        state=rng.normal(size=(n, 7)).astype(np.float32),
        action=rng.normal(size=(n, 7)).astype(np.float32),
        episode_index=np.repeat(np.arange(len(LENGTHS)), LENGTHS),
        frame_index=np.concatenate([np.arange(k) for k in LENGTHS]),
        task=np.repeat([TASKS[i % 2] for i in range(len(LENGTHS))], LENGTHS),
        fps=10.0,
        encoder_sha256=SHA,
        dataset_fingerprint="f" * 64,
    )


def config(steps: int = 8, model: DiffusionModelConfig = TINY, **train) -> PolicyConfig:
    kwargs = dict(steps=steps, batch_size=8, warmup_steps=2, val_fraction=0.25, eval_every_steps=3,
                  eval_max_samples=8, log_every_steps=1, checkpoint_every_steps=2, num_threads=1)  # fmt: skip
    return PolicyConfig(model=model, train=PolicyTrainConfig(**{**kwargs, **train}))


def train(cfg: PolicyConfig, eps: EmbeddedEpisodes | None = None, **kwargs):
    from dynaflip_ros.policies.train import train_policy

    return train_policy(episodes() if eps is None else eps, cfg, {"weights_sha256": SHA}, progress=False,
                        text_encoder=FakeText(), **kwargs)  # fmt: skip


def crash_at(step: int):
    def log_fn(record: dict) -> None:
        if record["event"] == "train" and record["step"] == step:
            raise Crash

    return log_fn


def same_weights(a, b) -> bool:
    import torch

    sa, sb = a.policy.state_dict(), b.policy.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return train(config(), checkpoint_dir=tmp_path_factory.mktemp("full") / "checkpoints")


def test_resume_after_a_crash_gives_the_uninterrupted_weights(uninterrupted, tmp_path):
    """Killed at step 5 (the last checkpoint is step 4: steps 5 and the log of 5 are lost), resumed
    twice over: same final weights, losses and validation metrics as one uninterrupted run."""
    full, full_info = uninterrupted
    ckpt, log_path = tmp_path / "checkpoints", tmp_path / "train_log.jsonl"
    with pytest.raises(Crash):
        train(config(), checkpoint_dir=ckpt, log_fn=crash_at(5), log_path=log_path)
    assert json.loads((ckpt / "latest.json").read_text()) == {"step": 4, "dir": "step_00000004"}
    with pytest.raises(Crash):  # killed again, before reaching a new checkpoint
        train(config(), checkpoint_dir=ckpt, resume=True, log_fn=crash_at(5), log_path=log_path)
    resumed, info = train(config(), checkpoint_dir=ckpt, resume=True, log_path=log_path)
    assert same_weights(full, resumed)
    assert info["final_loss"] == full_info["final_loss"] and info["final_eval"] == full_info["final_eval"]
    assert info["resumed_from_steps"] == [4] and info["steps_this_run"] == 4 and info["steps"] == 8
    steps = [json.loads(line)["step"] for line in log_path.read_text().splitlines() if '"train"' in line]
    assert steps[-4:] == [5, 6, 7, 8]  # the log is appended to


def test_checkpoint_directory_is_safetensors_and_json_only(uninterrupted, tmp_path):
    from dynaflip_ros.policies import checkpoint as ckpt

    root = tmp_path / "checkpoints"
    with pytest.raises(Crash):
        train(config(), checkpoint_dir=root, log_fn=crash_at(5))
    (root / ".tmp_step_00000006_1").mkdir()  # what a crash during a write leaves behind
    latest = ckpt.latest_checkpoint(root)
    assert latest == root / "step_00000004"
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == [".tmp_step_00000006_1", "step_00000004"]
    assert {p.suffix for p in latest.iterdir()} == {".json", ".safetensors"}  # never a pickle
    state, tensors = ckpt.read_checkpoint(latest)
    assert state["step"] == 4 and state["identity"]["text_encoder_sha256"] == "e" * 64
    assert {"rng.torch", "loop.order"} <= set(tensors) and any(k.startswith("optim.") for k in tensors)
    resumed, _ = train(config(), checkpoint_dir=root, resume=True)
    assert same_weights(uninterrupted[0], resumed)
    # the step-6 checkpoint replaced step 4 and the leftover once latest.json pointed at it
    assert sorted(p.name for p in root.iterdir()) == ["latest.json", "step_00000006"]
    (root / "latest.json").write_text("{")
    with pytest.raises(PolicyCheckpointError, match="unreadable"):
        ckpt.latest_checkpoint(root)
    (root / "latest.json").write_text(json.dumps({"dir": "step_00000006"}))
    (root / "step_00000006" / "trainer_state.safetensors").write_bytes(b"\0" * 10)
    with pytest.raises(PolicyCheckpointError, match="damaged"):
        ckpt.read_checkpoint(root / "step_00000006")


def test_resume_refuses_another_run_or_nothing(tmp_path):
    root = tmp_path / "checkpoints"
    with pytest.raises(PolicyCheckpointError, match="no training checkpoint") as info:
        train(config(), checkpoint_dir=root, resume=True)
    assert isinstance(info.value, UserError)
    with pytest.raises(Crash):
        train(config(), checkpoint_dir=root, log_fn=crash_at(3))
    with pytest.raises(PolicyCheckpointError, match=r"train.lr 0.001 \(checkpoint\) vs 0.0005 \(now\)") as info:
        train(config(lr=5e-4, seed=1), checkpoint_dir=root, resume=True)
    assert "train.seed 0 (checkpoint) vs 1 (now)" in str(info.value) and "same dataset" in str(info.value)
    with pytest.raises(PolicyCheckpointError, match="dataset_fingerprint"):
        from dataclasses import replace

        train(config(), replace(episodes(), dataset_fingerprint="0" * 64), checkpoint_dir=root, resume=True)
    train(config(log_every_steps=4, num_threads=1), checkpoint_dir=root, resume=True)  # logging may differ


def test_init_starts_from_the_checkpoint_and_refuses_another_architecture(tmp_path):
    import torch

    from dynaflip_ros.policies.train import train_policy

    first, _ = train(config(steps=3))
    init_dir = first.save(tmp_path / "first")
    meta = json.loads((init_dir / "policy.json").read_text())
    # a negligible learning rate: after one step the weights are still the init's
    tuned, info = train(config(steps=1, lr=1e-12, warmup_steps=0), init_dir=init_dir)
    ref = first.policy.state_dict()
    assert all(torch.allclose(v, ref[k], atol=1e-6) for k, v in tuned.policy.state_dict().items())
    fresh, _ = train(config(steps=1, lr=1e-12, warmup_steps=0))
    assert not same_weights(fresh, tuned)
    assert info["init"]["weights_sha256"] == meta["files_sha256"]["model.safetensors"]
    assert info["init"]["steps"] == 3 and info["total_steps"] == 4 and info["init"]["stats"] == "recompute"
    # init_stats keep: the init's normalisation; recompute: this data's
    kept, _ = train(config(steps=1, init_stats="keep"), episodes(seed=1), init_dir=init_dir)
    redone, _ = train(config(steps=1), episodes(seed=1), init_dir=init_dir)
    from dynaflip_ros.policies.samples import environment_stats

    np.testing.assert_array_equal(environment_stats(kept)["mean"], environment_stats(first)["mean"])
    assert not np.array_equal(environment_stats(redone)["mean"], environment_stats(first)["mean"])

    wider = DiffusionModelConfig(down_dims=(32, 64), diffusion_step_embed_dim=16)
    with pytest.raises(PolicyCheckpointError, match=r"architecture differs: model.down_dims \(16, 32\) \(init\)"):
        train(config(model=wider), init_dir=init_dir)
    with pytest.raises(PolicyCheckpointError, match="image embedding dim 8 .init. vs 12"):
        train_policy(episodes(dim=12), config(), {"weights_sha256": SHA}, progress=False, text_encoder=FakeText(),
                     init_dir=init_dir)  # fmt: skip
    image_only = DiffusionModelConfig(down_dims=(16, 32), diffusion_step_embed_dim=16, language_conditioning=False)
    with pytest.raises(PolicyCheckpointError, match="language_conditioning True .init. vs False"):
        train(config(model=image_only), init_dir=init_dir)
    with pytest.raises(FileNotFoundError):
        train(config(), init_dir=tmp_path / "missing")


def test_ema_weights_are_saved_and_a_resumed_run_keeps_the_average(tmp_path):
    """With train.ema_max_decay the saved policy holds the weight average, not the last iterate;
    a checkpoint's policy files hold the average too, and resuming restores both the average and
    the raw iterate, so the final weights equal an uninterrupted run's."""
    import torch

    from dynaflip_ros.policies import checkpoint as ckpt

    cfg = config(ema_max_decay=0.9, ema_power=0.75)
    full, info = train(cfg, checkpoint_dir=tmp_path / "full")
    raw, _ = train(config(), checkpoint_dir=tmp_path / "raw")
    assert info["weights"] == "ema" and 0.0 < info["ema_final_decay"] <= 0.9
    assert not same_weights(full, raw)  # same seed and data: the average differs from the iterate
    root = tmp_path / "checkpoints"
    with pytest.raises(Crash):
        train(cfg, checkpoint_dir=root, log_fn=crash_at(5))
    state, tensors = ckpt.read_checkpoint(ckpt.latest_checkpoint(root))
    assert state["ema"]["optimization_step"] == 4
    n = state["ema"]["num_parameters"]
    avg = [tensors[f"ema.avg.{i}"] for i in range(n)]
    stored = ckpt.DiffusionPolicyRunner.load(root / "step_00000004", encoder_sha256=SHA, text_encoder=FakeText())
    assert all(torch.equal(a, p) for a, p in zip(avg, stored.policy.parameters()))  # the files hold the average
    assert any(not torch.equal(a, tensors[f"ema.raw.{i}"]) for i, a in enumerate(avg))
    resumed, _ = train(cfg, checkpoint_dir=root, resume=True)
    assert same_weights(full, resumed)


def test_weight_average_follows_the_warmup_schedule_and_refuses_a_foreign_state():
    import torch

    from dynaflip_ros.policies.ema import WeightAverage

    module = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        module.weight.fill_(0.0)
    avg = WeightAverage(module, max_decay=0.5, power=1.0)
    assert avg.decay == 0.0  # the first update copies the weights
    with torch.no_grad():
        module.weight.fill_(1.0)
    avg.update()  # decay 0: average = 1
    with torch.no_grad():
        module.weight.fill_(3.0)
    assert avg.decay == 0.5  # min(0.5, 1 - (1 + 1)^-1)
    avg.update()  # 0.5 * 1 + 0.5 * 3 = 2
    with avg.averaged():
        assert torch.allclose(module.weight, torch.full((1, 2), 2.0))
    assert torch.allclose(module.weight, torch.full((1, 2), 3.0))  # own weights back
    info, tensors = avg.state()
    other = WeightAverage(torch.nn.Linear(3, 1, bias=False), max_decay=0.5, power=1.0)
    with pytest.raises(ValueError, match="shape"):
        other.load_state(info, tensors)
    with pytest.raises(ValueError, match="0 < max_decay < 1"):
        WeightAverage(module, max_decay=1.0, power=1.0)
    avg.copy_to_module()
    assert torch.allclose(module.weight, torch.full((1, 2), 2.0))


def test_resume_accepts_a_run_recorded_before_a_config_field_existed(tmp_path):
    """A field the recorded config lacks counts as its default: an old run resumes, a changed field does not."""
    from dynaflip_ros.configs.io import to_dict
    from dynaflip_ros.policies.checkpoint import check_resumable

    current = {"config": to_dict(config())}
    old = {"config": json.loads(json.dumps(current["config"]))}
    del old["config"]["train"]["ema_max_decay"]
    check_resumable(old, current, tmp_path)
    with pytest.raises(PolicyCheckpointError, match=r"train.ema_max_decay 0.0 \(checkpoint\) vs 0.9 \(now\)"):
        check_resumable(old, {"config": to_dict(config(ema_max_decay=0.9))}, tmp_path)
