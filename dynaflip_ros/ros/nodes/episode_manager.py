"""Node `episode_manager`: runs N closed-loop episodes through the graph and reports.

Sequence: wait for the graph (a /episode/status from the sim cell, /dynaflip/encoder_info,
/dynaflip/policy_info with ready=true; a policy that refuses its encoder ends the run at once),
then for each episode i: publish `EpisodeCommand.reset(i, seed_i, object_name, instruction,
condition)` (seed_i: `seeds[i]`, or seed + i; condition: the OOD condition the sim cell applies)
on /episode/command (repeated until the sim cell reports that episode running; without
object_name / instruction the seed draws the objects on the table, the target and the
instruction naming it), wait until /episode/status reports a decided outcome (`success`,
`wrong_object`, `safety_stop`; `EpisodeStatus.decided`) or `episode_timeout_s` passes
(`timeout`), record the episode (`episodes.record.EpisodeRecord`: instruction, target, objects
on the table, outcome, time to success, per-stage latency from /dynaflip/latency, model
sha256s, this episode's safety counters; appended to `episodes_path` as one JSON line when
set); finally publish a stop, print
the summary (`episodes.record.format_summary`, the same as `dynaflip eval`), write the results
JSON and exit (0 = run completed, whatever the success rate; 2 = the graph never came up / a
node refused to run). Malformed or other-version statuses are logged and ignored.

Subscribed: /episode/status, /dynaflip/latency (EVENT_QOS), /dynaflip/encoder_info,
            /dynaflip/policy_info (LATCHED_QOS). Published: /episode/command (EVENT_QOS).
Parameters: configs.ros.EpisodeManagerNodeConfig (section `episode_manager:`).
"""
from __future__ import annotations

import json
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import rclpy
from rclpy.node import Node
from std_msgs.msg import String

from dynaflip_ros.configs.io import ConfigError, to_dict
from dynaflip_ros.configs.ros import EpisodeManagerNodeConfig
from dynaflip_ros.episodes.protocol import EpisodeCommand, EpisodeStatus, Outcome, ProtocolError, json_safe
from dynaflip_ros.episodes.record import (
    EpisodeRecord, EvalReport, append_json_line, counter_delta, default_results_path, format_episode, format_summary,
)
from dynaflip_ros.ros.params import load_node_config, node_kwargs
from dynaflip_ros.ros.qos import (
    ENCODER_INFO_TOPIC, EPISODE_COMMAND_TOPIC, EPISODE_STATUS_TOPIC, EVENT_QOS, LATCHED_QOS, LATENCY_TOPIC,
    POLICY_INFO_TOPIC,
)
from dynaflip_ros.ros.runtime import (
    from_json_msg, parse_latency_report, ros_now_s, safe_publish, start_in_background,
)
from dynaflip_ros.sim.perturbations import parse_condition


class GraphNotReadyError(RuntimeError):
    """The graph did not come up within startup_timeout_s, or a node refused to run."""


class ShutdownRequested(RuntimeError):
    """rclpy was shut down (SIGINT / SIGTERM) while the episodes were running."""


class EpisodeManagerNode(Node):
    """Collects status / latency / provenance; `run()` (in its own thread) drives the episodes."""

    def __init__(self, node_name: str = "episode_manager", echo: Callable[[str], None] | None = None) -> None:
        super().__init__(node_name, **node_kwargs())
        self.config = load_node_config(self, EpisodeManagerNodeConfig)
        try:
            parse_condition(self.config.condition)
        except ValueError as e:
            raise ConfigError(f"episode_manager.condition: {e}") from None
        self._echo = echo or (lambda line: print(line, flush=True))
        self._cond = threading.Condition()
        self._status: EpisodeStatus | None = None
        self._encoder_info: dict[str, Any] | None = None
        self._policy_info: dict[str, Any] | None = None
        self._latency: dict[str, list[float]] = defaultdict(list)  # this episode
        self._cmd_pub = self.create_publisher(String, EPISODE_COMMAND_TOPIC, EVENT_QOS)
        self.create_subscription(String, EPISODE_STATUS_TOPIC, self._on_status, EVENT_QOS)
        self.create_subscription(String, LATENCY_TOPIC, self._on_latency, EVENT_QOS)
        self.create_subscription(String, ENCODER_INFO_TOPIC, self._on_encoder_info, LATCHED_QOS)
        self.create_subscription(String, POLICY_INFO_TOPIC, self._on_policy_info, LATCHED_QOS)

    # ------------------------------------------------------------------ callbacks
    def _on_status(self, msg: String) -> None:
        try:
            st = EpisodeStatus.from_json(msg.data)
        except ProtocolError as e:
            self.get_logger().error(f"{EPISODE_STATUS_TOPIC} ignored: {e}", throttle_duration_sec=5.0)
            return
        with self._cond:
            self._status = st
            self._cond.notify_all()

    def _on_latency(self, msg: String) -> None:
        report = parse_latency_report(msg)
        if report is not None:
            with self._cond:
                self._latency[report[0]].append(report[1])

    def _on_encoder_info(self, msg: String) -> None:
        try:
            info = from_json_msg(msg)
        except ValueError:
            return
        with self._cond:
            self._encoder_info = info
            self._cond.notify_all()

    def _on_policy_info(self, msg: String) -> None:
        try:
            info = from_json_msg(msg)
        except ValueError:
            return
        with self._cond:
            self._policy_info = info
            self._cond.notify_all()

    # ------------------------------------------------------------------ helpers
    def _send(self, cmd: EpisodeCommand) -> None:
        safe_publish(self, self._cmd_pub, String(data=cmd.to_json()), "episode command")

    def _wait(self, predicate: Callable[[], Any], timeout_s: float) -> Any:
        """Wait (condition variable, notified by callbacks) until predicate() is truthy."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                value = predicate()
                if value:
                    return value
                if not rclpy.ok():
                    raise ShutdownRequested("shutdown requested")
                left = deadline - time.monotonic()
                if left <= 0:
                    return value
                self._cond.wait(min(left, 0.2))

    def wait_for_graph(self) -> None:
        """Block until the sim cell, encoder and policy are up. Raises GraphNotReadyError."""
        self._echo(f"[episode_manager] waiting for the graph (up to {self.config.startup_timeout_s:g} s) ...")

        def ready() -> bool:
            pi = self._policy_info
            if pi is not None and not pi.get("ready") and pi.get("error"):
                return True  # refused: stop waiting, report below
            return self._status is not None and self._encoder_info is not None and bool(pi and pi.get("ready"))

        self._wait(ready, self.config.startup_timeout_s)
        with self._cond:
            pi, st, ei = self._policy_info, self._status, self._encoder_info
        if pi is not None and not pi.get("ready") and pi.get("error"):
            raise GraphNotReadyError(f"the policy node refuses to run: {pi['error']}")
        missing = [name for name, v in ((EPISODE_STATUS_TOPIC + " (sim_cell)", st), (ENCODER_INFO_TOPIC, ei),
                                        (POLICY_INFO_TOPIC + " ready", pi and pi.get("ready"))) if not v]
        if missing:
            raise GraphNotReadyError(f"graph not ready after {self.config.startup_timeout_s:g} s: no {missing}")

    def run_episode(self, i: int) -> tuple[EpisodeRecord, dict[str, list[float]]]:
        """Reset into episode i (seed `config.episode_seeds[i]`, the configured condition), wait
        for success or timeout; returns the episode record and its latency samples ({stage:
        [ms]}). Raises GraphNotReadyError when the sim cell does not acknowledge the reset."""
        cfg = self.config
        seed = cfg.episode_seeds[i]
        cmd = EpisodeCommand.reset(i, seed, object_name=cfg.object_name or None,
                                   instruction=cfg.instruction.strip() or None,
                                   condition=cfg.condition.strip() or None, stamp_s=ros_now_s(self))

        def started() -> EpisodeStatus | None:
            st = self._status
            return st if st and st.episode == i and st.running else None

        status = None
        for _attempt in range(10):  # resend until acknowledged (a subscriber may still be matching)
            self._send(cmd)
            status = self._wait(started, 2.0)
            if status:
                break
        if not status:
            raise GraphNotReadyError(f"the sim cell did not acknowledge the reset of episode {i}")
        with self._cond:
            self._latency = defaultdict(list)
        t0 = time.monotonic()

        def finished() -> EpisodeStatus | None:
            st = self._status
            return st if st and st.episode == i and st.decided else None

        final = self._wait(finished, cfg.episode_timeout_s)
        wall_time_s = time.monotonic() - t0
        with self._cond:
            last = final or self._status or status
            latency = {k: list(v) for k, v in self._latency.items()}
        outcome = final.outcome if final else Outcome.TIMEOUT
        # the driver's counters are cumulative: keep this episode's share
        driver = counter_delta(status.driver, last.driver)
        action_age = driver.pop("action_age", None) if isinstance(driver, dict) else None
        record = EpisodeRecord(
            episode=i, seed=seed, outcome=outcome, target=status.object_name,
            objects=list(status.objects) if status.objects else None, instruction=status.instruction,
            condition=status.condition,
            time_to_success_s=last.success_time_s if outcome is Outcome.SUCCESS else None,
            episode_sim_time_s=last.episode_sim_time_s, wall_time_s=wall_time_s,
            safety=counter_delta(status.safety, last.safety), driver=driver, action_age=action_age,
            realtime_factor=(last.realtime or {}).get("recent_real_time_factor"),
        )
        return record, latency

    def run(self) -> EvalReport:
        """Run every episode; returns the report (also written to results_path)."""
        cfg = self.config
        self.wait_for_graph()
        with self._cond:
            encoder_info, policy_info = dict(self._encoder_info), dict(self._policy_info)
        self._echo(f"[episode_manager] graph up: encoder {encoder_info.get('architecture')} "
                   f"sha256 {str(encoder_info.get('weights_sha256'))[:12]} ({encoder_info.get('backend')}), "
                   f"policy {policy_info.get('model_dir')}")
        report = EvalReport(
            mode="ros", config=to_dict(cfg),
            models={"encoder": encoder_info.get("weights_sha256"), "policy": policy_info.get("weights_sha256")},
            provenance={"encoder": encoder_info, "policy": policy_info})
        wall0 = time.monotonic()
        n = len(cfg.episode_seeds)
        for i in range(n):
            record, latency = self.run_episode(i)
            report.add(record, latency)
            if cfg.episodes_path:
                append_json_line(cfg.episodes_path, json.dumps(json_safe(record.to_dict()), allow_nan=False))
            self._echo("[episode_manager] " + format_episode(record, i, n, report.successes))
        self._send(EpisodeCommand.stop(ros_now_s(self)))
        report.wall_time_s = time.monotonic() - wall0
        path = Path(cfg.results_path) if cfg.results_path else default_results_path("ros")
        report.write_json(path)
        self.results_path = path
        return report


def main(argv: list[str] | None = None) -> int:
    """`episode_manager_node`: spins in a thread, runs the episodes in the main thread."""
    started = start_in_background("episode_manager", EpisodeManagerNode, argv)
    if isinstance(started, int):
        return started
    node, executor, spinner = started
    rc = 0
    try:
        report = node.run()
        print(format_summary(report.to_dict(), node.results_path), flush=True)
    except GraphNotReadyError as e:
        print(f"[episode_manager] FAILED: {e}", file=sys.stderr, flush=True)
        rc = 2
    except (KeyboardInterrupt, ShutdownRequested):
        print("[episode_manager] interrupted", file=sys.stderr, flush=True)
        rc = 130
    finally:
        try:
            node._send(EpisodeCommand.stop(ros_now_s(node)))
        except Exception:  # noqa: BLE001 - best effort during shutdown
            pass
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown()
        spinner.join(timeout=2.0)
    return rc


if __name__ == "__main__":
    sys.exit(main())
