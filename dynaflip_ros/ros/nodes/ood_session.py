"""Node `ood_session`: an OOD evaluation session on the real cell, run with an operator.

The ROS adapter of `eval.ood_operator` (the episode cycle and the setup sheets) writing the
same session files as `dynaflip eval-ood` (`eval.ood_records`, `eval.ood.SessionLog`; mode
"real"). It runs beside the real cell's graph (real_cell.launch.py: camera, ur3_driver,
encoder, policy) and drives it the way an operator does:

  start-up   waits for /dynaflip/encoder_info and a ready /dynaflip/policy_info (the deployed
             pair's sha256 and directories: the session's model); opens or resumes the session;
             renders each pending episode's scene in a local sim cell (the setup sheet's
             reference picture, setup/<model>/<condition>_seed<seed>.png);
  setup      announces the sheet (stdout, log, ~/status); the operator arranges the scene and
             confirms (Enter with `keyboard`, or the ~/confirm service);
  running    publishes the instruction (/dynaflip/instruction), starts recording the
             `record_topics` into bags/<model>/<condition>_seed<seed> (MCAP), calls
             /ur3_driver/start_episode; ends on a mark (keys s / w / f, or ~/mark_success,
             ~/mark_wrong_object, ~/mark_failure), a safety stop on /episode/status, or after
             episode_timeout_s; then /ur3_driver/stop_episode (the arm stops and holds), the
             bag is closed and the episode appended to episodes.jsonl;
  end        writes the report and exits 0. ~/abort stops a running episode without recording it.

Subscribed: /dynaflip/encoder_info, /dynaflip/policy_info (LATCHED_QOS), /episode/status,
            /dynaflip/latency (EVENT_QOS), /camera/color/camera_info, the record_topics and the
            camera image (raw: recorded as received; one image deserialised per (model, condition) for the example frame).
Published:  /dynaflip/instruction (LATCHED_QOS), ~/status std_msgs/String JSON: phase, episode
            index / total, the sheet (LATCHED_QOS).
Services:   ~/confirm, ~/mark_success, ~/mark_wrong_object, ~/mark_failure, ~/abort (std_srvs/Trigger);
            clients of /ur3_driver/start_episode and /ur3_driver/stop_episode.
Parameters: configs.ros.OodSessionNodeConfig (section `ood_session:`).

Threads and the locks: `self._lock` (owned by this node) guards the OperatorSession; the
operator's services, the 10 Hz tick, the /episode/status callback and the keyboard thread take
it; while it is held the node may wait for a /ur3_driver service response, which is delivered on
another executor thread (clients in their own callback group) that never takes it. The recording
callbacks (bag, latency, frames: `EpisodeCapture`, its own leaf lock, then the bag's) run in a
reentrant group that never takes `self._lock`, so nothing is lost while the node waits.
"""
from __future__ import annotations

import shutil
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable, TextIO

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from dynaflip_ros.configs.io import ConfigError
from dynaflip_ros.configs.ros import OodSessionNodeConfig
from dynaflip_ros.episodes.protocol import EpisodeStatus, Outcome, ProtocolError
from dynaflip_ros.ros.params import load_node_config, node_kwargs
from dynaflip_ros.ros.qos import (
    CAMERA_INFO_TOPIC, ENCODER_INFO_TOPIC, EPISODE_STATUS_TOPIC, EVENT_QOS, IMAGE_QOS, IMAGE_TOPIC,
    INSTRUCTION_TOPIC, LATCHED_QOS, LATENCY_TOPIC, POLICY_INFO_TOPIC, STATE_QOS,
)
from dynaflip_ros.ros.runtime import from_json_msg, parse_latency_report, safe_publish, to_json_msg

TOPIC_TYPES = {
    "/camera/color/image_raw": "sensor_msgs/msg/Image", "/camera/color/camera_info": "sensor_msgs/msg/CameraInfo",
    "/joint_states": "sensor_msgs/msg/JointState", "/dynaflip/action_chunk": "trajectory_msgs/msg/JointTrajectory",
    "/dynaflip/instruction": "std_msgs/msg/String", "/episode/status": "std_msgs/msg/String",
    "/ur3_driver/status": "std_msgs/msg/String", "/dynaflip/latency": "std_msgs/msg/String",
}
"""The topics `record_topics` may name, with their message types."""


def message_class(topic: str):
    """The rclpy message class of a recordable topic (TOPIC_TYPES)."""
    import importlib

    pkg, _, name = TOPIC_TYPES[topic].split("/")
    return getattr(importlib.import_module(f"{pkg}.msg"), name)


def call_trigger(client, what: str, timeout_s: float = 10.0) -> str:
    """Call a std_srvs/Trigger service from a thread other than the one delivering its response;
    returns its message. Raises RuntimeError when the service is missing, silent or refuses."""
    if not client.wait_for_service(timeout_sec=5.0):
        raise RuntimeError(f"{client.srv_name} is not available ({what})")
    future = client.call_async(Trigger.Request())
    done = threading.Event()
    future.add_done_callback(lambda _f: done.set())
    if not done.wait(timeout_s) or future.result() is None:
        raise RuntimeError(f"{client.srv_name} did not answer ({what})")
    res = future.result()
    if not res.success:
        raise RuntimeError(f"{client.srv_name}: {res.message}")
    return res.message


class EpisodeCapture:
    """What one running episode records (not a node; the node feeds it): the raw messages of the
    record topics into its MCAP bag, the /dynaflip/latency reports, the first camera frame (the
    report's example, when asked), and the driver's safety counters over the episode. Its lock
    is a leaf (nothing else is taken while it is held; the bag's own lock is taken inside it)."""

    def __init__(self, session_dir: str | Path, record_topics: tuple[str, ...]) -> None:
        self.out, self.topics = Path(session_dir), tuple(record_topics)
        self._lock = threading.Lock()
        self._bag = None
        self._latency: dict[str, list[float]] = defaultdict(list)
        self._first: EpisodeStatus | None = None
        self.driver: EpisodeStatus | None = None  # the newest ur3_driver status
        self.camera: dict = {}
        self._frame: str | None = None
        self._want_frame: str | None = None

    def begin(self, bag_dir: Path, frame: str | None) -> None:
        """Open the episode's bag (an old try's directory is replaced); `frame`: where to save
        the first camera frame (relative to the session dir), None: no frame."""
        from dynaflip_ros.ros.raw_bag import RawBag

        if bag_dir.exists():  # an aborted or interrupted try of this episode
            shutil.rmtree(bag_dir)
        bag = RawBag(bag_dir, {t: TOPIC_TYPES[t] for t in self.topics})
        with self._lock:
            self._bag, self._latency, self._first = bag, defaultdict(list), self.driver
            self._frame, self._want_frame = None, frame

    def end(self, discard: bool = False) -> dict:
        """Close the bag (deleted with `discard`); the telemetry: safety (counters of this
        episode), latency_ms (`latency_summary`), frame (path or None), camera (settings)."""
        from dynaflip_ros.episodes.record import counter_delta, latency_summary

        with self._lock:
            bag, self._bag, self._want_frame = self._bag, None, None
            first, last, latency = self._first, self.driver, self._latency
        if bag is not None:
            bag.close()
            if discard:
                shutil.rmtree(bag.path, ignore_errors=True)
        safety = counter_delta(first.safety if first else None, last.safety) if last and last.safety else {}
        return {"safety": safety, "latency_ms": latency_summary(latency), "frame": self._frame, "camera": dict(self.camera)}

    def record(self, topic: str, data: bytes) -> None:
        """A raw (CDR) message of `topic`: into the bag when recorded; a camera image is
        deserialised only when the episode's example frame is still wanted."""
        with self._lock:
            if self._bag is not None and topic in self.topics:
                self._bag.write(topic, time.time_ns(), data)
            want = topic == IMAGE_TOPIC and self._want_frame is not None
        if want:
            from rclpy.serialization import deserialize_message

            self.image(deserialize_message(data, Image))

    def latency(self, msg: String) -> None:
        report = parse_latency_report(msg)
        with self._lock:
            if report is not None and self._bag is not None:
                self._latency[report[0]].append(report[1])

    def camera_info(self, msg: CameraInfo) -> None:
        self.camera = {"image_hw": [int(msg.height), int(msg.width)], "k": [float(v) for v in msg.k],
                       "frame_id": msg.header.frame_id}

    def image(self, msg: Image) -> None:
        with self._lock:
            path, self._want_frame = self._want_frame, None
        if path is None:
            return
        import imageio.v3 as iio

        from dynaflip_ros.ros.conversions import image_to_rgb

        (self.out / path).parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(self.out / path, image_to_rgb(msg))
        self._frame = path


class OodSessionNode(Node):
    """See the module docstring. keys: a text stream of operator keys (default: stdin when the
    `keyboard` parameter is set); env: a PickIntoSinkEnv for the sheets (default: a new one);
    clock: monotonic seconds of the episode cycle. Raises ConfigError on bad parameters."""

    def __init__(self, node_name: str = "ood_session", keys: TextIO | None = None, env=None,
                 clock: Callable[[], float] = time.monotonic, announce: Callable[[str], None] | None = None) -> None:
        super().__init__(node_name, **node_kwargs())
        from dynaflip_ros.eval.ood import with_nominal
        from dynaflip_ros.sim.perturbations import parse_conditions

        self.config = cfg = load_node_config(self, OodSessionNodeConfig)
        if not cfg.session_dir.strip():
            raise ConfigError("ood_session.session_dir is required (the session directory)")
        try:
            self.conditions = [p.name for p in with_nominal(parse_conditions(cfg.conditions))]
        except ValueError as e:
            raise ConfigError(f"ood_session.conditions: {e}") from None
        unknown = [t for t in cfg.record_topics if t not in TOPIC_TYPES]
        if unknown:
            raise ConfigError(f"ood_session.record_topics: {unknown} not recordable; choose from {list(TOPIC_TYPES)}")
        self._env, self._cycle_clock, self._keys = env, clock, keys if keys is not None else (sys.stdin if cfg.keyboard else None)
        self._announce = announce or (lambda text: print(text, flush=True))
        self._lock = threading.Lock()  # see the module docstring
        self.session = None  # eval.ood_operator.OperatorSession once started
        self.log = None  # eval.ood.SessionLog
        self._infos: dict[str, dict] = {}
        self._infos_ready = threading.Event()
        self.capture = EpisodeCapture(cfg.session_dir, cfg.record_topics)
        self._last_text = ""
        self.done = threading.Event()
        clients = ReentrantCallbackGroup()
        self._start_cli = self.create_client(Trigger, "/ur3_driver/start_episode", callback_group=clients)
        self._stop_cli = self.create_client(Trigger, "/ur3_driver/stop_episode", callback_group=clients)
        self._instruction_pub = self.create_publisher(String, INSTRUCTION_TOPIC, LATCHED_QOS)
        self._status_pub = self.create_publisher(String, "~/status", LATCHED_QOS)
        recording = ReentrantCallbackGroup()  # never waits for self._lock (EpisodeCapture has its own)
        self.create_subscription(String, ENCODER_INFO_TOPIC, lambda m: self._on_info("encoder", m), LATCHED_QOS)
        self.create_subscription(String, POLICY_INFO_TOPIC, lambda m: self._on_info("policy", m), LATCHED_QOS)
        self.create_subscription(String, EPISODE_STATUS_TOPIC, self._on_status, EVENT_QOS,
                                 callback_group=MutuallyExclusiveCallbackGroup())
        self.create_subscription(String, LATENCY_TOPIC, self.capture.latency, EVENT_QOS, callback_group=recording)
        self.create_subscription(CameraInfo, CAMERA_INFO_TOPIC, self.capture.camera_info, STATE_QOS,
                                 callback_group=recording)
        for topic in dict.fromkeys((*cfg.record_topics, IMAGE_TOPIC)):  # one raw subscription per topic
            qos = IMAGE_QOS if topic == IMAGE_TOPIC else LATCHED_QOS if topic == INSTRUCTION_TOPIC else EVENT_QOS
            self.create_subscription(message_class(topic), topic, lambda data, t=topic: self.capture.record(t, data),
                                     qos, raw=True, callback_group=recording)
        group = MutuallyExclusiveCallbackGroup()
        for name, handler in (("confirm", lambda: self.session.confirm()),
                              ("mark_success", lambda: self.session.mark("success", "operator (service)")),
                              ("mark_wrong_object", lambda: self.session.mark("wrong_object", "operator (service)")),
                              ("mark_failure", lambda: self.session.mark("timeout", "operator (service): failed")),
                              ("abort", lambda: self.session.abort() or True)):
            self.create_service(Trigger, f"~/{name}", lambda req, res, h=handler, n=name: self._on_service(n, h, res),
                                callback_group=group)
        self.create_timer(0.1, self._tick, callback_group=group)

    # ------------------------------------------------------------------ start-up
    def _on_info(self, which: str, msg: String) -> None:
        try:
            info = from_json_msg(msg)
        except ValueError:
            return
        if which == "policy" and not info.get("ready"):
            return
        self._infos[which] = info
        if {"encoder", "policy"} <= set(self._infos):
            self._infos_ready.set()

    def start(self) -> None:
        """Wait for the deployed pair, open / resume the session, plan the pending episodes and
        announce the first. Raises TimeoutError (no ready encoder / policy), SessionFileError."""
        from dynaflip_ros.configs.sim import SimConfig
        from dynaflip_ros.eval.ood import SessionLog, requested_session
        from dynaflip_ros.eval.ood_operator import OperatorSession, plan_episodes
        from dynaflip_ros.eval.ood_records import OodModel
        from dynaflip_ros.sim.pick_into_sink import PickIntoSinkEnv

        cfg = self.config
        if not self._infos_ready.wait(cfg.startup_timeout_s):
            raise TimeoutError(f"no {ENCODER_INFO_TOPIC} and ready {POLICY_INFO_TOPIC} within {cfg.startup_timeout_s:g} s "
                               "(is real_cell.launch.py running?)")
        enc, pol = self._infos["encoder"], self._infos["policy"]
        model = OodModel(str(enc.get("model_dir", "")), str(pol.get("model_dir", "")), str(enc["weights_sha256"]),
                         str(pol.get("weights_sha256") or ""))
        self.log = SessionLog(Path(cfg.session_dir), requested_session(
            {cfg.model: model}, self.conditions, cfg.episode_seeds, "real", {"episode_timeout_s": cfg.episode_timeout_s}),
            self._announce)
        env = self._env or PickIntoSinkEnv(SimConfig())
        try:
            queue = plan_episodes(self.log, cfg.model, env)
        finally:
            if self._env is None:
                env.close()
        with self._lock:
            self.session = OperatorSession(queue, self, self._cycle_clock, cfg.episode_timeout_s, self._finished,
                                           announce=self._say)
            self._publish_status(self._last_text)
        if self._keys is not None:
            threading.Thread(target=self._read_keys, name="ood_session_keys", daemon=True).start()

    # ------------------------------------------------------------------ operator input
    def _say(self, text: str) -> None:
        self._announce(text)
        self._last_text = text
        if self.session is not None:  # None while the session announces its first sheet (start())
            self._publish_status(text)

    def _publish_status(self, text: str) -> None:
        s = self.session
        p = s.current
        status = {"phase": s.phase.value, "text": text, "index": s.index, "total": len(s.queue),
                  "sheet": p.sheet.to_dict() if p is not None else None}
        safe_publish(self, self._status_pub, to_json_msg(status), "ood_session status")
        if p is None:
            self.done.set()

    def _on_service(self, name: str, handler, res):
        with self._lock:
            if self.session is None:
                res.success, res.message = False, "the session is not started yet"
                return res
            res.success = bool(handler())
            res.message = f"{name}: {'ok' if res.success else 'not applicable in phase ' + self.session.phase.value}"
        return res

    def _read_keys(self) -> None:
        for line in self._keys:
            with self._lock:
                self.session.key(line)
            if self.done.is_set():
                return

    def _tick(self) -> None:
        with self._lock:
            if self.session is not None:
                self.session.tick()

    def _on_status(self, msg: String) -> None:
        try:
            st = EpisodeStatus.from_json(msg.data)
        except ProtocolError:
            return
        if st.source != "ur3_driver":
            return
        with self._lock:
            self.capture.driver = st
            if self.session is not None and st.outcome is Outcome.SAFETY_STOP:
                self.session.safety_stop(st.reason or "safety stop")

    # ------------------------------------------------------------------ the cell (eval.ood_operator.OperatorCell)
    def start_episode(self, planned) -> None:
        """Instruction, bag, /ur3_driver/start_episode (call with the lock held). Raises RuntimeError."""
        from dynaflip_ros.eval.ood import condition_slug

        safe_publish(self, self._instruction_pub, String(data=planned.info.instruction), "instruction")
        self.capture.begin(Path(self.config.session_dir) / "bags" / planned.model
                           / f"{condition_slug(planned.condition)}_seed{planned.seed}",
                           self.log.wants_frame(planned.model, planned.condition, planned.seed))
        try:
            call_trigger(self._start_cli, "start the episode")
        except RuntimeError:
            self.capture.end(discard=True)
            raise

    def stop_episode(self, planned) -> dict:
        """/ur3_driver/stop_episode, close the bag; the episode's telemetry (call with the lock held)."""
        try:
            call_trigger(self._stop_cli, "stop the episode")
        except RuntimeError as e:
            self.get_logger().error(f"stopping the episode: {e} (the driver's watchdog still stops a silent arm)")
        return self.capture.end()

    def _finished(self, planned, record: dict, telemetry: dict) -> None:
        from dynaflip_ros.sim.perturbations import parse_condition

        rec = {**record, "latency_ms": telemetry.get("latency_ms") or {}, "safety": telemetry.get("safety") or {}}
        self.log.add(planned.model, planned.condition, parse_condition(planned.condition), planned.seed, planned.info,
                     telemetry.get("camera") or {}, rec, telemetry.get("frame"))


def main(argv: list[str] | None = None) -> int:
    """`ood_session_node`: start-up in the main thread while the executor spins, then wait for
    the last episode; writes the report. 0 = session complete, 2 = start-up failed, 130 = interrupted."""
    import rclpy

    from dynaflip_ros.ros.runtime import fail_startup, start_in_background

    started = start_in_background("ood_session", OodSessionNode, argv, num_threads=4)
    if isinstance(started, int):
        return started
    node, executor, _spinner = started
    try:
        node.start()
        while not node.done.wait(0.5):
            if not rclpy.ok():
                return 130
        from dynaflip_ros.eval.ood_report import write_report

        write_report(node.config.session_dir)
        print(f"[ood_session] report: {Path(node.config.session_dir) / 'report.html'}", flush=True)
        return 0
    except KeyboardInterrupt:
        with node._lock:
            if node.session is not None:
                node.session.abort()
        return 130
    except Exception as e:  # noqa: BLE001 - start-up errors: one clear line
        return fail_startup("ood_session", e)
    finally:
        executor.shutdown(timeout_sec=2.0)
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
