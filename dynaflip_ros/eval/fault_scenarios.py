"""The registry of fault-injection scenarios behind `dynaflip fault-inject`: name -> function
returning `Figure`s, per target ("sim": the MuJoCo arm in lock-step; "rtde": the real ur_rtde
client against the loopback UR controller). Each scenario is defined once, in
`eval.fault_inject` or `eval.fault_holes`.
"""
from __future__ import annotations

from typing import Callable

from dynaflip_ros.eval import fault_holes as fh
from dynaflip_ros.eval import fault_inject as fi

SIM_SCENARIOS: dict[str, Callable[..., list[fi.Figure]]] = {
    "fuzz": fi.sim_fuzz,
    "stale": fi.sim_stale_command,
    "protective_stop": fi.sim_protective_stop,
    "moved_outside": fh.sim_moved_outside,
    "failed_arming": fh.sim_failed_arming,
    "declared_dt": fh.sim_declared_dt,
    "bad_input": fh.sim_bad_input,
}

RTDE_SCENARIOS: dict[str, Callable[..., list[fi.Figure]]] = {
    "fuzz": fi.rtde_fuzz,
    "stale": fi.rtde_stale_command,
    "protective_stop": fi.rtde_protective_stop,
    "silent_peer": fi.rtde_silent_peer,
    "speed_slider": fi.rtde_speed_slider,
}
