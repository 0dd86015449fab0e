"""Shared plumbing of the node executables: spinning, shutdown, JSON topics, latency records.

Spinning follows the measured advice of docs/environment.md (gotcha 3): `executor.spin()` (never a
`spin_once` loop, which starves timers). SIGINT/SIGTERM are handled by rclpy's signal handler
(rclpy >= Humble shuts the context down; spin then raises ExternalShutdownException), after which
every node's `close()` runs (servo loop stopped, arm stopped, renderer closed).
"""
from __future__ import annotations

import contextlib
import importlib

import json
import sys
import threading
import time
from typing import Any, Callable, Iterable

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node
from std_msgs.msg import String

from dynaflip_ros.export.artifact import BackendUnavailableError  # noqa: F401 - re-exported
from dynaflip_ros.ros.qos import EVENT_QOS, LATENCY_TOPIC
from dynaflip_ros.episodes.protocol import json_safe
from dynaflip_ros.episodes.record import LATENCY_STAGES


def load_real_backend(kind: str, backend: str, registry: dict[str, tuple[str, str]], config: Any = None):
    """Instantiate a real-cell `kind` ("camera" / "arm") backend named `backend` from
    `registry` {name: (module, class)} as `cls(config)` (the backend's config dataclass, e.g.
    `configs.robot.URRtdeConfig`), or `cls()` when config is None.

    Raises BackendUnavailableError for "sim" (the sim camera and arm share one MuJoCo world: run
    `sim_cell_node`), for an unknown name, and for a backend whose module or dependency is
    missing (the message names the missing module).
    """
    if backend == "sim":
        raise BackendUnavailableError(
            f"{kind} backend 'sim' runs only inside sim_cell_node (the simulated camera and arm share "
            "one MuJoCo world); start `sim_cell_node` (or `dynaflip launch pick_into_sink --sim`)")
    if backend not in registry:
        raise BackendUnavailableError(f"unknown {kind} backend {backend!r}; known: {['sim', *registry]}")
    module_name, class_name = registry[backend]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise BackendUnavailableError(
            f"{kind} backend {backend!r} is not available: module {e.name!r} is missing "
            f"(needs {module_name}.{class_name}; install the requirements with ./scripts/setup_env.sh)") from e
    cls = getattr(module, class_name)
    return cls() if config is None else cls(config)


def ros_now_s(node: Node) -> float:
    """The node's ROS clock (system time unless use_sim_time) in float seconds."""
    return node.get_clock().now().nanoseconds * 1e-9


def to_json_msg(data: dict[str, Any]) -> String:
    """dict -> std_msgs/String with compact JSON (NaN/inf written as null)."""

    return String(data=json.dumps(json_safe(data), separators=(",", ":"), allow_nan=False))


def from_json_msg(msg: String) -> dict[str, Any]:
    """std_msgs/String JSON -> dict. Raises ValueError on invalid JSON or a non-object."""
    try:
        d = json.loads(msg.data)
    except json.JSONDecodeError as e:
        raise ValueError(f"invalid JSON on a String topic: {e}: {msg.data[:200]!r}") from e
    if not isinstance(d, dict):
        raise ValueError(f"expected a JSON object, got {type(d).__name__}")
    return d


def safe_publish(node: Node, publisher, msg, what: str) -> bool:
    """publisher.publish(msg), logging (throttled) instead of raising.

    Publishing can raise under flood or during shutdown (docs/environment.md, gotcha 3); a failed
    publish must not kill a timer or the servo loop. Returns True on success.
    """
    try:
        publisher.publish(msg)
        return True
    except Exception as e:  # noqa: BLE001 - rclpy raises several types (RCLError, InvalidHandle)
        if rclpy.ok():
            node.get_logger().warning(f"publishing {what} failed: {type(e).__name__}: {e}",
                                      throttle_duration_sec=5.0)
        return False


class LatencyReporter:
    """Publishes per-stage latency records on /dynaflip/latency (std_msgs/String JSON).

    Record: {"node": name, "stage": one of LATENCY_STAGES, "ms": float, "stamp_s": image stamp}.
    Inside `with reporter.deferred():` a thread's reports wait until its outermost such block ends,
    so that publishing them (~0.5-1 ms each in rclpy) never delays the data they describe: a
    callback measures on the way and reports after it has published its embedding / chunk.
    """

    def __init__(self, node: Node) -> None:
        self._node = node
        self._pub = node.create_publisher(String, LATENCY_TOPIC, EVENT_QOS)
        self._pending = threading.local()  # .records: list while inside deferred() in that thread, else None

    def report(self, stage: str, seconds: float, stamp_s: float | None = None) -> None:
        """Raises ValueError for a stage not in LATENCY_STAGES."""
        if stage not in LATENCY_STAGES:
            raise ValueError(f"unknown latency stage {stage!r}; one of {LATENCY_STAGES}")
        rec = {"node": self._node.get_name(), "stage": stage, "ms": round(seconds * 1e3, 3)}
        if stamp_s is not None:
            rec["stamp_s"] = stamp_s
        pending = getattr(self._pending, "records", None)
        if pending is not None:
            pending.append(rec)
        else:
            safe_publish(self._node, self._pub, to_json_msg(rec), "latency")

    @contextlib.contextmanager
    def deferred(self):
        """Hold this thread's reports until the outermost `deferred()` block ends (also on an error)."""
        outermost = getattr(self._pending, "records", None) is None
        if outermost:
            self._pending.records = []
        try:
            yield
        finally:
            if outermost:
                records, self._pending.records = self._pending.records, None
                for rec in records:
                    safe_publish(self._node, self._pub, to_json_msg(rec), "latency")


def parse_latency_report(msg: String) -> tuple[str, float] | None:
    """(stage, ms) of a /dynaflip/latency record (`LatencyReporter`), None when malformed."""
    try:
        rec = from_json_msg(msg)
        return str(rec["stage"]), float(rec["ms"])
    except (ValueError, KeyError, TypeError):
        return None


class Stopwatch:
    """`with Stopwatch() as sw: ...; sw.elapsed_s` (perf_counter)."""

    def __enter__(self) -> "Stopwatch":
        self._t0 = time.perf_counter()
        self.elapsed_s = float("nan")
        return self

    def __exit__(self, *exc: object) -> None:
        self.elapsed_s = time.perf_counter() - self._t0


def spin_until_shutdown(executor) -> None:
    """executor.spin() until rclpy shuts down (SIGINT/SIGTERM). A shutdown that races the wait
    set surfaces as RCLError("context is not valid"): treated as a normal shutdown; any error
    while the context is still valid is re-raised."""
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:  # noqa: BLE001 - see docstring
        if rclpy.ok():
            raise


def spin_nodes(nodes: Iterable[Node], closers: Iterable[Callable[[], None]] = (), num_threads: int = 2) -> int:
    """Spin `nodes` (MultiThreadedExecutor; SingleThreadedExecutor for num_threads=1) until
    shutdown (SIGINT/SIGTERM), then run
    `closers` (in order), destroy the nodes and shut rclpy down. Returns the exit code (0)."""
    nodes = list(nodes)
    executor = SingleThreadedExecutor() if num_threads == 1 else MultiThreadedExecutor(num_threads=num_threads)
    for n in nodes:
        executor.add_node(n)
    try:
        spin_until_shutdown(executor)
    finally:
        for close in closers:
            try:
                close()
            except Exception as e:  # noqa: BLE001 - every closer must run
                print(f"error while closing: {type(e).__name__}: {e}", file=sys.stderr)
        executor.shutdown(timeout_sec=1.0)
        for n in nodes:
            n.destroy_node()
        rclpy.try_shutdown()
    return 0


def run_node(name: str, make_node: Callable[[], Node], argv: list[str] | None = None,
             num_threads: int = 2, close: bool = False) -> int:
    """The `main` of a one-node executable: rclpy.init, build the node (a startup error ends the
    process with `fail_startup`), spin until shutdown; `close=True` calls node.close() on exit.
    Returns the exit code."""
    rclpy.init(args=sys.argv if argv is None else argv)
    try:
        node = make_node()
    except Exception as e:  # noqa: BLE001 - config, model, backend or device errors end the process clearly
        return fail_startup(name, e)
    return spin_nodes([node], closers=[node.close] if close else [], num_threads=num_threads)


def start_in_background(name: str, make_node: Callable[[], Node], argv: list[str] | None = None,
                        num_threads: int = 2):
    """For a `main` whose own thread does the work: rclpy.init, build the node, spin it on a
    MultiThreadedExecutor in a daemon thread. Returns (node, executor, spinner thread), or the
    exit code of `fail_startup` (an int) when building the node failed."""
    import threading

    rclpy.init(args=sys.argv if argv is None else argv)
    try:
        node = make_node()
    except Exception as e:  # noqa: BLE001 - config, model or device errors end the process clearly
        return fail_startup(name, e)
    executor = MultiThreadedExecutor(num_threads=num_threads)
    executor.add_node(node)
    spinner = threading.Thread(target=spin_until_shutdown, args=(executor,), name=f"{name}_spin", daemon=True)
    spinner.start()
    return node, executor, spinner


def fail_startup(what: str, err: BaseException) -> int:
    """Print a startup failure (config error, missing model/backend) and shut rclpy down; 2."""
    print(f"[{what}] startup failed: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
    rclpy.try_shutdown()
    return 2
