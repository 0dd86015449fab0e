"""The "tcp_relative" action frame (policies.tcp_frame): forward kinematics matches the reference,
recorded joint chunks survive the round trip through TCP deltas and inverse kinematics, the model
state carries the TCP pose, and a policy in that frame trains, emits joint chunks and reloads."""
from __future__ import annotations

import numpy as np
import pytest

from dynaflip_ros.configs.policy import TCP_STATE_DIM, DiffusionModelConfig, PolicyConfig, PolicyTrainConfig
from dynaflip_ros.policies.tcp_frame import (
    batch_fk,
    chunk_to_joints,
    joints_to_tcp_relative,
    model_state,
    tool_transform,
)
from dynaflip_ros.robot.kinematics import UR3_JOINT_LIMITS_RAD, forward_kinematics

# a reachable, non-singular UR3 pose (elbow bent, wrist down), rad
Q_HOME = np.array([0.0, -1.2, 1.4, -1.77, -1.57, 0.0])


def smooth_chunk(rng: np.random.Generator, h: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(state (7,), joint chunk (h, 7)): a random pose near Q_HOME and a smooth move from it."""
    q0 = Q_HOME + rng.uniform(-0.3, 0.3, 6)
    step = rng.uniform(-0.03, 0.03, 6)
    q = q0 + np.arange(1, h + 1)[:, None] * step  # (h, 6)
    grip = rng.uniform(0, 1, (h, 1))
    return np.concatenate([q0, [0.5]]), np.concatenate([q, grip], axis=1)


def test_batch_fk_matches_the_reference_forward_kinematics():
    rng = np.random.default_rng(0)
    q = rng.uniform(-3, 3, (4, 5, 6))
    p, r = batch_fk(q, 0.15)
    assert p.shape == (4, 5, 3) and r.shape == (4, 5, 3, 3)
    for idx in [(0, 0), (3, 4), (2, 1)]:
        t = forward_kinematics(q[idx], tool=tool_transform(0.15))
        np.testing.assert_allclose(p[idx], t[:3, 3], atol=1e-12)
        np.testing.assert_allclose(r[idx], t[:3, :3], atol=1e-12)


def test_joint_chunks_survive_tcp_deltas_and_inverse_kinematics():
    rng = np.random.default_rng(1)
    for _ in range(5):
        state, chunk = smooth_chunk(rng)
        model = joints_to_tcp_relative(chunk[None], state[None], 0.15)[0]  # (8, 7)
        assert model.shape == (8, 7) and model.dtype == np.float32
        np.testing.assert_array_equal(model[:, 6], chunk[:, 6].astype(np.float32))  # gripper unchanged
        joints, missed = chunk_to_joints(model, state, 0.15)
        assert missed == 0
        np.testing.assert_allclose(joints[:, :6], chunk[:, :6], atol=2e-3)  # same IK branch as recorded
        p_back, _ = batch_fk(joints[:, :6], 0.15)
        p_rec, _ = batch_fk(chunk[:, :6], 0.15)
        assert np.max(np.linalg.norm(p_back - p_rec, axis=1)) < 5e-4  # float32 model actions, 0.1 mm IK tolerance


def test_staying_put_is_zero_and_a_tcp_shift_is_the_position_delta():
    state = np.concatenate([Q_HOME, [1.0]])
    hold = np.repeat(state[None], 4, axis=0)
    np.testing.assert_allclose(joints_to_tcp_relative(hold, state, 0.15)[:, :6], 0.0, atol=1e-6)
    shift = np.zeros((1, 7))
    shift[0, :3] = [0.02, -0.01, 0.03]  # 2 cm x, -1 cm y, 3 cm z in the base frame, orientation kept
    joints, missed = chunk_to_joints(shift, state, 0.15)
    p0, r0 = batch_fk(Q_HOME, 0.15)
    p1, r1 = batch_fk(joints[0, :6], 0.15)
    assert missed == 0
    np.testing.assert_allclose(p1 - p0, shift[0, :3], atol=2e-4)
    np.testing.assert_allclose(r1, r0, atol=2e-3)


def test_unreachable_poses_are_counted_and_stay_inside_the_joint_limits():
    state = np.concatenate([Q_HOME, [0.0]])
    far = np.zeros((2, 7))
    far[:, 0] = 2.0  # 2 m away: the UR3 reaches 0.5 m
    joints, missed = chunk_to_joints(far, state, 0.15)
    assert missed == 2
    assert np.all(joints[:, :6] >= UR3_JOINT_LIMITS_RAD[:, 0]) and np.all(joints[:, :6] <= UR3_JOINT_LIMITS_RAD[:, 1])
    with pytest.raises(ValueError, match=r"actions \(H, 7\)"):
        chunk_to_joints(np.zeros((2, 6)), state, 0.15)


def test_model_state_appends_the_tcp_pose():
    rng = np.random.default_rng(2)
    states = np.concatenate([Q_HOME + rng.uniform(-0.5, 0.5, (3, 6)), rng.uniform(0, 1, (3, 1))], axis=1)
    ms = model_state(states, 0.15)
    assert ms.shape == (3, TCP_STATE_DIM) and ms.dtype == np.float32
    np.testing.assert_allclose(ms[:, :7], states, atol=1e-6)
    p, r = batch_fk(states[:, :6], 0.15)
    np.testing.assert_allclose(ms[:, 7:10], p, atol=1e-6)
    np.testing.assert_allclose(ms[:, 10:13], r[:, :, 0], atol=1e-6)
    np.testing.assert_allclose(ms[:, 13:16], r[:, :, 1], atol=1e-6)
    assert DiffusionModelConfig(action_frame="tcp_relative").state_dim == TCP_STATE_DIM
    assert DiffusionModelConfig().state_dim == 7
    with pytest.raises(ValueError, match="tcp_offset_m"):
        DiffusionModelConfig(tcp_offset_m=-0.1)


def test_a_tcp_relative_policy_trains_emits_joint_chunks_and_reloads(tmp_path):
    from fake_text import FakeText

    from dynaflip_ros.policies.base import PolicyObservation
    from dynaflip_ros.policies.diffusion import DiffusionPolicyRunner
    from dynaflip_ros.policies.embeddings import EmbeddedEpisodes
    from dynaflip_ros.policies.train import train_policy

    rng = np.random.default_rng(3)
    lengths = (20, 22, 20, 21)
    states, actions = [], []
    for n in lengths:
        state, chunk = smooth_chunk(rng, n + 1)
        traj = np.concatenate([state[None], chunk], axis=0)  # (n + 2, 7)
        states.append(traj[:n])
        actions.append(traj[1 : n + 1])
    sha = "3" * 64
    eps = EmbeddedEpisodes(
        embedding=rng.normal(size=(sum(lengths), 8)).astype(np.float32),
        state=np.concatenate(states).astype(np.float32), action=np.concatenate(actions).astype(np.float32),
        episode_index=np.repeat(np.arange(len(lengths)), lengths),
        frame_index=np.concatenate([np.arange(k) for k in lengths]),
        task=np.repeat(["put the red cube in the sink"] * len(lengths), lengths),
        fps=10.0, encoder_sha256=sha, dataset_fingerprint="f" * 64)  # fmt: skip
    model = DiffusionModelConfig(down_dims=(16, 32), diffusion_step_embed_dim=16, action_frame="tcp_relative")
    cfg = PolicyConfig(model=model, train=PolicyTrainConfig(steps=4, batch_size=8, warmup_steps=1, val_fraction=0.25,
                                                            eval_every_steps=4, eval_max_samples=8, num_threads=1))
    runner, info = train_policy(eps, cfg, {"weights_sha256": sha}, progress=False, text_encoder=FakeText())
    ev = info["final_eval"]
    assert np.isfinite(ev["val_joint_rmse_rad"]) and ev["hold_tcp_rmse_m"] > 0.0
    assert 0.0 < ev["val_tcp_rmse_m"] < 1.0  # metres: the validation also reports where the fingers go
    assert runner.policy.config.input_features["observation.state"].shape == (TCP_STATE_DIM,)
    obs = PolicyObservation(embedding=eps.embedding[0], state=eps.state[0], stamp_s=0.0,
                            instruction="put the red cube in the sink")
    runner.reset(seed=0)
    chunk = runner.predict_action_chunk(obs)
    assert chunk.actions.shape == (model.n_action_steps, 7) and np.all(np.isfinite(chunk.actions))
    assert np.all(chunk.actions[:, :6] >= UR3_JOINT_LIMITS_RAD[:, 0])
    assert isinstance(runner.ik_unconverged, int)
    loaded = DiffusionPolicyRunner.load(runner.save(tmp_path / "p"), encoder_sha256=sha, seed=0, text_encoder=FakeText())
    assert loaded.model_config.action_frame == "tcp_relative" and loaded.model_config.tcp_offset_m == 0.15
    np.testing.assert_array_equal(loaded.predict_action_chunk(obs).actions, chunk.actions)
