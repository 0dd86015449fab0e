"""Bad policy inputs end in a UserError with a message that says what to change: episodes too
short for the horizon, a damaged checkpoint; and the validation split rule (floor(val_fraction * E))."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from dynaflip_ros.configs.policy import DiffusionModelConfig, PolicyConfig, PolicyTrainConfig
from dynaflip_ros.errors import UserError
from dynaflip_ros.policies.base import EncoderMismatchError, PolicyCheckpointError, PolicyDataError
from dynaflip_ros.policies.embeddings import EmbeddedEpisodes
from dynaflip_ros.policies.train import num_val_episodes, split_episodes

SHA = "3" * 64
DIM = 8
SMALL = DiffusionModelConfig(  # horizon 16, 8 actions, 2 obs; image-only (instructions: test_policy_language.py)
    down_dims=(16, 32), diffusion_step_embed_dim=16, language_conditioning=False
)


def episodes(lengths: list[int], seed: int = 0) -> EmbeddedEpisodes:
    rng = np.random.default_rng(seed)
    n = sum(lengths)
    return EmbeddedEpisodes(
        embedding=rng.normal(size=(n, DIM)).astype(np.float32),
        state=rng.normal(size=(n, 7)).astype(np.float32),
        action=rng.normal(size=(n, 7)).astype(np.float32),
        episode_index=np.concatenate([np.full(k, i) for i, k in enumerate(lengths)]).astype(np.int64),
        frame_index=np.concatenate([np.arange(k) for k in lengths]).astype(np.int64),
        task=np.full(n, "reach"),
        fps=10.0,
        encoder_sha256=SHA,
        dataset_fingerprint="f" * 64,
    )


def config(val_fraction: float = 0.1, steps: int = 1) -> PolicyConfig:
    train = PolicyTrainConfig(steps=steps, batch_size=4, warmup_steps=0, val_fraction=val_fraction,
                              eval_every_steps=1, eval_max_samples=4, log_every_steps=1, num_threads=1)
    return PolicyConfig(model=SMALL, train=train)


@pytest.mark.parametrize(
    "n,fraction,expected",
    [(2, 0.1, 0), (9, 0.1, 0), (10, 0.1, 1), (3, 0.34, 1), (24, 0.2, 4), (100, 0.29, 29), (5, 0.0, 0), (2, 0.99, 1)],
)
def test_validation_holds_out_floor_of_the_fraction(n, fraction, expected):
    assert num_val_episodes(n, fraction) == expected
    train, val = split_episodes(np.repeat(np.arange(n), 3), fraction, seed=1)
    assert len(val) == expected and len(train) == n - expected and not set(train) & set(val)


def test_too_short_episodes_say_lengths_needed_length_and_what_to_change():
    from dynaflip_ros.policies.train import train_policy

    with pytest.raises(PolicyDataError) as info:
        train_policy(episodes([5, 6, 4]), config(), {"weights_sha256": SHA}, progress=False)
    msg = str(info.value)
    assert isinstance(info.value, UserError) and isinstance(info.value, ValueError)
    assert "3 training episodes" in msg and "[5, 6, 4] frames" in msg
    assert "at least drop_n_last_frames+1 = 8 frames" in msg  # 16 - 8 - 2 + 2
    assert "record longer episodes" in msg and "model.horizon" in msg and "model.n_action_steps" in msg


def test_embeddings_of_another_encoder_are_a_user_error():
    from dynaflip_ros.policies.train import train_policy

    with pytest.raises(PolicyDataError, match="embeddings were computed by encoder"):
        train_policy(episodes([20, 20]), config(), {"weights_sha256": "4" * 64}, progress=False)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny trained policy (2 episodes, val_fraction 0.1: no validation) saved to a directory."""
    from dynaflip_ros.policies.train import train_policy

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("dynaflip_ros.policies.train").addHandler(handler)
    try:
        runner, info = train_policy(episodes([20, 20]), config(0.1, steps=2), {"weights_sha256": SHA}, progress=False)
    finally:
        logging.getLogger("dynaflip_ros.policies.train").removeHandler(handler)
    out = runner.save(tmp_path_factory.mktemp("policy"))
    return out, info, [r.getMessage() for r in records]


def test_no_validation_split_is_said_once(checkpoint):
    out, info, messages = checkpoint
    assert info["val_episodes"] == [] and len(info["train_episodes"]) == 2 and info["final_eval"] is None
    assert "no validation episodes: floor(val_fraction 0.1 * 2 episodes) = 0" in info["validation_note"]
    assert sum("no validation episodes" in m for m in messages) == 1
    assert "validation_note" in json.loads((out / "policy.json").read_text())["train"]


def test_truncated_policy_weights_are_damaged(checkpoint, tmp_path):
    import shutil

    from dynaflip_ros.policies.diffusion import DiffusionPolicyRunner

    src, _, _ = checkpoint
    d = shutil.copytree(src, tmp_path / "policy")
    weights = d / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    for encoder_sha in (SHA, "4" * 64):  # the damage is reported before any encoder mismatch
        with pytest.raises(PolicyCheckpointError, match="damaged or truncated") as info:
            DiffusionPolicyRunner.load(d, encoder_sha256=encoder_sha)
        assert str(weights) in str(info.value) and isinstance(info.value, UserError)
    (d / "policy.json").write_text((d / "policy.json").read_text()[:50])
    with pytest.raises(PolicyCheckpointError, match="unreadable"):
        DiffusionPolicyRunner.load(d, encoder_sha256=SHA)


def test_intact_checkpoint_on_another_encoder_is_a_mismatch(checkpoint):
    from dynaflip_ros.policies.diffusion import DiffusionPolicyRunner

    src, _, _ = checkpoint
    with pytest.raises(EncoderMismatchError, match="retrain the policy") as info:
        DiffusionPolicyRunner.load(src, encoder_sha256="4" * 64)
    assert isinstance(info.value, UserError)
    DiffusionPolicyRunner.load(src, encoder_sha256=SHA)  # and the intact one loads
