"""Action frames of the diffusion policy (`DiffusionModelConfig.action_frame`): what the model
predicts for a recorded absolute action chunk, the way back, and the model's observation state.
"absolute" and "relative" (joint deltas) here; "tcp_relative" in `policies.tcp_frame`. Pure
functions, thread-safe."""
from __future__ import annotations

import numpy as np

from dynaflip_ros.configs.policy import DiffusionModelConfig
from dynaflip_ros.policies.tcp_frame import N_JOINTS, chunk_to_joints, joints_to_tcp_relative
from dynaflip_ros.policies.tcp_frame import model_state as tcp_model_state


def to_model_frame(actions: np.ndarray, current_state: np.ndarray, action_frame: str,
                   tcp_offset_m: float = 0.15) -> np.ndarray:
    """Absolute actions (..., H, 7) -> what the model predicts (DiffusionModelConfig.action_frame).

    current_state: (..., 7) measured state at the current observation. "relative" subtracts the
    current joint positions from the 6 joint targets; "tcp_relative" gives the targets' TCP poses
    relative to the current one (`policies.tcp_frame.joints_to_tcp_relative`, TCP `tcp_offset_m`
    along the flange z axis); the gripper command stays absolute. Raises ValueError on an
    unknown frame.
    """
    if action_frame == "tcp_relative":
        return joints_to_tcp_relative(actions, current_state, tcp_offset_m)
    out = np.array(actions, dtype=np.float32, copy=True)
    if action_frame == "relative":
        out[..., :N_JOINTS] -= np.asarray(current_state, np.float32)[..., None, :N_JOINTS]
    elif action_frame != "absolute":
        raise ValueError(f"unknown action_frame {action_frame!r}")
    return out


def from_model_frame(actions: np.ndarray, current_state: np.ndarray, action_frame: str,
                     tcp_offset_m: float = 0.15) -> np.ndarray:
    """Inverse of `to_model_frame`: model-frame actions (..., H, 7) -> absolute actions
    ("tcp_relative": inverse kinematics per chunk, `policies.tcp_frame.chunk_to_joints`)."""
    if action_frame == "tcp_relative":
        actions = np.asarray(actions, np.float32)
        state = np.broadcast_to(np.asarray(current_state, np.float32), (*actions.shape[:-2], actions.shape[-1]))
        flat_a, flat_s = actions.reshape(-1, *actions.shape[-2:]), state.reshape(-1, state.shape[-1])
        out = np.stack([chunk_to_joints(a, st, tcp_offset_m)[0] for a, st in zip(flat_a, flat_s)])
        return out.reshape(actions.shape)
    out = np.array(actions, dtype=np.float32, copy=True)
    if action_frame == "relative":
        out[..., :N_JOINTS] += np.asarray(current_state, np.float32)[..., None, :N_JOINTS]
    elif action_frame != "absolute":
        raise ValueError(f"unknown action_frame {action_frame!r}")
    return out


def model_state(state: np.ndarray, model: DiffusionModelConfig) -> np.ndarray:
    """Measured states (..., 7) -> the model's observation.state (..., model.state_dim) float32:
    unchanged, or with the TCP pose appended in the "tcp_relative" frame (`policies.tcp_frame`)."""
    if model.action_frame == "tcp_relative":
        return tcp_model_state(state, model.tcp_offset_m)
    return np.asarray(state, np.float32)
