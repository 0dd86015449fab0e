"""Node `ur3_driver`: the ROS adapter of `robot.arm_driver.ArmDriver` (action chunks ->
ActionChunkInterpolator -> ServoLoop (125 Hz) -> SafeArm -> arm; chunk timing and filtering
rules are in that module). Every target goes through `robot.safety.SafeArm` (docs/safety.md).

Real cell (`ur3_driver_node`, backend `ur_rtde`, `robot.ur_rtde_arm.URRtdeArm`): the servo loop runs in its own thread
on the monotonic clock, inside the RTDE worker process with SafeArm and the interpolator
(`servo_in_worker`, default; `robot.ur_rtde_servo.WorkerServoCore`: this node sends it the
chunks), or in this process (`servo_in_worker: false`). Simulation (inside `sim_cell_node` with `PickIntoSinkEnv.arm`): the
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
                                     arm is stopped (servoStop) and holds where it is; a
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

import sys
import time
from typing import Callable

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from dynaflip_ros.configs.ros import Ur3DriverNodeConfig
from dynaflip_ros.robot.arm import Arm, ArmError
from dynaflip_ros.robot.arm_driver import ArmDriver
from dynaflip_ros.ros.conversions import joint_state_from_arm_state, stamp_to_s, trajectory_to_times_targets
from dynaflip_ros.ros.params import load_node_config, node_kwargs
from dynaflip_ros.ros.qos import (
    ACTION_CHUNK_TOPIC, COMMAND_QOS, DRIVER_STATUS_TOPIC, EPISODE_STATUS_TOPIC, EVENT_QOS, JOINT_STATES_TOPIC,
    STATE_QOS,
)
from dynaflip_ros.ros.runtime import LatencyReporter, load_real_backend, ros_now_s, run_node, safe_publish, to_json_msg

# Real-cell arm backends: backend name -> (module, class), imported only when chosen; the
# servo core in the backend's own worker process (`servo_in_worker`) likewise.
REAL_ARM_BACKENDS: dict[str, tuple[str, str]] = {
    "ur_rtde": ("dynaflip_ros.robot.ur_rtde_arm", "URRtdeArm"),
}
WORKER_SERVO_BACKENDS: dict[str, tuple[str, str]] = {
    "ur_rtde": ("dynaflip_ros.robot.ur_rtde_servo", "WorkerServoCore"),
}


def make_arm(config: Ur3DriverNodeConfig) -> Arm:
    """Open the real-cell arm backend `config.backend` with its settings (`config.ur_rtde`)
    (`runtime.load_real_backend`; BackendUnavailableError for "sim", an unknown name, or a
    missing module)."""
    return load_real_backend("arm", config.backend, REAL_ARM_BACKENDS, config.ur_rtde)


class Ur3DriverNode(Node):
    """ROS adapter of `robot.arm_driver.ArmDriver` (module docstring for topics and services).

    Args:
        arm: the Arm to drive (the sim cell passes `env.arm`); None -> the `backend`
            parameter's real arm (`make_arm`).
        clock: the servo loop's clock in seconds (monotonic for a real arm; the simulation
            clock when an external stepper ticks the loop).
        servo_thread: run the servo loop in its own thread (real arm); False -> the caller
            calls `self.loop.tick(now_s)` at servo_rate_hz (simulation stepper).
        exclusive: runs a callable with the arm's world held (simulation: `env.exclusive`; see
            `robot.arm_driver` for the lock order).
    Raises ConfigError, BackendUnavailableError, or ArmError from connecting the arm.
    """

    def __init__(self, arm: Arm | None = None, node_name: str = "ur3_driver",
                 clock: Callable[[], float] = time.monotonic, servo_thread: bool = True,
                 exclusive: Callable | None = None) -> None:
        super().__init__(node_name, **node_kwargs())
        self.config = cfg = load_node_config(self, Ur3DriverNodeConfig)
        servo = None
        if arm is None:
            if cfg.servo_in_worker:  # the servo loop in the backend's worker process
                servo = load_real_backend("arm", cfg.backend, WORKER_SERVO_BACKENDS, cfg)
                arm = servo.arm
            else:
                arm = make_arm(cfg)
            rate = cfg.ur_rtde.controller_rate_hz
            if abs(rate - cfg.servo_rate_hz) > 1e-6:
                self.get_logger().warning(
                    f"servo_rate_hz {cfg.servo_rate_hz:g} differs from the {cfg.ur_rtde.ur_type} controller "
                    f"rate {rate:g} Hz: servoJ targets will be {'bunched' if cfg.servo_rate_hz > rate else 'held'}")
        # Real cell: the operator runs episodes (the sim_cell node does it in simulation).
        self.core = ArmDriver(arm, cfg, clock, operator_episodes=cfg.backend != "sim", exclusive=exclusive,
                              servo=servo)
        self.arm, self.safe, self.loop, self.interp = arm, self.core.safe, self.core.loop, self.core.interp
        self.chunk_stats = self.core.chunk_stats
        self._latency = LatencyReporter(self)
        self._js_pub = self.create_publisher(JointState, JOINT_STATES_TOPIC, STATE_QOS)
        self._status_pub = self.create_publisher(String, DRIVER_STATUS_TOPIC, EVENT_QOS)
        self.create_subscription(JointTrajectory, ACTION_CHUNK_TOPIC, self._on_chunk, COMMAND_QOS,
                                 callback_group=MutuallyExclusiveCallbackGroup())
        self._js_timer = self.create_timer(1.0 / cfg.joint_state_rate_hz, self._publish_joint_state,
                                           callback_group=MutuallyExclusiveCallbackGroup())
        self._status_timer = self.create_timer(1.0 / cfg.status_rate_hz, self._publish_status)
        self.create_service(Trigger, "~/rearm", self._on_rearm, callback_group=MutuallyExclusiveCallbackGroup())
        self._episode_pub = None
        if self.core.operator_episodes:
            self._episode_pub = self.create_publisher(String, EPISODE_STATUS_TOPIC, EVENT_QOS)
            group = MutuallyExclusiveCallbackGroup()
            self.create_service(Trigger, "~/start_episode", self._on_start_episode, callback_group=group)
            self.create_service(Trigger, "~/stop_episode", self._on_stop_episode, callback_group=group)
            self._episode_timer = self.create_timer(1.0 / cfg.status_rate_hz, self._publish_episode_status,
                                                    callback_group=group)
        if servo_thread:
            self.core.start_servo_thread()
        where = ("in the RTDE worker process" if servo is not None
                 else "own thread" if servo_thread else "ticked by the sim stepper")
        self.get_logger().info(
            f"ur3_driver: {type(arm).__name__} behind SafeArm, servo loop {cfg.servo_rate_hz:g} Hz ({where}), "
            f"{ACTION_CHUNK_TOPIC} -> arm, {JOINT_STATES_TOPIC} at {cfg.joint_state_rate_hz:g} Hz")

    # ------------------------------------------------------------------ commands
    def _on_chunk(self, msg: JointTrajectory) -> None:
        recv_ros_s = ros_now_s(self)
        recv_clock_s = self.core.clock()
        stamp_s = stamp_to_s(msg.header.stamp)
        refused = self.core.admit_chunk(stamp_s)
        if refused == "outside_episode":
            self.get_logger().warning("action chunk refused: no episode running (/ur3_driver/start_episode)",
                                      throttle_duration_sec=5.0)
        if refused:
            return
        self._latency.report("command", recv_ros_s - stamp_s, stamp_s)
        try:
            times_s, targets = trajectory_to_times_targets(msg)  # (H,), (H, 7)
        except ValueError as e:
            self.core.chunk_invalid()
            self.get_logger().error(f"invalid action chunk dropped: {e}", throttle_duration_sec=2.0)
            return
        try:
            queued = self.core.queue_chunk(stamp_s, times_s, targets, recv_ros_s, recv_clock_s)
        except ArmError as e:  # the RTDE worker (and its servo loop) is gone: the arm is stopped
            self.get_logger().error(f"action chunk not queued: {e}", throttle_duration_sec=2.0)
            return
        if queued == "too_old":
            self.get_logger().warning(
                f"action chunk {(recv_ros_s - stamp_s) * 1e3:.0f} ms old "
                f"(> {self.config.max_chunk_age_s * 1e3:.0f} ms): dropped", throttle_duration_sec=2.0)

    def hold(self) -> None:
        """`ArmDriver.hold`: drop queued actions, hold at the measured pose."""
        self.core.hold()

    def reanchor(self, min_chunk_stamp_s: float) -> None:
        """`ArmDriver.reanchor` (sim reset; call with the world's lock held)."""
        self.core.reanchor(min_chunk_stamp_s)

    def rearm(self) -> str:
        """`ArmDriver.rearm` at the current ROS time."""
        return self.core.rearm(ros_now_s(self))

    # ------------------------------------------------------------------ episodes (real cell)
    def start_episode(self) -> str:
        """`ArmDriver.start_episode` now; publishes the status. Raises RuntimeError while halted."""
        text = self.core.start_episode(ros_now_s(self))
        self._publish_episode_status()
        return text

    def stop_episode(self) -> str:
        """`ArmDriver.stop_episode`; publishes the status."""
        text = self.core.stop_episode()
        self._publish_episode_status()
        return text

    def _publish_episode_status(self) -> None:
        if self._episode_pub is None:
            return
        status, ended_by_halt = self.core.episode_status(ros_now_s(self))
        if ended_by_halt:
            self.get_logger().warning(f"episode {status.episode} ended: arm halted ({status.reason})")
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
        """`ArmDriver.status`: counters of SafeArm, the servo loop, the interpolator, the chunks."""
        return self.core.status()

    def _publish_status(self) -> None:
        safe_publish(self, self._status_pub, to_json_msg(self.status()), "driver status")

    def close(self) -> None:
        """Stop the timers, the servo loop and the arm (servoStop), then disconnect (idempotent)."""
        self._js_timer.cancel()
        self._status_timer.cancel()
        self.core.close()


def main(argv: list[str] | None = None) -> int:
    """`ur3_driver_node` (real cell): the `ur3_driver` node standalone."""
    return run_node("ur3_driver", Ur3DriverNode, argv, num_threads=3, close=True)


if __name__ == "__main__":
    sys.exit(main())
