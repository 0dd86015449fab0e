"""The fault-injection suite behind `dynaflip fault-inject` (issue 3, item 6): its public names.

Every scenario drives an arm through the production safety path (SafeArm, and the ServoLoop
where the scenario is about timing) and measures what reached **the arm**, not what our code
intended: an `ArmTap` between SafeArm and the arm records every forwarded command, and against
the loopback RTDE controller the controller's own trace (what ur_rtde actually sent, what the
simulated joints did) is the ground truth.

Layout (one concept per module):
- `eval.fault_bench`: `Figure`, `ArmTap`, `SimBench` / `Bench`, `fuzz_command`, `limit_violations`;
- `eval.fault_sim`: the scenarios on the MuJoCo UR3 of `sim.pick_into_sink.PickIntoSinkEnv`
  in lock-step simulation time (target "sim", deterministic), the issue-8 holes included;
- `eval.fault_rtde`: the scenarios with the real ur_rtde 1.6.5 client
  (`robot.ur_rtde_arm.URRtdeArm`, worker process) against
  `sim.ur_loopback.LoopbackURController`, in real time at the controller rate (target "rtde");
- `eval.fault_scenarios`: the registry (name -> scenario) the CLI (`eval.fault_cli`) runs.

Each scenario returns `Figure`s: one line each, e.g. `limit violations: 0 / 10000 commands`,
`stale-command stop: 38 ms (p99)`, with a bound; the CLI exits non-zero when any figure misses
its bound. This module only re-exports those names (no definitions).
"""
from __future__ import annotations

from dynaflip_ros.eval.fault_bench import (
    FUZZ_KINDS,
    FUZZ_PROBS,
    Q_UP,
    ArmTap,
    Bench,
    Figure,
    SimBench,
    fuzz_command,
    limit_violations,
    p99,
)
from dynaflip_ros.eval.fault_rtde import (
    LOOPBACK_VERSIONS,
    RtdeBench,
    loopback_host,
    rtde_fuzz,
    rtde_protective_stop,
    rtde_silent_peer,
    rtde_speed_slider,
    rtde_stale_command,
    rtde_unavailable_reason,
)
from dynaflip_ros.eval.fault_sim import (
    sim_fuzz,
    sim_protective_stop,
    sim_stale_command,
)

__all__ = [
    "FUZZ_KINDS", "FUZZ_PROBS", "Q_UP", "ArmTap", "Bench", "Figure", "SimBench", "fuzz_command", "limit_violations",
    "p99", "LOOPBACK_VERSIONS", "RtdeBench", "loopback_host", "rtde_fuzz", "rtde_protective_stop", "rtde_silent_peer",
    "rtde_speed_slider", "rtde_stale_command", "rtde_unavailable_reason", "sim_fuzz", "sim_protective_stop",
    "sim_stale_command",
]
