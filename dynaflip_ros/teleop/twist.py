"""Twist -> joint target: integrate a TCP twist into a target pose and solve IK on the UR3 DH model.

Per command tick (`TwistToJointTarget.step(twist, dt_s)`):

1. clamp the linear speed |v| to `max_linear_speed_m_s` and |w| to `max_angular_speed_rad_s`
   (direction kept);
2. integrate: p += v dt, R = exp([w dt]x) R (twist in the UR base frame, rotation about the TCP;
   exp through scipy `Rotation.from_rotvec`);
3. clamp p into the SafetyConfig workspace box shrunk by `workspace_margin_m` (so SafeArm's own
   workspace check is never the thing that stops a teleop motion);
4. solve damped-least-squares IK (`robot.kinematics.inverse_kinematics`) seeded with the last
   joint target: a few mm per tick, so it stays on the current branch; a solution that did not
   converge, leaves the SafetyConfig joint limits or jumps more than `max_joint_jump_rad` is
   refused: the previous target is kept and the pose target is pulled back to it (no wind-up).

`sync(q)` re-bases the target on joints actually forwarded (after SafeArm rate limiting or a
stop), so the integrated pose never runs ahead of the arm. Everything moves through SafeArm
(`teleop/drivers.py`); this class only computes targets.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dynaflip_ros.configs.safety import SafetyConfig
from scipy.spatial.transform import Rotation

from dynaflip_ros.robot.kinematics import forward_kinematics, inverse_kinematics


def rotation_from_rotvec(w: np.ndarray) -> np.ndarray:
    """(3, 3) rotation exp([w]x) of a rotation vector w (3,) rad (scipy `Rotation.from_rotvec`,
    https://docs.scipy.org/doc/scipy/reference/generated/scipy.spatial.transform.Rotation.from_rotvec.html)."""
    return Rotation.from_rotvec(np.asarray(w, dtype=float).reshape(3)).as_matrix()


@dataclass
class TwistStats:
    """steps: step() calls; ik_failures: targets refused (no convergence / limits / jump);
    workspace_clamps: steps whose position was clamped into the box; speed_clamps: steps whose
    twist was scaled down; max_ik_position_error_m: largest residual of accepted solutions."""

    steps: int = 0
    ik_failures: int = 0
    workspace_clamps: int = 0
    speed_clamps: int = 0
    max_ik_position_error_m: float = 0.0


class TwistToJointTarget:
    """Integrates TCP twists into joint targets for a UR3 (see the module docstring).

    Args:
        safety: the `SafetyConfig` of the SafeArm in use (DH model, TCP offset, workspace box,
            joint limits).
        max_linear_speed_m_s / max_angular_speed_rad_s: twist clamps.
        workspace_margin_m: the target stays this far inside the workspace box.
        max_joint_jump_rad: largest joint change accepted from one IK solve.
    Raises ValueError on bad limits.
    """

    def __init__(self, safety: SafetyConfig | None = None, max_linear_speed_m_s: float = 0.25,
                 max_angular_speed_rad_s: float = 1.0, workspace_margin_m: float = 0.005,
                 max_joint_jump_rad: float = 0.5) -> None:
        self.safety = safety if safety is not None else SafetyConfig()
        for name, v in (("max_linear_speed_m_s", max_linear_speed_m_s),
                        ("max_angular_speed_rad_s", max_angular_speed_rad_s),
                        ("max_joint_jump_rad", max_joint_jump_rad)):
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be finite and > 0, got {v!r}")
        if not (math.isfinite(workspace_margin_m) and workspace_margin_m >= 0):
            raise ValueError(f"workspace_margin_m must be >= 0, got {workspace_margin_m!r}")
        self.max_linear_speed_m_s = float(max_linear_speed_m_s)
        self.max_angular_speed_rad_s = float(max_angular_speed_rad_s)
        self.max_joint_jump_rad = float(max_joint_jump_rad)
        self._dh = self.safety.dh
        self._tool = self.safety.tool_transform
        self._limits = np.stack([self.safety.joint_lower_rad, self.safety.joint_upper_rad], axis=1)  # (6, 2)
        self._box_min = np.array(self.safety.workspace_min_m) + workspace_margin_m
        self._box_max = np.array(self.safety.workspace_max_m) - workspace_margin_m
        if np.any(self._box_min >= self._box_max):
            raise ValueError("workspace_margin_m leaves no room inside the workspace box")
        self.stats = TwistStats()
        self._q: np.ndarray | None = None  # (6,) last joint target
        self._pose: np.ndarray | None = None  # (4, 4) TCP target

    @property
    def q_target(self) -> np.ndarray | None:
        """(6,) current joint target, rad (None before reset)."""
        return None if self._q is None else self._q.copy()

    @property
    def pose_target(self) -> np.ndarray | None:
        """(4, 4) current TCP target pose in the UR base frame (None before reset)."""
        return None if self._pose is None else self._pose.copy()

    def reset(self, q: np.ndarray) -> None:
        """Anchor at joints q (6,) rad (the measured pose): target pose = FK(q)."""
        q = np.asarray(q, dtype=float)
        if q.shape != (6,) or not np.all(np.isfinite(q)):
            raise ValueError(f"q must be finite (6,), got {q!r}")
        self._q = q.copy()
        self._pose = forward_kinematics(q, self._dh, self._tool)

    sync = reset  # re-base on joints actually forwarded

    def tcp_pose(self, q: np.ndarray) -> np.ndarray:
        """(4, 4) TCP pose of joints q (6,) on this model."""
        return forward_kinematics(np.asarray(q, dtype=float), self._dh, self._tool)

    def step(self, twist: np.ndarray, dt_s: float) -> np.ndarray:
        """Advance the target by twist (6,) (m/s, rad/s, UR base frame) over dt_s > 0 seconds.

        Returns the (6,) joint target, rad (unchanged when the IK solution was refused).
        Raises RuntimeError before `reset`, ValueError on a bad twist or dt_s.
        """
        if self._q is None:
            raise RuntimeError("TwistToJointTarget.reset(q) must be called first")
        tw = np.asarray(twist, dtype=float)
        if tw.shape != (6,) or not np.all(np.isfinite(tw)):
            raise ValueError(f"twist must be finite (6,), got {twist!r}")
        if not (math.isfinite(dt_s) and dt_s > 0):
            raise ValueError(f"dt_s must be finite and > 0, got {dt_s!r}")
        self.stats.steps += 1
        v, w = tw[:3].copy(), tw[3:].copy()
        nv, nw = float(np.linalg.norm(v)), float(np.linalg.norm(w))
        clamped = False
        if nv > self.max_linear_speed_m_s:
            v *= self.max_linear_speed_m_s / nv
            clamped = True
        if nw > self.max_angular_speed_rad_s:
            w *= self.max_angular_speed_rad_s / nw
            clamped = True
        self.stats.speed_clamps += int(clamped)
        if nv == 0.0 and nw == 0.0:
            return self._q.copy()
        pose = self._pose.copy()
        p = pose[:3, 3] + v * dt_s
        p_box = np.clip(p, self._box_min, self._box_max)
        if np.any(p_box != p):
            self.stats.workspace_clamps += 1
        pose[:3, 3] = p_box
        pose[:3, :3] = rotation_from_rotvec(w * dt_s) @ pose[:3, :3]
        res = inverse_kinematics(pose, self._q, self._dh, self._tool, joint_limits_rad=self._limits,
                                 max_iterations=20, tol_position_m=2e-4, tol_rotation_rad=2e-3)
        jump = float(np.max(np.abs(res.q - self._q)))
        inside = bool(np.all(res.q >= self._limits[:, 0]) and np.all(res.q <= self._limits[:, 1]))
        if not res.converged or not inside or jump > self.max_joint_jump_rad:
            self.stats.ik_failures += 1
            self._pose = forward_kinematics(self._q, self._dh, self._tool)  # pull back: no wind-up
            return self._q.copy()
        self.stats.max_ik_position_error_m = max(self.stats.max_ik_position_error_m, res.position_error_m)
        self._q = res.q.copy()
        self._pose = pose
        return self._q.copy()
