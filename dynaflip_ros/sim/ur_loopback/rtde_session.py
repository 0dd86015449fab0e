"""RTDE sessions (port 30004) of the loopback controller, controller side: answers to the
client's requests (protocol version, controller version, output / input recipe setup, start,
pause, input data) and the schedule of the output data packages.

Sources: docs/ur_rtde_protocol.md §2.2-2.4 (package types, recipes, controller-side sequence),
§3.1 and §3.6 (what ur_rtde 1.6.5 sends: recipes starting with the command register).

Timing: output packages are scheduled per controller cycle (2 ms e-Series / 8 ms CB3): a
connection whose recipe frequency divides the controller rate gets exactly every n-th cycle,
others a fractional phase accumulator; the first package goes out at the cycle after `S`.
Threads: none; every method runs on the controller process's single network-loop thread
(server.py), which owns the connections and does the socket writes (the `send` callback).
"""
from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterable
from typing import Any

from dynaflip_ros.sim.ur_loopback import rtde_protocol as rp
from dynaflip_ros.sim.ur_loopback.client import ClientConnection
from dynaflip_ros.sim.ur_loopback.core import ControllerCore

COMMAND_REGISTER_OFFSETS = (0, 24)   # ur_rtde's register ranges (lower / upper, §3.6)


def infer_register_offset(names: list[str], current: int) -> int:
    """Register offset (0 or 24) of an input recipe `names`, else `current`: ur_rtde's control
    recipes all start with the command register (docs/ur_rtde_protocol.md §3.6)."""
    first = names[0]
    if first.startswith("input_int_register_"):
        k = int(first[19:])
        if k in COMMAND_REGISTER_OFFSETS:
            return k
    return current


def _status_reply(ptype: int, ok: bool) -> bytes:
    """A one-byte accepted (1) / refused (0) reply package of type `ptype`."""
    return rp.pack_package(ptype, bytes([1 if ok else 0]))


class RtdeSessions:
    """Request handling and output streaming for every RTDE connection of one controller.

    Args: core (the controller state the packages read and write), send(conn, bytes) (queues
    bytes on a connection; the server's non-blocking writer). `owners` maps each input variable
    name to the connection whose input recipe holds it (IN_USE for everyone else, §2.3).
    """

    def __init__(self, core: ControllerCore, send: Callable[[ClientConnection, bytes], None]) -> None:
        self.core = core
        self._send = send
        self.owners: dict[str, ClientConnection] = {}

    def release(self, c: ClientConnection) -> None:
        """`c` closed: its input variables are free again."""
        for name in c.owned:
            if self.owners.get(name) is c:
                del self.owners[name]

    def handle(self, c: ClientConnection) -> None:
        """Answer every complete package in `c.rbuf` (docs/ur_rtde_protocol.md §2.4).

        Raises rp.ProtocolError on a malformed stream (the server then closes `c`)."""
        core = self.core
        for ptype, payload in rp.split_packages(c.rbuf):
            if ptype == rp.RTDE_REQUEST_PROTOCOL_VERSION:
                ok = len(payload) == 2 and struct.unpack(">H", payload)[0] in (1, 2)
                if ok:
                    c.proto = struct.unpack(">H", payload)[0]
                else:
                    core.log_error(f"RTDE protocol version request {payload.hex()} refused")
                self._send(c, _status_reply(ptype, ok))
            elif ptype == rp.RTDE_GET_URCONTROL_VERSION:
                self._send(c, rp.pack_package(ptype, struct.pack(">IIII", *core.version)))
            elif ptype == rp.RTDE_CONTROL_PACKAGE_SETUP_OUTPUTS:
                if c.proto >= 2:
                    if len(payload) < 8:
                        core.log_error("RTDE O without frequency")
                        self._send(c, rp.pack_package(ptype, b"\x00"))
                        continue
                    freq = struct.unpack(">d", payload[:8])[0]
                    names_b = payload[8:]
                else:
                    freq, names_b = core.base_rate_hz, payload
                if len(names_b) > rp.MAX_SETUP_NAMES_BYTES:
                    core.log_error(f"RTDE O name list of {len(names_b)} bytes > 2048")
                names = rp.parse_names(names_b)
                rec, reply = rp.output_setup_reply(1, names)
                if not rec.valid:
                    core.log_error("RTDE O with unknown variables: "
                                   + ",".join(n for n, t in zip(names, rec.types) if t == "NOT_FOUND"))
                if not (math.isfinite(freq) and 0 < freq <= core.base_rate_hz):
                    core.log_error(f"RTDE output frequency {freq} Hz outside (0, {core.base_rate_hz}]; clamped")
                    freq = min(max(freq if math.isfinite(freq) else core.base_rate_hz, 1.0), core.base_rate_hz)
                rec.frequency_hz = freq
                c.out_recipe = rec
                self._send(c, rp.pack_package(ptype, reply if c.proto >= 2 else reply[1:]))
            elif ptype == rp.RTDE_CONTROL_PACKAGE_SETUP_INPUTS:
                names = rp.parse_names(payload)
                in_use = {n for n in names if n in self.owners and self.owners[n] is not c}
                types = rp.input_setup_types(names, in_use)
                valid = bool(names) and all(t not in ("NOT_FOUND", "IN_USE") for t in types)
                rid = 0
                if valid:
                    rid = len(c.in_recipes) + 1
                    c.in_recipes[rid] = rp.Recipe(rid, names, types)
                    for n in names:
                        self.owners[n] = c
                        c.owned.add(n)
                    core.script.offset = infer_register_offset(names, core.script.offset)
                else:
                    core.log_error("RTDE I refused: " + ",".join(
                        f"{n}={t}" for n, t in zip(names, types) if t in ("NOT_FOUND", "IN_USE")))
                self._send(c, rp.pack_package(ptype, bytes([rid]) + ",".join(types).encode()))
            elif ptype == rp.RTDE_CONTROL_PACKAGE_START:
                ok = c.out_recipe is not None and c.out_recipe.valid
                if not ok:
                    core.log_error("RTDE S without a valid output recipe")
                c.started = ok
                c.phase = -1.0   # first package at the next cycle
                c.stream_t0 = None
                self._send(c, _status_reply(ptype, ok))
            elif ptype == rp.RTDE_CONTROL_PACKAGE_PAUSE:
                c.started = False
                self._send(c, rp.pack_package(ptype, b"\x01"))
            elif ptype == rp.RTDE_DATA_PACKAGE:
                if not payload:
                    core.log_error("RTDE U without recipe id")
                    continue
                rec = c.in_recipes.get(payload[0])
                if rec is None:
                    core.log_error(f"RTDE U for unknown input recipe {payload[0]}")
                    continue
                values, exact = rec.decode(payload[1:])
                if not exact:
                    core.log_error(f"RTDE U for recipe {rec.recipe_id} has {len(payload) - 1} bytes, "
                                   f"recipe needs {rec.size}; decoded {len(values)} of {len(rec.names)} fields")
                core.apply_inputs(values)
            elif ptype == rp.RTDE_TEXT_MESSAGE:
                pass
            else:
                core.log_error(f"RTDE package type {ptype} ({chr(ptype) if 32 <= ptype < 127 else '?'}) not handled")

    def due(self, streams: Iterable[ClientConnection]) -> list[ClientConnection]:
        """Advance each started stream's phase by one controller cycle; the ones whose package
        is due this cycle (see module doc)."""
        base_rate_hz = self.core.base_rate_hz
        due = []
        for c in streams:
            ratio = base_rate_hz / c.out_recipe.frequency_hz
            n = round(ratio)
            if c.phase < 0:
                c.phase = 0.0
                due.append(c)
            elif abs(ratio - n) < 1e-6:
                # integer divisor of the controller rate: exactly every n-th cycle
                c.phase += 1.0
                if c.phase >= n - 0.5:
                    c.phase = 0.0
                    due.append(c)
            else:
                c.phase += 1.0 / ratio
                if c.phase >= 1.0:
                    c.phase -= 1.0
                    due.append(c)
        return due

    def send_outputs(self, due: list[ClientConnection], base: dict[str, Any], now_s: float) -> int:
        """Encode and send one `U` package per due connection from `base` (core.outputs());
        a recipe that cannot be encoded stops its stream (logged). Returns the packages sent."""
        core = self.core
        n_sent = 0
        for c in due:
            rec = c.out_recipe
            try:
                vals = [core.value(n, base) for n in rec.names]
                pkg = rp.pack_package(rp.RTDE_DATA_PACKAGE, bytes([rec.recipe_id]) + rec.encode(vals))
            except (KeyError, struct.error) as e:
                core.log_error(f"cannot encode output recipe: {e}")
                c.started = False
                continue
            self._send(c, pkg)
            c.sent += 1
            if c.stream_t0 is None:
                c.stream_t0 = now_s
            c.stream_t1 = now_s
            n_sent += 1
        return n_sent
