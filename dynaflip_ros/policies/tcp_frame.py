"""TCP-relative action chunks: the policy predicts where the tool goes, inverse kinematics (IK) turns it into joints.

With `model.action_frame: tcp_relative` the diffusion model's action k is
`[p_k - p_now (3, m), rotvec(R_k R_now^T) (3, rad), gripper_k]`: the TCP position and
orientation of the recorded joint target q_k (forward kinematics, FK) relative to the TCP pose at
the chunk's current observation, both in the UR base frame, and the gripper command unchanged.
Its observation state gains the TCP pose of the measured joints, `[q (6), gripper, p (3), the
first two columns of R (6)]` (16 values; the continuous 6-D rotation representation of Zhou et
al., "On the Continuity of Rotation Representations in Neural Networks", CVPR 2019).

Why: where to grasp is a point in space. Given an object's position (from the image embedding,
or the privileged features of `eval.privileged`), the TCP target is an affine function of it and
the TCP offset a difference of two positions; in joint space the same targets are a non-linear IK
map the network has to learn from demonstrations, and its errors of a few hundredths of a radian
are centimetres at the fingers. End-effector delta actions are the usual choice of visuomotor
policies for that reason (e.g. Diffusion Policy's real-robot tasks, Chi et al. 2023 §V).

What leaves the policy is still a joint chunk: `chunk_to_joints` solves the chunk's poses with
`robot.kinematics.inverse_kinematics` (damped least squares, UR3 DH parameters, TCP `tcp_offset_m`
along the flange z axis), each warm-started at the previous solution from the measured joints,
so the solution stays on the arm's current branch. Everything downstream (interpolation, SafeArm,
the driver) sees joints exactly as before; an unreachable pose yields the closest iterate within
the joint limits (`IKResult.converged` False, counted by the caller) and SafeArm checks it like
any target. FK and IK are the same functions in training and at run time, so the frame is an
exact re-parametrisation of the recorded joint targets up to IK tolerance (0.1 mm, 1 mrad).
Pure functions, thread-safe.
"""
from __future__ import annotations

import numpy as np

from dynaflip_ros.configs.safety import tool_transform
from dynaflip_ros.configs.ur3 import UR3_CB3_DH, DHParams
from dynaflip_ros.robot.kinematics import forward_kinematics_batch, inverse_kinematics

N_JOINTS = 6  # action/state dims 0..5 are joint positions (rad); dim 6 is the gripper
IK_MAX_ITERATIONS = 50


def batch_fk(q: np.ndarray, tcp_offset_m: float, dh: DHParams = UR3_CB3_DH) -> tuple[np.ndarray, np.ndarray]:
    """TCP pose of joints q (..., 6) rad: positions (..., 3) m and rotations (..., 3, 3), UR base
    frame (`robot.kinematics.forward_kinematics_batch` with the TCP `tcp_offset_m` along flange z)."""
    return forward_kinematics_batch(q, dh, tool_transform(tcp_offset_m))


def model_state(state: np.ndarray, tcp_offset_m: float) -> np.ndarray:
    """(..., 16) float32 model state of measured states (..., 7) [q rad, gripper 0..1]:
    [q, gripper, TCP position (3), R[:, 0], R[:, 1]] (module docstring)."""
    state = np.asarray(state, np.float64)
    p, r = batch_fk(state[..., :N_JOINTS], tcp_offset_m)
    six = np.concatenate([r[..., :, 0], r[..., :, 1]], axis=-1)  # (..., 6)
    return np.concatenate([state, p, six], axis=-1).astype(np.float32)


def _rotvec(r: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(r.reshape(-1, 3, 3)).as_rotvec().reshape(*r.shape[:-2], 3)


def joints_to_tcp_relative(actions: np.ndarray, state: np.ndarray, tcp_offset_m: float) -> np.ndarray:
    """Recorded joint targets (..., H, 7) -> model-frame actions (..., H, 7) relative to the TCP
    pose of `state` (..., 7): [dp (3) m, rotvec(R_k R_now^T) (3) rad, gripper], base frame."""
    actions = np.asarray(actions, np.float64)
    state = np.asarray(state, np.float64)
    p, r = batch_fk(actions[..., :N_JOINTS], tcp_offset_m)  # (..., H, 3), (..., H, 3, 3)
    p0, r0 = batch_fk(state[..., :N_JOINTS], tcp_offset_m)  # (..., 3), (..., 3, 3)
    dp = p - p0[..., None, :]
    drot = _rotvec(r @ np.swapaxes(r0, -1, -2)[..., None, :, :])
    return np.concatenate([dp, drot, actions[..., N_JOINTS:]], axis=-1).astype(np.float32)


def chunk_to_joints(model_actions: np.ndarray, state: np.ndarray, tcp_offset_m: float,
                    joint_limits_rad: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Model-frame actions (H, 7) of one chunk -> joint targets (H, 7) [q rad, gripper], by IK
    warm-started at the measured joints `state` (7,) and then at each previous solution.

    Returns (joint chunk, number of poses IK did not reach within tolerance: their joints are
    the closest iterate, inside the joint limits). Raises ValueError on wrong shapes or
    non-finite input (`robot.kinematics.inverse_kinematics`)."""
    from scipy.spatial.transform import Rotation

    model_actions = np.asarray(model_actions, np.float64)
    state = np.asarray(state, np.float64)
    if model_actions.ndim != 2 or model_actions.shape[1] != N_JOINTS + 1 or state.shape != (N_JOINTS + 1,):
        raise ValueError(f"need actions (H, 7) and state (7,), got {model_actions.shape} / {state.shape}")
    p0, r0 = batch_fk(state[:N_JOINTS], tcp_offset_m)
    tool = tool_transform(tcp_offset_m)
    out = np.empty_like(model_actions)
    rotations = Rotation.from_rotvec(model_actions[:, 3:6]).as_matrix() @ r0  # (H, 3, 3) targets
    q, missed = state[:N_JOINTS].copy(), 0
    for k, a in enumerate(model_actions):
        target = np.eye(4)
        target[:3, 3] = p0 + a[:3]
        target[:3, :3] = rotations[k]
        res = inverse_kinematics(target, q, tool=tool, joint_limits_rad=joint_limits_rad,
                                 max_iterations=IK_MAX_ITERATIONS)
        q = res.q
        missed += not res.converged
        out[k, :N_JOINTS], out[k, N_JOINTS:] = q, a[N_JOINTS:]
    return out.astype(np.float32), missed
