"""What the ROS 2 graph adds to camera-to-command latency: the same frames through the encoder and
policy nodes vs through the same models in one process, measured in one run.

Frames: `--frames` images rendered by the sim cell (the initial scenes of seeds 100000+, 224 x 224),
each with the instruction of its scene. Both paths sample a new action chunk for every frame
(the policy's replan every action, `n_action_steps` 1) with the same models, threads and samples
per chunk, and both clocks start when the frame is handed over (capture excluded):

- in process: `encoder.embed` + `policy.predict_action_chunk`, timed with perf_counter;
- graph: this process publishes the frame on /camera/color/image_raw (header stamp = now), with
  /joint_states at 125 Hz and a running /episode/status, to encoder_node + policy_node started as
  `dynaflip launch` starts them (`--combined-inference`: policy_node alone, the encoder inside
  it); the latency is the ROS time the action chunk arrives here minus its header stamp (the
  frame's). One frame at a time: the next is published when the chunk of the previous one has
  arrived (or after 2 s), so no frame waits behind another.

Prints p50 / p95 per path, graph - in-process (the overhead) and graph / in-process, and writes
them as JSON with --out. `--cpu-load N` runs N busy processes during both paths.

    .venv/bin/python benchmarks/bench_ros_overhead.py --frames 100
    .venv/bin/python benchmarks/bench_ros_overhead.py --frames 100 --cpu-load 1 --combined-inference
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def render_frames(n: int, seed: int = 100_000) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """(rgb (224, 224, 3) uint8, state (7,) float32, instruction) of the initial scenes of seeds seed.."""
    from dynaflip_ros.configs.sim import SimConfig
    from dynaflip_ros.sim.pick_into_sink import PickIntoSinkEnv

    env = PickIntoSinkEnv(SimConfig())
    env.arm.connect()
    try:
        out = []
        for i in range(n):
            info = env.reset(seed=seed + i)
            st = env.arm.state()
            out.append((env.camera.read().rgb, np.concatenate([st.q, [st.gripper]]).astype(np.float32),
                        info.instruction))
        return out
    finally:
        env.close()


class InProcess:
    """The same models in this process; `measure(i, frame)` -> (total, encode, policy) ms of frame i."""

    def __init__(self, encoder_dir: str, policy_dir: str, threads: int, samples: int) -> None:
        from dynaflip_ros.eval.closed_loop import load_encoder_and_policy
        from dynaflip_ros.policies.base import warm_up

        self.encoder, self.policy = load_encoder_and_policy(encoder_dir, policy_dir, threads=threads,
                                                            samples_per_chunk=samples)
        warm_up(self.policy)

    def measure(self, i: int, frame: tuple[np.ndarray, np.ndarray, str]) -> tuple[float, float, float]:
        from dynaflip_ros.policies.base import PolicyObservation

        rgb, state, instruction = frame
        self.policy.reset()
        t0 = time.perf_counter()
        emb = self.encoder.embed(rgb[None])[0]
        t1 = time.perf_counter()
        self.policy.predict_action_chunk(PolicyObservation(embedding=emb, state=state, stamp_s=0.1 * i,
                                                           instruction=instruction))
        t2 = time.perf_counter()
        return 1e3 * (t2 - t0), 1e3 * (t1 - t0), 1e3 * (t2 - t1)


def graph_ms(frames, encoder_dir: str, policy_dir: str, threads: int, samples: int,
             combined: bool, local: InProcess) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Each frame in process (`local`, with this process's ROS threads quiet) and then through the
    graph, alternately, so both paths see the same machine state. Returns (graph, in process).

    In process: {"total", "encode", "policy"}, (n,) ms. Graph: {"frame": the index of each frame
    whose chunk came back, "total": (n,) ms from publishing the frame to receiving its chunk through
    the nodes, and that time split into consecutive parts from the nodes' own /dynaflip/latency reports (NaN where a
    report did not arrive): "image_transport" (frame stamp -> the encoder's callback), "encode",
    "embedding_hop" (end of encode -> the policy's callback; in the combined layout the in-process
    hand-over), "policy" (inference), "chunk_return" (end of inference -> the chunk here: building
    and publishing the chunk, DDS, this process's callback)}."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String
    from trajectory_msgs.msg import JointTrajectory

    from dynaflip_ros import resources
    from dynaflip_ros.episodes.protocol import EpisodeStatus
    from dynaflip_ros.ros import bringup, conversions as cv
    from dynaflip_ros.ros.launch_args import graph_overrides, read_params_file, write_overrides_file
    from dynaflip_ros.ros.qos import (
        ACTION_CHUNK_TOPIC, COMMAND_QOS, EPISODE_STATUS_TOPIC, EVENT_QOS, IMAGE_QOS, IMAGE_TOPIC, INSTRUCTION_TOPIC,
        JOINT_STATES_TOPIC, LATCHED_QOS, LATENCY_TOPIC, POLICY_INFO_TOPIC, STATE_QOS,
    )
    from dynaflip_ros.ros.runtime import from_json_msg, ros_now_s

    params = resources.params_file("pick_into_sink")
    ov = graph_overrides(read_params_file(params), use_sim=True, results_path="", encoder=encoder_dir,
                         backend="onnxruntime", policy=policy_dir, combined_inference=combined)
    ov.pop("episode_manager", None)
    ov.setdefault("encoder", {})["num_threads"] = threads
    ov["policy"].update(num_threads=threads, samples_per_chunk=samples, n_action_steps=1)
    if combined:
        ov["policy"]["encoder.num_threads"] = ov.pop("encoder")["num_threads"]
    overrides = write_overrides_file(ov)
    specs = [s for s in bringup.pick_into_sink_processes(True, combined_inference=combined)
             if s.executable in ("encoder_node", "policy_node")]
    env = dict(os.environ, PYTHONUNBUFFERED="1", ROS_DOMAIN_ID=str(os.getpid() % 100 + 100),
               ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    procs = [subprocess.Popen(bringup.node_command(s, [params, overrides]), env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True) for s in specs]
    os.environ["ROS_DOMAIN_ID"], os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = env["ROS_DOMAIN_ID"], "LOCALHOST"
    rclpy.init()
    node = rclpy.create_node("bench_ros_overhead")
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    spinner = threading.Thread(target=ex.spin, daemon=True)
    spinner.start()
    got, ready = threading.Event(), threading.Event()
    last = {}

    def on_chunk(msg) -> None:
        last["ms"] = 1e3 * (ros_now_s(node) - cv.stamp_to_s(msg.header.stamp))
        last["stamp"] = cv.stamp_to_s(msg.header.stamp)
        got.set()

    stages: dict[float, dict[str, float]] = {}  # frame stamp -> stage -> ms, from the nodes' own reports

    def on_latency(msg) -> None:
        rec = from_json_msg(msg)
        if "stamp_s" in rec:
            stages.setdefault(round(rec["stamp_s"], 6), {})[rec["stage"]] = rec["ms"]

    node.create_subscription(JointTrajectory, ACTION_CHUNK_TOPIC, on_chunk, COMMAND_QOS)
    node.create_subscription(String, LATENCY_TOPIC, on_latency, EVENT_QOS)
    node.create_subscription(String, POLICY_INFO_TOPIC, lambda m: from_json_msg(m).get("ready") and ready.set(),
                             LATCHED_QOS)
    img_pub = node.create_publisher(Image, IMAGE_TOPIC, IMAGE_QOS)
    js_pub = node.create_publisher(JointState, JOINT_STATES_TOPIC, STATE_QOS)
    status_pub = node.create_publisher(String, EPISODE_STATUS_TOPIC, EVENT_QOS)
    instr_pub = node.create_publisher(String, INSTRUCTION_TOPIC, LATCHED_QOS)
    state = {"q": frames[0][1]}
    stop, streaming = threading.Event(), threading.Event()

    def stream_joint_states() -> None:  # 125 Hz, as the driver publishes them; quiet while `local` runs
        while not stop.wait(0.008):
            if not streaming.is_set():
                continue
            js = JointState(name=list(cv.ACTION_JOINT_NAMES), position=[float(v) for v in state["q"]])
            js.header = cv.make_header(ros_now_s(node))
            js_pub.publish(js)

    streaming.set()
    threading.Thread(target=stream_joint_states, daemon=True).start()
    out, local_ms, frame_index = [], [], []
    try:
        deadline = time.monotonic() + 120.0
        while not ready.is_set():
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError("the nodes did not come up (policy_info ready) within 120 s")
            status_pub.publish(String(data=EpisodeStatus(source="ur3_driver", phase="running", episode=0,
                                                         reset_stamp_s=0.0).to_json()))
            time.sleep(0.2)
        for i, (rgb, q, instruction) in enumerate(frames):
            streaming.clear()
            time.sleep(0.02)
            local_ms.append(local.measure(i, (rgb, q, instruction)))
            streaming.set()
            state["q"] = q
            instr_pub.publish(String(data=instruction))
            status_pub.publish(String(data=EpisodeStatus(source="ur3_driver", phase="running", episode=0,
                                                         reset_stamp_s=0.0, instruction=instruction).to_json()))
            time.sleep(0.05)  # joint states of this frame's pose first
            got.clear()
            stamp = ros_now_s(node)
            img_pub.publish(cv.rgb_to_image(rgb, stamp, "camera_color_optical_frame"))
            if got.wait(2.0) and abs(last.get("stamp", -1.0) - stamp) < 1e-6:
                out.append((stamp, last["ms"]))
                frame_index.append(i)
            time.sleep(0.15)  # past the policy's replan rule for this chunk (and its latency reports)
    finally:
        stop.set()
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        ex.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown()
        overrides.unlink(missing_ok=True)
    ms = np.asarray(local_ms, dtype=float).reshape(-1, 3)
    return split_graph_latency(out, stages) | {"frame": np.asarray(frame_index, dtype=int)}, {"total": ms[:, 0], "encode": ms[:, 1], "policy": ms[:, 2]}


GRAPH_PARTS = ("image_transport", "encode", "embedding_hop", "policy", "chunk_return")


def split_graph_latency(out: list[tuple[float, float]], stages: dict[float, dict[str, float]]) -> dict[str, np.ndarray]:
    """(frame stamp s, total ms) per frame + the nodes' reports -> graph_ms's dict. The reports'
    "image_transport" and "embedding_transport" are ages since the frame stamp (ms), "encode" and
    "policy" durations."""
    def rep(name: str) -> np.ndarray:
        return np.asarray([stages.get(round(st, 6), {}).get(name, np.nan) for st, _ in out], dtype=float)

    total = np.asarray([ms for _, ms in out], dtype=float)
    image_age, encode, embedding_age, policy = (rep(n) for n in ("image_transport", "encode",
                                                                 "embedding_transport", "policy"))
    return {"total": total, "image_transport": image_age, "encode": encode,
            "embedding_hop": embedding_age - image_age - encode, "policy": policy,
            "chunk_return": total - embedding_age - policy}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", default="models/encoder")
    p.add_argument("--policy", default="models/policy")
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--samples-per-chunk", type=int, default=1)
    p.add_argument("--cpu-load", type=int, default=0)
    p.add_argument("--combined-inference", action="store_true")
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    args = p.parse_args(argv)
    from dynaflip_ros.eval.cpu_load import CpuLoad

    frames = render_frames(args.frames)
    with CpuLoad(args.cpu_load):
        graph, local = graph_ms(frames, args.encoder, args.policy, args.threads, args.samples_per_chunk,
                                args.combined_inference,
                                InProcess(args.encoder, args.policy, args.threads, args.samples_per_chunk))
    if graph["total"].size == 0:
        print("no chunk came back through the graph", file=sys.stderr)
        return 1
    res = {"frames": args.frames, "graph_chunks": int(graph["total"].size), "cpu_load": args.cpu_load,
           "combined_inference": args.combined_inference, "threads": args.threads,
           "samples_per_chunk": args.samples_per_chunk}

    def pct(v: np.ndarray) -> dict:
        v = v[np.isfinite(v)]
        return {"p50_ms": float(np.percentile(v, 50)) if v.size else None,
                "p95_ms": float(np.percentile(v, 95)) if v.size else None, "n": int(v.size)}

    res["in_process"] = pct(local["total"]) | {"parts": {k: pct(local[k]) for k in ("encode", "policy")}}
    res["graph"] = pct(graph["total"]) | {"parts": {k: pct(graph[k]) for k in GRAPH_PARTS}}
    res["overhead_p50_ms"] = res["graph"]["p50_ms"] - res["in_process"]["p50_ms"]
    # paired by frame (each frame ran both ways back to back): median difference, 95 % bootstrap interval
    rng = np.random.default_rng(0)
    for key, g, l in (("paired_total", "total", "total"), ("paired_encode", "encode", "encode"),
                      ("paired_policy", "policy", "policy")):
        d = graph[g] - local[l][graph["frame"]]
        d = d[np.isfinite(d)]
        boot = np.median(rng.choice(d, size=(2000, d.size)), axis=1)
        res[key] = {"median_ms": float(np.median(d)), "ci95_ms": [float(np.percentile(boot, 2.5)),
                                                                  float(np.percentile(boot, 97.5))], "n": int(d.size)}
    res["transport_p50_ms"] = float(np.nanmedian(graph["image_transport"] + graph["embedding_hop"]
                                                 + graph["chunk_return"]))
    res["ratio_p50"] = res["graph"]["p50_ms"] / res["in_process"]["p50_ms"]
    print(f"{'path / part':<22}{'n':>5}{'p50 ms':>10}{'p95 ms':>10}")
    for name in ("in_process", "graph"):
        print(f"{name:<22}{res[name]['n']:>5}{res[name]['p50_ms']:>10.1f}{res[name]['p95_ms']:>10.1f}")
        for part, v in res[name]["parts"].items():
            if v["n"]:
                print(f"  {part:<20}{v['n']:>5}{v['p50_ms']:>10.1f}{v['p95_ms']:>10.1f}")
    print(f"graph - in process (p50): {res['overhead_p50_ms']:.1f} ms; graph / in process: {res['ratio_p50']:.2f} "
          f"({'combined' if args.combined_inference else 'separate'} inference, cpu load {args.cpu_load})")
    for key in ("paired_total", "paired_encode", "paired_policy"):
        v = res[key]
        print(f"{key} (graph - in process, same frame): median {v['median_ms']:+.1f} ms "
              f"(95 % {v['ci95_ms'][0]:+.1f} to {v['ci95_ms'][1]:+.1f}, n {v['n']})")
    print(f"transport (image + embedding hop + chunk return) p50: {res['transport_p50_ms']:.1f} ms")
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
