"""Motion drivers of a teleop session: every joint target goes through SafeArm + a servo loop.

    teleop command tick (e.g. 50 Hz): q target due one command period later
        -> ActionChunkInterpolator -> ServoLoop.tick (125 Hz CB3 / 500 Hz e-Series)
        -> SafeArm (limits, workspace, speed, watchdog) -> the arm

| driver              | clock                 | physics / servo ticks                                   |
|---------------------|-----------------------|----------------------------------------------------------|
| `LockstepSimDriver` | simulation time       | `sleep_until` steps physics + servo ticks (deterministic, as fast as the CPU; replays) |
| `RealtimeSimDriver` | simulation time       | `sim.realtime.RealtimeSimStepper` thread, servo tick in its `on_tick` (human devices)   |
| `RealArmDriver`     | `time.monotonic`      | `ServoLoop.start()` thread (ur_rtde arm)                 |

`realtime`: the driver follows the wall clock (everything but lock-step); its session's raw bag
is then stamped in wall-clock (ROS) time (`teleop.rosbag_log.SessionBag`).
All share: `safe` (the SafeArm), `now_s()`, `sleep_until(t_s)`, `command(q, gripper, due_s)`,
`hold()`, `reanchor()`, `state()`, `close()`; sim drivers also `reset_scene(seed)`,
`success()`, `point_tracks()`.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from dynaflip_ros.configs.safety import SafetyConfig
from dynaflip_ros.robot.arm import ArmState
from dynaflip_ros.robot.interpolation import ActionChunkInterpolator
from dynaflip_ros.robot.safety import SafeArm
from dynaflip_ros.robot.servo_loop import ServoLoop

log = logging.getLogger(__name__)


class _ServoDriverBase:
    """SafeArm + interpolator + ServoLoop around `arm` on `clock` (common part)."""

    kind = "base"
    is_sim = False
    realtime = True

    def __init__(self, arm: Any, safety: SafetyConfig | None, servo_rate_hz: float, clock: Callable[[], float]) -> None:
        if not (math.isfinite(servo_rate_hz) and 1.0 <= servo_rate_hz <= 2000.0):
            raise ValueError(f"servo_rate_hz must be in [1, 2000], got {servo_rate_hz!r}")
        self.safety = safety if safety is not None else SafetyConfig()
        self.servo_rate_hz = float(servo_rate_hz)
        self._clock = clock
        self.safe = SafeArm(arm, self.safety, clock=clock)
        self.safe.connect()
        self.interp = ActionChunkInterpolator(n_dims=7)
        self.loop = ServoLoop(self.safe, self.interp, rate_hz=self.servo_rate_hz, clock=clock)
        self.loop.reanchor()

    @property
    def raw_arm(self) -> Any:
        """The wrapped arm (for freedrive only; never command it directly)."""
        return self.safe.arm

    def now_s(self) -> float:
        """Seconds on the driver's clock (sim time or time.monotonic)."""
        return self._clock()

    def state(self) -> ArmState:
        return self.safe.state()

    def command(self, q: np.ndarray, gripper: float, due_s: float) -> int:
        """Queue joint target q (6,) rad + gripper (0..1) due at due_s (driver clock); the servo
        loop interpolates towards it from the current target. Returns the actions kept (0 if due_s
        had already passed). Raises ValueError on bad shapes / values."""
        target = np.concatenate([np.asarray(q, dtype=float), [float(gripper)]])[None, :]  # (1, 7)
        return self.interp.add_chunk(np.array([float(due_s)]), target, self.now_s())

    def hold(self) -> None:
        """Stop streaming: drop queued targets and stop the arm (SafeArm.stop, servoStop)."""
        self.loop.reanchor()
        self.safe.stop()

    def reanchor(self) -> None:
        """Drop queued targets and anchor the interpolator at the measured pose."""
        self.loop.reanchor()

    def stats(self) -> dict:
        import dataclasses

        return {"safety": dataclasses.asdict(self.safe.stats),
                "servo": {k: v for k, v in dataclasses.asdict(self.loop.stats).items()
                          if not (isinstance(v, float) and not math.isfinite(v))}}


class _SimDriverBase(_ServoDriverBase):
    is_sim = True

    def __init__(self, env: Any, safety: SafetyConfig | None, servo_rate_hz: float) -> None:
        self.env = env
        self.period_s = 1.0 / float(servo_rate_hz)
        substeps = self.period_s / env.timestep_s
        if abs(substeps - round(substeps)) > 1e-6 or round(substeps) < 1:
            raise ValueError(f"servo period {self.period_s} s is not a whole number of physics steps ({env.timestep_s} s)")
        super().__init__(env.arm, safety, servo_rate_hz, clock=lambda: env.sim_time_s)

    def reset_scene(self, seed: int):
        """New sim episode: `env.reset(seed)` (arm home, object placed), then SafeArm stop +
        re-anchor (the reset teleports the arm; it is not a motion command). Returns EpisodeInfo."""
        def reset_and_reanchor():
            info = self.env.reset(seed=seed)
            self.safe.stop()
            self.loop.reanchor()
            return info

        return self.env.exclusive(reset_and_reanchor)

    # Lock order: the world, then the servo loop (the real-time stepper ticks the loop with the
    # world held): re-anchoring goes through env.exclusive, or it deadlocks against the stepper.
    def reanchor(self) -> None:
        self.env.exclusive(super().reanchor)

    def hold(self) -> None:
        self.env.exclusive(super().hold)

    def success(self) -> bool:
        return bool(self.env.success())

    def scene_tracks(self) -> tuple[np.ndarray, np.ndarray]:
        """Ground-truth point tracks (N_TRACK, 3) float32 (camera optical frame, m; layout
        `data.schema.TRACK_SLICES`) and their validity mask (N_TRACK,) bool."""
        return self.env.scene_tracks()


class LockstepSimDriver(_SimDriverBase):
    """MuJoCo cell in lock-step: `sleep_until(t)` runs servo ticks + physics until sim time t.

    Deterministic and as fast as the CPU (used for replays and tests). Args: env
    (`PickIntoSinkEnv`), safety config, servo_rate_hz (1 / rate a whole number of physics steps).
    """

    kind = "sim-lockstep"
    realtime = False

    def __init__(self, env: Any, safety: SafetyConfig | None = None, servo_rate_hz: float = 125.0) -> None:
        super().__init__(env, safety, servo_rate_hz)

    def start(self) -> None:
        pass

    def sleep_until(self, t_s: float) -> None:
        self.env.advance_until(t_s, self.period_s, self.loop.tick)

    def close(self) -> None:
        self.safe.stop()


class RealtimeSimDriver(_SimDriverBase):
    """MuJoCo cell in real time: a `RealtimeSimStepper` thread steps physics to follow the wall
    clock and runs the servo tick (sim clock) before each period; `sleep_until(t)` waits until
    sim time reaches t. Raises TimeoutError from sleep_until when the sim stalls > stall_timeout_s."""

    kind = "sim-realtime"

    def __init__(self, env: Any, safety: SafetyConfig | None = None, servo_rate_hz: float = 125.0,
                 real_time_factor: float = 1.0, stall_timeout_s: float = 5.0) -> None:
        from dynaflip_ros.sim.realtime import RealtimeSimStepper

        super().__init__(env, safety, servo_rate_hz)
        self.stall_timeout_s = float(stall_timeout_s)
        self.stepper = RealtimeSimStepper(env, rate_hz=servo_rate_hz, real_time_factor=real_time_factor,
                                          on_tick=self.loop.tick)

    def start(self) -> None:
        if not self.stepper.running:
            self.stepper.start()

    def sleep_until(self, t_s: float) -> None:
        wall_end = time.monotonic() + self.stall_timeout_s
        while True:
            left = t_s - self.env.sim_time_s
            if left <= 1e-9:
                return
            if time.monotonic() > wall_end:
                raise TimeoutError(f"sim time stalled at {self.env.sim_time_s:.3f} s (waiting for {t_s:.3f} s)")
            time.sleep(min(max(left, 0.0005), 0.005))

    def stats(self) -> dict:
        import dataclasses

        s = super().stats()
        s["realtime"] = {k: v for k, v in dataclasses.asdict(self.stepper.stats).items()
                         if not (isinstance(v, float) and not math.isfinite(v))}
        return s

    def close(self) -> None:
        self.stepper.stop()
        self.safe.stop()


class RealArmDriver(_ServoDriverBase):
    """A real arm (URRtdeArm) on `time.monotonic`, ServoLoop in its own thread at the controller
    rate (125 Hz CB3, 500 Hz e-Series; docs/hardware.md §1.6)."""

    kind = "real"

    def __init__(self, arm: Any, safety: SafetyConfig | None = None, servo_rate_hz: float = 125.0) -> None:
        super().__init__(arm, safety, servo_rate_hz, clock=time.monotonic)

    def start(self) -> None:
        if not self.loop.running:
            self.loop.start()

    def sleep_until(self, t_s: float) -> None:
        delay = t_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def close(self) -> None:
        self.loop.stop(stop_arm=True)
