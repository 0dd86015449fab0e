"""Is the real arm's servo stream starved when the driver process is busy? Servo loop in the node
process (the direct layout) vs in the RTDE worker process (`servo_in_worker`, the default).

Both layouts run the production driver path, `robot.arm_driver.ArmDriver` as the ur3_driver
node builds it, against the loopback UR controller (the real ur_rtde 1.6.5 client talks to a
MuJoCo UR3 in its own process): the same stream of action chunks (a new 1.6 s chunk every 0.2 s,
as the policy replans, each a smooth joint-space trajectory) for `--duration-s` seconds, while
this process is made busy the way a node process is: `--gil-hog-ms` > 0 starts a thread that
JSON-encodes a large status-like object over and over (the C encoder holds the GIL for each
whole call, about that many ms, as rclpy callbacks and message conversions do), and
`--cpu-load N` occupies N cores with busy processes (`eval.cpu_load.CpuLoad`).

Measured at the controller (its per-cycle trace on the host clock), per condition: the gaps
between consecutive fresh servoJ targets (p50 / p99 / max, ms; nominal = one controller period)
and the share of controller cycles within the streaming span that received a fresh target; from
the driver: servo-loop overruns and jitter p99, SafeArm watchdog stops, the worker's
stale-command stops. The ratio of the layouts' max gaps is printed per condition (one run).

    .venv/bin/python benchmarks/bench_servo_layout.py
    .venv/bin/python benchmarks/bench_servo_layout.py --ur-type cb3 --gil-hog-ms 40 --cpu-load 1 --out outputs/bench/servo_layout.json
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np


def _gil_hog(stop: threading.Event, hog_ms: float) -> None:
    """JSON-encode an object sized so that one call takes about hog_ms (holding the GIL), forever."""
    blob = [{"k": i, "v": [float(i)] * 8, "s": "status"} for i in range(1000)]
    t0 = time.perf_counter()
    json.dumps(blob)
    per_call_s = max(time.perf_counter() - t0, 1e-5)
    blob = blob * max(1, int(round(hog_ms / 1e3 / per_call_s)))
    while not stop.is_set():
        json.dumps(blob)


def _chunk(t_start_s: float, q0: np.ndarray, phase_s: float) -> tuple[np.ndarray, np.ndarray]:
    """A 1.6 s chunk of 16 actions (0.1 s apart) from t_start_s: joints 0-2 on slow sines around q0."""
    t = t_start_s + 0.1 * np.arange(16)
    tt = t - phase_s
    q = np.tile(q0, (16, 1))
    q[:, 0] += 0.15 * np.sin(2 * np.pi * 0.25 * tt)
    q[:, 1] += 0.08 * np.sin(2 * np.pi * 0.2 * tt)
    q[:, 2] += 0.08 * np.sin(2 * np.pi * 0.3 * tt)
    return t, np.concatenate([q, np.zeros((16, 1))], axis=1)


def run_condition(layout: str, ur_type: str, host: str, duration_s: float, hog_ms: float) -> dict:
    """One layout under one load: stream chunks for duration_s, return the figures (module doc)."""
    from dynaflip_ros.configs.ros import Ur3DriverNodeConfig
    from dynaflip_ros.eval.fault_rtde import LOOPBACK_VERSIONS
    from dynaflip_ros.robot.arm_driver import ArmDriver
    from dynaflip_ros.robot.ur_rtde_arm import URRtdeArm
    from dynaflip_ros.robot.ur_rtde_servo import WorkerServoCore
    from dynaflip_ros.sim.ur_loopback import LoopbackURController

    ctrl = LoopbackURController(host=host, ur_version=LOOPBACK_VERSIONS[ur_type], with_gripper=False)
    ctrl.start(timeout_s=30.0)
    rate_hz = 500.0 if ur_type == "e-series" else 125.0
    cfg = Ur3DriverNodeConfig(backend="ur_rtde", servo_rate_hz=rate_hz, servo_in_worker=layout == "worker",
                              ur_rtde={"robot_ip": host, "ur_type": ur_type, "gripper": "none"})
    driver = None
    stop = threading.Event()
    hog = None
    try:
        if cfg.servo_in_worker:
            servo = WorkerServoCore(cfg)
            driver = ArmDriver(servo.arm, cfg, servo.clock, servo=servo)
        else:
            arm = URRtdeArm(cfg.ur_rtde)
            arm.connect()
            driver = ArmDriver(arm, cfg, time.monotonic)
            driver.start_servo_thread()
        if hog_ms > 0:
            hog = threading.Thread(target=_gil_hog, args=(stop, hog_ms), daemon=True)
            hog.start()
        q0 = np.asarray(driver.safe.state().q)
        watchdog0 = driver.safe.stats.watchdog_stops
        ctrl.trace(clear=True)
        t0 = time.monotonic()
        t_next = t0
        while t_next < t0 + duration_s:
            delay = t_next - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            now_clock = driver.clock()
            times, targets = _chunk(now_clock, q0, t0)
            driver.queue_chunk(now_clock, times, targets, now_clock, now_clock)  # ROS clock = loop clock here
            t_next += 0.2
        t_end = time.monotonic()
        status = driver.status()
        watchdog_stops = driver.safe.stats.watchdog_stops - watchdog0
        counters = driver.safe.state().extra["counters"]
        trace = ctrl.trace(clear=True)
    finally:
        stop.set()
        if hog is not None:
            hog.join(5.0)
        if driver is not None:
            driver.close()
        ctrl.stop()
    host_s, cq = trace["host_monotonic_s"], trace["commanded_q"]
    fresh = np.r_[False, np.any(np.diff(np.nan_to_num(cq, nan=1e9), axis=0) != 0, axis=1)]
    in_span = (host_s >= t0 + 0.3) & (host_s <= t_end)  # after the first chunk is being followed
    t_fresh = host_s[fresh & in_span]
    gaps_ms = np.diff(t_fresh) * 1e3 if t_fresh.size > 1 else np.array([np.inf])
    servo = status["servo"]
    return {
        "layout": layout, "ur_type": ur_type, "rate_hz": rate_hz, "gil_hog_ms": hog_ms, "duration_s": duration_s,
        "gap_p50_ms": float(np.percentile(gaps_ms, 50)), "gap_p99_ms": float(np.percentile(gaps_ms, 99)),
        "gap_max_ms": float(gaps_ms.max()), "fresh_cycle_fraction": float(fresh[in_span].mean()) if in_span.any() else 0.0,
        "loop_overruns": int(servo["overruns"]), "loop_jitter_p99_ms": float(servo["jitter_p99_ms"]),
        "loop_jitter_max_ms": float(servo["jitter_max_ms"]), "watchdog_stops": int(watchdog_stops),
        "worker_stale_stops": int(counters["stale_stops"]), "safety_rejections": int(servo["safety_rejections"]),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ur-type", default="e-series", choices=["e-series", "cb3"])
    p.add_argument("--duration-s", type=float, default=10.0, help="streaming time per condition (default 10)")
    p.add_argument("--gil-hog-ms", nargs="+", type=float, default=[0.0, 40.0],
                   help="GIL-holding call length(s) of the busy thread in the driver process; 0 = none (default 0 40)")
    p.add_argument("--cpu-load", type=int, default=0, help="busy processes occupying cores during all conditions")
    p.add_argument("--robot-ip", default="127.0.3.41", help="address of the first loopback controller")
    p.add_argument("--out", default="", help="also write the figures as JSON")
    args = p.parse_args(argv)

    from dynaflip_ros.eval.cpu_load import CpuLoad
    from dynaflip_ros.eval.fault_rtde import loopback_host, rtde_unavailable_reason

    reason = rtde_unavailable_reason()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    rows = []
    i = 0
    with CpuLoad(args.cpu_load):
        for hog_ms in args.gil_hog_ms:
            for layout in ("node", "worker"):
                host = loopback_host(args.robot_ip, i)
                i += 1
                print(f"[{layout} layout, GIL hog {hog_ms:g} ms, cpu load {args.cpu_load}] streaming "
                      f"{args.duration_s:g} s on {host} ...", flush=True)
                rows.append(run_condition(layout, args.ur_type, host, args.duration_s, hog_ms))
                r = rows[-1]
                print(f"  servoJ gaps at the controller p50/p99/max {r['gap_p50_ms']:.1f}/{r['gap_p99_ms']:.1f}/"
                      f"{r['gap_max_ms']:.1f} ms, fresh cycles {100 * r['fresh_cycle_fraction']:.1f} %, loop overruns "
                      f"{r['loop_overruns']}, jitter p99/max {r['loop_jitter_p99_ms']:.2f}/{r['loop_jitter_max_ms']:.1f} ms, "
                      f"watchdog stops {r['watchdog_stops']}, worker stale stops {r['worker_stale_stops']}", flush=True)
            node, worker = rows[-2], rows[-1]
            print(f"  GIL hog {hog_ms:g} ms: max servoJ gap node / worker = "
                  f"{node['gap_max_ms'] / max(worker['gap_max_ms'], 1e-9):.2f}", flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"cpu_load": args.cpu_load, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
