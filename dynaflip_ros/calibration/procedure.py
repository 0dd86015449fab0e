"""Guided hand-eye procedure: capture views (automatic through SafeArm, or manual in freedrive),
record them (PNG images + JSON poses) and solve, online or later from the recorded folder.

Views folder layout (`save_views` / `load_views`; JSON only, never pickle):
    views.json   {"format": "dynaflip.calibration.views/1", "mode", "board", "intrinsics",
                  "intrinsics_source", "robot_model", "created_utc", "views": [
                      {"index", "image": "view_000.png", "q_rad" (6,), "tcp_pose" (7,),
                       "t_base_flange" (4x4, FK of q), "robot_stamp_s", "camera_stamp_s"}, ...]}
    view_000.png ... (RGB as captured, written by OpenCV as BGR PNG)
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dynaflip_ros.calibration.board import BoardSpec, detect_board
from dynaflip_ros.calibration.handeye import (
    MODES,
    HandEyeResult,
    Observations,
    calibrate_hand_eye,
)
from dynaflip_ros.calibration.transforms import check_transform
from dynaflip_ros.cameras.base import CameraIntrinsics, Frame
from dynaflip_ros.configs.safety import ROBOT_MODELS
from dynaflip_ros.robot.kinematics import forward_kinematics

log = logging.getLogger(__name__)
VIEWS_FORMAT = "dynaflip.calibration.views/1"


@dataclass
class View:
    """One captured view: rgb (H, W, 3) uint8; q_rad (6,); tcp_pose (7,) as the arm reports it;
    t_base_flange (4, 4) tool0 in `base` (FK of q on the robot model); stamps in seconds."""

    rgb: np.ndarray
    q_rad: np.ndarray
    tcp_pose: np.ndarray
    t_base_flange: np.ndarray
    robot_stamp_s: float
    camera_stamp_s: float


@dataclass
class ViewSet:
    """Recorded views plus what is needed to solve them offline."""

    mode: str
    board: BoardSpec
    intrinsics: CameraIntrinsics
    robot_model: str
    views: list = field(default_factory=list)
    intrinsics_source: str = "Frame.intrinsics"
    created_utc: str = ""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.robot_model not in ROBOT_MODELS:
            raise ValueError(f"robot_model must be one of {sorted(ROBOT_MODELS)}, got {self.robot_model!r}")


def intrinsics_to_dict(k: CameraIntrinsics) -> dict:
    return {"width": k.width, "height": k.height, "fx": k.fx, "fy": k.fy, "cx": k.cx, "cy": k.cy,
            "distortion": list(k.distortion)}


def intrinsics_from_dict(d: dict) -> CameraIntrinsics:
    return CameraIntrinsics(int(d["width"]), int(d["height"]), float(d["fx"]), float(d["fy"]), float(d["cx"]),
                            float(d["cy"]), tuple(float(v) for v in d.get("distortion", [0.0] * 5)))


def save_views(vs: ViewSet, out_dir: str | Path) -> Path:
    """Write the views folder (see module doc); returns the views.json path."""
    import cv2

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for i, v in enumerate(vs.views):
        name = f"view_{i:03d}.png"
        if not cv2.imwrite(str(out / name), cv2.cvtColor(v.rgb, cv2.COLOR_RGB2BGR)):
            raise OSError(f"cannot write {out / name}")
        entries.append({"index": i, "image": name, "q_rad": [float(x) for x in v.q_rad],
                        "tcp_pose": [float(x) for x in v.tcp_pose],
                        "t_base_flange": [[float(x) for x in row] for row in v.t_base_flange],
                        "robot_stamp_s": float(v.robot_stamp_s), "camera_stamp_s": float(v.camera_stamp_s)})
    doc = {"format": VIEWS_FORMAT, "mode": vs.mode, "board": vs.board.to_dict(),
           "intrinsics": intrinsics_to_dict(vs.intrinsics), "intrinsics_source": vs.intrinsics_source,
           "robot_model": vs.robot_model,
           "created_utc": vs.created_utc or _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "views": entries}
    p = out / "views.json"
    p.write_text(json.dumps(doc, indent=1))
    return p


def load_views(views_dir: str | Path) -> ViewSet:
    """Read a views folder written by `save_views`. Raises FileNotFoundError / ValueError."""
    import cv2

    d = Path(views_dir)
    p = d / "views.json"
    if not p.is_file():
        raise FileNotFoundError(f"{p} not found (expected a folder written by `dynaflip calibrate hand-eye`)")
    doc = json.loads(p.read_text())
    if doc.get("format") != VIEWS_FORMAT:
        raise ValueError(f"{p}: format {doc.get('format')!r}, expected {VIEWS_FORMAT!r}")
    vs = ViewSet(doc["mode"], BoardSpec.from_dict(doc["board"]), intrinsics_from_dict(doc["intrinsics"]),
                 doc["robot_model"], intrinsics_source=doc.get("intrinsics_source", ""),
                 created_utc=doc.get("created_utc", ""))
    for e in doc["views"]:
        img_path = (d / e["image"]).resolve()
        if d.resolve() not in img_path.parents:
            raise ValueError(f"{p}: image path {e['image']!r} leaves the views folder")
        bgr = cv2.imread(str(img_path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"cannot read image {img_path}")
        vs.views.append(View(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), np.asarray(e["q_rad"], float),
                             np.asarray(e["tcp_pose"], float),
                             check_transform(np.asarray(e["t_base_flange"], float), f"view {e['index']} t_base_flange"),
                             float(e["robot_stamp_s"]), float(e["camera_stamp_s"])))
    return vs


# ---------------------------------------------------------------------- capture
def latest_frame_after(camera, t_min_s: float, max_frames: int = 30) -> Frame:
    """Read frames until one is stamped at or after `t_min_s` (drops frames buffered while the arm
    moved). Raises CameraError from the camera, RuntimeError after `max_frames` stale frames."""
    for _ in range(max_frames):
        f = camera.read()
        if f.stamp_s >= t_min_s:
            return f
    raise RuntimeError(f"no camera frame stamped after {t_min_s:.3f} s within {max_frames} frames; "
                       "are the camera and robot clocks the same (host monotonic)?")


def capture_view(safe_arm, camera, robot_model: str, clock: Callable[[], float]) -> View:
    """Read the arm state and a fresh frame (stamped after the state) at rest -> View."""
    st = safe_arm.state()
    t_state = clock()
    frame = latest_frame_after(camera, t_state)
    q = np.asarray(st.q, dtype=float)
    t_bf = forward_kinematics(q, ROBOT_MODELS[robot_model])
    return View(np.asarray(frame.rgb), q, np.asarray(st.tcp_pose, float), t_bf, float(st.stamp_s), float(frame.stamp_s))


def board_predicted_visible(vs: ViewSet, seen: list, q: np.ndarray, margin_px: float = 10.0,
                            min_corners: int = 8) -> bool:
    """Whether enough ChArUco corners (at least `min_corners` and a third of the board) project
    inside the image (with a margin, in front of the camera) at joints q (6,), through a
    provisional PARK hand-eye solution of the `seen` (t_base_flange, T_cam_board) pairs.
    True (unknown: try the pose) when that solve fails."""
    from dynaflip_ros.calibration.board import project_points
    from dynaflip_ros.calibration.handeye import (
        predicted_T_cam_board,
        solve_closed_form,
    )

    try:
        x, z = solve_closed_form(vs.mode, "PARK", np.asarray([s[0] for s in seen]), np.asarray([s[1] for s in seen]))
    except Exception:  # noqa: BLE001 - cv2.error on degenerate early views: no prediction
        return True
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(z))):
        return True
    t_cb = predicted_T_cam_board(vs.mode, x, z, forward_kinematics(np.asarray(q, float), ROBOT_MODELS[vs.robot_model]))
    pts = vs.board.corners_board_m()
    depth = (pts @ t_cb[:3, :3].T + t_cb[:3, 3])[:, 2]
    px = project_points(pts, t_cb, vs.intrinsics.matrix(), np.asarray(vs.intrinsics.distortion, float))
    inside = ((depth > 0.05) & (px[:, 0] >= margin_px) & (px[:, 0] <= vs.intrinsics.width - 1 - margin_px)
              & (px[:, 1] >= margin_px) & (px[:, 1] <= vs.intrinsics.height - 1 - margin_px))
    return int(inside.sum()) >= max(min_corners, vs.board.n_corners // 3)


def capture_automatic(safe_arm, camera, vs: ViewSet, joint_poses: np.ndarray, *, max_speed_rad_s: float = 0.3,
                      rate_hz: float = 125.0, settle_s: float = 0.5, clock: Callable[[], float] = time.monotonic,
                      sleep: Callable[[float], object] = time.sleep, min_corners: int = 8,
                      progress: Callable[[str], None] = print, return_q: np.ndarray | None = None,
                      max_views: int | None = None, predict_visibility: bool = True) -> ViewSet:
    """Move through `joint_poses` (N, 6) with `move_to_joints` (SafeArm), settle, capture; views
    where the board is not detected (fewer than `min_corners` corners) are skipped and reported.
    Stops once `vs` holds `max_views` views (pass more candidate poses than views wanted).
    With `predict_visibility`, once 4 views are in, a provisional closed-form calibration (PARK)
    predicts where the board will be for each further pose, and poses that would put a board
    corner outside the image are skipped without moving (`board_predicted_visible`).
    Progress lines go to `progress`. Moves back to `return_q` at the end when given.
    Raises ArmError (protective stop, timeout) / CameraError from the devices."""
    from dynaflip_ros.robot.motion import move_to_joints

    k = vs.intrinsics.matrix()
    n = len(joint_poses)
    seen: list[tuple[np.ndarray, np.ndarray]] = []  # (t_base_flange, T_cam_board) of captured views
    for i, q in enumerate(joint_poses):
        if max_views is not None and len(vs.views) >= max_views:
            break
        if predict_visibility and len(seen) >= 4 and not board_predicted_visible(vs, seen, q, min_corners=min_corners):
            progress(f"[{i + 1}/{n}] board predicted outside the image (provisional calibration): pose skipped")
            continue
        move_to_joints(safe_arm, q, max_speed_rad_s=max_speed_rad_s, rate_hz=rate_hz, clock=clock, sleep=sleep)
        sleep(settle_s)
        v = capture_view(safe_arm, camera, vs.robot_model, clock)
        det = detect_board(v.rgb, vs.board, k, np.asarray(vs.intrinsics.distortion), min_corners=min_corners)
        if det is None or det.T_cam_board is None:
            progress(f"[{i + 1}/{n}] board not detected: view skipped")
            continue
        vs.views.append(v)
        seen.append((v.t_base_flange, det.T_cam_board))
        progress(f"[{i + 1}/{n}] view {len(vs.views)}: {len(det.ids)} corners, PnP RMS {det.rms_px:.3f} px, "
                 f"board at {np.round(det.T_cam_board[:3, 3], 3).tolist()} m")
    if return_q is not None:
        move_to_joints(safe_arm, return_q, max_speed_rad_s=max_speed_rad_s, rate_hz=rate_hz, clock=clock, sleep=sleep)
    return vs


def capture_manual(safe_arm, camera, vs: ViewSet, n_views: int, *, input_fn: Callable[[str], str] = input,
                   settle_s: float = 0.5, clock: Callable[[], float] = time.monotonic,
                   sleep: Callable[[float], object] = time.sleep, min_corners: int = 8,
                   progress: Callable[[str], None] = print) -> ViewSet:
    """Manual (freedrive) capture: per view the user moves the arm by hand (teach mode when the
    arm offers `set_freedrive`, e.g. URRtdeArm), then presses Enter; 'q' finishes early. Nothing is
    commanded to the arm here."""
    arm = getattr(safe_arm, "arm", safe_arm)
    freedrive = getattr(arm, "set_freedrive", None)
    k = vs.intrinsics.matrix()
    try:
        while len(vs.views) < n_views:
            if freedrive is not None:
                freedrive(True)
            ans = input_fn(f"[{len(vs.views) + 1}/{n_views}] move the arm (board in view, new orientation), "
                           "let go, press Enter (q = finish): ")
            if freedrive is not None:
                freedrive(False)
            if ans.strip().lower() == "q":
                break
            sleep(settle_s)
            v = capture_view(safe_arm, camera, vs.robot_model, clock)
            det = detect_board(v.rgb, vs.board, k, np.asarray(vs.intrinsics.distortion), min_corners=min_corners)
            if det is None or det.T_cam_board is None:
                progress("board not detected: move so that the whole board is in view and try again")
                continue
            vs.views.append(v)
            progress(f"view {len(vs.views)}: {len(det.ids)} corners, PnP RMS {det.rms_px:.3f} px")
    finally:
        if freedrive is not None:
            freedrive(False)
    return vs


# ---------------------------------------------------------------------- solve
@dataclass
class SolveOutcome:
    result: HandEyeResult
    used_views: list
    skipped_views: list
    per_view_corners: list


def observations_from_views(vs: ViewSet, min_corners: int = 8, flange_pose_source: str = "fk",
                            tcp_offset_m: float = 0.0) -> tuple[Observations, list, list, list]:
    """Detect the board in every view -> (Observations, used indices, skipped indices, corner counts).

    flange_pose_source: "fk" (DH forward kinematics of q, the default) or "tcp" (the arm's
    reported tcp_pose with `tcp_offset_m` along tool z removed)."""
    from dynaflip_ros.calibration.transforms import (
        invert,
        make_transform,
        transform_from_pose7,
    )

    if flange_pose_source not in ("fk", "tcp"):
        raise ValueError(f"flange_pose_source must be 'fk' or 'tcp', got {flange_pose_source!r}")
    k = vs.intrinsics.matrix()
    dist = np.asarray(vs.intrinsics.distortion, dtype=float)
    tbf, tcb, ops, ips, used, skipped, counts = [], [], [], [], [], [], []
    for i, v in enumerate(vs.views):
        det = detect_board(v.rgb, vs.board, k, dist, min_corners=min_corners)
        if det is None or det.T_cam_board is None:
            skipped.append(i)
            continue
        if flange_pose_source == "fk":
            t = v.t_base_flange
        else:
            t = transform_from_pose7(v.tcp_pose) @ invert(make_transform(np.eye(3), [0, 0, tcp_offset_m]))
        tbf.append(t)
        tcb.append(det.T_cam_board)
        ops.append(det.object_points)
        ips.append(det.image_points)
        used.append(i)
        counts.append(len(det.ids))
    if len(used) < 3:
        raise ValueError(f"the board was detected in {len(used)} of {len(vs.views)} views; need >= 3")
    return Observations(np.asarray(tbf), np.asarray(tcb), ops, ips, k, dist), used, skipped, counts


def solve_views(vs: ViewSet, min_corners: int = 8, flange_pose_source: str = "fk", tcp_offset_m: float = 0.0,
                methods=None, refine: bool = True) -> SolveOutcome:
    """Detect + `calibrate_hand_eye` on a ViewSet."""
    from dynaflip_ros.calibration.handeye import ALL_METHODS

    obs, used, skipped, counts = observations_from_views(vs, min_corners, flange_pose_source, tcp_offset_m)
    res = calibrate_hand_eye(obs, vs.mode, methods=tuple(methods or ALL_METHODS), refine=refine)
    return SolveOutcome(res, used, skipped, counts)
