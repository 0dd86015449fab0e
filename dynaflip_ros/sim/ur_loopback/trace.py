"""Per-cycle trace of the loopback controller (`TraceBuffer`): what the parent gets from
`LoopbackURController.trace()`.

One row per controller cycle (2 ms e-Series / 8 ms CB3): t_s (controller time, s),
host_monotonic_s (host `time.monotonic`, s), commanded_q (6,) rad (latest servoJ target, NaN while
not servoing), actual_q (6,) rad, target_q (6,) rad, runtime_state, safety_mode. Rows live in
numpy chunks of `CHUNK` rows; beyond `max_rows` the oldest chunks are dropped (~0.2 kB per row).

Threads: none; appended and exported by the controller process's single network-loop thread.
"""
from __future__ import annotations

import collections

import numpy as np

TRACE_MAX_ROWS = 300_000         # 10 min at 500 Hz


class TraceBuffer:
    """Per-cycle record in numpy chunks of 10 000 rows; the oldest chunks are dropped beyond
    `max_rows` (memory grows with use: ~0.2 kB per row)."""

    CHUNK = 10_000

    def __init__(self, max_rows: int) -> None:
        self.max_chunks = max(1, max_rows // self.CHUNK)
        self.chunks: collections.deque = collections.deque()
        self._new_chunk()

    def _new_chunk(self) -> None:
        n = self.CHUNK
        self.cur = {"t_s": np.empty(n), "host_monotonic_s": np.empty(n),
                    "commanded_q": np.empty((n, 6)), "actual_q": np.empty((n, 6)),
                    "target_q": np.empty((n, 6)), "runtime_state": np.empty(n, dtype=np.int32),
                    "safety_mode": np.empty(n, dtype=np.int32)}
        self.n = 0

    def append(self, t_s, host_s, commanded_q, actual_q, target_q, runtime_state, safety_mode) -> None:
        """Record one cycle (see module doc); commanded_q None is stored as NaN."""
        if self.n == self.CHUNK:
            self.chunks.append(self.cur)
            while len(self.chunks) >= self.max_chunks:
                self.chunks.popleft()
            self._new_chunk()
        i, c = self.n, self.cur
        c["t_s"][i] = t_s
        c["host_monotonic_s"][i] = host_s
        c["commanded_q"][i] = np.nan if commanded_q is None else commanded_q
        c["actual_q"][i] = actual_q
        c["target_q"][i] = target_q
        c["runtime_state"][i] = runtime_state
        c["safety_mode"][i] = safety_mode
        self.n += 1

    def export(self, clear: bool) -> dict:
        """Every kept row: {column: (N,) or (N, 6) array}; clear=True empties the buffer."""
        parts = list(self.chunks) + [{k: v[:self.n] for k, v in self.cur.items()}]
        out = {k: np.concatenate([p[k] for p in parts]) for k in self.cur}
        if clear:
            self.chunks.clear()
            self._new_chunk()
        return out

