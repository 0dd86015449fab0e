"""`ArmDriver`: action chunks -> `ServoCore` (interpolator -> ServoLoop -> SafeArm) -> arm (ROS-free).

The core of the `ur3_driver` node (ros/nodes/ur3_driver.py is its ROS adapter). Every target
goes through `robot.safety.SafeArm` (docs/safety.md). The driver owns what is not time-critical
(chunk intake and filtering, clock offsets, episodes, counters); the servo core
(`robot.servo_core`) runs in this process, or for the real arm inside the RTDE worker process
(`robot.ur_rtde_servo.WorkerServoCore`), where the node process's GIL cannot stall it.

Clocks (docs/timing.md): action-chunk times arrive on the ROS clock (the observation's capture
stamp plus i * dt); `queue_chunk` shifts them onto the servo loop's clock with the offset
measured at receipt, then onto trajectory time (slower than the loop clock while the
controller's speed slider / scaling is below 1). Actions already due are dropped; a new segment
starts from the last commanded target; the latest chunk wins. The servo loop's clock is
monotonic on the real cell and the simulation clock inside the sim cell (where the physics
stepper ticks the loop instead of a thread).

Chunk filtering, in order: outside an operator-started episode (real cell only) -> refused;
stamped before the last re-anchor (`min_chunk_stamp_s`: a sim reset, a re-arm, an episode
start) -> ignored; malformed -> invalid; older than `max_chunk_age_s` on arrival -> stale.

Real-cell episodes: with `operator_episodes=True` the driver owns an `episodes.gate.EpisodeGate`
(the operator starts / stops episodes; a halt of SafeArm ends the running one).

Locks: `_stats_lock` guards the counters and `min_chunk_stamp_s` and is a leaf. The servo loop's
tick lock and SafeArm's lock are taken inside the servo core's calls. In simulation the physics
stepper ticks the loop with the world held, so the order is world, then tick lock, then SafeArm,
then the world again inside the arm (re-entrant): every hold / re-anchor / re-arm here runs
through `exclusive` (the sim cell passes `PickIntoSinkEnv.exclusive`), which takes the world
first. On the real cell `exclusive` just calls the function.
"""
from __future__ import annotations

import dataclasses
import threading
from typing import Callable, TypeVar

import numpy as np

from dynaflip_ros.configs.ros import Ur3DriverNodeConfig
from dynaflip_ros.episodes.gate import EpisodeGate
from dynaflip_ros.episodes.protocol import EpisodeStatus, Outcome
from dynaflip_ros.robot.arm import Arm
from dynaflip_ros.robot.servo_core import ServoCore

T = TypeVar("T")


@dataclasses.dataclass
class ChunkStats:
    """Action-chunk counters of the driver: received, queued (>= 1 future action), stale (all
    actions due or too old), before_reset (stamped before the last re-anchor), invalid,
    outside_episode (real cell: no episode running, the chunk is refused)."""

    received: int = 0
    queued: int = 0
    stale: int = 0
    before_reset: int = 0
    invalid: int = 0
    outside_episode: int = 0


class ArmDriver:
    """Streams the latest action chunk to the arm through SafeArm at `config.servo_rate_hz`.

    Args:
        arm: the Arm to drive (connected here through SafeArm, in a `robot.servo_core.ServoCore`).
        config: the driver's settings (`configs.ros.Ur3DriverNodeConfig`).
        clock: the servo loop's clock in seconds (monotonic for a real arm; the simulation
            clock when an external stepper ticks the loop).
        operator_episodes: the real cell: episodes are started and stopped through this driver.
        exclusive: runs a callable with the arm's world held (simulation: `env.exclusive`);
            default: calls it directly.
        servo: a servo core that already runs elsewhere (`robot.ur_rtde_servo.WorkerServoCore`:
            the servo loop inside the RTDE worker process); None -> a `ServoCore` around `arm`
            in this process. Its clock must be `clock`.
    Attributes `safe`, `loop`, `interp`, `action_age`: the in-process core's parts (`loop`,
    `interp` and `action_age` are None when the core runs in the RTDE worker; `safe` is then
    the worker core's read-only view).
    Raises ArmError / SafetyViolation from connecting the arm.
    """

    def __init__(self, arm: Arm, config: Ur3DriverNodeConfig, clock: Callable[[], float],
                 operator_episodes: bool = False,
                 exclusive: Callable[[Callable[[], T]], T] | None = None, servo=None) -> None:
        self.arm = arm
        self._exclusive = exclusive or (lambda fn: fn())
        self.config = config
        self.clock = clock
        self.servo = servo if servo is not None else ServoCore(arm, config, clock)
        self.safe, self.loop, self.interp, self.action_age = (
            self.servo.safe, self.servo.loop, self.servo.interp, self.servo.action_age)
        self.chunk_stats = ChunkStats()
        self._stats_lock = threading.Lock()  # leaf: counters and min_chunk_stamp_s
        self._min_chunk_stamp_s = 0.0  # chunks stamped before the last re-anchor are ignored
        self.gate = EpisodeGate() if operator_episodes else None

    @property
    def operator_episodes(self) -> bool:
        """The real cell: the operator starts and stops episodes through this driver."""
        return self.gate is not None

    def start_servo_thread(self) -> None:
        """Run the servo loop in its own thread (real arm), at the configured RT priority."""
        self.servo.start(rt_priority=self.config.ur_rtde.rt_priority if self.config.backend == "ur_rtde" else 0)

    # ------------------------------------------------------------------ action chunks
    def _count(self, name: str) -> None:
        with self._stats_lock:
            setattr(self.chunk_stats, name, getattr(self.chunk_stats, name) + 1)

    def admit_chunk(self, stamp_s: float) -> str | None:
        """Count a received chunk stamped `stamp_s` (ROS s); returns why it is refused
        ("outside_episode" | "before_reset") or None when it may be decoded and queued."""
        with self._stats_lock:
            self.chunk_stats.received += 1
            min_stamp_s = self._min_chunk_stamp_s
        if self.gate is not None and not self.gate.state().running:
            # Real cell: the arm follows chunks only inside an operator-started episode (the policy
            # gates itself on /episode/status too; this also stops any other publisher).
            self._count("outside_episode")
            return "outside_episode"
        if stamp_s < min_stamp_s:
            self._count("before_reset")
            return "before_reset"
        return None

    def chunk_invalid(self) -> None:
        """Count a chunk that failed to decode."""
        self._count("invalid")

    def queue_chunk(self, stamp_s: float, times_s: np.ndarray, targets: np.ndarray,
                    recv_ros_s: float, recv_clock_s: float) -> str:
        """Queue a decoded chunk: times_s (H,) ROS seconds, targets (H, 7) (6 joints rad +
        gripper 0..1), received at `recv_ros_s` (ROS clock) = `recv_clock_s` (loop clock).
        Returns "queued", "stale" (all actions due) or "too_old" (older than max_chunk_age_s)."""
        if recv_ros_s - stamp_s > self.config.max_chunk_age_s:
            self._count("stale")
            return "too_old"
        offset_s = recv_clock_s - recv_ros_s  # ROS clock -> loop clock
        kept = self.servo.add_chunk(np.asarray(times_s) + offset_s, targets, stamp_s + offset_s)
        self._count("queued" if kept else "stale")
        return "queued" if kept else "stale"

    # ------------------------------------------------------------------ holding and re-arming
    def hold(self) -> None:
        """Stop the arm (an explicit `SafeArm.stop`, not a watchdog trip), drop queued actions
        and anchor at the measured pose: the servo loop holds until the next chunk."""
        self._exclusive(self.servo.hold)

    def reanchor(self, min_chunk_stamp_s: float) -> None:
        """After the arm was moved outside the driver (sim reset): drop queued actions, anchor the
        interpolator and SafeArm's rate limiter to the measured pose, and ignore chunks stamped
        before `min_chunk_stamp_s` (ROS clock; observations of the previous episode).
        Runs through `exclusive` (module docstring for the lock order)."""
        with self._stats_lock:
            self._min_chunk_stamp_s = float(min_chunk_stamp_s)
        self.hold()  # SafeArm re-anchors its rate limiter at the measured pose on the next command

    def rearm(self, now_ros_s: float) -> str:
        """Clear a stop on the arm (reconnecting a dead RTDE worker first) and re-anchor SafeArm
        and the interpolator at the measured pose; chunks planned before `now_ros_s` are ignored.
        Returns a status text; raises ArmError (or SafetyViolation) when the arm is not ready."""
        arm = self.arm
        if hasattr(arm, "connected") and hasattr(arm, "reconnect") and not arm.connected:
            arm.reconnect()
        if hasattr(arm, "rearm"):
            arm.rearm()
        with self._stats_lock:
            self._min_chunk_stamp_s = float(now_ros_s)
        self._exclusive(self.servo.rearm)
        return f"re-armed at q={[round(float(v), 4) for v in self.servo.state().q]}"

    # ------------------------------------------------------------------ episodes (real cell)
    def start_episode(self, now_ros_s: float) -> str:
        """Start an episode: drop queued actions, ignore chunks planned before now, let the
        policy act. Raises RuntimeError while SafeArm is halted (re-arm first)."""
        if self.gate is None:
            raise RuntimeError("episodes are run by the sim cell here (operator_episodes=False)")
        halted, reason = self.servo.halt_state()
        if halted:
            raise RuntimeError(f"arm halted ({reason}): call /ur3_driver/rearm first")
        self.reanchor(min_chunk_stamp_s=now_ros_s)
        episode = self.gate.next_episode()
        self.gate.begin(episode, None, now_ros_s)
        return f"episode {episode} started"

    def stop_episode(self) -> str:
        """End the running episode: the policy stops acting and the arm holds (queued actions
        dropped); returns a status text (also when no episode was running). Raises RuntimeError
        without operator episodes (the sim cell runs them)."""
        if self.gate is None:
            raise RuntimeError("episodes are run by the sim cell here (operator_episodes=False)")
        was_running = self.gate.end(Outcome.STOPPED, "stop_episode service")
        episode = self.gate.state().episode
        self.hold()
        return f"episode {episode} stopped" if was_running else "no episode was running"

    def episode_status(self, now_ros_s: float) -> tuple[EpisodeStatus, bool]:
        """The real cell's /episode/status; a halt of SafeArm ends the running episode first.
        Returns (status, whether this call ended the episode because of a halt)."""
        halted, reason = self.servo.halt_state()
        ended = halted and self.gate.end(Outcome.HALTED, str(reason))
        return self.gate.status("ur3_driver", now_ros_s, halted=halted), ended

    # ------------------------------------------------------------------ status
    def status(self) -> dict:
        """Counters of SafeArm, the servo loop, the interpolator and the executed actions' ages
        (`ServoCore.status`) plus the chunk intake (key "chunks")."""
        with self._stats_lock:
            chunks = dataclasses.asdict(self.chunk_stats)
        return {**self.servo.status(), "chunks": chunks}

    def close(self) -> None:
        """Stop the servo loop and the arm (servoStop), then disconnect (idempotent)."""
        self.servo.close()
