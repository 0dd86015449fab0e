"""The arm behind the loopback controller: a joint motion generator (what the UR controller's
trajectory layer does for servoj / speedj / movej / stopj) feeding either the project's MuJoCo
UR3 cell (`sim/cell.py`, physics=True) or a kinematic joint model (physics=False).

Units: rad, rad/s, rad/s², seconds, metres. Joint order is UR's (robot/arm.py).

Model choices (docs/ur_rtde_protocol.md §4.3 "Arm model" [inferred]; UR's own servo algorithm is not published):
* servoJ: the reference q_ref follows the latest servo target with a first-order filter of time
  constant tau = lookahead_time * sqrt(300 / gain) (so the defaults 0.1 s / 300 give 0.1 s; a
  higher gain tracks tighter), joint speeds clamped to the UR3 limits (docs/hardware.md §1.1) times
  the speed slider; while clamping, `limiter` (reported as RTDE speed_scaling, the trajectory
  limiter's scaling) drops below 1.
* speedJ: q_ref integrates the commanded joint speeds, reached with the given acceleration.
* moveJ: synchronised trapezoidal profile (all joints start and end together) with the given
  speed/acceleration; the trajectory clock runs at speed_scaling × slider (UR scales time).
* stop (stopJ/servoStop/speedStop/program stop): decelerate every joint to zero at `a`.
* physics=True: MuJoCo position + velocity actuators (cell.py, kp/kv, torque-clamped, gravity
  compensated) track q_ref/qd_ref; actual_q is the simulated joint position.
  physics=False: actual_q = q_ref.

Pose math: UR poses (x, y, z m; rx, ry, rz rotation vector rad) <-> transforms through the
project's helpers in `robot.kinematics`; relative rotations (TCP angular speed, Jacobian) through
scipy `Rotation`. Threads: none; used by the controller process's single network-loop thread,
once per 2 ms (e-Series) / 8 ms (CB3) controller cycle.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.spatial.transform import Rotation

from dynaflip_ros.robot.kinematics import (  # noqa: F401 - UR pose helpers re-exported for core / script_emulation
    transform_from_ur_pose,
    ur_pose_from_transform,
    UR3_CB3_DH,
    UR3_JOINT_LIMITS_RAD,
    UR3_MAX_JOINT_SPEED_RAD_S,
)
from dynaflip_ros.robot.kinematics import inverse_kinematics as kin_inverse_kinematics

N = 6
HOLD, SERVO, SPEED, MOVE, STOP, TEACH = "hold", "servo", "speed", "move", "stop", "teach"
MOVE_ARRIVE_TOL_RAD = 2e-3      # a synchronous move is "done" when |actual - goal| < this ...
MOVE_SETTLE_TIMEOUT_S = 0.5     # ... or this long after the trajectory ended


_DH_ROWS = tuple(zip(UR3_CB3_DH.a, UR3_CB3_DH.d,
                     (math.cos(x) for x in UR3_CB3_DH.alpha), (math.sin(x) for x in UR3_CB3_DH.alpha)))


def dh_frames(q) -> list[np.ndarray]:
    """(4, 4) DH frames 1..6 of the CB3 UR3 at q (6,) rad: the same chain as
    `robot.kinematics.forward_kinematics` (docs/hardware.md §1.2), in scalar arithmetic (~5x faster
    than the numpy chain for the controller's 500 Hz outputs)."""
    r00, r01, r02, r10, r11, r12, r20, r21, r22 = 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0
    px = py = pz = 0.0
    out = []
    for (a, d, ca, sa), th in zip(_DH_ROWS, q):
        ct, st = math.cos(th), math.sin(th)
        # link: [[ct, -st ca, st sa, a ct], [st, ct ca, -ct sa, a st], [0, sa, ca, d]]
        m01, m02, m11, m12 = -st * ca, st * sa, ct * ca, -ct * sa
        n00 = r00 * ct + r01 * st
        n01 = r00 * m01 + r01 * m11 + r02 * sa
        n02 = r00 * m02 + r01 * m12 + r02 * ca
        n10 = r10 * ct + r11 * st
        n11 = r10 * m01 + r11 * m11 + r12 * sa
        n12 = r10 * m02 + r11 * m12 + r12 * ca
        n20 = r20 * ct + r21 * st
        n21 = r20 * m01 + r21 * m11 + r22 * sa
        n22 = r20 * m02 + r21 * m12 + r22 * ca
        px, py, pz = (px + r00 * a * ct + r01 * a * st + r02 * d,
                      py + r10 * a * ct + r11 * a * st + r12 * d,
                      pz + r20 * a * ct + r21 * a * st + r22 * d)
        r00, r01, r02, r10, r11, r12, r20, r21, r22 = n00, n01, n02, n10, n11, n12, n20, n21, n22
        out.append(np.array([[r00, r01, r02, px], [r10, r11, r12, py], [r20, r21, r22, pz],
                             [0.0, 0.0, 0.0, 1.0]]))
    return out


def relative_rotvec(r_to: np.ndarray, r_from: np.ndarray) -> np.ndarray:
    """Rotation vector (3,) rad, base frame, of R_to R_from^T for (3, 3) rotations: the rotation
    taking `r_from` to `r_to` (scipy `Rotation.as_rotvec`, angle in [0, pi];
    https://docs.scipy.org/doc/scipy/reference/generated/scipy.spatial.transform.Rotation.html).
    Both inputs must be rotation matrices (DH / Rodrigues products, orthonormal to rounding):
    `assume_valid=True` skips scipy's re-orthonormalisation, ~5x faster at the 500 Hz cycle."""
    return Rotation.from_matrix(r_to @ r_from.T, assume_valid=True).as_rotvec()


def flange_to_tcp(t_flange: np.ndarray, tcp_offset: np.ndarray | None) -> np.ndarray:
    """(4, 4) TCP transform from the (4, 4) flange transform and the TCP offset, a UR pose (6,)
    (m, rotation vector rad) in the flange frame; None or all-zero offset: the flange itself."""
    if tcp_offset is not None and np.any(np.asarray(tcp_offset) != 0):
        return t_flange @ transform_from_ur_pose(tcp_offset)
    return t_flange


def tcp_pose(q: np.ndarray, tcp_offset: np.ndarray | None = None) -> np.ndarray:
    """UR pose (6,) of the TCP (flange when `tcp_offset` is None or zero) in the base frame,
    from the CB3 DH forward kinematics (robot/kinematics.py, docs/hardware.md §1.2).
    Raises ValueError when q is not 6 finite angles (rad)."""
    q = np.asarray(q, dtype=float)
    if q.shape != (6,) or not np.all(np.isfinite(q)):
        raise ValueError(f"q must be finite (6,), got {q!r}")
    return ur_pose_from_transform(flange_to_tcp(dh_frames(q.tolist())[-1], tcp_offset))


def inverse_kinematics(pose, q_near: np.ndarray, tcp_offset=None, max_iters: int = 200,
                       tol_pos_m: float = 1e-6, tol_rot_rad: float = 1e-6) -> np.ndarray | None:
    """IK of a UR pose (6,) from `q_near` (6,) on the CB3 DH model (`robot.kinematics.
    inverse_kinematics`, damped least squares). Returns (6,) rad within the joint limits, or
    None when it does not converge (the controller then reports no solution)."""
    tool = transform_from_ur_pose(tcp_offset) if tcp_offset is not None and np.any(np.asarray(tcp_offset) != 0) else None
    res = kin_inverse_kinematics(transform_from_ur_pose(pose), np.asarray(q_near, dtype=float), UR3_CB3_DH, tool,
                                 max_iterations=max_iters, tol_position_m=tol_pos_m, tol_rotation_rad=tol_rot_rad)
    return res.q if res.converged else None


class JointMotion:
    """Reference trajectory generator of the controller (see module doc).

    State: q_ref, qd_ref (6,) and `mode`. Call one of the command methods, then `update(dt_s,
    scaling, q_actual)` once per control cycle.
    """

    def __init__(self, q0: np.ndarray) -> None:
        self.q_ref = np.asarray(q0, dtype=float).copy()
        self.qd_ref = np.zeros(N)
        self.qdd_ref = np.zeros(N)
        self.mode = HOLD
        self.servo_target = self.q_ref.copy()
        self.servo_tau_s = 0.1
        self.speed_target = np.zeros(N)
        self.speed_acc = 1.4
        self.stop_decel = 10.0
        self.move_goal: np.ndarray | None = None
        self.move_start = self.q_ref.copy()
        self.move_len = 0.0
        self.move_v = 1.05
        self.move_a = 1.4
        self.move_T = 0.0
        self.move_tau = 0.0
        self.move_done = True
        self.move_end_time_s: float | None = None
        self.clamped = 0   # servo/move targets clamped to the joint limits
        self.limiter = 1.0  # < 1 while servo targets ask for more than the joint speed limits

    # ------------------------------------------------------------------ commands
    def hold(self, q: np.ndarray | None = None) -> None:
        """Stand still at q (default q_ref) at once (protective stop / e-stop halt)."""
        if q is not None:
            self.q_ref = np.asarray(q, dtype=float).copy()
        self.qd_ref[:] = 0.0
        self.mode = HOLD
        self.move_done = True

    def servo(self, q: np.ndarray, lookahead_s: float, gain: float) -> None:
        """New servoJ target (6,) rad; lookahead 0.03..0.2 s, gain 100..2000 (clamped)."""
        la = min(max(float(lookahead_s), 0.03), 0.2) if math.isfinite(lookahead_s) else 0.1
        g = min(max(float(gain), 100.0), 2000.0) if math.isfinite(gain) else 300.0
        self.servo_target = self._clamp(q)
        self.servo_tau_s = la * math.sqrt(300.0 / g)
        self.mode = SERVO

    def speed(self, qd: np.ndarray, acc: float) -> None:
        """speedJ: joint speed target (6,) rad/s reached at `acc` rad/s²."""
        self.speed_target = np.clip(np.asarray(qd, dtype=float), -UR3_MAX_JOINT_SPEED_RAD_S,
                                    UR3_MAX_JOINT_SPEED_RAD_S)
        self.speed_acc = max(float(acc), 1e-3) if math.isfinite(acc) else 1.4
        self.mode = SPEED

    def move(self, q_goal: np.ndarray, speed: float, acc: float) -> None:
        """moveJ to q_goal (6,) rad with joint speed (rad/s) / acceleration (rad/s²)."""
        goal = self._clamp(q_goal)
        self.move_start = self.q_ref.copy()
        self.move_goal = goal
        self.move_len = float(np.max(np.abs(goal - self.move_start)))
        v = float(speed) if math.isfinite(speed) and speed > 0 else 1.05
        a = float(acc) if math.isfinite(acc) and acc > 0 else 1.4
        self.move_v = min(v, float(np.min(UR3_MAX_JOINT_SPEED_RAD_S)))
        self.move_a = a
        d = self.move_len
        if d <= self.move_v ** 2 / self.move_a:
            self.move_T = 2.0 * math.sqrt(d / self.move_a)
        else:
            self.move_T = d / self.move_v + self.move_v / self.move_a
        self.move_tau = 0.0
        self.move_done = False
        self.move_end_time_s = None
        self.mode = MOVE

    def stop(self, decel: float) -> None:
        """Decelerate to standstill at `decel` rad/s² (stopJ, servoStop, speedStop)."""
        self.stop_decel = float(decel) if math.isfinite(decel) and decel > 0 else 10.0
        self.mode = STOP
        self.move_done = True

    def teach(self, on: bool) -> None:
        """Teach (freedrive) mode: the reference follows the measured joints."""
        self.qd_ref[:] = 0.0
        self.mode = TEACH if on else HOLD

    # ------------------------------------------------------------------ per cycle
    def update(self, dt_s: float, scaling: float, q_actual: np.ndarray, now_s: float) -> None:
        """Advance the reference by dt_s seconds; `scaling` = speed_scaling × slider (0..1)."""
        prev_qd = self.qd_ref.copy()
        s = min(max(scaling, 0.0), 1.0)
        vmax = UR3_MAX_JOINT_SPEED_RAD_S * s
        self.limiter = 1.0
        if self.mode == HOLD:
            self.qd_ref[:] = 0.0
        elif self.mode == TEACH:
            self.q_ref = np.asarray(q_actual, dtype=float).copy()
            self.qd_ref[:] = 0.0
        elif self.mode == SERVO:
            tau = max(self.servo_tau_s, dt_s)
            qd = (self.servo_target - self.q_ref) / tau
            over = float(np.max(np.abs(qd) / UR3_MAX_JOINT_SPEED_RAD_S))
            if over > 1.0:
                self.limiter = 1.0 / over     # the trajectory limiter is active
            self.qd_ref = np.clip(qd, -vmax, vmax)
            self.q_ref = self.q_ref + self.qd_ref * dt_s
        elif self.mode == SPEED:
            want = self.speed_target * s
            over = float(np.max(np.abs(want) / np.maximum(vmax, 1e-12))) if s > 0 else 0.0
            if over > 1.0:
                want = want / over           # keep the direction (speedL paths stay straight)
            delta = want - self.qd_ref
            step = self.speed_acc * dt_s
            big = float(np.max(np.abs(delta)))
            if big > step:
                delta *= step / big          # ramp all joints together at `acc`
            self.qd_ref = self.qd_ref + delta
            self.q_ref = self._clamp(self.q_ref + self.qd_ref * dt_s)
        elif self.mode == STOP:
            # all joints slow down together (the fastest at `decel`): the path keeps its direction
            step = self.stop_decel * dt_s
            big = float(np.max(np.abs(self.qd_ref)))
            self.qd_ref = self.qd_ref * (max(big - step, 0.0) / big) if big > 0 else self.qd_ref * 0.0
            self.q_ref = self._clamp(self.q_ref + self.qd_ref * dt_s)
            if not np.any(self.qd_ref):
                self.mode = HOLD
        elif self.mode == MOVE:
            self.move_tau = min(self.move_tau + dt_s * s, self.move_T)
            p, v = self._profile(self.move_tau)
            if self.move_len > 0:
                direction = (self.move_goal - self.move_start) / self.move_len
            else:
                direction = np.zeros(N)
            self.q_ref = self.move_start + direction * p
            self.qd_ref = direction * v * s
            if self.move_tau >= self.move_T:
                self.q_ref = self.move_goal.copy()
                self.qd_ref[:] = 0.0
                if self.move_end_time_s is None:
                    self.move_end_time_s = now_s
                arrived = np.max(np.abs(np.asarray(q_actual) - self.move_goal)) < MOVE_ARRIVE_TOL_RAD
                if arrived or now_s - self.move_end_time_s > MOVE_SETTLE_TIMEOUT_S:
                    self.move_done = True
                    self.mode = HOLD
        self.qdd_ref = (self.qd_ref - prev_qd) / dt_s

    def _profile(self, t: float) -> tuple[float, float]:
        """Trapezoid along the longest joint: (distance, speed) at time t."""
        a, v, d, T = self.move_a, self.move_v, self.move_len, self.move_T
        if d <= 0 or T <= 0:
            return d, 0.0
        if d <= v * v / a:   # triangular
            th = T / 2.0
            if t <= th:
                return 0.5 * a * t * t, a * t
            r = T - t
            return d - 0.5 * a * r * r, a * r
        ta = v / a
        if t <= ta:
            return 0.5 * a * t * t, a * t
        if t <= T - ta:
            return 0.5 * a * ta * ta + v * (t - ta), v
        r = T - t
        return d - 0.5 * a * r * r, a * r

    def _clamp(self, q) -> np.ndarray:
        q = np.asarray(q, dtype=float)
        c = np.clip(q, UR3_JOINT_LIMITS_RAD[:, 0], UR3_JOINT_LIMITS_RAD[:, 1])
        if np.any(c != q):
            self.clamped += 1
        return c


class ArmBackend:
    """Joint state of the simulated UR3 (+ gripper fingers).

    physics=True: the project's MuJoCo cell (`sim.cell.build_model(SimConfig())`, UR3 CB3 + 2F-85
    style gripper, table, sink; objects parked) stepped with its 2 ms timestep; physics=False:
    kinematic (actual = reference, fingers = command).

    Args:
        q0: (6,) initial joints, rad. physics: see above. with_gripper: drive the fingers.
    Raises ValueError on a bad q0.
    """

    def __init__(self, q0: np.ndarray, physics: bool = True) -> None:
        q0 = np.asarray(q0, dtype=float)
        if q0.shape != (N,) or not np.all(np.isfinite(q0)):
            raise ValueError(f"q0 must be finite (6,), got {q0!r}")
        self.physics = bool(physics)
        self.q = q0.copy()
        self.qd = np.zeros(N)
        self.qdd = np.zeros(N)
        self.finger_closure = 0.0          # 0 open .. 1 closed (measured)
        self.finger_velocity = 0.0         # closure / s
        self.torque = np.zeros(N)
        self.timestep_s = 0.002
        if self.physics:
            import mujoco

            from dynaflip_ros.configs.sim import SimConfig
            from dynaflip_ros.robot.arm import UR_JOINT_NAMES
            from dynaflip_ros.sim import cell

            self._mj = mujoco
            cfg = SimConfig()
            self.model = cell.build_model(cfg)
            self.data = mujoco.MjData(self.model)
            m = self.model
            self.timestep_s = float(m.opt.timestep)

            def jid(n):
                return mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, n)

            def aid(n):
                return mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_ACTUATOR, n)

            self._qadr = np.array([m.jnt_qposadr[jid(n)] for n in UR_JOINT_NAMES])
            self._dadr = np.array([m.jnt_dofadr[jid(n)] for n in UR_JOINT_NAMES])
            self._pos_act = np.array([aid(n) for n in UR_JOINT_NAMES])
            self._vel_act = np.array([aid(n + "_vel") for n in UR_JOINT_NAMES])
            self._fq = np.array([m.jnt_qposadr[jid(n)] for n in cell.FINGER_JOINT_NAMES])
            self._fd = np.array([m.jnt_dofadr[jid(n)] for n in cell.FINGER_JOINT_NAMES])
            self._fact = np.array([aid(n) for n in cell.FINGER_ACTUATOR_NAMES])
            self._stroke = float(cell.FINGER_STROKE_M)
            # Park the objects (as the env does) and place the arm.
            for i, name in enumerate(cell.cell_objects(cfg)):
                spec = cell.OBJECT_SPECS[name]
                j = jid(spec.body + "_free")
                px, py, pz = cell.parked_position(i)
                a = m.jnt_qposadr[j]
                self.data.qpos[a:a + 7] = [px, py, pz + spec.half_height_m, 1, 0, 0, 0]
            self.data.qpos[self._qadr] = q0
            self.data.ctrl[self._pos_act] = q0
            mujoco.mj_forward(m, self.data)

    def step(self, dt_s: float, q_ref: np.ndarray, qd_ref: np.ndarray, finger_cmd: float,
             hold_fingers_at: float | None = None) -> None:
        """Advance dt_s seconds tracking (q_ref, qd_ref) (6,) and the finger closure command
        0..1. `hold_fingers_at`: a closure where an (injected) object blocks the fingers."""
        prev_qd = self.qd.copy()
        if not self.physics:
            self.q = np.asarray(q_ref, dtype=float).copy()
            self.qd = np.asarray(qd_ref, dtype=float).copy()
            self.qdd = (self.qd - prev_qd) / dt_s
            c = finger_cmd
            if hold_fingers_at is not None and self.finger_closure <= hold_fingers_at + 1e-9:
                c = min(c, hold_fingers_at)   # the object sits between the fingers
            self.finger_velocity = (c - self.finger_closure) / dt_s
            self.finger_closure = c
            return
        mj, m, d = self._mj, self.model, self.data
        d.ctrl[self._pos_act] = q_ref
        d.ctrl[self._vel_act] = qd_ref
        fc = finger_cmd
        # A virtual object between the fingers (only when they are open wider than it).
        block = hold_fingers_at is not None and self.finger_closure <= hold_fingers_at + 0.01
        d.ctrl[self._fact] = fc * self._stroke
        n = max(1, int(round(dt_s / self.timestep_s)))
        for _ in range(n):
            mj.mj_step(m, d)
            if block:
                lim = hold_fingers_at * self._stroke
                for a, dd in zip(self._fq, self._fd):
                    if d.qpos[a] > lim:
                        d.qpos[a] = lim
                        d.qvel[dd] = min(d.qvel[dd], 0.0)
        self.q = d.qpos[self._qadr].copy()
        self.qd = d.qvel[self._dadr].copy()
        self.qdd = (self.qd - prev_qd) / dt_s
        self.torque = d.actuator_force[self._pos_act] + d.actuator_force[self._vel_act]
        self.finger_closure = float(np.clip(d.qpos[self._fq].mean() / self._stroke, 0.0, 1.0))
        self.finger_velocity = float(d.qvel[self._fd].mean() / self._stroke)
