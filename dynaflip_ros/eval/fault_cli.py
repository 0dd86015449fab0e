"""`dynaflip fault-inject`: the verb's registration for the dispatcher (`dynaflip_ros/cli.py` VERBS).

The adapter lives in `eval/cli.py` (`register_fault_inject`, `run_fault_inject`), so it may use
the dispatcher's shared help texts; this module keeps the verb's module path.
"""
from __future__ import annotations

from dynaflip_ros.eval.cli import register_fault_inject as register
from dynaflip_ros.eval.cli import run_fault_inject as run

__all__ = ["register", "run"]
