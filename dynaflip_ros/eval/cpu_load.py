"""`CpuLoad`: busy processes that each occupy one CPU core, for load tests (`--cpu-load N`).

A lab's workstation is rarely idle; `dynaflip eval --modes ... --cpu-load 1` measures the stack
with one core taken by another program. Each load process spins a pure-Python loop at the
default scheduling priority (what an unrelated busy program does) until the block ends; the
processes are daemons, so they also end with the parent. Uses `multiprocessing` with the
"spawn" start method (no fork of a process that holds threads, renderers or torch state).
"""
from __future__ import annotations

import multiprocessing as mp


def _spin(stop) -> None:
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x += 1


class CpuLoad:
    """`with CpuLoad(n):` runs n busy processes (0: none) for the duration of the block.

    Raises ValueError for n < 0."""

    def __init__(self, n: int) -> None:
        if n < 0:
            raise ValueError(f"cpu load must be >= 0 processes, got {n}")
        self.n = int(n)
        self._ctx = mp.get_context("spawn")
        self._stop = None
        self._procs: list = []

    def __enter__(self) -> "CpuLoad":
        if self.n:
            self._stop = self._ctx.Event()
            self._procs = [self._ctx.Process(target=_spin, args=(self._stop,), name=f"cpu_load_{i}", daemon=True)
                           for i in range(self.n)]
            for p in self._procs:
                p.start()
        return self

    @property
    def alive(self) -> int:
        """Load processes running now."""
        return sum(p.is_alive() for p in self._procs)

    def __exit__(self, *exc) -> None:
        if self._stop is not None:
            self._stop.set()
        for p in self._procs:
            p.join(timeout=2.0)
            if p.is_alive():
                p.terminate()
                p.join(timeout=2.0)
        self._procs = []
