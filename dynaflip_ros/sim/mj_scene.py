"""`MjScene`: what the simulated camera and arm need from the world they live in.

A structural type (`typing.Protocol`), so `sim/camera.py` and `sim/arm.py` depend on the MuJoCo
model/data they are given, not on the env module that owns them (`sim.pick_into_sink`
satisfies it; so does any object with these four attributes).

Thread rule: every read or write of `model` / `data` happens under `lock` (an `RLock`: physics
stepping, rendering and arm I/O share it).
"""
from __future__ import annotations

import threading
from typing import Any, Protocol

from dynaflip_ros.configs.sim import SimConfig


class MjScene(Protocol):
    """model: `mujoco.MjModel`; data: `mujoco.MjData`; lock: guards both; config: the `SimConfig`
    the model was built from (image size, camera clip planes, home pose)."""

    model: Any
    data: Any
    lock: threading.RLock
    config: SimConfig
