"""CLI of the loopback UR controller: `python -m dynaflip_ros.sim.ur_loopback` or the
`dynaflip ur-loopback` verb (module `dynaflip_ros.sim.ur_loopback.cli`, `register(subparsers)`).
Serves until Ctrl-C, logging a status line periodically. Imports only the standard library at
module level (the controller, process.py, is imported in `run`)."""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from dynaflip_ros.cli import exit_codes_epilog

EPILOG = """example:
  python -m dynaflip_ros.sim.ur_loopback --robot-ip 127.0.0.1 --ur-version 5.11.1.108318
  dynaflip ur-loopback --robot-ip 127.0.0.2 --ur-version 3.15.7.106331 --kinematic
  then point ur_rtde (or the ROS driver, ur3_driver.ur_rtde.robot_ip:=127.0.0.1) at 127.0.0.1.
  Ports: 29999 dashboard, 30003 script, 30004 RTDE, 63352 Robotiq URCap socket.
  A status line is logged every --status-period-s seconds.

""" + exit_codes_epilog()


def parse_version(text: str) -> tuple[int, int, int, int]:
    parts = text.split(".")
    if len(parts) != 4 or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"expected MAJOR.MINOR.BUGFIX.BUILD, got {text!r}")
    return tuple(int(p) for p in parts)  # type: ignore[return-value]


DESCRIPTION = ("Loopback UR3 controller (URSim substitute, no Docker) for the real ur_rtde client, "
               "backed by the MuJoCo UR3 cell; serves dashboard, script, RTDE and Robotiq ports "
               "on one loopback address until Ctrl-C.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The controller options (shared by `python -m` and the `dynaflip ur-loopback` verb)."""
    p.add_argument("--robot-ip", default="127.0.0.1",
                   help="the controller's address: an IPv4 loopback address to bind (127.x.y.z)")
    p.add_argument("--ur-version", type=parse_version, default=(5, 11, 1, 108318),
                   help="controller version answered to clients; 5.x = e-Series 500 Hz, 3.x = CB3 125 Hz")
    p.add_argument("--q0", type=float, nargs=6, default=None, metavar="RAD",
                   help="initial joint angles (rad); default: the sim cell's home pose")
    p.add_argument("--no-gripper", action="store_true", help="do not serve the Robotiq socket (63352)")
    p.add_argument("--kinematic", action="store_true", help="kinematic arm instead of MuJoCo physics")
    p.add_argument("--unlock-delay-s", type=float, default=5.0,
                   help="refuse 'unlock protective stop' this long after the stop (a real UR: 5 s)")
    p.add_argument("--status-period-s", type=float, default=10.0, help="status log period (s)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every controller event")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dynaflip_ros.sim.ur_loopback", description=DESCRIPTION,
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    return p


def register(subparsers) -> None:
    """Add the `ur-loopback` verb to the `dynaflip` CLI (dynaflip_ros/cli.py VERBS)."""
    p = subparsers.add_parser("ur-loopback", help="serve a loopback UR3 controller for ur_rtde (no Docker)",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C; 2 on a start failure (bad argument, port in use)."""
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(message)s")
    from dynaflip_ros.sim.ur_loopback.process import LoopbackURController

    try:
        ctrl = LoopbackURController(
            host=args.robot_ip, ur_version=args.ur_version, q0=args.q0,
            with_gripper=not args.no_gripper, physics=not args.kinematic,
            protective_stop_unlock_delay_s=args.unlock_delay_s,
            log_level=logging.INFO if args.verbose else logging.WARNING)
        ctrl.start()
    except (ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    v = ".".join(str(x) for x in args.ur_version)
    print(f"loopback UR {v} ({ctrl.rate_hz:.0f} Hz, {'physics' if not args.kinematic else 'kinematic'}) "
          f"serving on {args.robot_ip}: {ctrl.info['ports']}; Ctrl-C to stop", flush=True)
    # Ctrl-C / SIGTERM only set a flag: a KeyboardInterrupt raised inside snapshot() would cut a
    # request / reply exchange with the controller process in half, and stop() would then wait on
    # a reply that never comes.
    stop_requested = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda _signum, _frame: stop_requested.set())
    try:
        while ctrl.running and not stop_requested.wait(args.status_period_s):
            s = ctrl.snapshot()
            st = s["stats"]
            print(f"t={s['controller_time_s']:.1f}s robot_mode={s['robot_mode']} "
                  f"safety_mode={s['safety_mode']} runtime_state={s['runtime_state']} "
                  f"q={[round(x, 3) for x in s['actual_q']]} servoJ={s['n_servoj']} "
                  f"streams={st['streaming']} sent={st['sent_packages']} "
                  f"cpu={st['cpu_fraction'] * 100:.0f}% anomalies={len(s['errors'])}", flush=True)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)   # a second Ctrl-C must not skip the cleanup
        ctrl.stop()
        print("stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))
