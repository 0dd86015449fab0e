"""Bring up the Pick-into-Sink node graph as OS processes, without the `ros2` CLI / launch.

This starts the processes of `launch/pick_into_sink.launch.py` (same executables, same node
names, same params file: both follow the one description in `ros/graph.py`, and
tests/test_ros_launch_graph.py pins the launch files to it) for machines without a ROS 2
install (rclpy from PyPI has no `ros2 launch`). Every node process runs `python -m
dynaflip_ros.ros.child_process dynaflip_ros.ros.nodes.<module> --ros-args --params-file <file>
[--params-file <overrides>]` (child_process: the module as `python -m` runs it, terminated by the
kernel when this launcher dies); overrides are written to a temporary params file with one section
per node (a plain `-p name:=value` would reach every node of a multi-node process).

`run_graph` starts the processes, streams their merged stdout/stderr line by line with a
`[process]` prefix, waits for the main process (the episode manager), then tears everything down:
SIGINT to each process group, SIGTERM after `grace_s`, SIGKILL after another `grace_s`. It
returns the main process' exit code, or 1 if another process died before the main one finished.

ROS-free (subprocess + YAML only), so it can be tested and imported anywhere. Threads: one
reader thread per process writes prefixed lines through a lock; `run_graph` polls every `poll_s`
seconds (monotonic clock) in the calling thread.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TextIO

from dynaflip_ros.ros import child_process, graph


@dataclass(frozen=True)
class ProcessSpec:
    """One node process of the graph.

    name: log prefix; executable: the setup.py console script (what the launch file names);
    module: `python -m` module that the console script points at; node_names: the ROS nodes
    the process hosts (each has a section in the params file).
    """

    name: str
    executable: str
    module: str
    node_names: tuple[str, ...]

    @classmethod
    def of(cls, node: graph.GraphNode) -> "ProcessSpec":
        """The process of one node of the graph description (ros/graph.py)."""
        return cls(node.process_name, node.executable, node.module, node.hosts)


SIM_CELL = ProcessSpec.of(graph.SIM_CELL)
CAMERA = ProcessSpec.of(graph.CAMERA)
UR3_DRIVER = ProcessSpec.of(graph.UR3_DRIVER)
ENCODER = ProcessSpec.of(graph.ENCODER)
POLICY = ProcessSpec.of(graph.POLICY)
EPISODE_MANAGER = ProcessSpec.of(graph.EPISODE_MANAGER)
ALL_PROCESSES: tuple[ProcessSpec, ...] = tuple(ProcessSpec.of(n) for n in graph.PICK_INTO_SINK.nodes)


def pick_into_sink_processes(use_sim: bool, combined_inference: bool = False) -> list[ProcessSpec]:
    """The processes of launch/pick_into_sink.launch.py (`graph.PICK_INTO_SINK`): sim ->
    sim_cell_node + encoder + policy + episode manager; real -> camera_node + ur3_driver_node +
    encoder + policy (no episode manager: real-cell episodes are operator-driven); without the
    encoder process with `combined_inference`."""
    return [ProcessSpec.of(n) for n in graph.PICK_INTO_SINK.processes(graph.mode(use_sim), combined_inference)]


def pick_into_sink_main(use_sim: bool) -> str | None:
    """The process whose exit ends the run: the episode manager (sim); None (real: until Ctrl-C)."""
    return graph.PICK_INTO_SINK.main[graph.mode(use_sim)]


def write_overrides(overrides: dict[str, dict[str, Any]], path: str | Path) -> Path:
    """Write {node_name: {param: value}} as a ROS 2 params file ({node: {ros__parameters: ...}});
    strings are quoted so rcl keeps them strings (`launch_args.write_overrides_file`)."""
    from dynaflip_ros.configs.params_file import write_overrides_file

    return write_overrides_file(overrides, path)


def node_command(spec: ProcessSpec, params_files: list[str | Path], python: str = sys.executable,
                 extra_ros_args: list[str] | None = None) -> list[str]:
    """argv of one node process: python -m dynaflip_ros.ros.child_process <module> --ros-args
    --params-file F ... [extra] (`child_process`: <module> run as `python -m` runs it, SIGTERM when
    the launcher dies)."""
    cmd = [python, "-m", child_process.__name__, spec.module, "--ros-args"]
    for f in params_files:
        cmd += ["--params-file", str(f)]
    return cmd + list(extra_ros_args or [])


@dataclass
class _Running:
    spec: ProcessSpec
    proc: subprocess.Popen
    reader: threading.Thread
    exit_code: int | None = None
    killed_with: str = ""


@dataclass
class GraphResult:
    """Outcome of `run_graph`: exit code, which process failed (if any) and why (`death_reason`),
    exit codes by process."""

    exit_code: int
    failed: str = ""
    failure_reason: str = ""
    exit_codes: dict[str, int | None] = field(default_factory=dict)
    escalations: dict[str, str] = field(default_factory=dict)


class _LineSink:
    """Thread-safe prefixed line writer; keeps each prefix's last lines (`last_lines`)."""

    KEEP = 20

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._lock = threading.Lock()
        self.width = 0
        self._recent: dict[str, deque[str]] = {}

    def write(self, prefix: str, line: str) -> None:
        with self._lock:
            self._recent.setdefault(prefix, deque(maxlen=self.KEEP)).append(line.rstrip("\n"))
            self._out.write(f"[{prefix:<{self.width}}] {line}")
            if not line.endswith("\n"):
                self._out.write("\n")
            self._out.flush()

    def last_lines(self, prefix: str) -> list[str]:
        with self._lock:
            return list(self._recent.get(prefix, ()))


def death_reason(exit_code: int | None, last_lines: list[str]) -> str:
    """Why a process ended, for the launch's report: its exit code or signal, and its last
    error line (the last line naming an error, an exception or a failure; else its last line)."""
    if exit_code is None:
        how = "still running"
    elif exit_code < 0:
        try:
            how = f"killed by {signal.Signals(-exit_code).name}"
        except ValueError:
            how = f"killed by signal {-exit_code}"
    else:
        how = f"exit code {exit_code}"
    lines = [ln.strip() for ln in last_lines if ln.strip()]
    markers = ("error", "exception", "traceback", "failed", "refus", "fatal")
    why = next((ln for ln in reversed(lines) if any(m in ln.lower() for m in markers)), lines[-1] if lines else "")
    return f"{how}: {why[:300]}" if why else how


def _pump(stream, sink: _LineSink, prefix: str) -> None:
    for raw in iter(stream.readline, b""):
        sink.write(prefix, raw.decode("utf-8", errors="replace"))
    stream.close()


def _sigterm_as_interrupt():
    """SIGTERM -> KeyboardInterrupt while the graph runs (main thread only), so a terminated
    launcher still tears its node processes down. Returns the previous handler (None when not
    in the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    return signal.signal(signal.SIGTERM, handler)


def _signal_group(r: _Running, sig: int) -> None:
    """Send `sig` to the process group of a process we started (it leads its own session)."""
    if r.proc.poll() is not None:
        return
    try:
        os.killpg(r.proc.pid, sig)
    except ProcessLookupError:
        pass


def run_graph(
    specs: list[ProcessSpec],
    params_files: list[str | Path],
    main: str | None,
    env: dict[str, str] | None = None,
    out: TextIO | None = None,
    grace_s: float = 5.0,
    timeout_s: float | None = None,
    start_delay_s: float = 0.0,
    poll_s: float = 0.1,
    on_started: Callable[[dict[str, int]], None] | None = None,
    interactive: str | None = None,
) -> GraphResult:
    """Start `specs`, stream their logs, wait for process `main`, tear everything down.

    Args:
        specs: processes to start, in order. params_files: `--params-file` arguments (later wins).
        main: name of the process whose exit ends the run (its exit code is returned); None: run
            until interrupted (exit code 0) or until any process exits (exit code 1).
        env: environment of the children (default: os.environ); PYTHONUNBUFFERED=1 is added.
        out: where prefixed log lines go (default sys.stdout).
        grace_s: SIGINT -> SIGTERM -> SIGKILL escalation delay at teardown.
        timeout_s: wall-clock limit of the whole run (None: none) -> exit code 124.
        start_delay_s: pause between process starts.
        on_started: callback with {name: pid} once every process is started.
        interactive: the process that reads this terminal's stdin (an operator's keys); the
            others get /dev/null.
    Returns GraphResult (exit_code: main's code; 1 if another process died first, with the
    reason; 124 on timeout; 130 on KeyboardInterrupt / SIGTERM, 0 when there is no main process:
    interrupting the real cell is how it ends). At teardown the process hosting the arm driver
    is interrupted first (`ARM_OWNER_NODE`).
    Raises ValueError if `main` is not one of `specs`.
    """
    if main is not None and main not in {s.name for s in specs}:
        raise ValueError(f"main process {main!r} is not among {[s.name for s in specs]}")
    sink = _LineSink(out or sys.stdout)
    sink.width = max(len(s.name) for s in specs)
    child_env = dict(os.environ if env is None else env)
    child_env["PYTHONUNBUFFERED"] = "1"
    child_env[child_process.LAUNCHER_PID_ENV] = str(os.getpid())
    child_env.setdefault("RCUTILS_COLORIZED_OUTPUT", "0")
    running: dict[str, _Running] = {}
    result = GraphResult(exit_code=0)
    t_start = time.monotonic()
    previous_sigterm = _sigterm_as_interrupt()
    try:
        for spec in specs:
            proc = subprocess.Popen(
                node_command(spec, params_files), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                stdin=None if spec.name == interactive else subprocess.DEVNULL, env=child_env, start_new_session=True,
            )
            reader = threading.Thread(target=_pump, args=(proc.stdout, sink, spec.name), daemon=True)
            reader.start()
            running[spec.name] = _Running(spec, proc, reader)
            if start_delay_s:
                time.sleep(start_delay_s)
        if on_started is not None:
            on_started({n: r.proc.pid for n, r in running.items()})
        while True:
            main_rc = running[main].proc.poll() if main is not None else None
            if main_rc is not None:
                result.exit_code = main_rc
                break
            dead = [(n, r.proc.poll()) for n, r in running.items() if n != main and r.proc.poll() is not None]
            if dead:
                name, rc = dead[0]
                running[name].reader.join(timeout=1.0)  # its last lines, for the reason
                result.failure_reason = death_reason(rc, sink.last_lines(name))
                sink.write("bringup", f"process {name} exited with code {rc}"
                           f"{f' before {main} finished' if main else ''} ({result.failure_reason}); "
                           "stopping the graph")
                result.exit_code, result.failed = 1, name
                break
            if timeout_s is not None and time.monotonic() - t_start > timeout_s:
                sink.write("bringup", f"timeout after {timeout_s:g} s; stopping the graph")
                result.exit_code, result.failed = 124, main or ""
                break
            time.sleep(poll_s)
    except KeyboardInterrupt:
        sink.write("bringup", "interrupted; stopping the graph")
        # Without a main process (the real cell runs until Ctrl-C) an interrupt is the normal end.
        result.exit_code = 130 if main is not None else 0
    finally:
        _teardown(running, grace_s, sink)
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)
        result.exit_codes = {n: r.proc.returncode for n, r in running.items()}
        result.escalations = {n: r.killed_with for n, r in running.items() if r.killed_with}
    return result


ARM_OWNER_NODE = "ur3_driver"
"""The node that drives the arm: its process (ur3_driver_node, or sim_cell_node hosting it) is
interrupted first at teardown, so the arm is stopped before the nodes that feed it go away."""


def _teardown(running: dict[str, _Running], grace_s: float, sink: _LineSink, arm_first_s: float = 1.0) -> None:
    """SIGINT the arm's process and wait up to `arm_first_s` for it (it stops the arm as it
    closes), then SIGINT all live processes, then SIGTERM / SIGKILL the ones still alive after
    grace_s."""
    arm = [r for r in running.values() if ARM_OWNER_NODE in r.spec.node_names and r.proc.poll() is None]
    for r in arm:
        _signal_group(r, signal.SIGINT)
    for r in arm:
        try:
            r.proc.wait(timeout=arm_first_s)
        except subprocess.TimeoutExpired:
            pass
    for sig, label in ((signal.SIGINT, ""), (signal.SIGTERM, "SIGTERM"), (signal.SIGKILL, "SIGKILL")):
        alive = [r for r in running.values() if r.proc.poll() is None]
        if not alive:
            break
        if label:
            sink.write("bringup", f"{label} -> {[r.spec.name for r in alive]}")
        for r in alive:
            if label:
                r.killed_with = label
            _signal_group(r, sig)
        deadline = time.monotonic() + grace_s
        for r in alive:
            try:
                r.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
    for r in running.values():
        r.reader.join(timeout=2.0)

