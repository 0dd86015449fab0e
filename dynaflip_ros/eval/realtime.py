"""Real-time closed-loop evaluation in one process, without ROS (`dynaflip eval --modes realtime`).

The middle one of the three ways `dynaflip eval --modes` runs the same seeds: lock-step
(`eval.closed_loop`, inference takes no simulated time), this, and the ROS 2 graph. It runs what
the graph runs, in the same order and with the same parameters (the graph's params file), minus
DDS and the process boundaries:

- physics and the servo loop: `sim.realtime.RealtimeSimStepper` advances the MuJoCo world to
  follow the wall clock and ticks the `ur3_driver` node's core (`robot.arm_driver.ArmDriver`:
  interpolator -> 125 Hz servo loop -> SafeArm -> arm) every 1/125 s of simulation time, in its
  own thread (as in `sim_cell_node`);
- camera, encoder and policy: the calling thread, on the camera's grid (`camera.rate_hz`, 10 Hz
  of simulation time): render (world held, so image and joint state are of one instant) ->
  `encoder.embed` -> the policy's history, and a new chunk when `policies.replan.ReplanSchedule`
  says so (`policy.n_action_steps`), queued to the driver with the observation's stamp
  (`ArmDriver.queue_chunk`, which drops the actions already due); the joint state is read
  right after the image (a servo tick or two later at most, as the policy node pairs the image
  with the nearest /joint_states). A frame that is due while
  inference still runs is not captured (counted as `frames_missed`), as a 10 Hz camera's frames
  queue behind a busy policy node and are dropped there.

Clocks: everything runs on the simulation clock (the stamps, the driver's clock, the chunk
times); the stepper keeps it within `max_catchup_s` of the wall clock, so inference time is
simulated time here, unlike in lock-step. Episodes end as in the sim cell: `success` /
`wrong_object` when the task decides (`env.task_state`), `safety_stop` when SafeArm halts,
`timeout` after `max_duration_s` of simulation time. Latency stages (ms): capture (render,
wall), encode, policy (wall), command (simulation time from the capture stamp to the queued
chunk: what the arm sees). Each episode records its share of SafeArm's counters (watchdog
stops), the driver's, and the executed actions' ages (`robot.action_age`).
"""
from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from typing import Callable, Optional

import numpy as np

from dynaflip_ros.episodes.protocol import Outcome
from dynaflip_ros.episodes.record import EpisodeRecord, EvalReport, counter_delta
from dynaflip_ros.eval.closed_loop import GraspMonitor
from dynaflip_ros.policies.base import PolicyObservation


@dataclasses.dataclass(frozen=True)
class RealtimeSettings:
    """The graph's settings this mode copies (`realtime_settings` reads them from the params
    file): driver: `configs.ros.Ur3DriverNodeConfig`; camera_rate_hz: frames per simulated
    second; n_action_steps: replan after this many actions (0: when the chunk runs dry);
    real_time_factor: simulated seconds per wall second (1 = real time)."""

    driver: object
    camera_rate_hz: float = 10.0
    n_action_steps: int = 0
    real_time_factor: float = 1.0


def realtime_settings(params_doc: dict, n_action_steps: int | None = None) -> RealtimeSettings:
    """`RealtimeSettings` from a ROS 2 params document (config/pick_into_sink.yaml read with
    `configs.params_file.read_params_file`): the `ur3_driver` section, `camera.rate_hz`,
    `policy.n_action_steps` (unless given). Raises ConfigError / LaunchArgumentError on bad values."""
    from dynaflip_ros.configs.params_file import node_config, node_parameters
    from dynaflip_ros.configs.ros import Ur3DriverNodeConfig

    driver = node_config(Ur3DriverNodeConfig, params_doc, "ur3_driver")
    camera = node_parameters(params_doc, "camera")
    policy = node_parameters(params_doc, "policy")
    steps = int(policy.get("n_action_steps", 0)) if n_action_steps is None else int(n_action_steps)
    return RealtimeSettings(driver=driver, camera_rate_hz=float(camera.get("rate_hz", 10.0)), n_action_steps=steps)


class RealtimeCell:
    """The simulated cell in real time in this process: env + ArmDriver + stepper thread.

    Args:
        settings: `RealtimeSettings` (the driver config's backend must be "sim").
        sim_config: `configs.sim.SimConfig` of the world (default: SimConfig()).
    Raises ValueError for a non-sim driver backend; MuJoCo / GL errors from building the world.
    Use as a context manager (or call `close`): the stepper thread runs from construction.
    """

    def __init__(self, settings: RealtimeSettings, sim_config=None) -> None:
        from dynaflip_ros.configs.sim import SimConfig
        from dynaflip_ros.robot.arm_driver import ArmDriver
        from dynaflip_ros.sim.pick_into_sink import PickIntoSinkEnv
        from dynaflip_ros.sim.realtime import RealtimeSimStepper

        if settings.driver.backend != "sim":
            raise ValueError(f"the in-process real-time cell drives the simulated arm; driver backend is "
                             f"{settings.driver.backend!r}")
        self.settings = settings
        self.env = env = PickIntoSinkEnv(sim_config or SimConfig())
        env.camera.depth_enabled = False  # as in sim_cell_node: colour only
        try:
            self.driver = ArmDriver(env.arm, settings.driver, clock=lambda: env.sim_time_s, exclusive=env.exclusive)
            self.stepper = RealtimeSimStepper(env, rate_hz=settings.driver.servo_rate_hz,
                                              real_time_factor=settings.real_time_factor, on_tick=self.driver.loop.tick)
            self.stepper.start()
        except Exception:
            env.close()
            raise

    def reset(self, seed: int, object_name: str | None = None, instruction: str | None = None):
        """Start an episode (`sim.cell_reset.reset_cell_episode`); returns (EpisodeInfo, reset stamp s)."""
        from dynaflip_ros.sim.cell_reset import reset_cell_episode

        info, stamp_s, _ = reset_cell_episode(self.env, self.driver, seed=seed, object_name=object_name,
                                              instruction=instruction, now_s=lambda: self.env.sim_time_s)
        return info, stamp_s

    def wait_until(self, sim_time_s: float, timeout_s: float = 5.0) -> None:
        """Sleep until the simulation clock reaches `sim_time_s`. Raises RuntimeError when the
        stepper does not get there within `timeout_s` wall seconds (a dead stepper thread)."""
        deadline = time.monotonic() + timeout_s
        while (lag := sim_time_s - self.env.sim_time_s) > 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the simulation clock stalled at {self.env.sim_time_s:.3f} s "
                                   f"(stepper running: {self.stepper.running})")
            time.sleep(min(lag / self.settings.real_time_factor, 0.005))

    def close(self) -> None:
        """Stop physics, then the arm and the renderer (idempotent)."""
        self.stepper.stop()
        self.driver.close()
        self.env.close()

    def __enter__(self) -> "RealtimeCell":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_realtime_episode(cell: RealtimeCell, encoder, policy, *, episode: int, seed: int,
                         max_duration_s: float = 15.0) -> tuple[EpisodeRecord, dict[str, list[float]]]:
    """One episode of the scene `seed` in `cell` (module docstring). Returns its record (outcome,
    times, this episode's SafeArm / driver counters and action ages, frames missed) and latency
    samples ({stage: [ms]}). The policy is reset with the seed. A policy's errors propagate."""
    from dynaflip_ros.policies.replan import ReplanSchedule
    from dynaflip_ros.policies.replan import step as replan_step

    env, driver = cell.env, cell.driver
    info, t0 = cell.reset(seed)
    policy.reset(seed=info.seed)
    schedule = ReplanSchedule(policy.dt_s, cell.settings.n_action_steps)
    start_safety, start_driver = driver.safe.stats, driver.status()
    period_s = 1.0 / cell.settings.camera_rate_hz
    samples: dict[str, list[float]] = defaultdict(list)
    grasp = GraspMonitor()
    wall0 = time.perf_counter()
    next_frame_s, frames, missed, outcome = t0, 0, 0, None

    def joint_state():  # the world held: the joint state and the grasp monitor of one instant
        st = driver.safe.state()
        grasp.update(float(st.gripper), env)
        return np.concatenate([st.q, [st.gripper]]).astype(np.float32)  # (7,)

    while outcome is None:
        cell.wait_until(next_frame_s)
        t_cap = time.perf_counter()
        frame = env.camera.read()  # takes the world only to snapshot it; renders outside
        state = env.exclusive(joint_state)  # a servo tick or two after the image at most
        samples["capture"].append(1e3 * (time.perf_counter() - t_cap))
        t_enc = time.perf_counter()
        emb = encoder.embed(frame.rgb[None])[0]  # (D,)
        samples["encode"].append(1e3 * (time.perf_counter() - t_enc))
        obs = PolicyObservation(embedding=emb, state=state, stamp_s=frame.stamp_s, instruction=info.instruction)
        frames += 1
        chunk, inference_s = replan_step(policy, schedule, obs)  # the policy node's step
        if chunk is not None:
            samples["policy"].append(1e3 * inference_s)
            now_s = env.sim_time_s
            if driver.admit_chunk(obs.stamp_s) is None:  # the driver node's intake
                driver.queue_chunk(obs.stamp_s, chunk.times_s(), np.asarray(chunk.actions), recv_ros_s=now_s,
                                   recv_clock_s=now_s)
            schedule.chunk_sent(chunk, now_s - obs.stamp_s)
            samples["command"].append(1e3 * (now_s - obs.stamp_s))
        _, sim_now_s, decided = env.task_state()
        if decided is not None:
            outcome = Outcome(decided)
        elif driver.safe.halted:
            outcome = Outcome.SAFETY_STOP
        elif sim_now_s - t0 >= max_duration_s - 1e-9:
            outcome = Outcome.TIMEOUT
        next_frame_s += period_s
        if sim_now_s > next_frame_s:  # inference overran the frame period: those frames are gone
            skipped = int((sim_now_s - next_frame_s) // period_s) + 1
            missed += skipped
            next_frame_s += skipped * period_s
    duration_s = env.sim_time_s - t0
    end_safety = driver.safe.stats
    safety = {**counter_delta(dataclasses.asdict(start_safety), dataclasses.asdict(end_safety)),
              "rejected": end_safety.rejected - start_safety.rejected}
    drv = counter_delta(start_driver, driver.status())
    action_age = drv.pop("action_age")
    driver.hold()  # between episodes the arm holds
    record = EpisodeRecord(
        episode=episode, seed=info.seed, outcome=outcome, target=info.object_name, objects=list(info.objects),
        instruction=info.instruction, time_to_success_s=duration_s if outcome is Outcome.SUCCESS else None,
        episode_sim_time_s=duration_s, wall_time_s=time.perf_counter() - wall0,
        safety=safety,
        driver={**{k: drv[k] for k in ("chunks", "servo")}, "frames": frames, "frames_missed": missed},
        realtime_factor=cell.stepper.stats.recent_real_time_factor, control_steps=frames,
        grasps=grasp.grasps, first_grasp_xy_error_m=grasp.first_xy_error_m,
        approach_end_xy_error_m=grasp.approach_end_xy_error_m, action_age=action_age)
    return record, dict(samples)


def evaluate_realtime(encoder, policy, n_episodes: int, *, settings: RealtimeSettings, seed: int = 100_000,
                      max_duration_s: float = 15.0, sim_config=None, report: EvalReport | None = None,
                      on_episode: Optional[Callable[[EpisodeRecord, EvalReport], None]] = None) -> EvalReport:
    """`n_episodes` real-time episodes (seeds seed, seed + 1, ...) in one `RealtimeCell`; returns
    the report (mode "realtime"; pass `report` to fill one that carries config / models). The
    policy is warmed up first (`policies.base.warm_up`). Raises ValueError for n_episodes < 1."""
    from dynaflip_ros.policies.base import warm_up

    if n_episodes < 1:
        raise ValueError(f"n_episodes must be >= 1, got {n_episodes}")
    if report is None:
        report = EvalReport(mode="realtime", models={
            "encoder": encoder.manifest.weights_sha256, "policy": getattr(policy, "weights_sha256", None)})
    warm_up(policy)
    wall0 = time.perf_counter()
    with RealtimeCell(settings, sim_config) as cell:
        for ep in range(n_episodes):
            record, samples = run_realtime_episode(cell, encoder, policy, episode=ep, seed=seed + ep,
                                                   max_duration_s=max_duration_s)
            report.add(record, samples)
            if on_episode is not None:
                on_episode(record, report)
    report.wall_time_s = time.perf_counter() - wall0
    return report
