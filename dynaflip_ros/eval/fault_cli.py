"""`dynaflip fault-inject`: the fault-injection suite (sim arm, and the loopback RTDE controller).

Command-line adapter of `eval.fault_scenarios` (the registry of scenarios) and `eval.fault_rtde`;
module level imports only argparse and `dynaflip_ros.cli`.
"""
from __future__ import annotations

import argparse

from dynaflip_ros.cli import exit_codes_epilog

EPILOG = """examples:
  dynaflip fault-inject                       # every scenario: sim arm + loopback RTDE controller
  dynaflip fault-inject --target sim          # MuJoCo arm only (lock-step, ~10 s)
  dynaflip fault-inject --target rtde --ur-type cb3 --out outputs/fault_inject.json
  dynaflip fault-inject --scenarios fuzz,protective_stop
  dynaflip fault-inject --target sim --scenarios moved_outside,failed_arming,declared_dt,bad_input
  dynaflip fault-inject --target rtde --rt-priority 50   # on the robot PC, SCHED_FIFO as deployed

Prints one line per figure, e.g.
  [ok  ]  sim  limit violations: 0 / 10000 commands (...)   (bound: 0)
  [ok  ] rtde  stale-command stop: 57 ms (p99 of 20 ...)    (bound: <= 100 ms)
Every command goes through SafeArm (and the ServoLoop where timing matters); the figures are
measured at the arm (an ArmTap in front of the MuJoCo arm; the loopback controller's own trace
of what ur_rtde delivered). "rtde" runs the real ur_rtde client against
`python -m dynaflip_ros.sim.ur_loopback`-style controllers on private loopback IPs (127.0.0.x).
""" + exit_codes_epilog("a figure missed its bound")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "fault-inject", help="run the fault-injection suite and check every figure against its bound",
        description=__doc__.splitlines()[0], epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--target", choices=["all", "sim", "rtde"], default="all",
                   help="sim arm, loopback RTDE controller, or both (default all; rtde is skipped with a "
                        "note when ur_rtde is not installed)")
    p.add_argument("--scenarios", default="",
                   help="comma-separated subset (default: all of the target's scenarios)")
    p.add_argument("--commands", type=int, default=10_000, help="fuzzed commands per target (default 10000)")
    p.add_argument("--safety-config", default="", help="SafetyConfig YAML (default: config/safety.yaml values)")
    robot = p.add_argument_group("robot (rtde target: loopback controllers)")
    robot.add_argument("--ur-type", choices=["cb3", "e-series"], default="e-series",
                       help="controller generation of the loopback controller (125 / 500 Hz; default e-series)")
    robot.add_argument("--robot-ip", default="127.0.2.41",
                       help="address of the first loopback controller; scenario i uses the i-th next one "
                            "(default 127.0.2.41)")
    robot.add_argument("--rt-priority", type=int, default=0,
                       help="SCHED_FIFO priority of the servo thread and RTDE worker in the rtde scenarios, as "
                            "config/real_cell.yaml sets on the robot PC (default 0: normal scheduling; needs "
                            "CAP_SYS_NICE)")
    output = p.add_argument_group("output")
    output.add_argument("--out", default="", help="also write the figures as JSON here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import logging
    import time
    from pathlib import Path

    from dynaflip_ros.configs.safety import SafetyConfig
    from dynaflip_ros.errors import UserError
    from dynaflip_ros.eval import fault_scenarios as fs
    from dynaflip_ros.eval.fault_bench import Figure
    from dynaflip_ros.eval.fault_rtde import loopback_host, rtde_unavailable_reason

    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    if args.commands < 1:
        raise UserError("--commands must be >= 1")
    safety = SafetyConfig()
    if args.safety_config:
        from dynaflip_ros.configs.io import load_yaml

        safety = load_yaml(SafetyConfig, args.safety_config)
    wanted = [s for s in args.scenarios.split(",") if s]
    plans: list[tuple[str, dict]] = []
    if args.target in ("all", "sim"):
        plans.append(("sim", fs.SIM_SCENARIOS))
    if args.target in ("all", "rtde"):
        reason = rtde_unavailable_reason()
        if reason:
            print(f"[skip] rtde  loopback RTDE scenarios not run: {reason}")
            if args.target == "rtde":
                return 1
        else:
            try:
                loopback_host(args.robot_ip, 0)
            except ValueError as e:
                raise UserError(f"--robot-ip: {e}") from e
            plans.append(("rtde", fs.RTDE_SCENARIOS))
    known = {name for _, scen in plans for name in scen}
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise UserError(f"unknown scenario(s) {unknown}; known: {sorted(known)}")
    figures = []
    t0 = time.monotonic()
    for target, scenarios in plans:
        for name, fn in scenarios.items():
            if wanted and name not in wanted:
                continue
            kwargs: dict = {"safety": safety}
            if name == "fuzz":
                kwargs["n_commands"] = args.commands
            if target == "rtde":
                kwargs.update(ur_type=args.ur_type, host=loopback_host(args.robot_ip, len(figures)),
                              rt_priority=args.rt_priority)
            print(f"--- {target}: {name} ...", flush=True)
            t_s = time.monotonic()
            try:
                got = fn(**kwargs)
            except Exception as e:  # noqa: BLE001 - a crashed scenario is a failed figure, not a crash
                got = [Figure(target, name, float("nan"), f"scenario crashed: {type(e).__name__}: {e}",
                              "runs", False)]
            for f in got:
                print(f.line(), flush=True)
            print(f"    ({time.monotonic() - t_s:.1f} s)", flush=True)
            figures.extend(got)
    n_fail = sum(not f.ok for f in figures)
    print(f"{len(figures) - n_fail}/{len(figures)} figures within bounds ({time.monotonic() - t0:.0f} s)")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps([f.__dict__ for f in figures], indent=2, default=str))
    return 1 if n_fail else 0
