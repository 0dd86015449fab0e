"""`ServoCore`: interpolator -> ServoLoop -> SafeArm -> arm, the part of the driver that moves the arm.

What runs at the servo rate, in one object: the `ActionChunkInterpolator`, the `ServoLoop`
(thread or ticked by the sim stepper), `SafeArm` (limits, watchdog, protective stop) and the
`ActionAgeMonitor` with the chunk time-to-live. `robot.arm_driver.ArmDriver` (chunk intake,
episodes, counters) drives one through the small API below, wherever the core lives:

- in the driver's own process (simulation, or `Ur3DriverNodeConfig.servo_in_worker: false`):
  `ArmDriver` builds a `ServoCore` around the arm;
- in the RTDE worker process of the real arm (`servo_in_worker: true`, the default): the worker
  builds the `ServoCore` around its own `robot.ur_rtde_worker_arm.WorkerArm`, so interpolation,
  the safety checks and servoJ streaming never wait for the node process's GIL (rclpy
  callbacks, JSON status); the node side talks to it through `robot.ur_rtde_servo.WorkerServoCore`,
  which has the same methods.

API (both implementations): `add_chunk(times_s, targets, stamp_s) -> bool`, `hold()`,
`rearm()`, `status() -> dict`, `halted`, `halt_reason`, `halt_state()`, `state()`, `start(rt_priority)`,
`close()`; times are on the core's clock (monotonic on the real arm; the simulation clock in
the sim cell).

Locks: ServoLoop's tick lock, then SafeArm's lock (taken inside `loop` / `safe` calls). In
simulation the physics stepper ticks the loop with the world held (lock order world -> tick ->
SafeArm -> world again, re-entrant); `ArmDriver` runs `hold` / `rearm` through the world's
`exclusive`. `ServoCore` itself holds no lock.
"""
from __future__ import annotations

import dataclasses
import gc
from typing import Callable

import numpy as np

from dynaflip_ros.configs.ros import Ur3DriverNodeConfig
from dynaflip_ros.robot.action_age import ActionAgeMonitor
from dynaflip_ros.robot.arm import Arm, ArmState
from dynaflip_ros.robot.interpolation import ActionChunkInterpolator
from dynaflip_ros.robot.safety import SafeArm
from dynaflip_ros.robot.servo_loop import ServoLoop


class ServoCore:
    """Interpolator + ServoLoop + SafeArm around `arm`, with the driver's servo settings.

    Args:
        arm: the Arm to drive (connected here through SafeArm).
        config: `configs.ros.Ur3DriverNodeConfig` (safety, servo_rate_hz, command_lead_s,
            dry_hold_s, action_ttl_s; for backend "ur_rtde" the settle hold and rt_priority).
        clock: the servo loop's clock in seconds (monotonic for a real arm; the simulation
            clock when an external stepper ticks the loop).
    Raises ArmError / SafetyViolation from connecting the arm.
    """

    def __init__(self, arm: Arm, config: Ur3DriverNodeConfig, clock: Callable[[], float]) -> None:
        self.config = config
        self.clock = clock
        # The watchdog timeout derives from the servo period and the measured tick jitter
        # (`Ur3DriverNodeConfig.watchdog_timeout_s`), capped at the safety config's bound.
        safety = dataclasses.replace(config.safety, watchdog_timeout_s=config.watchdog_timeout_s)
        self.safe = SafeArm(arm, safety, clock=clock)
        self.safe.connect()
        self.interp = ActionChunkInterpolator(n_dims=7)
        # A real controller reports its speed slider / scaling: follow chunks in scaled time.
        speed_scaling = (lambda: arm.speed_scaling) if hasattr(arm, "speed_scaling") else None
        # A UR lags its servoj targets by about the lookahead time: hold a finished chunk's last
        # target that long (plus the lead) so the arm settles on it before the watchdog stops it.
        # A late chunk (the previous one ended or expired): hold position for dry_hold_s.
        settle_s = (config.ur_rtde.settle_hold_s(config.command_lead_s) if config.backend == "ur_rtde" else 0.0)
        self.action_age = ActionAgeMonitor()  # every servo tick: the executed action's age
        self.loop = ServoLoop(self.safe, self.interp, rate_hz=config.servo_rate_hz, clock=clock,
                              speed_scaling=speed_scaling, command_lead_s=config.command_lead_s,
                              end_hold_s=max(settle_s, config.dry_hold_s), on_tick=self.action_age.tick,
                              expired=self._expired if config.action_ttl_s > 0 else None)
        self.loop.reanchor()

    def _expired(self, now_s: float) -> bool:
        """The chunk being followed was planned from an observation older than action_ttl_s
        (then it is not followed any more: the servo loop drops it and holds)."""
        age_s = self.action_age.age_s(now_s)
        if age_s is None or age_s <= self.config.action_ttl_s:
            return False
        self.action_age.clear()
        return True

    def start(self, rt_priority: int = 0) -> None:
        """Run the servo loop in its own thread (real arm), SCHED_FIFO at rt_priority if > 0."""
        # Everything allocated so far (modules, configs, rclpy in a node process) moves to the
        # permanent GC generation: full collections then stay short and do not stall the servo
        # thread (measured: ~50-100 ms overrun bursts without it in a process with large heaps).
        gc.collect()
        gc.freeze()
        self.loop.start(rt_priority=rt_priority)

    def add_chunk(self, times_s: np.ndarray, targets: np.ndarray, stamp_s: float) -> bool:
        """Queue actions at times_s (H,) on the core's clock, targets (H, 7) (6 joints rad +
        gripper 0..1), planned from an observation taken at stamp_s (same clock). Returns
        whether at least one action lies in the future (else nothing changes)."""
        times_traj_s = self.loop.to_trajectory_time(np.asarray(times_s, dtype=float))
        targets = np.asarray(targets, dtype=float)
        now_s = self.clock()
        now_traj_s = self.loop.to_trajectory_time(now_s)
        following = self.action_age.age_s(now_s) is not None
        commanded = self.interp.last_target  # (7,) or None
        kept = self.interp.add_chunk(times_traj_s, targets, now_s=now_traj_s)
        if kept:
            if following and commanded is not None:  # the plan's jump at the switch (`robot.action_age`)
                plan = np.array([np.interp(now_traj_s, times_traj_s, targets[:, j]) for j in range(6)])
                self.action_age.switch(float(np.max(np.abs(plan - commanded[:6]))))
            self.action_age.chunk(float(stamp_s), float(times_traj_s[-1]) + self.loop.trajectory_lag_s)
        return bool(kept)

    def hold(self) -> None:
        """Stop the arm (an explicit `SafeArm.stop`, not a watchdog trip), drop queued actions
        and anchor at the measured pose: the loop holds until the next chunk."""
        self.action_age.clear()
        self.safe.stop()
        self.loop.reanchor()

    def rearm(self) -> None:
        """After a stop was cleared on the arm: `SafeArm.rearm()` and re-anchor the interpolator
        at the measured pose (no jump). Raises SafetyViolation / ArmError while not ready."""
        self.action_age.clear()
        self.loop.rearm()

    @property
    def halted(self) -> bool:
        return self.safe.halted

    @property
    def halt_reason(self) -> str:
        return self.safe.halt_reason

    def halt_state(self) -> tuple[bool, str]:
        """(halted, halt_reason) read together (one pipe round trip from the node side)."""
        return self.safe.halted, self.safe.halt_reason

    def state(self) -> ArmState:
        return self.safe.state()

    def status(self) -> dict:
        """Counters of SafeArm, the servo loop, the interpolator and the executed actions' ages
        (`robot.action_age`, key "action_age"); plain types (crosses a process pipe)."""
        loop = self.loop.stats
        return {
            "safety": dataclasses.asdict(self.safe.stats),
            "halted": self.safe.halted,
            "halt_reason": self.safe.halt_reason,
            "trajectory_lag_s": self.loop.trajectory_lag_s,
            "watchdog_timeout_ms": self.safe.config.watchdog_timeout_s * 1e3,
            "servo": {
                "rate_hz": self.loop.rate_hz, "ticks": loop.ticks, "commands_sent": loop.commands_sent,
                "holds": loop.holds, "expired_chunks": loop.expired_chunks, "safety_rejections": loop.safety_rejections,
                "rejections_by_reason": loop.rejections_by_reason, "errors": loop.errors,
                "overruns": loop.overruns, "period_mean_ms": loop.period_mean_s * 1e3,
                "jitter_p99_ms": loop.jitter_p99_s * 1e3, "jitter_max_ms": loop.jitter_max_s * 1e3,
            },
            "interpolator": {"chunks_added": self.interp.chunks_added, "stale_chunks": self.interp.stale_chunks,
                             "dropped_actions": self.interp.dropped_actions},
            "action_age": self.action_age.snapshot(),
        }

    def close(self) -> None:
        """Stop the servo loop and the arm (servoStop), then disconnect (idempotent)."""
        self.loop.stop(stop_arm=True)
        self.safe.disconnect()
