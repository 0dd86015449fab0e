"""Entry point of every node process `dynaflip launch` starts (`ros/bringup.py`):

    python -m dynaflip_ros.ros.child_process MODULE [ARGS ...]

runs MODULE exactly as `python -m MODULE ARGS ...` would (`runpy.run_module`, `sys.argv` as
`-m` sets it, the module's exit code), after asking the kernel to send this process SIGTERM when
its launcher dies, even by SIGKILL (Linux `prctl(PR_SET_PDEATHSIG)`, man 2 prctl; the setting
survives `exec`). A node process left behind by a dead launcher could keep commanding the arm.

Why here and not in a `preexec_fn`: `preexec_fn` runs Python in the forked copy of the launcher
between fork and exec, and the launcher has threads (one log reader per process already
started); the Python documentation of `subprocess.Popen` warns that the child "could deadlock
before exec is called" then. Here the process has already exec'd into a fresh interpreter.

The launcher could die between the fork and the `prctl` call; the launcher passes its pid in
`LAUNCHER_PID_ENV`, and a process whose parent is no longer that pid after the call exits with
code 1 before running MODULE. Without the variable (started by hand) nothing is armed. Outside
Linux (no `prctl`) the module runs without the guard.
"""
from __future__ import annotations

import os
import runpy
import signal
import sys
from collections.abc import Mapping

LAUNCHER_PID_ENV = "DYNAFLIP_LAUNCHER_PID"
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_launcher(environ: Mapping[str, str] = os.environ) -> bool:
    """Arm SIGTERM-on-launcher-death for this process when `environ` names a launcher pid.

    Returns True when armed, False when there is no launcher pid or no `prctl` (not Linux).
    Raises SystemExit (code 1, with the reason) when the launcher already died: this process's
    parent is no longer the launcher. Raises ValueError for a launcher pid that is not an integer.
    """
    value = environ.get(LAUNCHER_PID_ENV)
    if value is None:
        return False
    launcher_pid = int(value)
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
            return False
    except (ImportError, OSError, AttributeError):
        return False
    if os.getppid() != launcher_pid:
        raise SystemExit(f"the launcher (pid {launcher_pid}) exited before this process started; not starting")
    return True


def main(argv: list[str] | None = None) -> None:
    """Run MODULE with ARGS (`argv`: MODULE ARGS ...; default sys.argv[1:]). Exits as MODULE does;
    SystemExit with a usage line when MODULE is missing."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        raise SystemExit("usage: python -m dynaflip_ros.ros.child_process MODULE [ARGS ...]")
    die_with_launcher()
    os.environ.pop(LAUNCHER_PID_ENV, None)  # the node's own children are not the launcher's
    sys.argv = list(argv)  # run_module(alter_sys=True) replaces argv[0] with the module's path, as -m does
    runpy.run_module(argv[0], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
