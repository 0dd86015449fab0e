"""Scripted pick-into-sink expert: Cartesian waypoints -> mink IK -> 10 Hz absolute joint targets.

Plan (privileged: it reads the object's pose from the simulator at `reset`), one segment per
phase of `data.schema.PHASES`:

    approach  TCP to `approach_height_m` above the grasp point (higher when another object on the
              table is taller, so the fingertips clear it), gripper yawed to the object
    descend   straight down to the grasp point
    grasp     hold while the fingers close
    lift      straight up to `lift_height_m`
    carry     over the basin centre at `release_height_m`
    release   hold while the fingers open
    retreat   up to `retreat_height_m`

The grasp point is the centre of the object's grasp part (`task.catalogue`); of the grasp yaws
the object's symmetry allows, the expert takes the one whose open fingers stay farthest from the
other objects on the table (ties: the one closest to the current yaw), so it moves around them.
Each move follows a minimum-jerk profile in position and yaw; its duration comes from
`max_tcp_speed_m_s` and is stretched until the planned joint speeds stay below
`max_joint_speed_fraction` of the UR3 limits. The TCP keeps the gripper pointing straight down.
IK: mink (differential IK as a QP, solver daqp) on the arm-only model (`sim/cell.py`), a frame
task on the TCP site plus a light posture task, joint limits enforced; each sample is
warm-started from the previous one, so the joint trajectory is continuous.

Source: mink (https://github.com/kevinzakka/mink) `FrameTask`, `PostureTask`,
`ConfigurationLimit`, `solve_ik`.
Rotations: `scipy.spatial.transform.Rotation`
(https://docs.scipy.org/doc/scipy/reference/generated/scipy.spatial.transform.Rotation.html).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from dynaflip_ros.configs.sim import ExpertConfig, SimConfig
from dynaflip_ros.data.schema import PHASES
from dynaflip_ros.robot.arm import ArmState
from dynaflip_ros.robot.kinematics import UR3_MAX_JOINT_SPEED_RAD_S
from dynaflip_ros.sim.cell_params import yaw_from_quat_wxyz

PHASE_INDEX = {name: i for i, name in enumerate(PHASES)}
_MIN_GRASP_TCP_Z_M = 0.021   # keeps the finger pads (17.5 mm below the TCP) off the table
_FINGERTIP_BELOW_TCP_M = 0.0175   # pad half-height: the fingertips reach this far below the TCP
_FINGER_CLEARANCE_M = 0.03        # fingertips pass at least this high over other objects
_OPEN_FINGER_OFFSET_M = 0.05      # open finger pad centre from the TCP axis (42.5 mm stroke + pad)
_FINGER_ROOM_ENOUGH_M = 0.03      # a grasp yaw with this much room is as good as any
_SIDEWAYS_CORRECTION_M = 0.06     # a re-plan from low this close to the grasp corrects at its own height


class IKError(RuntimeError):
    """IK did not converge to a waypoint (unreachable pose)."""


_FLIP_YZ = np.diag([1.0, -1.0, -1.0])   # rotation by pi about x: tool z down, tool x kept


def gripper_down_rotation(yaw_rad: float) -> np.ndarray:
    """(3, 3) TCP orientation with tool z pointing down (-z of the base) and tool x at `yaw_rad`:
    Rz(yaw) Rx(pi)."""
    return Rotation.from_euler("z", yaw_rad).as_matrix() @ _FLIP_YZ


def yaw_of(rotation: np.ndarray) -> float:
    """Yaw of the tool x axis in the base xy-plane, rad."""
    return math.atan2(rotation[1, 0], rotation[0, 0])


def _wrap(a: float) -> float:
    return (a + math.pi) % (2 * math.pi) - math.pi


class TcpIK:
    """Differential IK of the TCP with mink on the arm-only UR3 model.

    Args:
        config: the SimConfig (geometry, tcp offset); expert parameters from config.expert.
    """

    def __init__(self, config: SimConfig) -> None:
        import mink

        from dynaflip_ros.sim.cell import TCP_SITE, build_model

        self._mink = mink
        self.model = build_model(config, arm_only=True)
        self.cfg = config.expert
        self.configuration = mink.Configuration(self.model)
        self.frame_task = mink.FrameTask(TCP_SITE, "site", position_cost=1.0, orientation_cost=0.5,
                                         lm_damping=1e-6)
        self.posture_task = mink.PostureTask(self.model, cost=1e-3)
        self.limits = [mink.ConfigurationLimit(self.model)]

    def fk(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """TCP position (3,) and rotation (3, 3) for joints q (6,)."""
        self.configuration.update(np.asarray(q, dtype=float))
        t = self.configuration.get_transform_frame_to_world(self.frame_task.frame_name, "site")
        return t.translation().copy(), t.rotation().as_matrix().copy()

    def solve(self, position: np.ndarray, rotation: np.ndarray, q_init: np.ndarray) -> np.ndarray:
        """Joints (6,) reaching the TCP pose, warm-started (and posture-regularised) at q_init.

        Raises IKError when the pose error stays above (ik_tol_m, ik_tol_rad).
        """
        mink = self._mink
        q_init = np.asarray(q_init, dtype=float)
        self.configuration.update(q_init.copy())
        self.posture_task.set_target(q_init.copy())
        target = mink.SE3.from_rotation_and_translation(mink.SO3.from_matrix(rotation), np.asarray(position))
        self.frame_task.set_target(target)
        tasks = [self.frame_task, self.posture_task]
        err = np.full(6, np.inf)
        for _ in range(self.cfg.ik_max_iters):
            vel = mink.solve_ik(self.configuration, tasks, 1.0, "daqp", damping=1e-4, limits=self.limits)
            self.configuration.integrate_inplace(vel, 1.0)
            err = self.frame_task.compute_error(self.configuration)
            if np.linalg.norm(err[:3]) < self.cfg.ik_tol_m and np.linalg.norm(err[3:]) < self.cfg.ik_tol_rad:
                return self.configuration.q.copy()
        raise IKError(f"IK did not converge to {np.round(position, 4).tolist()}: "
                      f"position error {np.linalg.norm(err[:3]):.2e} m, rotation error {np.linalg.norm(err[3:]):.2e} rad")


@dataclass
class _Segment:
    phase: int
    duration_s: float
    p0: np.ndarray
    p1: np.ndarray
    yaw0: float
    yaw1: float
    gripper: float


def _min_jerk(s: float) -> float:
    s = min(max(s, 0.0), 1.0)
    return s ** 3 * (10 - 15 * s + 6 * s * s)


class ScriptedExpert:
    """IK-based scripted expert for `PickIntoSinkEnv`.

    Usage:
        expert = ScriptedExpert(env.config)
        expert.reset(env, info)                 # plans the whole episode (reads the object pose)
        action, phase = expert.act(state, t_s)  # every 0.1 s

    `act` returns the (7,) absolute target (6 joints rad + gripper 0 open..1 closed) for
    t_s + 1 / control_rate_hz (the next control instant) and the phase index into
    `data.schema.PHASES`; t_s is on the env clock (simulation time, like `state.stamp_s`).
    After the plan ends it keeps returning the final target (phase "retreat"); `done(t_s)` says so.
    """

    def __init__(self, config: SimConfig | None = None) -> None:
        self.sim_config = config if config is not None else SimConfig()
        self.cfg: ExpertConfig = self.sim_config.expert
        self.ik = TcpIK(self.sim_config)
        self._times: np.ndarray | None = None
        self._q: np.ndarray | None = None
        self._g: np.ndarray | None = None
        self._phase: np.ndarray | None = None
        self._t0 = 0.0

    # ------------------------------------------------------------------ planning
    def reset(self, env, info=None, grasp_offset_m=None) -> None:
        """Plan the episode from the env's current arm state and target object pose.

        grasp_offset_m: (2,) m added to the grasp point in the base xy-plane (a deliberately
        missed grasp, `sim.rollout.SimRunner.run_expert_episode(regrasp_offset_m=...)`); None:
        the object's grasp point. Calling `reset` again mid-episode re-plans from where the arm
        is (the recovery after a missed grasp, the takeover from a learner's policy); from a TCP
        lower than the approach height above the grasp (never the case from home) the approach
        ends above the grasp at the current height (within `_SIDEWAYS_CORRECTION_M` of it; farther
        away at least at the height clearing the other objects), so the correction is sideways,
        then the descent. Raises IKError if a waypoint is unreachable or
        the joint path cannot be timed within `max_joint_speed_fraction` of the UR3 speed limits.
        """
        from dynaflip_ros.sim.cell import OBJECT_SPECS

        info = env.episode if info is None else info
        name = info.object_name
        spec = OBJECT_SPECS[name]
        st = env.arm.read_state()
        self._t0 = st.stamp_s
        obj = env.object_pose(name)
        obj_yaw = yaw_from_quat_wxyz(obj[3:])
        p_home, r_home = self.ik.fk(st.q)
        yaw_home = yaw_of(r_home)
        centre = env.grasp_point(name)
        if grasp_offset_m is not None:
            centre = centre + np.array([float(grasp_offset_m[0]), float(grasp_offset_m[1]), 0.0])
        others = [(env.object_pose(n)[:3], OBJECT_SPECS[n]) for n in info.distractors]
        yaw_grasp = self._grasp_yaw(spec, obj_yaw, yaw_home, centre, others)
        c = self.cfg
        grasp = np.array([centre[0], centre[1], max(obj[2] - c.grasp_depth_m, _MIN_GRASP_TCP_Z_M)])
        tallest = max((o.height_m for _, o in others), default=0.0)
        clear_z = tallest + _FINGERTIP_BELOW_TCP_M + _FINGER_CLEARANCE_M   # fingertips above every other object
        above = np.array([grasp[0], grasp[1], max(grasp[2] + c.approach_height_m, clear_z)])
        if p_home[2] < above[2]:  # re-planned from low (a takeover mid-descent): never climb back to the
            near = np.linalg.norm(p_home[:2] - grasp[:2]) <= _SIDEWAYS_CORRECTION_M  # approach height; the
            above[2] = max(p_home[2], grasp[2] if near else clear_z)  # fingers are already at this height
        lifted = np.array([grasp[0], grasp[1], c.lift_height_m])
        sx, sy = self.sim_config.sink_center_xy_m
        over_sink = np.array([sx, sy, c.release_height_m])
        retreat = np.array([sx, sy, c.retreat_height_m])
        P = PHASE_INDEX
        segs = [
            _Segment(P["approach"], 0.0, p_home, above, yaw_home, yaw_grasp, 0.0),
            _Segment(P["descend"], 0.0, above, grasp, yaw_grasp, yaw_grasp, 0.0),
            _Segment(P["grasp"], c.grasp_close_s, grasp, grasp, yaw_grasp, yaw_grasp, 1.0),
            _Segment(P["lift"], 0.0, grasp, lifted, yaw_grasp, yaw_grasp, 1.0),
            _Segment(P["carry"], 0.0, lifted, over_sink, yaw_grasp, yaw_grasp, 1.0),
            _Segment(P["release"], c.release_open_s, over_sink, over_sink, yaw_grasp, yaw_grasp, 0.0),
            _Segment(P["retreat"], 0.0, over_sink, retreat, yaw_grasp, yaw_grasp, 0.0),
        ]
        dt = 1.0 / c.control_rate_hz
        speed_cap = UR3_MAX_JOINT_SPEED_RAD_S * c.max_joint_speed_fraction  # (6,)
        times, qs = [0.0], [np.asarray(st.q, dtype=float)]
        gs, phases = [float(st.extra.get("gripper_command", 0.0))], [P["approach"]]
        t = 0.0
        for seg in segs:
            dist = float(np.linalg.norm(seg.p1 - seg.p0))
            dyaw = abs(_wrap(seg.yaw1 - seg.yaw0))
            if seg.duration_s <= 0:
                # Min-jerk peak speed is 1.875x the mean: time the move for the speed cap.
                seg.duration_s = max(c.min_segment_s, 1.875 * dist / c.max_tcp_speed_m_s, 1.875 * dyaw / 1.5)
            for _attempt in range(6):
                # Whole control periods, so the plan's samples are the 10 Hz actions themselves.
                n = max(1, int(math.ceil(seg.duration_s / dt - 1e-6)))
                seg.duration_s = n * dt
                q_prev = qs[-1]
                seg_q = []
                for k in range(1, n + 1):
                    s = _min_jerk(k / n)
                    p = seg.p0 + s * (seg.p1 - seg.p0)
                    yaw = seg.yaw0 + s * _wrap(seg.yaw1 - seg.yaw0)
                    q_prev = self.ik.solve(p, gripper_down_rotation(yaw), q_prev)
                    seg_q.append(q_prev)
                dq = np.abs(np.diff(np.vstack([qs[-1]] + seg_q), axis=0)) / dt  # (n, 6)
                worst = float(np.max(dq / speed_cap))
                if worst <= 1.0:
                    break
                seg.duration_s *= 1.1 * worst
            else:
                raise IKError(f"phase {PHASES[seg.phase]!r} still needs {worst:.1f}x the joint speed cap after "
                              "retiming (an IK branch jump near a singularity?)")
            for k, qk in enumerate(seg_q, start=1):
                times.append(t + k * dt)
                qs.append(qk)
                gs.append(seg.gripper)
                phases.append(seg.phase)
            t += seg.duration_s
        self._times = np.asarray(times)  # (K,)
        self._q = np.vstack(qs)  # (K, 6)
        self._g = np.asarray(gs)  # (K,)
        self._phase = np.asarray(phases)  # (K,)
        self.grasp_yaw_rad = yaw_grasp

    def _grasp_yaw(self, spec, obj_yaw: float, yaw_ref: float, centre: np.ndarray | None = None,
                   others: list | None = None) -> float:
        """Gripper yaw closing the fingers (tool y) across the object: of the yaws its symmetry
        allows (within half a turn of yaw_ref), the one with the most room between the open
        fingers and the other objects (`others`: (position (3,), ObjectSpec) pairs), then the
        one closest to yaw_ref."""
        if spec.grasp_symmetry_rad <= 0:
            candidates = [yaw_ref + d for d in np.radians(np.arange(-90, 91, 15))]
        else:
            # tool y = (sin psi, -cos psi): parallel to object x when psi = yaw + pi/2, to object y when psi = yaw.
            base = obj_yaw if spec.grasp_across_y else obj_yaw + math.pi / 2
            k0 = round((yaw_ref - base) / spec.grasp_symmetry_rad)
            candidates = [base + k * spec.grasp_symmetry_rad for k in range(k0 - 3, k0 + 4)
                          if abs(base + k * spec.grasp_symmetry_rad - yaw_ref) <= math.pi / 2 + 1e-9]
        if not others or centre is None:
            return min(candidates, key=lambda y: abs(y - yaw_ref))

        def room(yaw: float) -> float:
            """Smallest gap (m) between an open finger and another object's footprint circle."""
            across = np.array([math.sin(yaw), -math.cos(yaw)])  # tool y in the base xy-plane
            fingers = [centre[:2] + s * _OPEN_FINGER_OFFSET_M * across for s in (1.0, -1.0)]
            return min(float(np.linalg.norm(f - p[:2])) - o.radius_xy_m for f in fingers for p, o in others)

        best = max(room(y) for y in candidates)
        near_best = [y for y in candidates if room(y) >= min(best, _FINGER_ROOM_ENOUGH_M) - 1e-9]
        return min(near_best, key=lambda y: abs(y - yaw_ref))

    # ------------------------------------------------------------------ execution
    @property
    def duration_s(self) -> float:
        """Length of the planned episode, seconds."""
        if self._times is None:
            raise RuntimeError("ScriptedExpert.reset() was not called")
        return float(self._times[-1])

    @property
    def plan(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(times (K,) s from the episode start, q (K, 6) rad, gripper (K,), phase (K,))."""
        if self._times is None:
            raise RuntimeError("ScriptedExpert.reset() was not called")
        return self._times.copy(), self._q.copy(), self._g.copy(), self._phase.copy()

    def done(self, t_s: float) -> bool:
        """True once the plan's last target is due at t_s (env clock)."""
        return t_s - self._t0 >= self.duration_s - 1e-9

    def act(self, state: ArmState | None, t_s: float) -> tuple[np.ndarray, int]:
        """(7,) action for the next control instant and the current phase index.

        state is accepted for the policy-like signature (the plan is open-loop). Raises
        RuntimeError before reset().
        """
        if self._times is None:
            raise RuntimeError("ScriptedExpert.reset() was not called")
        t = t_s - self._t0
        t_next = t + 1.0 / self.cfg.control_rate_hz
        times = self._times
        if t_next >= times[-1]:
            q, g = self._q[-1], self._g[-1]
        else:
            i = int(np.searchsorted(times, t_next, side="right"))  # times[i-1] <= t_next < times[i]
            w = (t_next - times[i - 1]) / (times[i] - times[i - 1])
            q = (1 - w) * self._q[i - 1] + w * self._q[i]
            g = self._g[i]
        j = int(np.searchsorted(times, t + 1e-9, side="right"))
        phase = int(self._phase[min(j, len(times) - 1)])
        return np.concatenate([q, [g]]).astype(np.float64), phase
