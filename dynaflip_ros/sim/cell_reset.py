"""`reset_cell_episode`: start a new episode in a running real-time sim cell (ROS-free).

Shared by the `sim_cell` node (ros/nodes/sim_cell.py) and the in-process real-time evaluation
(eval/realtime.py): with the world held (`PickIntoSinkEnv.exclusive`; lock order world, servo
loop, SafeArm), the arm holds, the world is reset (`env.reset`: objects placed by the seed, the
target and the instruction drawn by it unless given), an arm that SafeArm had halted is re-armed
(the world is new, so is its arm) and the driver re-anchors at the measured pose, ignoring
action chunks stamped before the reset.
"""
from __future__ import annotations

from typing import Callable


def reset_cell_episode(env, driver, *, seed: int, object_name: str | None, instruction: str | None,
                       now_s: Callable[[], float], perturbation=None):
    """Reset `env` (a `sim.pick_into_sink.PickIntoSinkEnv` stepped in real time) driven by
    `driver` (a `robot.arm_driver.ArmDriver`; the `ur3_driver` node's is its `core`).

    now_s: the clock of the action chunks' stamps (ROS clock in the graph, the simulation clock
    in one process); chunks stamped before the reset are ignored. perturbation: an OOD
    condition (`sim.perturbations.Perturbation`) applied to the seed's scene; None = nominal.
    Returns (EpisodeInfo, reset stamp s, the halt reason re-armed or ""). Raises ValueError from
    `env.reset` (unknown object, negative seed, blank instruction).
    """
    if object_name and object_name not in env.object_specs:  # refused before the arm is held
        raise ValueError(f"unknown object {object_name!r}; this cell has {list(env.object_specs)}")

    def reset_world():
        driver.hold()
        info = env.reset(seed=seed, object_name=object_name or None, instruction=instruction, perturbation=perturbation)
        rearmed = driver.safe.halt_reason if driver.safe.halted else ""
        if rearmed:  # a new world: its arm starts without the old protective stop
            driver.rearm(now_s())
        reset_stamp_s = now_s()
        driver.reanchor(min_chunk_stamp_s=reset_stamp_s)
        return info, reset_stamp_s, rearmed

    return env.exclusive(reset_world)
