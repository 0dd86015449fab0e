"""Tracking error and servo jitter of the real-arm driver following a policy's action chunks over RTDE.

The shipped encoder + policy run one closed-loop episode in the lock-step simulated cell; the
action chunks they emitted are replayed at their original times through the production driver
path (interpolator -> ServoLoop thread -> SafeArm -> URRtdeArm -> real ur_rtde 1.6.5 client) into
the loopback UR controller (MuJoCo UR3 in its own process), once per controller generation, in
one run (dynaflip_ros/eval/rtde_tracking.py explains the figures).

    .venv/bin/python benchmarks/bench_rtde_tracking.py
    .venv/bin/python benchmarks/bench_rtde_tracking.py --seed 100003 --latency-ms 80 --out outputs/rtde_tracking.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", default="models/encoder")
    p.add_argument("--policy", default="models/policy")
    p.add_argument("--seed", type=int, default=100_000, help="sim episode seed (held out from the demos)")
    p.add_argument("--latency-ms", type=float, default=50.0, help="observation -> chunk arrival delay (default 50)")
    p.add_argument("--ur-types", nargs="+", default=["e-series", "cb3"], choices=["e-series", "cb3"])
    p.add_argument("--leads-ms", nargs="+", type=float, default=[0.0, 100.0],
                   help="servo-loop command lead(s) to compare (default 0 and 100 ms = servoj lookahead)")
    p.add_argument("--robot-ip", default="127.0.3.1", help="address of the first loopback controller")
    p.add_argument("--rt-priority", type=int, default=0,
                   help="SCHED_FIFO priority of the servo loop + RTDE worker (0 = normal; needs root/CAP_SYS_NICE)")
    p.add_argument("--out", default="", help="also write the reports as JSON")
    args = p.parse_args(argv)

    from dynaflip_ros.eval.fault_inject import loopback_host
    from dynaflip_ros.eval.rtde_tracking import record_policy_chunks, replay_on_loopback

    print(f"recording the policy's chunks in sim (seed {args.seed}) ...", flush=True)
    trace = record_policy_chunks(args.encoder, args.policy, seed=args.seed)
    print(f"  {len(trace.chunks)} chunks, episode {'succeeded' if trace.success else 'failed'}", flush=True)
    reports = []
    i = 0
    for ur_type in args.ur_types:
        for lead_ms in args.leads_ms:
            host = loopback_host(args.robot_ip, i)
            i += 1
            print(f"replaying on the loopback {ur_type} controller at {host} (command lead {lead_ms:g} ms) ...", flush=True)
            rep = replay_on_loopback(trace, ur_type=ur_type, host=host, latency_s=args.latency_ms / 1e3,
                                     command_lead_s=lead_ms / 1e3, rt_priority=args.rt_priority)
            print("\n".join(rep.lines()), flush=True)
            events = [e for e in rep.extra["controller_events"] if "started" not in e]
            if events:
                print(f"  controller events: {events}", flush=True)
            reports.append(rep.to_dict())
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(reports, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
