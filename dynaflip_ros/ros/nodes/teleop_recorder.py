"""Node `teleop_recorder`: teleoperated demonstration recording with ROS 2 episode control.

Runs a `teleop.session.TeleopSession` (device -> twist -> IK -> SafeArm, 10 Hz LeRobotDataset
recording; see teleop/session.py for the episode semantics) in a worker thread and exposes:

Services (std_srvs/srv/Trigger; the response says what happened, e.g. "episode 3 saved (52 frames)"):
  /teleop_recorder/start     begin an episode (ignored while recording: success false)
  /teleop_recorder/stop      save the episode in progress
  /teleop_recorder/discard   drop the episode in progress
  /teleop_recorder/rerecord  drop the episode in progress and begin again (idle: = start)
Published:
  /teleop_recorder/status    std_msgs/String JSON {"state": "idle"|"recording"|"ended", "saved", ...}  EVENT_QOS

Parameters: `teleop.config.TeleopConfig` (device, sim / robot_ip, out, ...), the same settings
as `dynaflip record --teleop`.
The session owns the arm (sim: its own MuJoCo cell; real: ur_rtde), so do not run it next to
`ur3_driver_node` on the same arm. With `exit_when_done` the process ends when the session does
(quit event, `episodes` saved). Source: ROS 2 docs, "Writing a simple service and client (Python)".
"""
from __future__ import annotations

import sys
import threading
from pathlib import Path

import rclpy
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from std_msgs.msg import String
from std_srvs.srv import Trigger

from dynaflip_ros.ros.params import load_node_config, node_kwargs
from dynaflip_ros.ros.qos import EVENT_QOS
from dynaflip_ros.ros.runtime import run_node, safe_publish, to_json_msg
from dynaflip_ros.teleop.config import TeleopConfig
from dynaflip_ros.teleop.devices import TeleopEvent
from dynaflip_ros.teleop.record import SessionResources, open_session

SERVICES = ("start", "stop", "discard", "rerecord")


class TeleopRecorderNode(Node):
    """Builds the session from parameters and starts it (`start_session=False`: call
    `start()` yourself). Raises ConfigError / ValueError on bad parameters (out missing, ...),
    and whatever `teleop.record.open_session` raises for a missing backend."""

    def __init__(self, node_name: str = "teleop_recorder", start_session: bool = True) -> None:
        super().__init__(node_name, **node_kwargs())
        cfg = self.config = load_node_config(self, TeleopConfig)
        if not cfg.out:
            raise ValueError("parameter 'out' (dataset directory) is required")
        # no terminal under ROS: episode events come from the services; a replay does not end the node
        self.resources: SessionResources = open_session(cfg, echo=lambda line: self.get_logger().info(line),
                                                        keyboard_events=False, replay_quit_at_end=False)
        self.session = self.resources.session
        self.summary = None
        self.error: str | None = None
        self._thread: threading.Thread | None = None
        self._ended = threading.Event()
        services_group = ReentrantCallbackGroup()  # a Trigger waits for the loop's next record tick
        for name in SERVICES:
            self.create_service(Trigger, f"~/{name}", self._make_handler(TeleopEvent(name)),
                                callback_group=services_group)
        self._status_pub = self.create_publisher(String, "~/status", EVENT_QOS)
        self.create_timer(1.0 / cfg.status_rate_hz, self._publish_status,
                          callback_group=MutuallyExclusiveCallbackGroup())
        self.get_logger().info(
            f"teleop recorder: device {cfg.device}, {'sim' if cfg.sim else 'robot ' + cfg.robot_ip}, "
            f"dataset {Path(cfg.out).resolve()}; services {self.get_fully_qualified_name()}/{{{','.join(SERVICES)}}}")
        if start_session:
            self.start()

    def start(self) -> None:
        """Run the session in a worker thread (once)."""
        if self._thread is not None:
            raise RuntimeError("session already started")
        self._thread = threading.Thread(target=self._run, name="teleop_session", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.summary = self.session.run()
            self.get_logger().info(f"session ended ({self.summary.ended_by}): saved episodes {self.summary.saved}, "
                                   f"{self.summary.discarded} discarded, {self.summary.slow_ticks} slow ticks")
        except Exception as e:  # noqa: BLE001 - reported on status and in the log
            self.error = f"{type(e).__name__}: {e}"
            self.get_logger().error(f"teleop session failed: {self.error}")
        finally:
            self._ended.set()
            self._publish_status()
            if self.config.exit_when_done:
                rclpy.try_shutdown(context=self.context)

    def _make_handler(self, event: TeleopEvent):
        def handle(request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
            if self._ended.is_set():
                response.success, response.message = False, "the session has ended"
                return response
            ok, msg = self.session.request(event, timeout_s=5.0)
            response.success, response.message = bool(ok), msg
            return response

        return handle

    def status(self) -> dict:
        st = self.session.status()
        if self._ended.is_set():
            st["state"] = "ended"
            if self.error:
                st["error"] = self.error
        return st

    def _publish_status(self) -> None:
        if rclpy.ok(context=self.context):
            safe_publish(self, self._status_pub, to_json_msg(self.status()), "teleop status")

    def close(self) -> None:
        """Stop the session (the open episode is dropped), join it, release arm / camera / dataset."""
        self.session.stop()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
        self.resources.close()


def main(argv: list[str] | None = None) -> int:
    """`teleop_recorder_node`."""
    return run_node("teleop_recorder", TeleopRecorderNode, argv, num_threads=4, close=True)


if __name__ == "__main__":
    sys.exit(main())
