"""`dynaflip calibrate {hand-eye, latency, intrinsics}`: calibration of a cell (sim or real).

Thin: the work lives in `calibration.procedure` (capture / record / solve), `calibration.handeye`,
`calibration.latency`, `calibration.intrinsics`. Module level imports only argparse (the
`dynaflip` dispatcher imports every verb module to build --help). Register as VERBS entry
"calibrate": "dynaflip_ros.calibration.cli".
"""
from __future__ import annotations

import argparse

from dynaflip_ros.cli import exit_codes_epilog

EPILOG = """examples:
  dynaflip calibrate hand-eye --mode eye-to-hand --sim --views 12
      MuJoCo cell with a ChArUco board on the gripper, fixed camera: automatic poses through
      SafeArm, views saved, solved, YAML + report written, error vs the model's truth printed
  dynaflip calibrate hand-eye --mode eye-in-hand --sim --views 12 --out /tmp/wrist.yaml
  dynaflip calibrate hand-eye --mode eye-to-hand --robot-ip 192.168.1.10 --ur-type cb3 \\
        --camera-serial 012345678901 --views 15 --cell real_cell
      real UR3 + RealSense: jog the arm so the board is in view first; poses are generated
      around the current joints (--perturbation-rad to widen/narrow), moved with move_to_joints
  dynaflip calibrate hand-eye --mode eye-to-hand --robot-ip 192.168.1.10 --manual --views 15
      freedrive: move the arm by hand, press Enter per view
  dynaflip calibrate hand-eye --from-views outputs/calibration/real_cell_eye-to-hand_20261121T120000Z
      re-solve recorded views offline (images PNG + views.json)
  dynaflip calibrate latency --sim --inject-delay-s 0.047
  dynaflip calibrate latency --robot-ip 192.168.1.10 --camera-serial 012345678901 \\
        --calibration-yaml calibration/real_cell_eye-to-hand.yaml
  dynaflip calibrate intrinsics --from-views outputs/calibration/real_cell_eye-to-hand_20261121T120000Z

outputs: calibration/<cell>_<mode>.yaml (sim_cell.yaml layout + hand_eye section), next to it
  <stem>.report.json / .report.md (per-view reprojection, AX=XB residuals, leave-one-out), the
  views folder under outputs/calibration/.
""" + exit_codes_epilog("calibration failed (devices, too few detections, solver)")


def register(subparsers) -> None:
    p = subparsers.add_parser("calibrate", help="camera intrinsics, hand-eye and latency calibration",
                              description=__doc__.splitlines()[0], epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="calibrate_verb", metavar="<what>")
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])

    def common(sp, need_mode: bool):
        src = sp.add_argument_group("source (one of)").add_mutually_exclusive_group()
        src.add_argument("--sim", action="store_true", help="MuJoCo calibration scene with known ground truth")
        src.add_argument("--robot-ip", default="", help="UR controller address (real cell)")
        if need_mode:
            src.add_argument("--from-views", default="", metavar="DIR", help="solve recorded views offline")
            sp.add_argument("--mode", choices=("eye-to-hand", "eye-in-hand"), default="eye-to-hand")
        sp.add_argument("--cell", default="", help="cell name used in file names (default sim_calib / real_cell)")
        robot = sp.add_argument_group("robot")
        robot.add_argument("--ur-type", choices=("cb3", "e-series"), default="cb3")
        robot.add_argument("--safety-config", default="", help="SafetyConfig YAML (default config/safety.yaml)")
        camera = sp.add_argument_group("camera (RealSense colour stream; the sim camera's size)")
        camera.add_argument("--camera-serial", default="", help='RealSense serial ("" = the only device)')
        camera.add_argument("--width", type=int, default=640, help="stream width (px, default 640)")
        camera.add_argument("--height", type=int, default=480, help="stream height (px, default 480)")
        camera.add_argument("--fps", type=int, default=30, help="stream rate (frames/s, default 30)")
        board = sp.add_argument_group("ChArUco board")
        board.add_argument("--board", default="5x7", help="ChArUco squares XxY (default 5x7)")
        board.add_argument("--square-m", type=float, default=0.03, help="square side (m), measure the print")
        board.add_argument("--marker-m", type=float, default=0.022, help="marker side (m)")
        board.add_argument("--dictionary", default="DICT_5X5_100")

    he = sub.add_parser("hand-eye", help="hand-eye calibration (eye-to-hand or eye-in-hand)", epilog=EPILOG,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    common(he, need_mode=True)
    he.add_argument("--views", type=int, default=12, help="number of views (default 12)")
    he.add_argument("--manual", action="store_true", help="freedrive: move the arm by hand per view")
    he.add_argument("--seed", type=int, default=0, help="pose generator seed")
    he.add_argument("--perturbation-rad", default="", help="6 comma-separated half-ranges (rad)")
    he.add_argument("--min-rotation-deg", type=float, default=6.0)
    he.add_argument("--max-speed-rad-s", type=float, default=0.3, help="peak joint speed of moves (rad/s)")
    he.add_argument("--settle-s", type=float, default=0.5, help="wait after each move before capturing (s)")
    he.add_argument("--flange-pose", choices=("fk", "tcp"), default="fk",
                    help="tool0 pose from DH FK of q (default) or from the reported TCP pose")
    he.add_argument("--tcp-offset-m", type=float, default=None, help="with --flange-pose tcp: TCP offset along tool z")
    he.add_argument("--views-dir", default="", help="where to record views (default outputs/calibration/...)")
    he.add_argument("--out", default="", help="calibration YAML (default calibration/<cell>_<mode>.yaml)")
    he.add_argument("--no-refine", action="store_true", help="skip the reprojection refinement")
    he.set_defaults(func=run_hand_eye)

    la = sub.add_parser("latency", help="camera-to-robot latency by cross-correlation", epilog=EPILOG,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    common(la, need_mode=False)
    la.add_argument("--inject-delay-s", type=float, default=0.05, help="sim only: camera stamp delay to recover")
    la.add_argument("--joint", type=int, default=0, help="joint to oscillate (0 = shoulder pan)")
    la.add_argument("--amplitude-rad", type=float, default=0.08)
    la.add_argument("--frequency-hz", type=float, default=0.8)
    la.add_argument("--duration-s", type=float, default=6.0)
    la.add_argument("--out", default="", help="JSON result (default outputs/calibration/latency_<cell>_<UTC>.json)")
    la.add_argument("--calibration-yaml", default="", help="also store the result under `latency:` in this YAML")
    la.set_defaults(func=run_latency)

    it = sub.add_parser("intrinsics", help="device intrinsics + ChArUco cross-check", epilog=EPILOG,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    common(it, need_mode=True)
    it.add_argument("--views", type=int, default=8, help="views to capture (sim / real with the board)")
    it.add_argument("--out", default="", help="JSON result file (also printed)")
    it.set_defaults(func=run_intrinsics)


# ---------------------------------------------------------------------- helpers
def _board(args):
    from dynaflip_ros.calibration.board import BoardSpec

    from dynaflip_ros.errors import UserError

    try:
        sx, sy = (int(v) for v in args.board.lower().split("x"))
    except ValueError as e:
        raise UserError(f"--board must look like 5x7, got {args.board!r}") from e
    return BoardSpec(sx, sy, args.square_m, args.marker_m, args.dictionary)


def _safety(args, robot_model: str):
    import dataclasses
    from pathlib import Path

    from dynaflip_ros.configs.io import load_yaml
    from dynaflip_ros.configs.safety import SafetyConfig

    path = args.safety_config
    if not path:
        try:
            from dynaflip_ros.resources import data_dir

            cand = data_dir("config") / "safety.yaml"
            path = str(cand) if cand.is_file() else ""
        except FileNotFoundError:
            path = ""
    cfg = load_yaml(SafetyConfig, Path(path)) if path else SafetyConfig()
    return dataclasses.replace(cfg, robot_model=robot_model)


class _Session:
    """Opened devices: safe arm, camera, clocks; sim env or None."""

    def __init__(self, args, mode: str, board):
        import time

        self.env = None
        self.arm = None
        self.camera = None
        self.safe = None
        if args.sim:
            import dataclasses

            from dynaflip_ros.calibration.sim_scene import (
                CalibrationSimEnv,
                default_config,
            )
            from dynaflip_ros.robot.motion import move_to_joints
            from dynaflip_ros.robot.safety import SafeArm

            self.robot_model = "ur3_cb3"
            self.env = CalibrationSimEnv(mode, default_config((args.height, args.width)), board=board)
            env = self.env
            self.clock = lambda: env.sim_time_s
            self.sleep = env.step
            self.safety = _safety(args, self.robot_model)
            self.safety = dataclasses.replace(self.safety, tcp_offset_m=env.config.tcp_offset_m)
            try:
                self.safe = SafeArm(env.arm, self.safety, clock=self.clock)
                self.safe.connect()
                self.start_q = env.start_joints()
                print(f"sim: moving to the start pose {[round(float(v), 3) for v in self.start_q]}")
                move_to_joints(self.safe, self.start_q, clock=self.clock, sleep=self.sleep)
                self.camera = env.calibration_camera
                self.camera.connect()
            except BaseException:
                self.close()
                raise
            self.frame_period_s = 1.0 / args.fps
            self.cell = args.cell or "sim_calib"
            return
        if not args.robot_ip:
            from dynaflip_ros.errors import UserError

            raise UserError("give --sim, --robot-ip IP (or --from-views DIR for hand-eye / intrinsics)")
        from dynaflip_ros.cameras.realsense import RealSenseCamera
        from dynaflip_ros.configs.realsense import RealSenseConfig
        from dynaflip_ros.configs.robot import URRtdeConfig
        from dynaflip_ros.robot.safety import SafeArm
        from dynaflip_ros.robot.ur_rtde_arm import URRtdeArm

        self.robot_model = "ur3_cb3" if args.ur_type == "cb3" else "ur3e"
        self.clock, self.sleep = time.monotonic, time.sleep
        self.safety = _safety(args, self.robot_model)
        try:
            self.camera = RealSenseCamera(RealSenseConfig(serial=args.camera_serial, width=args.width,
                                                          height=args.height, fps=args.fps, enable_depth=False))
            self.camera.connect()
            self.arm = URRtdeArm(URRtdeConfig(robot_ip=args.robot_ip, ur_type=args.ur_type))
            self.safe = SafeArm(self.arm, self.safety, clock=time.monotonic)
            self.safe.connect()
            self.start_q = self.safe.state().q.copy()
        except BaseException:
            self.close()
            raise
        self.frame_period_s = None
        self.cell = args.cell or "real_cell"

    def close(self) -> None:
        for f in (lambda: self.safe and self.safe.disconnect(), lambda: self.camera and self.camera.disconnect(),
                  lambda: self.env and self.env.close()):
            try:
                f()
            except Exception as e:  # noqa: BLE001 - closing must try every device
                print(f"warning: close failed: {type(e).__name__}: {e}")


def _utc() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def solve_and_write(vs, out_path, cell: str, views_dir: str, flange_pose: str = "fk", tcp_offset_m: float = 0.0,
                    refine: bool = True, ground_truth: tuple | None = None) -> dict:
    """Solve a ViewSet, write YAML + report; returns a summary dict (printed by the CLI)."""
    from dynaflip_ros.calibration.procedure import solve_views
    from dynaflip_ros.calibration.results import (
        hand_eye_calibration_dict,
        hand_eye_summary,
        write_calibration_yaml,
        write_report,
    )
    from dynaflip_ros.calibration.transforms import transform_error

    out = solve_views(vs, flange_pose_source=flange_pose, tcp_offset_m=tcp_offset_m, refine=refine)
    res = out.result
    extra = {"views_used": out.used_views, "views_skipped": out.skipped_views,
             "corners_per_view": out.per_view_corners}
    cal = hand_eye_calibration_dict(res, vs.intrinsics, vs.board, cell, vs.robot_model, flange_pose,
                                    intrinsics_source=vs.intrinsics_source, views_dir=views_dir, extra=extra)
    gt = None
    if ground_truth is not None:
        x_gt, z_gt = ground_truth
        gt = {"x_error_deg_mm": list(transform_error(x_gt, res.x)), "board_error_deg_mm": list(transform_error(z_gt, res.z)),
              "per_method_x_error_deg_mm": {m: list(transform_error(x_gt, r.x)) for m, r in res.methods.items()
                                            if not r.error}}
        cal["hand_eye"]["ground_truth_error"] = {"x_rotation_deg": round(gt["x_error_deg_mm"][0], 5),
                                                 "x_translation_mm": round(gt["x_error_deg_mm"][1], 4)}
    write_calibration_yaml(out_path, cal)
    pj, pm = write_report(out_path, res, cal, gt)
    summary = {"calibration": str(out_path), "report": [str(pj), str(pm)], "mode": res.mode, "method": res.method,
               "n_views": res.n_views, "skipped_views": out.skipped_views, **hand_eye_summary(res)}
    if gt is not None:
        summary["ground_truth"] = gt
    return summary


# ---------------------------------------------------------------------- verbs
def _need_source(args) -> bool:
    import sys

    if args.sim or args.robot_ip or getattr(args, "from_views", ""):
        return True
    print("dynaflip calibrate: give --sim or --robot-ip IP" + (" or --from-views DIR" if hasattr(args, "from_views") else ""),
          file=sys.stderr)
    return False


def run_hand_eye(args) -> int:
    import json
    import sys
    from pathlib import Path

    import numpy as np

    from dynaflip_ros.robot.arm import ArmError

    if not _need_source(args):
        return 2

    if args.from_views:
        from dynaflip_ros.calibration.procedure import load_views

        vs = load_views(args.from_views)
        cell = args.cell or Path(args.from_views).name
        out = Path(args.out or f"calibration/{cell}_{vs.mode}.yaml")
        try:
            summary = solve_and_write(vs, out, cell, args.from_views, args.flange_pose, args.tcp_offset_m or 0.0,
                                      not args.no_refine)
        except ValueError as e:
            print(f"calibration failed: {e}")
            return 1
        print(json.dumps(summary, indent=1))
        return 0
    if args.views < 3:
        print("dynaflip calibrate: --views must be >= 3", file=sys.stderr)
        return 2
    from dynaflip_ros.calibration.intrinsics import device_intrinsics
    from dynaflip_ros.calibration.poses import (
        DEFAULT_PERTURBATION_RAD,
        generate_joint_poses,
    )
    from dynaflip_ros.calibration.procedure import (
        ViewSet,
        capture_automatic,
        capture_manual,
        save_views,
    )

    board = _board(args)
    pert = DEFAULT_PERTURBATION_RAD
    if args.perturbation_rad:
        pert = tuple(float(v) for v in args.perturbation_rad.split(","))
        if len(pert) != 6:
            print("dynaflip calibrate: --perturbation-rad needs 6 values", file=sys.stderr)
            return 2
    try:
        s = _Session(args, args.mode, board)
    except (ArmError, RuntimeError, OSError) as e:
        print(f"cannot open the devices: {type(e).__name__}: {e}")
        return 1
    try:
        intr, source, facts = device_intrinsics(s.camera)
        print(f"intrinsics ({source}): fx={intr.fx:.2f} fy={intr.fy:.2f} cx={intr.cx:.2f} cy={intr.cy:.2f} "
              f"{intr.width}x{intr.height}")
        vs = ViewSet(args.mode, board, intr, s.robot_model, intrinsics_source=source)
        views_dir = Path(args.views_dir or f"outputs/calibration/{s.cell}_{args.mode}_{_utc()}")
        if args.manual:
            capture_manual(s.safe, s.camera, vs, args.views, settle_s=args.settle_s, clock=s.clock, sleep=s.sleep)
        else:
            # Twice as many candidates as views: poses where the board is not detected are skipped.
            poses = generate_joint_poses(s.start_q, 2 * args.views, s.safety, seed=args.seed, perturbation_rad=pert,
                                         min_rotation_deg=args.min_rotation_deg)
            print(f"{len(poses)} candidate poses around {np.round(s.start_q, 3).tolist()} for {args.views} views; "
                  "moving through SafeArm")
            capture_automatic(s.safe, s.camera, vs, poses, max_speed_rad_s=args.max_speed_rad_s, settle_s=args.settle_s,
                              clock=s.clock, sleep=s.sleep, return_q=s.start_q, max_views=args.views)
        save_views(vs, views_dir)
        print(f"{len(vs.views)} views recorded in {views_dir}")
        # Sim truth: the unknowns are either fixed in the world or rigid on the flange, so the
        # model's values at the current pose are the answer.
        gt = s.env.ground_truth() if s.env is not None else None
        out = Path(args.out or f"calibration/{s.cell}_{args.mode}.yaml")
        summary = solve_and_write(vs, out, s.cell, str(views_dir), args.flange_pose, args.tcp_offset_m or 0.0,
                                  not args.no_refine, ground_truth=gt)
        if facts:
            summary["device"] = facts
        print(json.dumps(summary, indent=1, default=str))
        return 0
    except (ArmError, ValueError, RuntimeError) as e:
        print(f"calibration failed: {type(e).__name__}: {e}")
        return 1
    finally:
        s.close()


def run_latency(args) -> int:
    import json
    from pathlib import Path

    from dynaflip_ros.calibration.latency import (
        StampOffsetCamera,
        estimate_from_record,
        estimate_robot_lag,
        record_sine,
    )
    from dynaflip_ros.robot.arm import ArmError

    if not _need_source(args):
        return 2

    board = _board(args)
    try:
        s = _Session(args, "eye-to-hand", board)
    except (ArmError, RuntimeError, OSError) as e:
        print(f"cannot open the devices: {type(e).__name__}: {e}")
        return 1
    try:
        camera = StampOffsetCamera(s.camera, args.inject_delay_s) if s.env is not None else s.camera
        rec = record_sine(s.safe, camera, board, s.start_q, joint=args.joint, amplitude_rad=args.amplitude_rad,
                          frequency_hz=args.frequency_hz, duration_s=args.duration_s, clock=s.clock, sleep=s.sleep,
                          lockstep_frame_period_s=s.frame_period_s)
        est = estimate_from_record(rec, args.joint)
        lag = estimate_robot_lag(rec, args.joint)
        result = {"cell": s.cell, "date_utc": _utc(), "joint": args.joint, "amplitude_rad": args.amplitude_rad,
                  "frequency_hz": args.frequency_hz, **est.to_dict(),
                  "robot_lag_s": float(lag.latency_s), "robot_lag_sem_s": float(lag.sem_s),
                  "robot_lag_convention": "the measured joint follows the command sent at t at t + robot_lag_s",
                  "camera_vs_command_s": float(est.latency_s + lag.latency_s)}
        if s.env is not None:
            result["injected_delay_s"] = args.inject_delay_s
            result["error_s"] = est.latency_s - args.inject_delay_s
            result["error_frames"] = result["error_s"] / est.frame_period_s
        out = Path(args.out or f"outputs/calibration/latency_{s.cell}_{_utc()}.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
        if args.calibration_yaml:
            import yaml

            from dynaflip_ros.calibration.results import write_calibration_yaml

            p = Path(args.calibration_yaml)
            cal = yaml.safe_load(p.read_text())
            cal["latency"] = {k: result[k] for k in ("latency_s", "latency_std_s", "latency_sem_s", "n_frames",
                                                     "frame_period_s", "convention", "robot_lag_s",
                                                     "robot_lag_convention", "date_utc")}
            write_calibration_yaml(p, cal)
        print(json.dumps(result, indent=1))
        return 0
    except (ArmError, ValueError, RuntimeError) as e:
        print(f"latency measurement failed: {type(e).__name__}: {e}")
        return 1
    finally:
        s.close()


def run_intrinsics(args) -> int:
    import json
    from pathlib import Path

    from dynaflip_ros.calibration.intrinsics import (
        charuco_intrinsics_check,
        device_intrinsics,
    )


    if args.from_views:
        from dynaflip_ros.calibration.procedure import load_views

        vs = load_views(args.from_views)
        try:
            rep = charuco_intrinsics_check([v.rgb for v in vs.views], vs.board, vs.intrinsics)
        except ValueError as e:
            print(f"intrinsics check failed: {e}")
            return 1
        rep["intrinsics_source"] = vs.intrinsics_source
    else:
        from dynaflip_ros.robot.arm import ArmError

        board = _board(args)
        if args.sim:
            from dynaflip_ros.calibration.poses import generate_joint_poses
            from dynaflip_ros.calibration.procedure import ViewSet, capture_automatic

            s = _Session(args, args.mode, board)
            try:
                intr, source, facts = device_intrinsics(s.camera)
                vs = ViewSet(args.mode, board, intr, s.robot_model, intrinsics_source=source)
                poses = generate_joint_poses(s.start_q, args.views, s.safety, min_rotation_deg=8.0)
                capture_automatic(s.safe, s.camera, vs, poses, clock=s.clock, sleep=s.sleep)
                rep = charuco_intrinsics_check([v.rgb for v in vs.views], board, intr)
            except (ArmError, ValueError) as e:
                print(f"intrinsics check failed: {e}")
                return 1
            finally:
                s.close()
        else:
            from dynaflip_ros.cameras.realsense import RealSenseCamera
            from dynaflip_ros.configs.realsense import RealSenseConfig

            cam = RealSenseCamera(RealSenseConfig(serial=args.camera_serial, width=args.width, height=args.height,
                                                  fps=args.fps, enable_depth=False))
            cam.connect()
            try:
                intr, source, facts = device_intrinsics(cam)
                images = []
                for i in range(args.views):
                    input(f"[{i + 1}/{args.views}] hold the board in a new tilt/distance, press Enter: ")
                    images.append(cam.read().rgb)
                rep = charuco_intrinsics_check(images, board, intr) if images else {}
            except ValueError as e:
                print(f"intrinsics check failed: {e}")
                return 1
            finally:
                cam.disconnect()
        rep["intrinsics_source"] = source
        if facts:
            rep["device"] = facts
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rep, indent=1, default=str))
    print(json.dumps(rep, indent=1, default=str))
    return 0
