"""One accepted client socket of the loopback controller (`ClientConnection`): its read/write
buffers and, for RTDE (port 30004) clients, the session state (protocol version, recipes,
streaming phase, packages sent).

Plain data with one derived view (`stream_stats`). Threads: none; owned by the controller
process's single network-loop thread (server.py), which reads, writes and closes the socket.
Times (`stream_t0`, `stream_t1`) are host `time.monotonic` seconds.
"""
from __future__ import annotations

import socket

from dynaflip_ros.sim.ur_loopback import rtde_protocol as rp


class ClientConnection:
    """One accepted client socket.

    Args: sock (non-blocking), kind ("dashboard" | "script" | "rtde" | "gripper"), silent (accept
    and never answer: the "silent" injection), peer (host, port)."""

    __slots__ = (
        "closed",
        "in_recipes",
        "kind",
        "out_recipe",
        "owned",
        "peer",
        "phase",
        "proto",
        "rbuf",
        "sent",
        "silent",
        "sock",
        "started",
        "stream_t0",
        "stream_t1",
        "want_write",
        "wbuf",
    )

    def __init__(self, sock: socket.socket, kind: str, silent: bool, peer) -> None:
        self.sock = sock
        self.kind = kind
        self.rbuf = bytearray()
        self.wbuf = bytearray()
        self.silent = silent
        self.proto = 2
        self.out_recipe: rp.Recipe | None = None
        self.in_recipes: dict[int, rp.Recipe] = {}
        self.started = False
        self.phase = 0.0
        self.owned: set[str] = set()
        self.sent = 0
        self.peer = peer
        self.closed = False
        self.want_write = False
        self.stream_t0: float | None = None
        self.stream_t1: float | None = None

    def stream_stats(self) -> dict:
        """Packages sent on this RTDE connection and their mean rate (Hz)."""
        span = (self.stream_t1 - self.stream_t0) if self.stream_t0 is not None and self.stream_t1 else 0.0
        return {"peer": list(self.peer), "frequency_hz": self.out_recipe.frequency_hz if self.out_recipe else 0.0,
                "n_variables": len(self.out_recipe.names) if self.out_recipe else 0, "sent": self.sent,
                "duration_s": span, "rate_hz": (self.sent - 1) / span if span > 0 else 0.0}
