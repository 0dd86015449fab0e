"""How well the real-arm driver follows a policy's action chunks over RTDE (issue 3, "Done when").

1. `record_policy_chunks`: run the encoder + policy closed-loop in the lock-step simulated cell
   (`eval.closed_loop.evaluate_in_sim`) and keep every action chunk it emitted (observation
   time, per-action times, (H, 7) targets) plus the episode's initial joints.
2. `replay_on_loopback`: start `sim.ur_loopback.LoopbackURController` (the real ur_rtde 1.6.5
   client talks to it) at those joints and feed the same chunks, at their original times, into
   the production path: ActionChunkInterpolator -> ServoLoop (own thread, controller rate) ->
   SafeArm -> URRtdeArm (worker process, servoJ) -> controller. Chunks arrive `latency_s` after
   their observation (the graph's measured image-to-chunk latency) and start from the last
   commanded target, as in the ur3_driver node.
3. Figures, measured on the controller's trace (what the simulated joints did, host clock):
   - tracking error against the policy's plan: measured joints at t vs the chunk's interpolated
     target for t (max over joints: RMS, p95, max). The servo loop sends the target for
     t + command_lead_s at t, so the plan is the sent targets shifted by the lead;
   - the lag of the measured joints behind the sent servoJ targets (the servoj lookahead
     filter's delay: best constant shift) and the error left after removing it;
   - the servo loop's tick period, jitter and overruns, and the fraction of controller cycles
     that received a fresh servoJ target.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class ChunkRecord:
    """One action chunk: obs_stamp_s and times_s (H,) relative to the episode start (s);
    actions (H, 7) = 6 joint targets (rad) + gripper (0 open .. 1 closed)."""

    obs_stamp_s: float
    times_s: np.ndarray
    actions: np.ndarray


@dataclass
class PolicyTrace:
    q0: np.ndarray
    chunks: list[ChunkRecord]
    success: bool
    seed: int


def record_policy_chunks(encoder_dir: str | Path, policy_dir: str | Path, seed: int = 100_000,
                         max_duration_s: float = 15.0, threads: int = 1) -> PolicyTrace:
    """Run one closed-loop sim episode and keep the policy's chunks (see module docstring).
    Raises FileNotFoundError / ValueError from the model loaders."""
    from dynaflip_ros.configs.sim import SimConfig
    from dynaflip_ros.eval.closed_loop import evaluate_in_sim, load_encoder_and_policy
    from dynaflip_ros.sim.pick_into_sink import PickIntoSinkEnv

    with PickIntoSinkEnv(SimConfig()) as env:
        env.reset(seed=seed)
        q0 = np.asarray(env.arm.read_state().q, dtype=float)
    encoder, policy = load_encoder_and_policy(encoder_dir, policy_dir, threads=threads, seed=seed)
    chunks: list[ChunkRecord] = []

    def on_chunk(ep: int, obs_s: float, times_s: np.ndarray, actions: np.ndarray) -> None:
        chunks.append(ChunkRecord(float(obs_s), np.asarray(times_s, dtype=float).copy(),
                                  np.asarray(actions, dtype=float).copy()))

    summary = evaluate_in_sim(encoder, policy, 1, seed=seed, max_duration_s=max_duration_s, on_chunk=on_chunk)
    return PolicyTrace(q0=q0, chunks=chunks, success=summary.episodes[0].success, seed=seed)


@dataclass
class TrackingReport:
    ur_type: str
    rate_hz: float
    command_lead_s: float
    duration_s: float
    chunks: int
    commands: int
    rms_error_rad: float
    p95_error_rad: float
    max_error_rad: float
    lag_ms: float
    rms_error_lag_comp_rad: float
    p95_error_lag_comp_rad: float
    loop_period_mean_ms: float
    loop_period_std_ms: float
    loop_jitter_p99_ms: float
    loop_overruns: int
    fresh_target_fraction: float
    safety_rejections: int
    extra: dict = field(default_factory=dict)

    def lines(self) -> list[str]:
        return [
            f"[{self.ur_type}, {self.rate_hz:.0f} Hz, command lead {self.command_lead_s * 1e3:.0f} ms] {self.chunks} chunks, {self.commands} servoJ targets over {self.duration_s:.1f} s",
            f"  tracking error vs the policy's plan (max over joints): RMS {self.rms_error_rad * 1e3:.2f} mrad, "
            f"p95 {self.p95_error_rad * 1e3:.2f} mrad, max {self.max_error_rad * 1e3:.2f} mrad",
            f"  lag behind the sent servoJ targets {self.lag_ms:.1f} ms; error without it: RMS "
            f"{self.rms_error_lag_comp_rad * 1e3:.2f} mrad, p95 {self.p95_error_lag_comp_rad * 1e3:.2f} mrad",
            f"  servo loop: period {self.loop_period_mean_ms:.3f} +- {self.loop_period_std_ms:.3f} ms, jitter p99 "
            f"{self.loop_jitter_p99_ms:.3f} ms, overruns {self.loop_overruns}; controller cycles with a fresh target "
            f"{100 * self.fresh_target_fraction:.1f} %; safety rejections {self.safety_rejections}; worker "
            f"stale-command stops {self.extra.get('worker_counters', {}).get('stale_stops', 'n/a')}",
        ]

    def to_dict(self) -> dict:
        return asdict(self)


def _tracking_errors(t_ref: np.ndarray, q_ref: np.ndarray, t_meas: np.ndarray, q_meas: np.ndarray,
                     lag_s: float) -> np.ndarray:
    """max_j |q_meas(t) - q_ref(t - lag)| at the measured times inside the reference span."""
    ts = t_meas - lag_s
    keep = (ts >= t_ref[0]) & (ts <= t_ref[-1])
    if not np.any(keep):
        return np.zeros(0)
    ref = np.stack([np.interp(ts[keep], t_ref, q_ref[:, j]) for j in range(6)], axis=1)
    return np.max(np.abs(q_meas[keep] - ref), axis=1)


def replay_on_loopback(trace: PolicyTrace, ur_type: str = "e-series", host: str = "127.0.3.1",
                       latency_s: float = 0.05, max_duration_s: float | None = None,
                       with_gripper: bool = True, command_lead_s: float = 0.0,
                       rt_priority: int = 0) -> TrackingReport:
    """Replay `trace` through the production driver path against a loopback controller (see the
    module docstring). rt_priority > 0: SCHED_FIFO for the servo-loop thread and the RTDE worker
    (as `config/real_cell.yaml` asks on the robot PC). Raises RuntimeError / ArmError when the
    controller or ur_rtde fail."""
    from dynaflip_ros.configs.robot import URRtdeConfig
    from dynaflip_ros.configs.safety import SafetyConfig
    from dynaflip_ros.eval.fault_bench import ArmTap
    from dynaflip_ros.eval.fault_rtde import LOOPBACK_VERSIONS
    from dynaflip_ros.robot.interpolation import ActionChunkInterpolator
    from dynaflip_ros.robot.motion import move_to_joints
    from dynaflip_ros.robot.safety import SafeArm
    from dynaflip_ros.robot.servo_loop import ServoLoop
    from dynaflip_ros.robot.ur_rtde_arm import URRtdeArm
    from dynaflip_ros.sim.ur_loopback import LoopbackURController

    if not trace.chunks:
        raise ValueError("the policy trace has no chunks")
    ctrl = LoopbackURController(host=host, ur_version=LOOPBACK_VERSIONS[ur_type], q0=tuple(trace.q0),
                                with_gripper=with_gripper)
    ctrl.start(timeout_s=30.0)
    arm = URRtdeArm(URRtdeConfig(robot_ip=host, ur_type=ur_type, rt_priority=rt_priority,
                                 gripper="robotiq_urcap" if with_gripper else "none"))
    loop = None
    try:
        arm.connect()
        cfg = arm.config
        rate_hz = cfg.controller_rate_hz
        tap = ArmTap(arm, clock=time.monotonic)
        safe = SafeArm(tap, SafetyConfig(), clock=time.monotonic)
        safe.connect()
        first = trace.chunks[0].actions[0, :6]
        if np.max(np.abs(first - safe.state().q)) > 1e-3:
            move_to_joints(safe, first, max_speed_rad_s=0.5, rate_hz=rate_hz, timeout_s=20.0)
        interp = ActionChunkInterpolator(n_dims=7)
        loop = ServoLoop(safe, interp, rate_hz=rate_hz, speed_scaling=lambda: arm.speed_scaling,
                         command_lead_s=command_lead_s, end_hold_s=cfg.settle_hold_s(command_lead_s))
        loop.reanchor()
        end_s = max(c.times_s[-1] for c in trace.chunks)
        if max_duration_s is not None:
            end_s = min(end_s, max_duration_s)
        ctrl.trace(clear=True)
        n_cmd0 = len(tap.commands)
        import gc

        gc.collect()
        gc.freeze()  # this process holds torch/lerobot heaps: keep full GC passes out of the servo timing
        loop.start(rt_priority=rt_priority)
        t0 = time.monotonic() + 0.1
        n_chunks = 0
        for c in trace.chunks:
            if c.obs_stamp_s > end_s:
                break
            due = t0 + c.obs_stamp_s + latency_s
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            now = time.monotonic()
            interp.add_chunk(loop.to_trajectory_time(t0 + c.times_s), c.actions, now_s=loop.to_trajectory_time(now))
            n_chunks += 1
        left = t0 + end_s - time.monotonic()
        if left > 0:
            time.sleep(left)
        loop.stop(stop_arm=True)
        time.sleep(0.1)
        ctrl_trace = ctrl.trace(clear=True)
        snap = ctrl.snapshot()
        events, ctrl_stats = snap["events"], snap.get("stats", {})
        stats = loop.stats
        rejections = safe.stats.rejected
        worker = arm.state().extra["counters"]
    finally:
        if loop is not None and loop.running:
            loop.stop(stop_arm=True)
        arm.disconnect()
        ctrl.stop()
    t_ref = np.asarray(tap.command_times[n_cmd0:])
    q_ref = np.asarray(tap.commands[n_cmd0:])
    t_meas = ctrl_trace["host_monotonic_s"]
    q_meas = ctrl_trace["actual_q"]
    lags = np.arange(0.0, 0.2001, 0.002)
    rms = [float(np.sqrt(np.mean(e ** 2))) if (e := _tracking_errors(t_ref, q_ref, t_meas, q_meas, lag)).size else math.inf
           for lag in lags]
    best = float(lags[int(np.argmin(rms))])
    e0 = _tracking_errors(t_ref + command_lead_s, q_ref, t_meas, q_meas, 0.0)  # vs the plan
    e1 = _tracking_errors(t_ref, q_ref, t_meas, q_meas, best)  # vs the sent targets, lag removed
    cq = ctrl_trace["commanded_q"]
    in_span = (t_meas >= t_ref[0]) & (t_meas <= t_ref[-1])
    fresh = np.r_[False, np.any(np.diff(np.nan_to_num(cq, nan=1e9), axis=0) != 0, axis=1)]
    return TrackingReport(
        ur_type=ur_type, rate_hz=rate_hz, command_lead_s=command_lead_s, duration_s=float(t_ref[-1] - t_ref[0]), chunks=n_chunks,
        commands=int(q_ref.shape[0]),
        rms_error_rad=float(np.sqrt(np.mean(e0 ** 2))), p95_error_rad=float(np.percentile(e0, 95)),
        max_error_rad=float(e0.max()), lag_ms=best * 1e3,
        rms_error_lag_comp_rad=float(np.sqrt(np.mean(e1 ** 2))), p95_error_lag_comp_rad=float(np.percentile(e1, 95)),
        loop_period_mean_ms=stats.period_mean_s * 1e3, loop_period_std_ms=stats.period_std_s * 1e3,
        loop_jitter_p99_ms=stats.jitter_p99_s * 1e3, loop_overruns=stats.overruns,
        fresh_target_fraction=float(fresh[in_span].mean()) if np.any(in_span) else 0.0,
        safety_rejections=int(rejections),
        extra={"controller_events": events, "command_lead_s": command_lead_s, "rt_priority": rt_priority,
               "worker_counters": worker, "loop_tick_max_ms": stats.tick_duration_max_s * 1e3,
               "controller_lateness_max_ms": ctrl_stats.get("lateness_max_ms"),
               "controller_cpu_fraction": ctrl_stats.get("cpu_fraction")},
    )
