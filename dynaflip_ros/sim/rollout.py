"""Synchronous (offline) sim runner: the same arm pipeline as the robot, with physics in lockstep.

    10 Hz action / action chunk -> ActionChunkInterpolator -> ServoLoop.tick at 125 Hz
        -> SafeArm (clock = simulation time) -> SimArm -> MuJoCo, 4 physics steps per tick

Every arm motion goes through `robot.safety.SafeArm` (docs/safety.md). Time is the
simulation clock (`env.sim_time_s`), so runs are deterministic and as fast as the CPU allows.
`run_expert_episode` is what the recorder uses: at 10 Hz it asks the expert for an action,
calls `on_frame(frame, state, action, phase, point_tracks, point_valid)` BEFORE applying it, then advances
0.1 s.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from dynaflip_ros.cameras.base import Frame
from dynaflip_ros.configs.safety import SafetyConfig
from dynaflip_ros.data.schema import PHASES
from dynaflip_ros.robot.arm import ArmState
from dynaflip_ros.sim.pick_into_sink import EpisodeInfo, PickIntoSinkEnv

REGRASP_LIFTED_M = 0.03
"""A target this much above its start height when an offset grasp's lift ends was picked anyway."""
_LIFT_PHASE = PHASES.index("lift")
_APPROACH_PHASE = PHASES.index("approach")

OnFrame = Callable[[Frame, ArmState, np.ndarray, int, np.ndarray, np.ndarray], None]


@dataclass
class EpisodeResult:
    """Outcome of `SimRunner.run_expert_episode`.

    success: `env.success()` at the end; outcome: `env.outcome()` then ("success",
    "wrong_object" or None); duration_s: simulated episode length, s; steps: 10 Hz
    control steps (= frames passed to on_frame); physics_steps: MuJoCo steps; wall_time_s: real
    time spent; info: the episode; safety: SafeArm counters (`robot.safety.SafetyStats`);
    servo: ServoLoop counters (`robot.servo_loop.ServoLoopStats`). With a deliberately missed
    first grasp (`regrasp_offset_m`): demonstration_start_step, the first step whose action the
    expert planned for the object where it is (earlier steps aimed at the offset point: context
    for a learner, not targets; 0 without an offset; with a takeover driver, the takeover
    step), and regrasp_missed, whether the offset
    grasp left the object on the table so the expert re-planned from there (None without one).
    """

    success: bool
    outcome: str | None
    duration_s: float
    steps: int
    physics_steps: int
    wall_time_s: float
    info: EpisodeInfo
    safety: object
    servo: object
    demonstration_start_step: int = 0
    regrasp_missed: bool | None = None


class SimRunner:
    """Lock-step runner of `PickIntoSinkEnv` through SafeArm + interpolator + servo loop.

    Args:
        env: the env (its arm is wrapped in a fresh SafeArm at every `reset`).
        safety_config: `configs.safety.SafetyConfig` (default: SafetyConfig()).
        control_rate_hz: servo loop rate (125 Hz = CB3); 1 / rate must be a whole number of
            physics timesteps.
    Raises ValueError when the servo period is not a multiple of the physics timestep.
    """

    def __init__(self, env: PickIntoSinkEnv, safety_config: SafetyConfig | None = None,
                 control_rate_hz: float = 125.0) -> None:
        self.env = env
        self.safety_config = safety_config if safety_config is not None else SafetyConfig()
        if not (math.isfinite(control_rate_hz) and control_rate_hz > 0):
            raise ValueError(f"control_rate_hz must be > 0, got {control_rate_hz!r}")
        self.control_rate_hz = float(control_rate_hz)
        self.period_s = 1.0 / self.control_rate_hz
        substeps = self.period_s / env.timestep_s
        if abs(substeps - round(substeps)) > 1e-6 or round(substeps) < 1:
            raise ValueError(f"servo period {self.period_s} s is not a whole number of physics steps "
                             f"({env.timestep_s} s)")
        self.substeps = int(round(substeps))
        self.safe = None
        self.interp = None
        self.loop = None
        self.action_age = None  # robot.action_age.ActionAgeMonitor of the episode
        self.info: EpisodeInfo | None = None
        self._sched_s = env.sim_time_s
        self.physics_steps = 0

    # ------------------------------------------------------------------ episode control
    def reset(self, seed: int | None = None, object_name: str | None = None,
              objects: int | Sequence[str] | None = None, instruction: str | None = None,
              perturbation=None) -> EpisodeInfo:
        """Reset the env (`PickIntoSinkEnv.reset`: seed, target, objects on the table,
        instruction, OOD perturbation) and build a fresh SafeArm (sim clock) + interpolator +
        servo loop."""
        from dynaflip_ros.robot.action_age import ActionAgeMonitor
        from dynaflip_ros.robot.interpolation import ActionChunkInterpolator
        from dynaflip_ros.robot.safety import SafeArm
        from dynaflip_ros.robot.servo_loop import ServoLoop

        env = self.env
        self.info = env.reset(seed=seed, object_name=object_name, objects=objects, instruction=instruction,
                              perturbation=perturbation)

        def clock() -> float:
            return env.sim_time_s

        self.safe = SafeArm(env.arm, self.safety_config, clock=clock)
        self.safe.connect()
        st = self.safe.state()
        self.interp = ActionChunkInterpolator(n_dims=7)
        self.interp.reset(np.concatenate([st.q, [st.extra.get("gripper_command", st.gripper)]]))
        self.action_age = ActionAgeMonitor()
        self.loop = ServoLoop(self.safe, self.interp, rate_hz=self.control_rate_hz, clock=clock,
                              on_tick=self.action_age.tick)
        self._sched_s = env.sim_time_s
        self.physics_steps = 0
        return self.info

    @property
    def now_s(self) -> float:
        """Simulation time, seconds."""
        return self.env.sim_time_s

    def _require_reset(self) -> None:
        if self.loop is None:
            raise RuntimeError("SimRunner.reset() must be called first")

    def apply_chunk(self, times_s: np.ndarray, targets: np.ndarray, stamp_s: float | None = None) -> int:
        """Queue an action chunk: times_s (H,) on the sim clock, targets (H, 7) (joints rad +
        gripper 0..1), planned from the observation stamped `stamp_s` (default: now; feeds
        `action_age`). Returns the number of actions kept (ValueError on bad shapes)."""
        self._require_reset()
        times = np.asarray(times_s, dtype=float)
        kept = self.interp.add_chunk(times, np.asarray(targets, dtype=float), self.now_s)
        if kept:
            self.action_age.chunk(self.now_s if stamp_s is None else float(stamp_s), float(times[-1]))
        return kept

    def apply_action(self, action: np.ndarray, due_s: float | None = None) -> int:
        """Queue one (7,) action due at `due_s` (default: one 10 Hz period after the schedule)."""
        self._require_reset()
        a = np.asarray(action, dtype=float)
        if a.shape != (7,):
            raise ValueError(f"action must have shape (7,), got {a.shape}")
        due = self._sched_s + 0.1 if due_s is None else float(due_s)
        return self.apply_chunk(np.array([due]), a[None, :])

    def advance(self, duration_s: float) -> int:
        """Run servo ticks + physics for duration_s of sim time (on a drift-free schedule: ticks
        run until the scheduled end time is reached). Returns the number of ticks run."""
        self._require_reset()
        if not (math.isfinite(duration_s) and duration_s >= 0):
            raise ValueError(f"duration_s must be finite and >= 0, got {duration_s!r}")
        self._sched_s += duration_s
        ticks, steps = self.env.advance_until(self._sched_s, self.period_s, self.loop.tick)
        self.physics_steps += steps
        return ticks

    # ------------------------------------------------------------------ expert episodes
    def run_expert_episode(self, expert, on_frame: OnFrame | None = None, max_duration_s: float = 15.0,
                           settle_s: float = 0.3, action_noise=None, regrasp_offset_m=None,
                           driver=None, takeover_s: float | None = None) -> EpisodeResult:
        """Run the scripted expert on the current episode (call `reset` first).

        At each 10 Hz step: state = SafeArm.state(); (action (7,), phase) = expert.act(state, t);
        on_frame(frame, state, action, phase, point_tracks (N_TRACK, 3), point_valid (N_TRACK,))
        if given (renders the camera; `env.scene_tracks()`);
        the action is queued (due 0.1 s later) and the sim advances 0.1 s. With `action_noise`
        (`sim.action_noise.JointActionNoise`, reset by the caller) the queued command is
        `action_noise.perturb(action, phase)` while on_frame still sees the expert's clean action
        (DART recovery data); the commands go through SafeArm like any other. Stops when the plan
        is done or after max_duration_s, then lets the scene settle for settle_s (not recorded)
        before checking `env.success()`.

        regrasp_offset_m: (2,) m: the expert's first plan aims its grasp this far off the object
        in the base xy-plane (`ScriptedExpert.reset(grasp_offset_m=...)`); when that plan's lift
        ends, the target is checked: still within `REGRASP_LIFTED_M` of its start height (the
        grasp missed), the expert re-plans from the arm's current state to the object where it now
        lies and picks it (recovery data: a missed grasp, then the retry); lifted anyway, the
        plan carries on. Either way the result's demonstration_start_step marks the step from
        which actions are the expert's plan for the real object.

        driver / takeover_s (expert takeover, a DAgger-style aggregation of the learner's own
        states, Ross et al. 2011; Kelly et al. 2019 "HG-DAgger"): a learner's policy
        (`eval.closed_loop.PolicyDriver`: `reset(seed, instruction)`, `act(frame, state, t_s)`
        -> (7,) action due 0.1 s later) drives the arm first, its frames and actions recorded
        through on_frame (phase "approach"), until takeover_s of simulated time have passed or
        it commands the gripper closed (>= 0.5); then the expert plans from where the arm is
        and finishes the episode. demonstration_start_step is the takeover step: the learner's
        frames are observation context, the expert's labels from the state the learner reached
        are the targets.
        """
        self._require_reset()
        env = self.env
        wall0 = time.perf_counter()
        dt = 1.0 / expert.cfg.control_rate_hz
        t_start = self._sched_s
        steps = 0
        if driver is not None:
            if takeover_s is None or not takeover_s >= 0:
                raise ValueError(f"a driver needs takeover_s >= 0, got {takeover_s!r}")
            driver.reset(seed=self.info.seed, instruction=self.info.instruction)
            while self._sched_s - t_start < min(takeover_s, max_duration_s) - 1e-9:
                t = self._sched_s
                state = self.safe.state()
                frame = env.camera.read()
                action = np.asarray(driver.act(frame, state, t), dtype=float)
                if action[6] >= 0.5:  # the learner starts to close: the expert takes over here
                    break
                if on_frame is not None:
                    on_frame(frame, state, action, _APPROACH_PHASE, *env.scene_tracks())
                self.apply_action(action, due_s=t + dt)
                self.advance(dt)
                steps += 1
        expert.reset(env, self.info, grasp_offset_m=regrasp_offset_m)
        regrasp_pending = regrasp_offset_m is not None
        target_z0_m = float(env.object_pose(self.info.object_name)[2])
        demonstration_start, regrasp_missed = steps, None
        while True:
            t = self._sched_s
            state = self.safe.state()
            action, phase = expert.act(state, t)
            if regrasp_pending and phase > _LIFT_PHASE:  # the offset grasp's lift is over
                regrasp_pending, demonstration_start = False, steps
                regrasp_missed = float(env.object_pose(self.info.object_name)[2]) < target_z0_m + REGRASP_LIFTED_M
                if regrasp_missed:
                    expert.reset(env, self.info)
                    action, phase = expert.act(state, t)
            if on_frame is not None:
                frame = env.camera.read()
                on_frame(frame, state, action, int(phase), *env.scene_tracks())
            command = action if action_noise is None else action_noise.perturb(action, phase)
            self.apply_action(command, due_s=t + dt)
            self.advance(dt)
            steps += 1
            if expert.done(t + dt) or self._sched_s - t_start >= max_duration_s - 1e-9:
                break
        duration = self._sched_s - t_start
        n_settle = int(round(settle_s / dt))
        for _ in range(n_settle):  # keep streaming the final target (no watchdog stop)
            self.apply_action(action, due_s=self._sched_s + dt)
            self.advance(dt)
        outcome = env.outcome()
        return EpisodeResult(
            success=outcome == "success", outcome=outcome, duration_s=duration, steps=steps, physics_steps=self.physics_steps,
            wall_time_s=time.perf_counter() - wall0, info=self.info, safety=self.safe.stats,
            servo=self.loop.stats, demonstration_start_step=demonstration_start, regrasp_missed=regrasp_missed)
