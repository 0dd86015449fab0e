"""Network loop of the loopback UR controller (`ControllerServer`): one `selectors` loop that
serves every socket and runs the controller cycle of a `core.ControllerCore`.

Ports (docs/ur_rtde_protocol.md §1): 29999 dashboard (dashboard.py), 30003 script upload
(script_emulation.split_programs), 30004 RTDE (rtde_session.py), 63352 Robotiq URCap socket
(robotiq_server.py), plus the parent's command pipe (process.py).

Timing: the cycle runs at absolute host deadlines t0 + k·period (period 2 ms for e-Series
versions, 8 ms for CB3 ones; `time.monotonic`), never relative sleeps, so lateness does not
accumulate. Each cycle: `core.step()` (watchdog, script tick, motion generator, arm model,
gripper), then the trace row and one `U` package to every started RTDE connection whose
requested frequency is due. When the process falls behind, it first reads pending client input,
then runs the missed cycles without sending (the real controller skips packages under load,
docs/ur_rtde_protocol.md §2.4) and counts them; beyond `MAX_CATCHUP_CYCLES` controller time is
dropped, not replayed. select(2) is used because it takes microsecond timeouts (epoll rounds up
to whole milliseconds).

Threads and processes: one thread of the controller process owns the loop, the core, every
socket and the trace; nothing here takes a lock. Sockets are non-blocking; a client that stops
draining (more than `MAX_SEND_BUFFER` queued) is disconnected.
"""
from __future__ import annotations

import collections
import logging
import math
import selectors
import socket
import time
from typing import Any

import numpy as np

from dynaflip_ros.sim.ur_loopback import dashboard
from dynaflip_ros.sim.ur_loopback import rtde_protocol as rp
from dynaflip_ros.sim.ur_loopback.client import ClientConnection
from dynaflip_ros.sim.ur_loopback.config import (
    DASHBOARD_PORT,
    INJECT_KINDS,
    ROBOTIQ_PORT,
    RTDE_PORT,
    SCRIPT_PORT,
    check_host,
)
from dynaflip_ros.sim.ur_loopback.core import ControllerCore
from dynaflip_ros.sim.ur_loopback.rtde_session import RtdeSessions
from dynaflip_ros.sim.ur_loopback.script_emulation import split_programs
from dynaflip_ros.sim.ur_loopback.trace import TRACE_MAX_ROWS, TraceBuffer

log = logging.getLogger(__name__)

MAX_SEND_BUFFER = 4 << 20        # a client that stops draining is disconnected (docs/ur_rtde_protocol.md §2.4)
MAX_CATCHUP_CYCLES = 50          # beyond this lag controller time is dropped, not replayed


def _is_fraction(x: float) -> bool:
    """True for a finite x in [0, 1] (speed slider, gripper closure)."""
    return math.isfinite(x) and 0.0 <= x <= 1.0


class ControllerServer:
    """The network loop around a `ControllerCore` (see module doc).

    Args: host (IPv4 loopback), core, with_gripper (serve 63352), command_conn (`multiprocessing.connection.Connection` to the
    parent, or None), ports (kind -> port overrides). Every cycle is recorded in `trace_buf`.
    Raises OSError (e.g. EADDRINUSE) from `bind()`.
    """

    def __init__(self, host: str, core: ControllerCore, with_gripper: bool = True,
                 command_conn=None, ports: dict[str, int] | None = None) -> None:
        self.host = check_host(host)
        self.core = core
        # select(2) takes microsecond timeouts (epoll rounds up to whole milliseconds)
        self.sel = selectors.SelectSelector()
        self.ports = {"dashboard": DASHBOARD_PORT, "script": SCRIPT_PORT, "rtde": RTDE_PORT}
        if with_gripper:
            self.ports["gripper"] = ROBOTIQ_PORT
        if ports:
            self.ports.update(ports)
        self.listeners: dict[str, socket.socket] = {}
        self.conns: list[ClientConnection] = []
        self.command_conn = command_conn
        self.running = False
        self.silent = False
        self.pause_until = 0.0
        self.trace_buf = TraceBuffer(TRACE_MAX_ROWS)
        self.stats = {"cycles": 0, "sent_packages": 0, "late_cycles": 0, "dropped_cycles": 0,
                      "max_late_s": 0.0, "disconnects_overflow": 0}
        self.closed_streams: collections.deque = collections.deque(maxlen=20)
        self._script_text: dict[int, str] = {}
        self.rtde = RtdeSessions(core, self._send)
        self._t0_host = 0.0
        self._cpu0 = 0.0
        self._late_hist: collections.deque = collections.deque(maxlen=5000)
        self._send_times: collections.deque = collections.deque(maxlen=5000)

    # ------------------------------------------------------------------ sockets
    def bind(self) -> None:
        """Listen on every port (SO_REUSEADDR, the given loopback host only)."""
        for kind, port in self.ports.items():
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((self.host, port))
            except OSError as e:
                s.close()
                self.close()
                raise OSError(e.errno, f"cannot bind {self.host}:{port} ({kind}): {e.strerror}") from e
            s.listen(8)
            s.setblocking(False)
            self.listeners[kind] = s
            self.sel.register(s, selectors.EVENT_READ, ("listen", kind))
        if self.command_conn is not None:
            self.sel.register(self.command_conn.fileno(), selectors.EVENT_READ, ("pipe", None))

    def close(self) -> None:
        """Close every client and listening socket (idempotent)."""
        for c in list(self.conns):
            self._close_conn(c)
        for s in self.listeners.values():
            try:
                self.sel.unregister(s)
            except (KeyError, ValueError):
                pass
            s.close()
        self.listeners.clear()

    def _accept(self, kind: str) -> None:
        s = self.listeners[kind]
        try:
            sock, peer = s.accept()
        except (BlockingIOError, InterruptedError):
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c = ClientConnection(sock, kind, self.silent and kind != "script", peer)
        self.conns.append(c)
        self.sel.register(sock, selectors.EVENT_READ, ("conn", c))
        if kind == "dashboard" and not c.silent:
            self._send_line(c, dashboard.GREETING)

    def _close_conn(self, c: ClientConnection) -> None:
        if c.closed:
            return
        c.closed = True
        try:
            self.sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        try:
            c.sock.close()
        except OSError:
            pass
        self.rtde.release(c)
        if c in self.conns:
            self.conns.remove(c)
        if c.kind == "rtde" and c.sent:
            self.closed_streams.append(c.stream_stats())
        self._script_text.pop(id(c), None)

    def _send(self, c: ClientConnection, data: bytes) -> None:
        if c.closed:
            return
        if c.wbuf:
            c.wbuf += data
        else:
            try:
                n = c.sock.send(data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError:
                self._close_conn(c)
                return
            if n < len(data):
                c.wbuf += data[n:]
        if c.wbuf:
            if len(c.wbuf) > MAX_SEND_BUFFER:
                self.stats["disconnects_overflow"] += 1
                self.core.log_error(f"client {c.peer} on {c.kind} stopped draining; disconnected")
                self._close_conn(c)
                return
            if not c.want_write:
                c.want_write = True
                self.sel.modify(c.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, ("conn", c))

    def _send_line(self, c: ClientConnection, text: str) -> None:
        """One reply line of a text protocol (dashboard, Robotiq): `text` + `\\n`, UTF-8."""
        self._send(c, (text + "\n").encode())

    def _flush(self, c: ClientConnection) -> None:
        try:
            n = c.sock.send(c.wbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close_conn(c)
            return
        del c.wbuf[:n]
        if not c.wbuf and c.want_write:
            c.want_write = False
            self.sel.modify(c.sock, selectors.EVENT_READ, ("conn", c))

    def _read(self, c: ClientConnection) -> None:
        try:
            data = c.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close_conn(c)
            return
        if c.silent:
            return
        c.rbuf += data
        try:
            if c.kind == "rtde":
                self.rtde.handle(c)
            elif c.kind == "dashboard":
                self._handle_lines(c, self._dashboard_line)
            elif c.kind == "gripper":
                self._handle_lines(c, self._gripper_line)
            elif c.kind == "script":
                self._handle_script(c)
        except rp.ProtocolError as e:
            self.core.log_error(f"{c.kind} {c.peer}: {e}; connection closed")
            self._close_conn(c)
        except Exception as e:  # a bug must not take the controller down: log, drop the client
            log.exception("loopback UR: handler error")
            self.core.log_error(f"internal error handling {c.kind} {c.peer}: {type(e).__name__}: {e}; "
                                "connection closed")
            self._close_conn(c)

    # ------------------------------------------------------------------ text protocols
    def _handle_lines(self, c: ClientConnection, fn) -> None:
        while not c.closed:
            i = c.rbuf.find(b"\n")
            if i < 0:
                if len(c.rbuf) > 65536:
                    raise rp.ProtocolError("line longer than 64 KiB")
                return
            line = c.rbuf[:i].decode("utf-8", errors="replace").rstrip("\r")
            del c.rbuf[:i + 1]
            fn(c, line)

    def _dashboard_line(self, c: ClientConnection, line: str) -> None:
        reply, close = dashboard.handle_command(self.core, line)
        self._send_line(c, reply)
        if close:
            self._close_conn(c)

    def _gripper_line(self, c: ClientConnection, line: str) -> None:
        reply, err = self.core.gripper.handle_line(line)
        if err:
            self.core.log_error(f"Robotiq socket: {err}")
        self._send_line(c, reply)

    def _handle_script(self, c: ClientConnection) -> None:
        text = self._script_text.get(id(c), "") + c.rbuf.decode("utf-8", errors="replace")
        c.rbuf.clear()
        programs, rest = split_programs(text)
        self._script_text[id(c)] = rest
        for prog in programs:
            name = prog.split("(", 1)[0].split()[-1]
            self.core.start_script(prog, name)

    # ------------------------------------------------------------------ parent commands
    def _handle_pipe(self) -> None:
        try:
            while self.command_conn.poll():
                msg = self.command_conn.recv()
                try:
                    result = self.command(msg[0], *msg[1:])
                    self.command_conn.send(("ok", result))
                except Exception as e:  # reported to the parent, which raises it
                    self.command_conn.send(("err", f"{type(e).__name__}: {e}"))
        except (EOFError, OSError):
            # the parent is gone: never outlive it
            self.running = False

    def command(self, name: str, *args) -> Any:
        """Parent commands: inject(kind, kw), snapshot(), trace(clear), stop()."""
        core = self.core
        if name == "snapshot":
            snap = core.snapshot()
            snap["stats"] = self.server_stats()
            return snap
        if name == "trace":
            return self.trace_buf.export(clear=bool(args and args[0]))
        if name == "stop":
            self.running = False
            return None
        if name == "inject":
            kind, kw = args
            return self.inject(kind, **kw)
        raise ValueError(f"unknown command {name!r}")

    def inject(self, kind: str, **kw) -> None:
        """Fault / operator injection (see LoopbackURController.inject)."""
        core = self.core
        if kind == "protective_stop":
            core.protective_stop("injected")
        elif kind == "emergency_stop":
            core.emergency_stop()
        elif kind == "clear_emergency_stop":
            core.clear_emergency_stop(power_on=bool(kw.get("power_on", False)))
        elif kind == "program_stop":
            core.stop_program("pendant stop (injected)")
        elif kind == "speed_slider":
            f = float(kw["fraction"])
            if not _is_fraction(f):
                raise ValueError(f"speed_slider fraction must be in [0, 1], got {f!r}")
            core.slider = f
        elif kind == "silent":
            self.silent = bool(kw.get("on", True))
        elif kind == "stream_pause":
            d = float(kw["duration_s"])
            if not (math.isfinite(d) and d >= 0):
                raise ValueError(f"stream_pause duration_s must be >= 0, got {d!r}")
            self.pause_until = time.monotonic() + d
        elif kind == "drop_connections":
            for c in list(self.conns):
                self._close_conn(c)
        elif kind == "gripper_object":
            closure = kw.get("closure")
            if closure is not None:
                closure = float(closure)
                if not _is_fraction(closure):
                    raise ValueError("gripper_object closure must be in [0, 1] or None")
            core.gripper_block = closure
        elif kind == "remote_control":
            core.remote_control = bool(kw.get("on", True))
        else:
            raise ValueError(f"unknown inject kind {kind!r}; one of {INJECT_KINDS}")

    def server_stats(self) -> dict:
        """Loop statistics: cycles, sent_packages, late / dropped cycles, lateness percentiles
        (ms), cpu_fraction of this process, connections per kind, per-stream rates."""
        wall = max(time.monotonic() - self._t0_host, 1e-9)
        late = np.asarray(self._late_hist) if self._late_hist else np.zeros(1)
        st = dict(self.stats)
        st.update(
            wall_s=wall, cpu_fraction=(time.process_time() - self._cpu0) / wall,
            lateness_p50_ms=float(np.percentile(late, 50) * 1e3),
            lateness_p99_ms=float(np.percentile(late, 99) * 1e3),
            lateness_max_ms=float(late.max() * 1e3),
            connections={k: sum(1 for c in self.conns if c.kind == k) for k in self.ports},
            streaming=sum(1 for c in self.conns if c.kind == "rtde" and c.started),
            streams=[c.stream_stats() for c in self.conns if c.kind == "rtde" and c.sent],
            closed_streams=list(self.closed_streams),
        )
        return st

    # ------------------------------------------------------------------ main loop
    def serve(self, on_ready=None) -> None:
        """Run until `running` is cleared (parent stop / pipe EOF / KeyboardInterrupt)."""
        core = self.core
        period = core.period_s
        self.running = True
        self._t0_host = time.monotonic()
        self._cpu0 = time.process_time()
        next_t = self._t0_host + period
        if on_ready is not None:
            on_ready()
        try:
            while self.running:
                now = time.monotonic()
                timeout = next_t - now
                if timeout > 0:
                    self._poll(timeout)
                    continue
                # One or more cycles are due. First take in what the clients sent while this
                # process was not scheduled (a loaded host), so input that arrived on time is
                # applied before the cycles run (the RTDE watchdog must not trip on our lateness).
                self._poll(0.0)
                lateness = now - next_t
                n_due = int(lateness / period) + 1
                if n_due > MAX_CATCHUP_CYCLES:
                    self.stats["dropped_cycles"] += n_due - MAX_CATCHUP_CYCLES
                    next_t += (n_due - MAX_CATCHUP_CYCLES) * period
                    n_due = MAX_CATCHUP_CYCLES
                self._late_hist.append(lateness)
                self.stats["max_late_s"] = max(self.stats["max_late_s"], lateness)
                for k in range(n_due):
                    t_cycle0 = time.perf_counter()
                    last = k == n_due - 1
                    try:
                        core.step()
                        self._publish(send=last)
                    except Exception as e:  # keep serving; the anomaly is reported
                        log.exception("loopback UR: cycle error")
                        core.log_error(f"internal error in the control cycle: {type(e).__name__}: {e}")
                    self.stats["cycles"] += 1
                    if not last:
                        self.stats["late_cycles"] += 1
                    core.exec_time_ms = (time.perf_counter() - t_cycle0) * 1e3
                    next_t += period
        finally:
            self.close()

    def _poll(self, timeout_s: float) -> None:
        """Handle ready sockets (accept, pipe commands, client input, pending output)."""
        for key, ev in self.sel.select(timeout_s):
            tag, obj = key.data
            if tag == "listen":
                self._accept(obj)
            elif tag == "pipe":
                self._handle_pipe()
            else:
                if ev & selectors.EVENT_WRITE and not obj.closed:
                    self._flush(obj)
                if ev & selectors.EVENT_READ and not obj.closed:
                    self._read(obj)

    def _publish(self, send: bool) -> None:
        """After one cycle: trace it, advance the RTDE stream schedules and, when `send` (the
        last of the due cycles) and no stream pause is injected, send the due packages."""
        core = self.core
        now = time.monotonic()
        mot = core.motion
        self.trace_buf.append(core.time_s, now, mot.servo_target if mot.mode == "servo" else None,
                              core.arm.q, mot.q_ref, core.runtime_state, core.safety_mode)
        streams = [c for c in self.conns if c.kind == "rtde" and c.started and not c.closed]
        if not streams:
            return
        due = self.rtde.due(streams)
        if not due or not send or now < self.pause_until:
            return
        self.stats["sent_packages"] += self.rtde.send_outputs(due, core.outputs(), now)
        self._send_times.append(now)

