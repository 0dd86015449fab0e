"""`sim_cell_node`: the simulated Pick-into-Sink cell as ONE process hosting three nodes.

The MuJoCo world lives in one process (`sim.pick_into_sink.PickIntoSinkEnv` owns model + data),
shared by:

- node `sim_cell` (this module): owns the env, advances physics in real time
  (`sim.realtime.RealtimeSimStepper`, 125 control periods per simulated second, each one
  `ServoLoop.tick` + 4 physics steps of 0.002 s with the world held) and serves episodes;
- node `camera` (`nodes/camera.py`) reading `env.camera` (depth rendering off: not published);
- node `ur3_driver` (`nodes/ur3_driver.py`) driving `env.arm` through SafeArm; its servo loop is
  ticked by the stepper on the simulation clock.

Episode control (`episodes.protocol`, one JSON form, validated on receipt; docs/architecture.md):
  /episode/command  EpisodeCommand: reset (episode, seed, object_name, instruction, condition)
                    or stop                                                        EVENT_QOS
  /episode/status   EpisodeStatus at status_rate_hz and right after every command, source
                    "sim_cell", with the stepper's realtime, SafeArm's safety and the driver's
                    counters                                                       EVENT_QOS
  /dynaflip/instruction  std_msgs/String, latched: the running episode's instruction, published
                    at every reset                                                 LATCHED_QOS
A reset holds the arm, re-arms it when the safety layer halted it (the world is reset as a
whole: the simulated protective stop is cleared), resets the world (`env.reset(seed, object,
instruction=...)`: 2-4 objects placed by the seed, the target and the instruction naming it
drawn by the seed unless the command gives them; a given instruction is used as is),
re-anchors the driver (interpolator + SafeArm rate limiter at the measured pose) and ignores
action chunks stamped before the reset. A repeated reset of the current episode only re-sends
the status (idempotent). The episode state lives in `episodes.gate.EpisodeGate`; the task's
outcome is `env.task_state()`: `success` (the named object rests in the basin) or
`wrong_object` (another object reached it), the first decided one stays (the episode runs on
until the next command); SafeArm halting the arm ends the episode as `safety_stop`.
`condition` is an OOD condition spec (`sim.perturbations`: "lighting:0.5", "distractors:1+texture";
None / "nominal" = the nominal scene): the cell applies it to the seed's scene and carries it into
the statuses and the evaluation record; an unknown condition refuses the command.
Parameters: configs.ros.SimCellNodeConfig (section `sim_cell:`), plus the `camera:` and
`ur3_driver:` sections for the other two nodes.
"""
from __future__ import annotations

import dataclasses
import sys
import threading

import rclpy
from rclpy.node import Node
from std_msgs.msg import String

from dynaflip_ros.configs.ros import SimCellNodeConfig
from dynaflip_ros.episodes.gate import EpisodeGate
from dynaflip_ros.episodes.protocol import CommandKind, EpisodeCommand, EpisodeStatus, Outcome, ProtocolError
from dynaflip_ros.ros.nodes.camera import CameraNode
from dynaflip_ros.ros.nodes.ur3_driver import Ur3DriverNode
from dynaflip_ros.ros.params import load_node_config, node_kwargs
from dynaflip_ros.ros.qos import EPISODE_COMMAND_TOPIC, EPISODE_STATUS_TOPIC, EVENT_QOS, INSTRUCTION_TOPIC, LATCHED_QOS
from dynaflip_ros.ros.runtime import fail_startup, ros_now_s, safe_publish, spin_nodes
from dynaflip_ros.sim.cell_reset import reset_cell_episode


class SimCellNode(Node):
    """Owns `PickIntoSinkEnv` and its real-time stepper; serves /episode/command.

    Construction builds the MuJoCo world (raises ConfigError / ValueError on bad parameters).
    Call `attach(driver)` with the `ur3_driver` node built on `self.env.arm`, then `start()`.
    """

    def __init__(self, node_name: str = "sim_cell") -> None:
        super().__init__(node_name, **node_kwargs())
        self.config = load_node_config(self, SimCellNodeConfig)
        from dynaflip_ros.sim.pick_into_sink import PickIntoSinkEnv
        from dynaflip_ros.sim.realtime import RealtimeSimStepper

        self.env = PickIntoSinkEnv(self.config.sim)
        self.env.camera.depth_enabled = False  # only colour is published; halves the render time
        self._stepper_cls = RealtimeSimStepper
        self.stepper = None
        self.driver: Ur3DriverNode | None = None
        self.gate = EpisodeGate()
        self._status_pub = self.create_publisher(String, EPISODE_STATUS_TOPIC, EVENT_QOS)
        self._instruction_pub = self.create_publisher(String, INSTRUCTION_TOPIC, LATCHED_QOS)
        self.create_subscription(String, EPISODE_COMMAND_TOPIC, self._on_command, EVENT_QOS)
        # Status from a plain thread, not an executor timer: under a 2-core load the 125 Hz
        # joint-state timer and the camera starved this timer for whole episodes (the episode
        # manager then saw no success and timed out). rclpy publishers are thread-safe.
        self._status_stop = threading.Event()
        self._status_thread = threading.Thread(target=self._status_loop, name="episode_status", daemon=True)
        self._status_thread.start()

    def _status_loop(self) -> None:
        period_s = 1.0 / self.config.status_rate_hz
        while not self._status_stop.wait(period_s):
            try:
                self._publish_status()
            except Exception as e:  # noqa: BLE001 - keep publishing; a status must never kill the cell
                self.get_logger().error(f"episode status failed: {e}", throttle_duration_sec=5.0)

    def attach(self, driver: Ur3DriverNode) -> None:
        """Let the stepper tick `driver.loop` in lockstep with physics (driver rate = stepper rate)."""
        self.driver = driver
        self.stepper = self._stepper_cls(self.env, rate_hz=driver.config.servo_rate_hz, on_tick=driver.loop.tick)

    def start(self) -> None:
        """Start real-time physics. Raises RuntimeError if no driver is attached."""
        if self.stepper is None:
            raise RuntimeError("SimCellNode.attach(driver) must be called before start()")
        self.stepper.start()
        info = self.env.episode
        self.get_logger().info(
            f"sim cell up: {self.config.sim.image_hw[1]}x{self.config.sim.image_hw[0]} camera, physics "
            f"{self.env.timestep_s * 1e3:g} ms, servo ticks {self.driver.config.servo_rate_hz:g} Hz of sim time; "
            f"idle at seed {info.seed} ({info.object_name}); waiting for {EPISODE_COMMAND_TOPIC}")

    # ------------------------------------------------------------------ episodes
    def _on_command(self, msg: String) -> None:
        try:
            cmd = EpisodeCommand.from_json(msg.data)
            if cmd.kind is CommandKind.RESET:
                self.reset_episode(cmd.episode, cmd.seed, cmd.object_name, instruction=cmd.instruction,
                                   condition=cmd.condition)
            else:
                self.stop_episode()
        except (ProtocolError, ValueError) as e:
            self.get_logger().error(f"{EPISODE_COMMAND_TOPIC} refused: {e}")
            return
        self._publish_status()

    def reset_episode(self, episode: int, seed: int | None = None, object_name: str | None = None,
                      instruction: str | None = None, condition: str | None = None) -> None:
        """Start `episode` with `seed` (default: the episode id; idempotent for the running
        episode), target `object_name` and `instruction` (None: drawn by the seed), under the OOD
        `condition` (a `sim.perturbations` spec; None / "nominal": the nominal scene). Raises
        ValueError on an unknown object or condition, a negative seed or a blank instruction."""
        from dynaflip_ros.sim.perturbations import parse_condition

        seed = episode if seed is None else seed
        if self.gate.is_running(episode, seed):
            return
        perturbation = parse_condition(condition or "nominal")  # a bad condition is refused before the arm is held
        core = self.driver.core if self.driver is not None else None  # bad commands are refused before it is used
        info, reset_stamp_s, rearmed = reset_cell_episode(self.env, core, seed=seed, object_name=object_name,
                                                          instruction=instruction, now_s=lambda: ros_now_s(self),
                                                          perturbation=perturbation)
        self.gate.begin(episode, seed, reset_stamp_s, object_name=info.object_name, objects=info.objects,
                        instruction=info.instruction, condition=condition)
        safe_publish(self, self._instruction_pub, String(data=info.instruction), "instruction")
        self.get_logger().info(f"episode {episode}: seed {seed}, {info.instruction!r} (target {info.object_name}, "
                               f"objects {list(info.objects)}){f'; re-armed after: {rearmed}' if rearmed else ''}")

    def stop_episode(self) -> None:
        """End the current episode: the arm is stopped and holds where it is."""
        if self.driver is not None:
            # The driver was built with exclusive=env.exclusive (main): its hold() takes the
            # world first, in the stepper's lock order (world, servo-loop tick lock, SafeArm).
            self.driver.hold()
        self.gate.end(Outcome.STOPPED, "stop command")

    def status(self) -> EpisodeStatus:
        """The /episode/status message (see the module docstring)."""
        info, sim_time_s, outcome = self.env.task_state()
        if outcome is not None:
            self.gate.decide(outcome, sim_time_s - info.start_time_s)
        telemetry = {"sim_time_s": sim_time_s, "episode_sim_time_s": sim_time_s - info.start_time_s}
        if self.stepper is not None:
            telemetry["realtime"] = dataclasses.asdict(self.stepper.stats)
        if self.driver is not None:
            drv = self.driver.status()
            telemetry.update(safety=drv.pop("safety"), driver=drv, halted=bool(drv["halted"]))
            if drv["halted"] and self.gate.end(Outcome.SAFETY_STOP, f"arm halted ({self.driver.safe.halt_reason})"):
                self.get_logger().warning(f"episode {self.gate.state().episode} ended: arm halted")
        return self.gate.status("sim_cell", ros_now_s(self), **telemetry)

    def _publish_status(self) -> None:
        safe_publish(self, self._status_pub, String(data=self.status().to_json()), "episode status")

    def close(self) -> None:
        """Stop physics (idempotent); the driver and camera close separately, the env last."""
        self._status_stop.set()
        self._status_thread.join(timeout=2.0)
        if self.stepper is not None:
            self.stepper.stop()


def main(argv: list[str] | None = None) -> int:
    """`sim_cell_node`: nodes sim_cell + camera + ur3_driver sharing one PickIntoSinkEnv."""
    rclpy.init(args=sys.argv if argv is None else argv)
    nodes = []
    try:
        sim = SimCellNode()
        nodes.append(sim)
        env = sim.env
        camera = CameraNode(camera=env.camera)
        nodes.append(camera)
        driver = Ur3DriverNode(arm=env.arm, clock=lambda: env.sim_time_s, servo_thread=False,
                               exclusive=env.exclusive)
        nodes.append(driver)
        for n, backend in ((camera, camera.config.backend), (driver, driver.config.backend)):
            if backend != "sim":
                raise ValueError(f"node '{n.get_name()}' has backend {backend!r}; inside sim_cell_node it must be 'sim'")
        sim.attach(driver)
        sim.start()
    except Exception as e:  # noqa: BLE001 - config / MuJoCo / GL errors end the process clearly
        if nodes:
            nodes[0].env.close()
        return fail_startup("sim_cell", e)
    # Close order: physics first (no more servo ticks), then the arm, the camera, the renderer.
    return spin_nodes(nodes, closers=[sim.close, driver.close, camera.close, env.close], num_threads=3)


if __name__ == "__main__":
    sys.exit(main())
