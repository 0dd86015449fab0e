"""Node `ur3_driver`: action chunks -> ActionChunkInterpolator -> ServoLoop (125 Hz) -> SafeArm -> arm.

The driver owns safety (docs/safety.md): every target goes through
`robot.safety.SafeArm`. Action-chunk times arrive on the ROS clock (header.stamp = the
observation's capture time, `time_from_start` per point); on arrival they are shifted onto the
servo loop's clock with the offset measured at that instant, then queued (actions already due
are dropped; a new segment starts from the last commanded target; the latest chunk wins).

Real cell (`ur3_driver_node`, backend `ur_rtde`, `robot.ur_rtde_arm.URRtdeArm`): the servo loop runs in its own thread
on the monotonic clock. Simulation (inside `sim_cell_node` with `PickIntoSinkEnv.arm`): the
servo loop has no thread of its own; `sim.realtime.RealtimeSimStepper` calls `loop.tick` every
1/125 s of simulation time, in lockstep with physics (4 physics steps per tick, exactly the
pipeline of `sim.rollout.SimRunner` that recorded the demonstrations), and the loop, SafeArm's
watchdog and the chunk times run on the simulation clock.

Subscribed:  /dynaflip/action_chunk  trajectory_msgs/JointTrajectory (UR joints + "gripper")  COMMAND_QOS
Published:   /joint_states           sensor_msgs/JointState at joint_state_rate_hz             STATE_QOS
             /ur3_driver/status      std_msgs/String JSON: safety, servo-loop, chunk counters  EVENT_QOS
             /dynaflip/latency       {"stage": "command", "ms": capture -> chunk received}     EVENT_QOS
Real cell only (backend != sim; in simulation the sim_cell node runs the episodes):
             /episode/status         `episodes.protocol.EpisodeStatus` (source "ur3_driver"; the
                                     state machine is `episodes.gate.EpisodeGate`): the policy
                                     node acts only while an episode is running
Services:    /ur3_driver/start_episode  std_srvs/Trigger (real cell): the operator starts an
                                     episode (refused while halted); queued actions are dropped
                                     and chunks planned before the start are ignored
             /ur3_driver/stop_episode   std_srvs/Trigger (real cell): the policy stops acting, the
                                     arm holds where it is (the watchdog then stops it); a
                                     protective stop also ends the episode
             /ur3_driver/rearm       std_srvs/Trigger: after a protective / emergency stop or a
                                     stopped control program, the driver holds (no streaming,
                                     queued actions dropped) until this is called: clears the
                                     stop on the controller (`URRtdeArm.rearm`; reconnects a
                                     lost worker), re-anchors SafeArm and the interpolator at the
                                     measured pose and ignores chunks planned before the re-arm.
Parameters: configs.ros.Ur3DriverNodeConfig (section `ur3_driver:`).
"""
from __future__ import annotations

import dataclasses
import gc
import sys
import threading
import time
from typing import Callable

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from dynaflip_ros.configs.ros import Ur3DriverNodeConfig
from dynaflip_ros.episodes.gate import EpisodeGate
from dynaflip_ros.episodes.protocol import Outcome
from dynaflip_ros.robot.arm import Arm, ArmError
from dynaflip_ros.robot.interpolation import ActionChunkInterpolator
from dynaflip_ros.robot.safety import SafeArm
from dynaflip_ros.robot.servo_loop import ServoLoop
from dynaflip_ros.ros.conversions import joint_state_from_arm_state, stamp_to_s, trajectory_to_times_targets
from dynaflip_ros.ros.params import load_node_config, node_kwargs
from dynaflip_ros.ros.qos import (
    ACTION_CHUNK_TOPIC, COMMAND_QOS, DRIVER_STATUS_TOPIC, EPISODE_STATUS_TOPIC, EVENT_QOS, JOINT_STATES_TOPIC,
    STATE_QOS,
)
from dynaflip_ros.ros.runtime import (
    run_node,
    LatencyReporter, load_real_backend, ros_now_s, safe_publish, to_json_msg,
)

# Real-cell arm backends: backend name -> (module, class), imported only when chosen.
REAL_ARM_BACKENDS: dict[str, tuple[str, str]] = {
    "ur_rtde": ("dynaflip_ros.robot.ur_rtde_arm", "URRtdeArm"),
}


def make_arm(config: Ur3DriverNodeConfig) -> Arm:
    """Open the real-cell arm backend `config.backend` with its settings (`config.ur_rtde`)
    (`runtime.load_real_backend`; BackendUnavailableError for "sim", an unknown name, or a
    missing module)."""
    return load_real_backend("arm", config.backend, REAL_ARM_BACKENDS, config.ur_rtde)


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


class Ur3DriverNode(Node):
    """Streams the latest action chunk to `arm` through SafeArm at `servo_rate_hz`.

    Args:
        arm: the Arm to drive (the sim cell passes `env.arm`); None -> the `backend`
            parameter's real arm (`make_arm`).
        clock: the servo loop's clock in seconds (monotonic for a real arm; the simulation
            clock when an external stepper ticks the loop).
        servo_thread: run the servo loop in its own thread (real arm); False -> the caller
            calls `self.loop.tick(now_s)` at servo_rate_hz (simulation stepper).
    Raises ConfigError, BackendUnavailableError, or ArmError from connecting the arm.
    """

    def __init__(self, arm: Arm | None = None, node_name: str = "ur3_driver",
                 clock: Callable[[], float] = time.monotonic, servo_thread: bool = True) -> None:
        super().__init__(node_name, **node_kwargs())
        self.config = load_node_config(self, Ur3DriverNodeConfig)
        if arm is None:
            arm = make_arm(self.config)
            rate = self.config.ur_rtde.controller_rate_hz
            if abs(rate - self.config.servo_rate_hz) > 1e-6:
                self.get_logger().warning(
                    f"servo_rate_hz {self.config.servo_rate_hz:g} differs from the {self.config.ur_rtde.ur_type} "
                    f"controller rate {rate:g} Hz: servoJ targets will be {'bunched' if self.config.servo_rate_hz > rate else 'held'}")
        self.arm = arm
        self._loop_clock = clock
        self.safe = SafeArm(arm, self.config.safety, clock=clock)
        self.safe.connect()
        self.interp = ActionChunkInterpolator(n_dims=7)
        # A real controller reports its speed slider / scaling: follow chunks in scaled time.
        speed_scaling = (lambda: arm.speed_scaling) if hasattr(arm, "speed_scaling") else None
        # A UR lags its servoj targets by about the lookahead time: hold a finished chunk's last
        # target that long (plus the lead) so the arm settles on it before the watchdog stops it.
        end_hold_s = (self.config.ur_rtde.settle_hold_s(self.config.command_lead_s)
                      if self.config.backend == "ur_rtde" else 0.0)
        self.loop = ServoLoop(self.safe, self.interp, rate_hz=self.config.servo_rate_hz, clock=clock,
                              speed_scaling=speed_scaling, command_lead_s=self.config.command_lead_s,
                              end_hold_s=end_hold_s)
        self.chunk_stats = ChunkStats()
        self._stats_lock = threading.Lock()
        self._min_chunk_stamp_s = 0.0  # chunks stamped before the last re-anchor are ignored
        self.loop.reanchor()
        self._latency = LatencyReporter(self)
        self._js_pub = self.create_publisher(JointState, JOINT_STATES_TOPIC, STATE_QOS)
        self._status_pub = self.create_publisher(String, DRIVER_STATUS_TOPIC, EVENT_QOS)
        self.create_subscription(JointTrajectory, ACTION_CHUNK_TOPIC, self._on_chunk, COMMAND_QOS,
                                 callback_group=MutuallyExclusiveCallbackGroup())
        self._js_timer = self.create_timer(1.0 / self.config.joint_state_rate_hz, self._publish_joint_state,
                                           callback_group=MutuallyExclusiveCallbackGroup())
        self._status_timer = self.create_timer(1.0 / self.config.status_rate_hz, self._publish_status)
        self.create_service(Trigger, "~/rearm", self._on_rearm, callback_group=MutuallyExclusiveCallbackGroup())
        # Real cell: the operator runs episodes (the sim_cell node does it in simulation).
        self.gate = EpisodeGate()
        self._episode_pub = None
        if self.config.backend != "sim":
            self._episode_pub = self.create_publisher(String, EPISODE_STATUS_TOPIC, EVENT_QOS)
            group = MutuallyExclusiveCallbackGroup()
            self.create_service(Trigger, "~/start_episode", self._on_start_episode, callback_group=group)
            self.create_service(Trigger, "~/stop_episode", self._on_stop_episode, callback_group=group)
            self._episode_timer = self.create_timer(1.0 / self.config.status_rate_hz, self._publish_episode_status,
                                                    callback_group=group)
        if servo_thread:
            # Everything allocated so far (modules, rclpy, configs) moves to the permanent GC
            # generation: full collections then stay short and do not stall the servo thread
            # (measured: ~50-100 ms overrun bursts without it in a process holding large heaps).
            gc.collect()
            gc.freeze()
            self.loop.start(rt_priority=self.config.ur_rtde.rt_priority if self.config.backend == "ur_rtde" else 0)
        self.get_logger().info(
            f"ur3_driver: {type(arm).__name__} behind SafeArm, servo loop {self.config.servo_rate_hz:g} Hz "
            f"({'own thread' if servo_thread else 'ticked by the sim stepper'}), "
            f"{ACTION_CHUNK_TOPIC} -> arm, {JOINT_STATES_TOPIC} at {self.config.joint_state_rate_hz:g} Hz")

    # ------------------------------------------------------------------ commands
    def _on_chunk(self, msg: JointTrajectory) -> None:
        recv_ros_s = ros_now_s(self)
        recv_clock_s = self._loop_clock()
        stamp_s = stamp_to_s(msg.header.stamp)
        with self._stats_lock:
            self.chunk_stats.received += 1
            min_stamp_s = self._min_chunk_stamp_s
        if self._episode_pub is not None and not self.gate.state().running:
            # Real cell: the arm follows chunks only inside an operator-started episode (the policy
            # gates itself on /episode/status too; this also stops any other publisher).
            with self._stats_lock:
                self.chunk_stats.outside_episode += 1
            self.get_logger().warning("action chunk refused: no episode running (/ur3_driver/start_episode)",
                                      throttle_duration_sec=5.0)
            return
        if stamp_s < min_stamp_s:
            with self._stats_lock:
                self.chunk_stats.before_reset += 1
            return
        age_s = recv_ros_s - stamp_s
        self._latency.report("command", age_s, stamp_s)
        try:
            times_s, targets = trajectory_to_times_targets(msg)  # (H,), (H, 7)
        except ValueError as e:
            with self._stats_lock:
                self.chunk_stats.invalid += 1
            self.get_logger().error(f"invalid action chunk dropped: {e}", throttle_duration_sec=2.0)
            return
        if age_s > self.config.max_chunk_age_s:
            with self._stats_lock:
                self.chunk_stats.stale += 1
            self.get_logger().warning(
                f"action chunk {age_s * 1e3:.0f} ms old (> {self.config.max_chunk_age_s * 1e3:.0f} ms): dropped",
                throttle_duration_sec=2.0)
            return
        # ROS clock -> servo-loop clock -> trajectory time (slower than the loop clock while the
        # controller's speed slider / scaling is below 1).
        times_traj_s = self.loop.to_trajectory_time(times_s - recv_ros_s + recv_clock_s)
        kept = self.interp.add_chunk(times_traj_s, targets, now_s=self.loop.to_trajectory_time(self._loop_clock()))
        with self._stats_lock:
            if kept:
                self.chunk_stats.queued += 1
            else:
                self.chunk_stats.stale += 1

    def hold(self) -> None:
        """Drop queued actions and anchor at the measured pose: the servo loop holds and the
        watchdog stops the arm."""
        self.loop.reanchor()

    def reanchor(self, min_chunk_stamp_s: float) -> None:
        """After the arm was moved outside the driver (sim reset): drop queued actions, anchor the
        interpolator and SafeArm's rate limiter to the measured pose, and ignore chunks stamped
        before `min_chunk_stamp_s` (ROS clock; observations of the previous episode).
        In simulation call it with `env.lock` held (lock order: env.lock, then SafeArm's)."""
        with self._stats_lock:
            self._min_chunk_stamp_s = float(min_chunk_stamp_s)
        self.safe.stop()  # SafeArm re-anchors its rate limiter at the measured pose on the next command
        self.loop.reanchor()  # drop queued actions; anchor at measured joints + gripper command

    def rearm(self) -> str:
        """Clear a stop on the arm (reconnecting a dead RTDE worker first) and re-anchor SafeArm
        and the interpolator at the measured pose; chunks planned before now are ignored.
        Returns a status text; raises ArmError (or SafetyViolation) when the arm is not ready."""
        arm = self.arm
        if hasattr(arm, "connected") and hasattr(arm, "reconnect") and not arm.connected:
            arm.reconnect()
        if hasattr(arm, "rearm"):
            arm.rearm()
        with self._stats_lock:
            self._min_chunk_stamp_s = ros_now_s(self)
        self.loop.rearm()
        return f"re-armed at q={[round(float(v), 4) for v in self.safe.state().q]}"

    # ------------------------------------------------------------------ episodes (real cell)
    def start_episode(self) -> str:
        """Start an episode: drop queued actions, ignore chunks planned before now, let the
        policy act. Raises RuntimeError while SafeArm is halted (re-arm first)."""
        if self.safe.halted:
            raise RuntimeError(f"arm halted ({self.safe.halt_reason}): call /ur3_driver/rearm first")
        now_s = ros_now_s(self)
        self.reanchor(min_chunk_stamp_s=now_s)
        episode = self.gate.next_episode()
        self.gate.begin(episode, None, now_s)
        self._publish_episode_status()
        return f"episode {episode} started"

    def stop_episode(self) -> str:
        """End the running episode: the policy stops acting and the arm holds (queued actions
        dropped); returns a status text (also when no episode was running)."""
        was_running = self.gate.end(Outcome.STOPPED, "stop_episode service")
        episode = self.gate.state().episode
        self.hold()
        self._publish_episode_status()
        return f"episode {episode} stopped" if was_running else "no episode was running"

    def _publish_episode_status(self) -> None:
        if self._episode_pub is None:
            return
        halted = self.safe.halted
        if halted and self.gate.end(Outcome.HALTED, str(self.safe.halt_reason)):  # a protective stop ends it
            self.get_logger().warning(f"episode {self.gate.state().episode} ended: arm halted ({self.safe.halt_reason})")
        status = self.gate.status("ur3_driver", ros_now_s(self), halted=halted)
        safe_publish(self, self._episode_pub, String(data=status.to_json()), "episode status")

    def _on_start_episode(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        try:
            response.message = self.start_episode()
            response.success = True
        except RuntimeError as e:
            response.success, response.message = False, str(e)
        self.get_logger().info(f"start_episode: {response.message}")
        return response

    def _on_stop_episode(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        response.message = self.stop_episode()
        response.success = True
        self.get_logger().info(f"stop_episode: {response.message}")
        return response

    def _on_rearm(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        try:
            response.message = self.rearm()
            response.success = True
            self.get_logger().info(f"rearm: {response.message}")
        except (ArmError, RuntimeError) as e:
            response.success = False
            response.message = f"{type(e).__name__}: {e}"
            self.get_logger().error(f"rearm refused: {response.message}")
        return response

    # ------------------------------------------------------------------ state / status
    def _publish_joint_state(self) -> None:
        try:
            st = self.safe.state()
        except Exception as e:  # noqa: BLE001 - a lost arm connection must be visible, not fatal here
            self.get_logger().error(f"arm state read failed: {e}", throttle_duration_sec=2.0)
            return
        safe_publish(self, self._js_pub, joint_state_from_arm_state(st, ros_now_s(self)), "joint_states")

    def status(self) -> dict:
        """Counters of SafeArm, the servo loop, the interpolator and the chunk subscriber."""
        loop = self.loop.stats
        with self._stats_lock:
            chunks = dataclasses.asdict(self.chunk_stats)
        return {
            "safety": dataclasses.asdict(self.safe.stats),
            "halted": self.safe.halted,
            "halt_reason": self.safe.halt_reason,
            "trajectory_lag_s": self.loop.trajectory_lag_s,
            "servo": {
                "rate_hz": self.loop.rate_hz, "ticks": loop.ticks, "commands_sent": loop.commands_sent,
                "holds": loop.holds, "safety_rejections": loop.safety_rejections,
                "rejections_by_reason": loop.rejections_by_reason, "errors": loop.errors,
                "overruns": loop.overruns, "period_mean_ms": loop.period_mean_s * 1e3,
                "jitter_p99_ms": loop.jitter_p99_s * 1e3, "jitter_max_ms": loop.jitter_max_s * 1e3,
            },
            "interpolator": {"chunks_added": self.interp.chunks_added, "stale_chunks": self.interp.stale_chunks,
                             "dropped_actions": self.interp.dropped_actions},
            "chunks": chunks,
        }

    def _publish_status(self) -> None:
        safe_publish(self, self._status_pub, to_json_msg(self.status()), "driver status")

    def close(self) -> None:
        """Stop the servo loop and the arm (servoStop), then disconnect (idempotent)."""
        self._js_timer.cancel()
        self._status_timer.cancel()
        self.loop.stop(stop_arm=True)
        self.safe.disconnect()


def main(argv: list[str] | None = None) -> int:
    """`ur3_driver_node` (real cell): the `ur3_driver` node standalone."""
    return run_node("ur3_driver", Ur3DriverNode, argv, num_threads=3, close=True)


if __name__ == "__main__":
    sys.exit(main())
