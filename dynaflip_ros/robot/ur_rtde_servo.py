"""`WorkerServoCore`: the node-side handle of the servo core that runs inside the RTDE worker process.

On the real arm the `ur3_driver` node process also runs rclpy's executor threads (chunk
decoding, /joint_states, status JSON, services); any of them holding the GIL delays a Python
servo thread in the same process (benchmarks/bench_rtde_tracking.py measured 65-80 ms stalls).
With `Ur3DriverNodeConfig.servo_in_worker` (the default) the interpolator, the ServoLoop thread
and SafeArm live in the RTDE worker instead (`robot.ur_rtde_worker`, `robot.servo_core.ServoCore`
over `robot.ur_rtde_worker_arm.WorkerArm`), where they share a GIL only with the worker's pipe
and state threads. This class gives `robot.arm_driver.ArmDriver` the `ServoCore` API over the
worker's pipe; `state()` reads the shared-memory state without a round trip.

Clock: the worker's servo loop runs on `time.monotonic()` (CLOCK_MONOTONIC, one clock for all
processes of the machine), so chunk times computed in the node are valid in the worker.

When the worker has died (the controller's RTDE watchdog has then stopped the arm): `halted`
is True with the reason, `status()` says so, `add_chunk` raises ArmError, `hold` has nothing
to hold, and
`ArmDriver.rearm` reconnects (a new worker with a new servo core, anchored at the measured pose).
"""
from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from dynaflip_ros.configs.ros import Ur3DriverNodeConfig
from dynaflip_ros.robot.arm import ArmError, ArmState
from dynaflip_ros.robot.safety import SafetyStats
from dynaflip_ros.robot.ur_rtde_arm import URRtdeArm

log = logging.getLogger(__name__)


class WorkerSafeView:
    """Read-only view of the worker's SafeArm with the attributes the driver node and the tests
    read: `state()`, `halted`, `halt_reason`, `stats` (`SafetyStats`)."""

    def __init__(self, core: "WorkerServoCore") -> None:
        self._core = core

    def state(self) -> ArmState:
        return self._core.state()

    @property
    def halted(self) -> bool:
        return self._core.halted

    @property
    def halt_reason(self) -> str:
        return self._core.halt_reason

    @property
    def stats(self) -> SafetyStats:
        """SafeArm's counters in the worker. Raises ArmError when the worker is gone."""
        return SafetyStats(**self._core.arm.servo_call("status")["safety"])


class WorkerServoCore:
    """Connects the real arm with the servo core in its RTDE worker (`ServoCore` API).

    Args:
        config: the driver's settings (`configs.ros.Ur3DriverNodeConfig`, backend "ur_rtde";
            `ur_rtde` holds the connection settings).
    Attributes: `arm` (the `URRtdeArm`), `safe` (`WorkerSafeView`), `clock` (time.monotonic);
    `loop`, `interp`, `action_age` are None (they live in the worker).
    Raises ArmError from connecting (the worker reports why its servo core did not start).
    """

    loop = interp = action_age = None

    def __init__(self, config: Ur3DriverNodeConfig) -> None:
        if config.backend != "ur_rtde":
            raise ValueError(f"WorkerServoCore needs backend 'ur_rtde', got {config.backend!r}")
        self.config = config
        self.clock = time.monotonic
        self.arm = URRtdeArm(config.ur_rtde, servo=config)
        self.arm.connect()
        self.safe = WorkerSafeView(self)

    def _dead_reason(self) -> str:
        if self.arm.connected:
            return ""
        return "RTDE worker not running (died or disconnected); call /ur3_driver/rearm to reconnect"

    def add_chunk(self, times_s: np.ndarray, targets: np.ndarray, stamp_s: float) -> bool:
        """`ServoCore.add_chunk` in the worker (times on time.monotonic). Raises ArmError."""
        return bool(self.arm.servo_call("add_chunk", np.asarray(times_s, dtype=float),
                                        np.asarray(targets, dtype=float), float(stamp_s)))

    def hold(self) -> None:
        """`ServoCore.hold` in the worker. Without a worker there is nothing to hold (the
        controller's RTDE watchdog stopped the arm when it died). Raises ArmError when a
        running worker does not answer."""
        if not self.arm.connected:
            log.warning("hold: %s", self._dead_reason())
            return
        self.arm.servo_call("hold")

    def rearm(self) -> None:
        """`ServoCore.rearm` in the worker (after `URRtdeArm.rearm` cleared the controller's stop).
        Raises ArmError with the worker's reason when SafeArm refuses."""
        self.arm.servo_call("rearm")

    def halt_state(self) -> tuple[bool, str]:
        """(halted, halt_reason); a missing or unanswering worker counts as halted."""
        dead = self._dead_reason()
        if dead:
            return True, dead
        try:
            halted, reason = self.arm.servo_call("halt_state")
        except ArmError as e:
            return True, str(e)
        return bool(halted), str(reason)

    @property
    def halted(self) -> bool:
        return self.halt_state()[0]

    @property
    def halt_reason(self) -> str:
        return self.halt_state()[1]

    def state(self) -> ArmState:
        """The latest RTDE sample from shared memory. Raises ArmError when stale or disconnected."""
        return self.arm.state()

    def status(self) -> dict:
        """`ServoCore.status` of the worker's core (key "servo_in_worker": True); when the worker
        is gone: halted with the reason and no counters."""
        try:
            st: dict[str, Any] = self.arm.servo_call("status")
        except ArmError as e:
            return {"servo_in_worker": True, "halted": True, "halt_reason": str(e)}
        return {**st, "servo_in_worker": True}

    def start(self, rt_priority: int = 0) -> None:
        """Nothing to start: the worker started its servo thread (at `ur_rtde.rt_priority`) when it connected."""

    def close(self) -> None:
        """Stop the worker's servo loop and the arm (servoStop), then disconnect (idempotent)."""
        self.arm.disconnect()
