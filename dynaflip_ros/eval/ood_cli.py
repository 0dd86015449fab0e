"""`dynaflip eval-ood`: an OOD evaluation session in the simulated cell (eval/ood.py).

Command-line adapter; module level imports only argparse and `dynaflip_ros.cli`.
"""
from __future__ import annotations

import argparse

from dynaflip_ros.cli import exit_codes_epilog

EPILOG = """examples:
  dynaflip eval-ood --model shipped=models/encoder,models/policy \\
      --conditions distractors:1,novel_object:1,lighting:1,texture:1,camera_pose:1 --episodes 20 \\
      --out outputs/ood/shipped
  dynaflip eval-ood --model shipped=models/encoder,models/policy \\
      --conditions lighting:0.25,lighting:0.5,lighting:0.75,lighting:1 --episodes 20 --out outputs/ood/light_sweep
  dynaflip eval-ood --model a=enc_a,pol_a --model b=enc_b,pol_b --conditions "distractors@novel:1+lighting:0.5" \\
      --seeds 100000-100009 --out outputs/ood/ab
  dynaflip report outputs/ood/shipped

Conditions (sim/perturbations.py): FAMILY[:SEVERITY] with severity in [0, 1] (default 1), `+`
composes families, `distractors@novel` draws distractors from the novel split. Families:
distractors (ceil(4 s) more objects near the target), novel_object (the target becomes a novel
object: a new colour for s <= 0.5, a new shape and colour above), lighting (intensity, direction,
colour; shadows from s = 0.5), texture (table and floor), camera_pose (up to 8 cm and 8 deg),
placement (the target up to 6 cm outside the training region). Every session also runs the
nominal scene on the same seeds (the matched control); a seed gives the same layout under every
condition. Lock-step simulation (deterministic per seed).

The session directory (--out) holds session.json, episodes.jsonl (one line per finished
episode, appended as it runs), frames/ and, at the end, the report (summary.json, report.html,
plots/). Run the same command again to resume an interrupted session: finished episodes are not
redone; a directory holding another session (other models, conditions, seeds or options) or
another format version is refused before any episode runs.
""" + exit_codes_epilog()


def register(subparsers) -> None:
    from dynaflip_ros.eval.cli import add_inference_flags

    p = subparsers.add_parser(
        "eval-ood", help="OOD session: conditions x seeds x models with a matched nominal control, report",
        description=__doc__.splitlines()[0], epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    models = p.add_argument_group("models")
    models.add_argument("--model", action="append", required=True, metavar="NAME=ENCODER_DIR,POLICY_DIR",
                        help="an encoder / policy pair to evaluate under a name (repeatable)")
    add_inference_flags(models)
    episodes = p.add_argument_group("episodes")
    add_scene_flags(episodes, 20, "episodes per model and condition")
    episodes.add_argument("--episode-timeout-s", type=float, default=None,
                          help="longest episode: sim seconds in lock-step (default 15), wall seconds with --ros "
                               "(default 20) and --real (default: the params file's ood_session.episode_timeout_s, 60)")
    p.add_argument("--ros", action="store_true",
                   help="run the episodes through the ROS 2 graph (`dynaflip launch pick_into_sink --sim`, one launch "
                        "per model and condition, real time; time-outs in wall seconds) instead of lock-step")
    p.add_argument("--real", action="store_true",
                   help="the real cell with an operator: brings up the real cell's graph with the first --model and "
                        "the ood_session node (setup sheets, Enter / s / w / f from this terminal, the "
                        "/ood_session/* services, a bag per episode); one --model only")
    p.add_argument("--out", required=True, metavar="DIR", help="session directory (created; resumed when it exists)")
    robot = p.add_argument_group("robot (--real; default: the params file)")
    robot.add_argument("--params-file", help="ROS 2 params file (default: config/real_cell.yaml of the package)")
    robot.add_argument("--robot-ip", default="", help="UR controller address")
    robot.add_argument("--ur-type", default="", choices=["", "cb3", "e-series"],
                       help="controller generation, sets the 125 / 500 Hz servo rate")
    robot.add_argument("--camera-serial", default="", help="RealSense serial (params file, else the only one)")
    robot.add_argument("--gripper", default="", choices=["", "robotiq_urcap", "none"], help="gripper backend")
    p.add_argument("--no-report", action="store_true", help="do not write the report at the end (dynaflip report DIR)")
    p.set_defaults(func=run)


def parse_models(items: list[str]) -> dict[str, tuple[str, str]]:
    """["name=enc,pol", ...] -> {name: (enc, pol)}. Raises UserError on a malformed item, a
    duplicate name or a directory that does not exist."""
    import re
    from pathlib import Path

    from dynaflip_ros.errors import UserError

    out: dict[str, tuple[str, str]] = {}
    for item in items:
        name, sep, dirs = item.partition("=")
        parts = [d.strip() for d in dirs.split(",")]
        if not sep or len(parts) != 2 or not all(parts) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name.strip()):
            raise UserError(f"--model {item!r}: expected NAME=ENCODER_DIR,POLICY_DIR (NAME: letters, digits, _ . -)")
        if name in out:
            raise UserError(f"--model: the name {name!r} is given twice")
        for what, d in zip(("encoder", "policy"), parts):
            if not Path(d).is_dir():
                raise UserError(f"--model {name}: {what} directory {d!r} does not exist")
        out[name.strip()] = (parts[0], parts[1])
    return out


def add_scene_flags(group, episodes_default: int, episodes_help: str) -> None:
    """--conditions, --episodes, --seed, --seeds: which perturbed scenes a session visits (the
    episode seeds fix layout, instruction and the perturbation's draw; `parse_seeds`)."""
    group.add_argument("--conditions", required=True, metavar="LIST",
                       help="comma-separated condition specs, e.g. distractors:1,lighting:0.5 (nominal is always run)")
    group.add_argument("--episodes", type=int, default=episodes_default,
                       help=f"{episodes_help} (default {episodes_default})")
    group.add_argument("--seed", type=int, default=100_000, help="seed of episode 0 (default 100000)")
    group.add_argument("--seeds", default=None, metavar="LIST",
                       help="explicit episode seeds instead of --episodes / --seed: 'A-B' (inclusive) or 'A,B,C'")


def parse_seeds(seeds: str | None, episodes: int, first: int) -> list[int]:
    """The session's seeds: --seeds 'A-B' / 'A,B,C', else --episodes from --seed. Raises UserError."""
    from dynaflip_ros.errors import UserError

    if seeds is None:
        if episodes < 1 or first < 0:
            raise UserError(f"--episodes must be >= 1 and --seed >= 0, got {episodes}, {first}")
        return list(range(first, first + episodes))
    from dynaflip_ros.configs.validate import parse_seed_list

    try:
        return parse_seed_list(seeds)
    except ValueError as e:
        raise UserError(f"--seeds: {e}") from None


def ros_launcher(args: argparse.Namespace, pairs: dict[str, tuple[str, str]]):
    """The `eval.ood.Launch` of --ros: `dynaflip launch pick_into_sink --sim` with the model's
    directories, the inference flags, and the episode manager on the given seeds and condition
    (`eval.cli.run_ros_mode`)."""
    from dynaflip_ros import resources
    from dynaflip_ros.configs.params_file import read_params_file
    from dynaflip_ros.eval.cli import run_ros_mode
    from dynaflip_ros.eval.ood_records import NOMINAL

    params = resources.params_file("pick_into_sink")
    doc = read_params_file(params)

    def launch(model: str, condition: str, seeds: list, episodes_path, results_path) -> None:
        enc, pol = pairs[model]
        ns = argparse.Namespace(**{**vars(args), "encoder": enc, "policy": pol, "seed": seeds[0]})
        print(f"[eval-ood] ROS graph: {model} under {condition}, {len(seeds)} episodes", flush=True)
        run_ros_mode(ns, len(seeds), params, doc, results_path,
                     episode_manager={"seeds": list(seeds), "condition": "" if condition == NOMINAL else condition,
                                      "episodes_path": str(episodes_path)})

    return launch


def run_real(args: argparse.Namespace, pairs: dict[str, tuple[str, str]], conditions: list[str],
             seeds: list[int]) -> int:
    """--real: the real cell's processes (camera, ur3_driver, encoder, policy) with the model's
    directories and the hardware flags, plus ood_session_node reading this terminal; ends when
    the session does (its exit code). Raises UserError on bad flags or a failed graph."""
    from dynaflip_ros import resources
    from dynaflip_ros.errors import UserError
    from dynaflip_ros.ros import bringup, graph
    from dynaflip_ros.ros.launch_args import (
        LaunchArgumentError, graph_overrides, ood_session_overrides, read_params_file, write_overrides_file,
    )

    (name, (enc, pol)), = pairs.items()
    params = args.params_file or str(resources.params_file("real_cell"))
    doc = read_params_file(params)
    try:
        overrides = graph_overrides(doc, use_sim=False, results_path="", encoder=enc, backend=args.backend, policy=pol,
                                    robot_ip=args.robot_ip, ur_type=args.ur_type, gripper=args.gripper,
                                    camera_serial=args.camera_serial)
        overrides["ood_session"] = {**ood_session_overrides(doc, out=str(args.out), model=name,
                                                            episode_timeout_s=str(args.episode_timeout_s or "")),
                                    "conditions": ",".join(conditions), "seeds": list(seeds), "keyboard": True}
    except LaunchArgumentError as e:
        raise UserError(str(e)) from None
    specs = [bringup.ProcessSpec.of(n) for n in graph.PICK_INTO_SINK.processes(graph.REAL)]
    specs.append(bringup.ProcessSpec.of(graph.OOD_SESSION))
    path = write_overrides_file(overrides)
    try:
        result = bringup.run_graph(specs, [params, path], main="ood_session", interactive="ood_session")
    finally:
        path.unlink(missing_ok=True)
    if result.exit_code not in (0, 130):
        raise UserError(f"the OOD session ended with exit code {result.exit_code} "
                        f"({result.failure_reason or 'see the log above'}); finished episodes are in {args.out}")
    return result.exit_code


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dynaflip_ros.errors import UserError
    from dynaflip_ros.eval.cli import load_models
    from dynaflip_ros.eval.ood import model_entry, run_session, run_session_ros, with_nominal
    from dynaflip_ros.eval.ood_records import SESSION_FILE, read_episodes, read_session
    from dynaflip_ros.sim.perturbations import parse_conditions

    try:  # everything that can be wrong is checked before the first episode
        conditions = [c.name for c in with_nominal(parse_conditions(args.conditions))]
    except ValueError as e:
        raise UserError(f"--conditions: {e}") from None
    seeds = parse_seeds(args.seeds, args.episodes, args.seed)
    if args.episode_timeout_s is not None and not args.episode_timeout_s > 0:
        raise UserError(f"--episode-timeout-s must be > 0, got {args.episode_timeout_s}")
    timeout_s = args.episode_timeout_s or (20.0 if args.ros else 15.0)
    pairs = parse_models(args.model)
    if args.real and args.ros:
        raise UserError("--real and --ros are two different cells: choose one")
    if args.real and len(pairs) != 1:
        raise UserError("--real runs one encoder / policy pair (the one the cell deploys): give one --model")
    out = Path(args.out)
    if (out / SESSION_FILE).exists():  # SessionFileError (a UserError) before any model loads
        read_session(out), read_episodes(out)
    models = {}
    for name, (enc_dir, pol_dir) in pairs.items():
        try:
            encoder, policy, replan_steps = load_models(argparse.Namespace(**{**vars(args), "encoder": enc_dir,
                                                                              "policy": pol_dir}))
        except (ValueError, FileNotFoundError, UserError) as e:  # EncoderMismatchError: the pair fails the guard
            raise UserError(f"--model {name}: {type(e).__name__}: {e}") from None
        models[name] = (encoder, policy, model_entry(encoder, policy, enc_dir, pol_dir))
    if args.real:  # the pair passed the encoder guard here; the cell's nodes load it again
        return run_real(args, pairs, conditions, seeds)
    options = {"backend": args.backend, "threads": args.threads, "samples_per_chunk": args.samples_per_chunk,
               "n_action_steps": args.n_action_steps, "temporal_ensemble_coeff": args.temporal_ensemble_coeff,
               "real_time_chunking": bool(args.real_time_chunking)}
    progress = lambda line: print(line, flush=True)  # noqa: E731
    if args.ros:
        args.episode_timeout_s = timeout_s  # the episode manager's, through run_ros_mode
        run_session_ros(out, {k: v[2] for k, v in models.items()}, conditions, seeds, ros_launcher(args, pairs),
                        max_duration_s=timeout_s, options=options, progress=progress)
    else:
        run_session(out, models, conditions, seeds, max_duration_s=timeout_s, replan_steps=replan_steps,
                    options=options, progress=progress)
    if not args.no_report:
        from dynaflip_ros.eval.ood_report import write_report

        write_report(out)
        print(f"[eval-ood] report: {out / 'report.html'}", flush=True)
    return 0
