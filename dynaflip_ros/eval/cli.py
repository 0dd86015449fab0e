"""`dynaflip eval`: closed-loop evaluation of an encoder + policy in the simulated cell (no ROS).

Command-line adapter; module level imports only argparse and `dynaflip_ros.cli`.
"""
from __future__ import annotations

import argparse

from dynaflip_ros.cli import exit_codes_epilog

EPILOG = """examples:
  dynaflip eval --sim --encoder models/encoder --policy models/policy --episodes 20
  dynaflip eval --sim --encoder outputs/encoder_export --policy outputs/policy --episodes 50 \\
      --seed 100000 --out outputs/eval.json
  dynaflip eval --sim --encoder models/encoder --policy models/policy --swap-pairs 10
  dynaflip eval --sim --encoder models/encoder --policy models/policy --episodes 20 --swap-pairs 10
  dynaflip eval --sim --encoder models/encoder --policy models/policy --episodes 40 \
      --modes lockstep,realtime,ros --cpu-load 1 --out outputs/eval/modes.json
  dynaflip eval --sim --encoder models/encoder --policy models/policy --episodes 20 --objects 1 \
      --object-pool "red cube,green cylinder,blue bar,yellow ball"    # the single-object task

Runs episodes in lock-step simulation time (deterministic per seed, no real-time waits): every
0.1 s render -> encoder -> policy; chunks go through the interpolator, the 125 Hz servo loop and
SafeArm to the MuJoCo UR3. Seeds default to 100000+ (the demos use seeds 0..N). Each episode's
seed places 2-4 objects and draws the target and the instruction naming it ("drop the red block
into the basin"), which the policy receives with every observation. An episode ends as success
(the named object in the basin), wrong_object (another object in it), safety_stop or timeout;
the summary gives success_rate, wrong_object_rate, timeout_rate and safety_stop_rate with
Wilson 95 % intervals, overall and per target object.

--swap-pairs N (instruction-swap check): pair p takes the scene of seed + p and runs it twice with
the same layout, each time naming another object of the table (both drawn by the seed); a pair
is correct when both runs succeed. swap_accuracy (share of correct pairs, Wilson 95 % CI) and
the pairs go into the record. With --swap-pairs only the pairs run unless --episodes is given
too. For the real-time check through the ROS 2 graph use `dynaflip launch pick_into_sink --sim`.

--modes lockstep,realtime,ros (where deployment loses success): the same seeds lock-step, in real
time in this process without ROS (physics and the servo loop in a thread that follows the wall
clock, camera -> encoder -> policy in the main thread; eval/realtime.py) and through the ROS 2
graph (the processes of `dynaflip launch pick_into_sink --sim`; ros_combined: its CPU-frugal
layout, `--combined-inference`, the encoder inside the policy process), with the graph's params file
(config/pick_into_sink.yaml) for the driver and camera settings of both real-time modes and the
flags here for the models. --cpu-load N keeps N other processes busy (one core each) during all
modes. The record (default outputs/eval/modes_<UTC time>.json) holds under `modes` each mode's
success_rate (Wilson 95 %), watchdog_trips, action_age_ms (how old the executed actions were:
servo ticks since the image they were planned from), latency_ms and its whole evaluation record,
and under `paired` each pair of modes compared seed by seed (McNemar). Episode time-outs are
simulated seconds in lock-step and realtime, wall seconds in the graph (its episode manager).
""" + exit_codes_epilog()


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval", help="closed-loop success rate of encoder + policy in sim (no ROS)",
        description=__doc__.splitlines()[0], epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--sim", action="store_true", required=True, help="evaluate in the MuJoCo cell")
    models = p.add_argument_group("models")
    models.add_argument("--encoder", required=True, help="encoder artifact dir (manifest.json, encoder.onnx)")
    models.add_argument("--policy", required=True, help="policy checkpoint dir (policy.json)")
    add_inference_flags(models)
    episodes = p.add_argument_group("episodes")
    episodes.add_argument("--episodes", type=int, default=None,
                          help="number of regular episodes (default 20; 0 with --swap-pairs)")
    episodes.add_argument("--seed", type=int, default=100_000, help="seed of episode 0 (default 100000)")
    episodes.add_argument("--episode-timeout-s", type=float, default=15.0,
                          help="sim seconds per episode (default 15)")
    episodes.add_argument("--swap-pairs", type=int, default=0, metavar="N",
                          help="instruction-swap check: N scenes, each run twice naming two different objects "
                               "(default 0: off)")
    episodes.add_argument("--objects", type=int, default=None, metavar="N",
                          help="objects on the table per episode, 1-4 (default: 2-4, drawn by the seed)")
    episodes.add_argument("--object-pool", default=None, metavar="NAMES",
                          help="comma-separated catalogue objects the episodes draw from (default: the train split), "
                               "e.g. 'red cube,green cylinder,blue bar,yellow ball' (the original single-object cell)")
    modes = p.add_argument_group("real time (where deployment loses success)")
    modes.add_argument("--modes", default=None, metavar="LIST",
                       help="comma-separated: lockstep, realtime (one process, no ROS), ros (the ROS 2 graph), "
                            "ros_combined (the graph with the encoder inside the policy process); "
                            "runs the same seeds each way and writes one record with every mode (default: lockstep only, "
                            "the plain record)")
    modes.add_argument("--cpu-load", type=int, default=0, metavar="N",
                       help="keep N busy processes (one core each) running during the modes (default 0)")
    output = p.add_argument_group("output")
    output.add_argument("--out", metavar="PATH",
                        help="write the evaluation record (JSON) here (default outputs/eval/lockstep_<UTC time>.json)")
    p.set_defaults(func=run)


def add_inference_flags(group) -> None:
    """The flags that say how the models run (`load_models`): --backend, --threads,
    --n-action-steps, --samples-per-chunk, --temporal-ensemble-coeff, --real-time-chunking;
    shared by `dynaflip eval` and `dynaflip eval-ood`."""
    from dynaflip_ros.configs.policy import DEFAULT_SAMPLES_PER_CHUNK

    group.add_argument("--backend", default="onnxruntime", choices=["auto", "onnxruntime", "tensorrt", "torch"],
                       help="encoder backend (default onnxruntime)")
    group.add_argument("--threads", type=int, default=1, help="torch / ONNX Runtime threads (default 1)")
    group.add_argument("--n-action-steps", type=int, default=0, metavar="N",
                       help="replan after N actions of each chunk (0, default: the policy's whole chunk; "
                            "the policy node's n_action_steps parameter)")
    group.add_argument("--samples-per-chunk", type=int, default=DEFAULT_SAMPLES_PER_CHUNK, metavar="K",
                       help="denoise K chunks from K initial noises in one batch and execute their mean "
                            f"(1: the plain sampler; default {DEFAULT_SAMPLES_PER_CHUNK}, the policy node's "
                            "samples_per_chunk parameter)")
    group.add_argument("--temporal-ensemble-coeff", type=float, default=None, metavar="C",
                       help="query the policy at every observation and execute the temporal ensemble of the "
                            "overlapping chunks, weights exp(-C * i) with i = 0 the oldest prediction (ACT; "
                            "0.01 in the paper); default: off")
    group.add_argument("--real-time-chunking", action="store_true",
                       help="sample each chunk as the continuation of the actions in flight (policies.rtc; "
                            "the policy node's real_time_chunking parameter); pair it with --n-action-steps "
                            "below the chunk length so chunks overlap")


def episode_count(episodes: int | None, swap_pairs: int) -> int:
    """The regular episodes to run: `--episodes`, or by default 20 without `--swap-pairs` and 0
    with it. Raises UserError for negative counts or nothing to run."""
    from dynaflip_ros.errors import UserError

    if swap_pairs < 0:
        raise UserError("--swap-pairs must be >= 0")
    n = episodes if episodes is not None else (0 if swap_pairs else 20)
    if n < 0 or n + swap_pairs < 1:
        raise UserError("--episodes must be >= 1 (or >= 0 with --swap-pairs)")
    return n


def sim_config_for(objects: int | None, object_pool: str | None):
    """The `SimConfig` of `--objects` / `--object-pool`: a pool builds only those objects into the
    cell and draws from all of them (split "any"). Raises UserError on a bad count, an empty or
    unknown name, or a pool smaller than the count."""
    from dynaflip_ros.configs.sim import SimConfig
    from dynaflip_ros.errors import UserError
    from dynaflip_ros.task.catalogue import CATALOGUE

    kwargs: dict = {}
    if objects is not None:
        if not 1 <= objects <= 4:
            raise UserError("--objects must be 1..4")
        kwargs["objects_per_episode"] = (objects, objects)
    if object_pool is not None:
        names = tuple(n.strip() for n in object_pool.split(",") if n.strip())
        unknown = [n for n in names if n not in CATALOGUE]
        if not names or unknown:
            raise UserError(f"--object-pool: unknown objects {unknown or [object_pool]}; the catalogue has {list(CATALOGUE)}")
        if len(names) < (objects or 2):
            raise UserError(f"--object-pool has {len(names)} objects, fewer than --objects {objects or 2}")
        kwargs.update(objects=names, episode_split="any")
    return SimConfig(**kwargs)


def load_models(args: argparse.Namespace):
    """(encoder, policy, replan_steps) of the flags: the models loaded with --backend / --threads
    / --samples-per-chunk, replan_steps from --n-action-steps (None: the whole chunk), the policy
    wrapped in a temporal ensemble with --temporal-ensemble-coeff, or for real-time chunking with
    --real-time-chunking. Raises UserError on bad flags."""
    from pathlib import Path

    from dynaflip_ros.configs.policy import MAX_SAMPLES_PER_CHUNK
    from dynaflip_ros.errors import UserError
    from dynaflip_ros.eval.closed_loop import load_encoder_and_policy

    for flag, path in (("--encoder", args.encoder), ("--policy", args.policy)):
        if not Path(path).is_dir():
            raise UserError(f"{flag}: not a directory: {path}")
    if not 1 <= args.samples_per_chunk <= MAX_SAMPLES_PER_CHUNK:
        raise UserError(f"--samples-per-chunk must be in 1..{MAX_SAMPLES_PER_CHUNK}, got {args.samples_per_chunk}")
    encoder, policy = load_encoder_and_policy(args.encoder, args.policy, backend=args.backend, threads=args.threads,
                                              samples_per_chunk=args.samples_per_chunk)
    chunk_len = policy.model_config.n_action_steps
    if not 0 <= args.n_action_steps <= chunk_len:
        raise UserError(f"--n-action-steps must be in 0..{chunk_len} (the policy's chunk), got {args.n_action_steps}")
    replan_steps = args.n_action_steps or None
    if args.temporal_ensemble_coeff is not None:
        import math

        from dynaflip_ros.policies.ensemble import TemporallyEnsembledPolicy

        if args.n_action_steps not in (0, 1) or not math.isfinite(args.temporal_ensemble_coeff):
            raise UserError("--temporal-ensemble-coeff must be finite and queries the policy at every step: "
                            "leave --n-action-steps at 0 (or 1)")
        policy, replan_steps = TemporallyEnsembledPolicy(policy, args.temporal_ensemble_coeff), 1
    if args.real_time_chunking:
        from dynaflip_ros.policies.rtc import RealTimeChunkingPolicy

        if args.temporal_ensemble_coeff is not None:
            raise UserError("--real-time-chunking and --temporal-ensemble-coeff are two ways to switch chunks: "
                            "choose one")
        policy = RealTimeChunkingPolicy(policy)
    return encoder, policy, replan_steps


def run_config(args: argparse.Namespace, episodes: int, replan_steps: int | None, chunk_len: int) -> dict:
    """The settings an evaluation record keeps under `config`."""
    return {"episodes": episodes, "swap_pairs": args.swap_pairs, "seed": args.seed,
            "max_duration_s": args.episode_timeout_s, "backend": args.backend,
            "objects": args.objects, "object_pool": args.object_pool,
            "n_action_steps": replan_steps or chunk_len,
            "temporal_ensemble_coeff": args.temporal_ensemble_coeff,
            "real_time_chunking": bool(args.real_time_chunking),
            "samples_per_chunk": args.samples_per_chunk, "threads": args.threads,
            "encoder": str(args.encoder), "policy": str(args.policy)}


def run(args: argparse.Namespace) -> int:
    from dynaflip_ros.errors import UserError

    episodes = episode_count(args.episodes, args.swap_pairs)
    sim_config = sim_config_for(args.objects, args.object_pool)
    if args.modes is not None:
        return run_modes(args, episodes, sim_config)
    if args.cpu_load:
        raise UserError("--cpu-load applies to --modes runs only")
    from dynaflip_ros.episodes.record import (
        EvalReport, default_results_path, format_episode, format_pair, format_summary,
    )
    from dynaflip_ros.eval.closed_loop import evaluate_in_sim

    encoder, policy, replan_steps = load_models(args)
    report = EvalReport(
        mode="lockstep", config=run_config(args, episodes, replan_steps, policy.model_config.n_action_steps),
        models={"encoder": encoder.manifest.weights_sha256, "policy": policy.weights_sha256})

    def on_episode(record, report) -> None:
        print("[eval] " + format_episode(record, len(report.episodes) - 1, episodes, report.successes)
              + f"; safety rejections {record.safety['rejected']}", flush=True)

    def on_pair(pair, report) -> None:
        print("[eval] " + format_pair(pair, len(report.pairs) - 1, args.swap_pairs, report.pairs_correct), flush=True)

    evaluate_in_sim(encoder, policy, episodes, seed=args.seed, max_duration_s=args.episode_timeout_s,
                    replan_steps=replan_steps, sim_config=sim_config, on_episode=on_episode,
                    report=report, swap_pairs=args.swap_pairs, on_pair=on_pair)
    path = report.write_json(args.out or default_results_path("lockstep"))
    print(format_summary(report.to_dict(), path), flush=True)
    return 0


def run_modes(args: argparse.Namespace, episodes: int, sim_config) -> int:
    """`--modes`: the same seeds in each mode (module epilog), under `--cpu-load`; writes the
    `eval.modes.modes_record` and prints its table. Raises UserError on flags the modes cannot
    honour, and when the ROS graph fails."""
    import json
    from pathlib import Path

    from dynaflip_ros import resources
    from dynaflip_ros.configs.params_file import read_params_file
    from dynaflip_ros.episodes.protocol import json_safe
    from dynaflip_ros.episodes.record import EvalReport, default_results_path, format_episode, format_summary
    from dynaflip_ros.errors import UserError
    from dynaflip_ros.eval.closed_loop import evaluate_in_sim
    from dynaflip_ros.eval.cpu_load import CpuLoad
    from dynaflip_ros.eval.modes import format_modes, modes_record, parse_modes
    from dynaflip_ros.eval.realtime import evaluate_realtime, realtime_settings

    modes = parse_modes(args.modes)
    if args.swap_pairs or episodes < 1:
        raise UserError("--modes runs regular episodes (--episodes N >= 1); drop --swap-pairs")
    if {"ros", "ros_combined"} & set(modes) and (args.objects is not None or args.object_pool is not None):
        raise UserError("--objects / --object-pool do not reach the ROS graph (its sim_cell.sim parameters): "
                        "drop them or the ros mode")
    if args.cpu_load < 0:
        raise UserError(f"--cpu-load must be >= 0, got {args.cpu_load}")
    out = Path(args.out or default_results_path("modes"))
    params = resources.params_file("pick_into_sink")
    doc = read_params_file(params)
    encoder, policy, replan_steps = load_models(args)
    config = {**run_config(args, episodes, replan_steps, policy.model_config.n_action_steps),
              "modes": modes, "cpu_load": args.cpu_load, "params_file": str(params)}
    models = {"encoder": encoder.manifest.weights_sha256, "policy": policy.weights_sha256}
    reports: dict[str, dict] = {}

    def on_episode(record, report) -> None:
        trips = (record.safety or {}).get("watchdog_stops", 0)
        print(f"[eval {report.mode}] " + format_episode(record, len(report.episodes) - 1, episodes, report.successes)
              + f"; watchdog trips {trips}", flush=True)

    with CpuLoad(args.cpu_load):
        for mode in modes:
            print(f"[eval] mode {mode}: {episodes} episodes from seed {args.seed}, cpu load {args.cpu_load}", flush=True)
            if mode in ("ros", "ros_combined"):
                reports[mode] = run_ros_mode(args, episodes, params, doc, out.with_name(f"{out.stem}_{mode}.json"),
                                             combined_inference=mode == "ros_combined")
                continue
            report = EvalReport(mode=mode, config=config, models=dict(models))
            if mode == "lockstep":
                evaluate_in_sim(encoder, policy, episodes, seed=args.seed, max_duration_s=args.episode_timeout_s,
                                replan_steps=replan_steps, sim_config=sim_config, on_episode=on_episode, report=report)
            else:
                evaluate_realtime(encoder, policy, episodes, settings=realtime_settings(doc, replan_steps or 0),
                                  seed=args.seed, max_duration_s=args.episode_timeout_s, sim_config=sim_config,
                                  report=report, on_episode=on_episode)
            reports[mode] = report.to_dict()
            print(format_summary(reports[mode]), flush=True)
    record = modes_record(config, reports)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(json_safe(record), indent=1, allow_nan=False) + "\n")
    print("\n" + format_modes(record) + f"\nrecord: {out}", flush=True)
    return 0


def run_ros_mode(args: argparse.Namespace, episodes: int, params, doc: dict, results_path,
                 combined_inference: bool = False, episode_manager: dict | None = None) -> dict:
    """The episodes through the ROS 2 graph (`dynaflip launch pick_into_sink --sim` with the
    models, seeds and inference settings of the flags; `--combined-inference` layout when
    asked; `episode_manager`: further episode-manager parameters, e.g. seeds, condition,
    episodes_path); returns the episode manager's record. Raises UserError when the graph fails."""
    import json

    from dynaflip_ros.errors import UserError
    from dynaflip_ros.ros.launch_args import graph_overrides
    from dynaflip_ros.ros.launch_cli import launch_graph

    overrides = graph_overrides(doc, use_sim=True, results_path=str(results_path), encoder=str(args.encoder),
                                backend=args.backend, policy=str(args.policy), episodes=episodes, seed=args.seed,
                                episode_timeout_s=args.episode_timeout_s, combined_inference=combined_inference)
    overrides.setdefault("encoder", {})["num_threads"] = args.threads
    overrides["policy"].update(num_threads=args.threads, samples_per_chunk=args.samples_per_chunk,
                               n_action_steps=args.n_action_steps)
    if args.temporal_ensemble_coeff is not None:  # the node then samples a chunk at every observation
        overrides["policy"]["temporal_ensemble_coeff"] = float(args.temporal_ensemble_coeff)
    if args.real_time_chunking:
        overrides["policy"]["real_time_chunking"] = True
    if combined_inference:
        overrides["policy"]["encoder.num_threads"] = overrides.pop("encoder")["num_threads"]
    overrides.setdefault("episode_manager", {}).update(episode_manager or {})
    results_path.unlink(missing_ok=True)
    result = launch_graph("pick_into_sink", True, params, overrides, combined_inference=combined_inference)
    if result.exit_code != 0 or not results_path.is_file():
        raise UserError(f"the ROS graph failed (exit code {result.exit_code}, process {result.failed!r}); "
                        f"no record at {results_path}")
    return json.loads(results_path.read_text())
