"""`SimArm`: the MuJoCo UR3 of the sim cell (`sim/cell.py`) behind the `robot.arm.Arm` protocol.

servoJ semantics like the UR controller: `servo_joint(q, dt_s)` makes the joint position targets
move linearly from the previous target to q over dt_s of simulation time (the env applies the
interpolated target before every physics step), with the matching velocity feed-forward, so a
125 Hz stream is tracked without lag. The arm is position-servoed by MuJoCo actuators (kp + kv,
torque-clamped to the UR3 limits, gravity-compensated links; `sim/cell.py`).

Never command a `SimArm` directly: wrap it in `robot.safety.SafeArm` (docs/safety.md).
Thread-safe through the scene's lock (`MjScene.lock`). Clock: `stamp_s` is simulation time
(`data.time`, `env.sim_time_s`). Depends only on the `MjScene` it is given, not on the env module.
"""
from __future__ import annotations

import numpy as np

from dynaflip_ros.robot.arm import UR_JOINT_NAMES, ArmNotConnectedError, ArmState
from dynaflip_ros.robot.commands import check_servo_period, joint_vector
from dynaflip_ros.robot.kinematics import rotation_to_quat_wxyz
from dynaflip_ros.sim import cell
from dynaflip_ros.sim.mj_scene import MjScene


class SimArm:
    """MuJoCo UR3 + parallel gripper (implements `robot.arm.Arm`).

    Args:
        scene: the `MjScene` (model, data, lock, config) holding the cell built by `sim/cell.py`,
            e.g. a `sim.pick_into_sink.PickIntoSinkEnv` (which creates its arm: use `env.arm`).
            Joints, actuators and the TCP site are looked up by their `sim/cell.py` names.
    """

    def __init__(self, scene: MjScene) -> None:
        import mujoco

        self._scene = scene
        m = scene.model

        def jid(name: str) -> int:
            return mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, name)

        def aid(name: str) -> int:
            return mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_ACTUATOR, name)

        self._qadr = np.array([m.jnt_qposadr[jid(n)] for n in UR_JOINT_NAMES])  # (6,)
        self._dadr = np.array([m.jnt_dofadr[jid(n)] for n in UR_JOINT_NAMES])  # (6,)
        self._pos_act = np.array([aid(n) for n in UR_JOINT_NAMES])  # (6,)
        self._vel_act = np.array([aid(n + "_vel") for n in UR_JOINT_NAMES])  # (6,)
        self._finger_qadr = np.array([m.jnt_qposadr[jid(n)] for n in cell.FINGER_JOINT_NAMES])  # (2,)
        self._finger_act = np.array([aid(n) for n in cell.FINGER_ACTUATOR_NAMES])  # (2,)
        self._finger_stroke = float(cell.FINGER_STROKE_M)
        self._tcp_site = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, cell.TCP_SITE)
        self._connected = False
        self._gripper_cmd = 0.0
        self._protective_stop = False
        self.hold(np.asarray(scene.config.home_q_rad))

    # ------------------------------------------------------------------ Arm protocol
    def connect(self) -> None:
        """Mark connected and hold the measured pose (no motion)."""
        with self._scene.lock:
            self._connected = True
            self.hold(self._q())

    def state(self) -> ArmState:
        """Measured state from MuJoCo: q, dq (6,), TCP pose (7,) in the UR base frame, gripper
        closure 0..1 measured from the finger positions; extra["gripper_command"] is the command.

        Raises ArmNotConnectedError before connect().
        """
        if not self._connected:
            raise ArmNotConnectedError("SimArm.state() before connect()")
        return self.read_state()

    def read_state(self) -> ArmState:
        """Like `state()` but also before connect() (for the env's own bookkeeping)."""
        scene = self._scene
        with scene.lock:
            d = scene.data
            xmat = d.site_xmat[self._tcp_site].reshape(3, 3)
            tcp = np.concatenate([d.site_xpos[self._tcp_site], rotation_to_quat_wxyz(xmat)])
            fingers = d.qpos[self._finger_qadr]  # (2,)
            return ArmState(
                q=d.qpos[self._qadr].copy(),
                dq=d.qvel[self._dadr].copy(),
                tcp_pose=tcp,
                gripper=float(np.clip(fingers.mean() / self._finger_stroke, 0.0, 1.0)),
                stamp_s=float(d.time),
                protective_stop=self._protective_stop,
                extra={"gripper_command": self._gripper_cmd},
            )

    def servo_joint(self, q: np.ndarray, dt_s: float) -> None:
        """Move the joint targets linearly to q (6,) rad over dt_s (> 0) seconds of sim time.

        Raises ArmNotConnectedError before connect(), SafetyViolation("invalid"/"non_finite")
        on a bad target or period (`robot.commands`, the same conversion as the SafeArm in front
        of it, which also checks limits, workspace and speed).
        """
        if not self._connected:
            raise ArmNotConnectedError("SimArm.servo_joint() before connect()")
        q = joint_vector(q)
        dt_s = check_servo_period(dt_s)
        with self._scene.lock:
            if self._protective_stop:
                return  # like a UR controller in a protective stop: targets are ignored
            t = float(self._scene.data.time)
            self._q_from = self._target_at(t)
            self._q_to = q.copy()
            self._t0 = t
            self._dt = float(dt_s)

    def set_gripper(self, closed_fraction: float) -> None:
        """Command the fingers: 0 = fully open (85 mm), 1 = fully closed. Raises ValueError
        outside [0, 1] and ArmNotConnectedError before connect()."""
        if not self._connected:
            raise ArmNotConnectedError("SimArm.set_gripper() before connect()")
        g = float(closed_fraction)
        if not (np.isfinite(g) and 0.0 <= g <= 1.0):
            raise ValueError(f"gripper command must be in [0, 1], got {closed_fraction!r}")
        with self._scene.lock:
            self._gripper_cmd = g
            self._scene.data.ctrl[self._finger_act] = g * self._finger_stroke

    def stop(self) -> None:
        """servoStop: hold the measured joint positions."""
        with self._scene.lock:
            self.hold(self._q())

    def disconnect(self) -> None:
        """Stop and disconnect; idempotent."""
        with self._scene.lock:
            if self._connected:
                self.hold(self._q())
            self._connected = False

    # ------------------------------------------------------------------ fault injection
    def inject_protective_stop(self) -> None:
        """Simulate a protective stop (a collision, the pendant's safety system): the arm holds
        where it is, servo targets are ignored and `state().protective_stop` is True until
        `rearm()` (the dashboard's "unlock protective stop" of a real controller)."""
        with self._scene.lock:
            self._protective_stop = True
            self.hold(self._q())

    def rearm(self) -> None:
        """Release a simulated protective stop (the arm keeps holding its measured pose)."""
        with self._scene.lock:
            if self._protective_stop:
                self._protective_stop = False
                self.hold(self._q())

    # ------------------------------------------------------------------ env hooks
    def hold(self, q: np.ndarray) -> None:
        """Hold joint targets at q (6,) rad (reset, stop); not a motion command."""
        q = np.asarray(q, dtype=float).copy()
        self._q_from = q
        self._q_to = q.copy()
        self._t0 = float(self._scene.data.time)
        self._dt = 1.0
        self._apply(self._t0)

    def reset_gripper(self, closed_fraction: float = 0.0) -> None:
        """Set the gripper command without the connection check (env reset)."""
        self._gripper_cmd = float(closed_fraction)
        self._scene.data.ctrl[self._finger_act] = self._gripper_cmd * self._finger_stroke

    def pre_step(self) -> None:
        """Called by the env before every physics step: write the interpolated servo target."""
        self._apply(float(self._scene.data.time))

    def _target_at(self, t: float) -> np.ndarray:
        w = min(max((t - self._t0) / self._dt, 0.0), 1.0)
        return self._q_from + w * (self._q_to - self._q_from)  # (6,)

    def _apply(self, t: float) -> None:
        d = self._scene.data
        d.ctrl[self._pos_act] = self._target_at(t)
        if t < self._t0 + self._dt:
            d.ctrl[self._vel_act] = (self._q_to - self._q_from) / self._dt
        else:
            d.ctrl[self._vel_act] = 0.0

    def _q(self) -> np.ndarray:
        return self._scene.data.qpos[self._qadr].copy()
