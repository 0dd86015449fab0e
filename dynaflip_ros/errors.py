"""`UserError`: the base of every error a user can fix without touching code.

Bad input, a damaged or mismatched file, a missing model or device. The command line
(`dynaflip_ros/cli.py`) prints such an error as one line, "dynaflip <verb>: <message>", and
exits with `EXIT_USAGE` (2); any other exception is a bug and keeps its traceback (exit 1).
Error classes raised for such causes inherit from `UserError` as well as from their usual
built-in base (ValueError, RuntimeError, ...), so existing `except` clauses keep working.
Imports nothing: every layer may use it.
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1  # a bug (traceback printed) or a run that failed for a reason given above it
EXIT_USAGE = 2  # bad flags, config, input file or model: the message says what to fix
EXIT_TIMEOUT = 124  # a wall-clock limit of the run (`--timeout-s`) passed
EXIT_INTERRUPTED = 130  # SIGINT


class UserError(Exception):
    """An error the user can fix (bad input, damaged or mismatched file): one line, exit 2."""
