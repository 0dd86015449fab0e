"""The registry of fault-injection scenarios behind `dynaflip fault-inject`: name -> function
returning `Figure`s, per target ("sim": the MuJoCo arm in lock-step, `eval.fault_sim`; "rtde":
the real ur_rtde client against the loopback UR controller, `eval.fault_rtde`). Each scenario is
defined once, in one of those two modules, and listed once here; the CLI runs them in this order.
"""
from __future__ import annotations

from typing import Callable

from dynaflip_ros.eval import fault_rtde as fr
from dynaflip_ros.eval import fault_sim as fs
from dynaflip_ros.eval.fault_bench import Figure

SIM_SCENARIOS: dict[str, Callable[..., list[Figure]]] = {
    "fuzz": fs.sim_fuzz,
    "stale": fs.sim_stale_command,
    "protective_stop": fs.sim_protective_stop,
    "moved_outside": fs.sim_moved_outside,
    "failed_arming": fs.sim_failed_arming,
    "declared_dt": fs.sim_declared_dt,
    "bad_input": fs.sim_bad_input,
}

RTDE_SCENARIOS: dict[str, Callable[..., list[Figure]]] = {
    "fuzz": fr.rtde_fuzz,
    "stale": fr.rtde_stale_command,
    "protective_stop": fr.rtde_protective_stop,
    "silent_peer": fr.rtde_silent_peer,
    "speed_slider": fr.rtde_speed_slider,
    "worker_stale": fr.rtde_worker_stale,
}
