"""Per-cell calibration files (YAML) and the hand-eye report (JSON + Markdown).

The YAML extends the layout of `calibration/sim_cell.yaml` (`sim/calibration.py`): the keys
`cell`, `source`, `camera` (frame_id, width, height, fx, fy, cx, cy, distortion_model,
distortion) and `extrinsics` (parent_frame, child_frame, translation_m, rotation_quat_wxyz,
matrix) keep their meaning, so `sim.calibration.load_calibration` reads an eye-to-hand result
unchanged (parent `base`). Added: `format_version`, `date_utc`, `units`, and `hand_eye` (mode,
method, board definition, board pose, residuals, per-method comparison, view count). An eye-in-hand
result has `extrinsics.parent_frame: tool0` (camera on the wrist): use `load_cell_calibration`.

Units: metres, pixels; rotations as unit quaternions (w, x, y, z), w >= 0 (Hamilton), and as the
(4, 4) homogeneous `matrix` (the authoritative value; the quaternion is derived from it).
Frames: docs/hardware.md §1.7 (`base` = UR controller base, `tool0` = flange, z out of the flange) and
§3.4 (`camera_color_optical_frame`: +x right, +y down, +z forward).
"""
from __future__ import annotations

import datetime as _dt
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dynaflip_ros.calibration.board import BoardSpec
from dynaflip_ros.calibration.handeye import HandEyeResult, frames_of
from dynaflip_ros.calibration.transforms import transform_from_dict, transform_to_dict
from dynaflip_ros.cameras.base import CameraIntrinsics

FORMAT_VERSION = 2
UNITS = {"length": "m", "image": "px", "rotation": "quaternion wxyz (w >= 0) + 4x4 homogeneous matrix",
         "time": "s"}


def camera_block(k: CameraIntrinsics, frame_id: str = "camera_color_optical_frame", source: str = "") -> dict:
    """The `camera:` block (same keys as sim_cell.yaml, plus `intrinsics_source`)."""
    d = {
        "frame_id": frame_id, "width": int(k.width), "height": int(k.height),
        "fx": float(k.fx), "fy": float(k.fy), "cx": float(k.cx), "cy": float(k.cy),
        "distortion_model": "plumb_bob", "distortion": [float(v) for v in k.distortion],
    }
    if source:
        d["intrinsics_source"] = source
    return d


def _r(v, n=6):
    v = float(v)
    return round(v, n) if math.isfinite(v) else None


def hand_eye_summary(res: HandEyeResult) -> dict:
    """Residual numbers of a result (plain floats, for YAML/JSON)."""
    out = {
        "reprojection_rms_px": _r(res.reprojection_rms_px, 4),
        "reprojection_max_view_rms_px": _r(np.max(res.per_view_rms_px), 4),
        "axxb_rotation_rms_deg": _r(np.sqrt(np.mean(res.axxb_rotation_deg ** 2)), 5),
        "axxb_rotation_max_deg": _r(np.max(res.axxb_rotation_deg), 5),
        "axxb_translation_rms_mm": _r(np.sqrt(np.mean(res.axxb_translation_mm ** 2)), 4),
        "axxb_translation_max_mm": _r(np.max(res.axxb_translation_mm), 4),
        "board_spread_rotation_rms_deg": _r(np.sqrt(np.mean(res.board_spread_deg ** 2)), 5),
        "board_spread_translation_rms_mm": _r(np.sqrt(np.mean(res.board_spread_mm ** 2)), 4),
    }
    if res.loo:
        out.update({
            "loo_x_rotation_rms_deg": _r(res.loo["x_rotation_rms_deg"], 5),
            "loo_x_rotation_max_deg": _r(res.loo["x_rotation_max_deg"], 5),
            "loo_x_translation_rms_mm": _r(res.loo["x_translation_rms_mm"], 4),
            "loo_x_translation_max_mm": _r(res.loo["x_translation_max_mm"], 4),
            "loo_held_out_reprojection_rms_px": _r(res.loo["held_out_rms_px"], 4),
        })
    return out


def hand_eye_calibration_dict(res: HandEyeResult, intrinsics: CameraIntrinsics, board: BoardSpec, cell: str,
                              robot_model: str, flange_pose_source: str, intrinsics_source: str = "",
                              views_dir: str = "", date_utc: str | None = None, extra: dict | None = None) -> dict:
    """Calibration dict for one cell (see module doc for the layout)."""
    fr = frames_of(res.mode)
    date_utc = date_utc or _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    methods = {}
    for name, mr in res.methods.items():
        entry = mr.summary()
        if not mr.error:
            entry["x_translation_m"] = [round(float(v), 6) for v in mr.x[:3, 3]]
            entry["x_rotation_quat_wxyz"] = transform_to_dict(mr.x, *fr["X"], ndigits=6)["rotation_quat_wxyz"]
        methods[name] = entry
    he = {
        "mode": res.mode,
        "method": res.method,
        "solver": "cv2.calibrateHandEye (AX=XB) / cv2.calibrateRobotWorldHandEye (AX=ZB), best by chain "
                  "reprojection RMS, then scipy least_squares refinement of X and Z",
        "n_views": int(res.n_views),
        "robot_model": robot_model,
        "flange_pose_source": flange_pose_source,
        "board": board.to_dict(),
        "board_pose": transform_to_dict(res.z, *fr["Z"]),
        "residuals": hand_eye_summary(res),
        "methods": methods,
    }
    if views_dir:
        he["views_dir"] = str(views_dir)
    if extra:
        he.update(extra)
    src = f"hand-eye calibration ({res.mode}, {res.method}, {res.n_views} views), dynaflip_ros.calibration"
    return {
        "format_version": FORMAT_VERSION,
        "cell": cell,
        "source": src,
        "date_utc": date_utc,
        "units": dict(UNITS),
        "camera": camera_block(intrinsics, source=intrinsics_source),
        "extrinsics": transform_to_dict(res.x, *fr["X"]),
        "hand_eye": he,
    }


def write_calibration_yaml(path: str | Path, cal: dict) -> Path:
    """Write a calibration dict as YAML (creates parent folders). Returns the path."""
    import yaml

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    header = "# Generated by dynaflip_ros.calibration (dynaflip calibrate); frames: docs/hardware.md §1.7, §3.4.\n"
    p.write_text(header + yaml.safe_dump(cal, sort_keys=False))
    return p


@dataclass
class CellCalibration:
    """A loaded calibration file.

    k: (3, 3) camera matrix; dist: (5,) distortion; width/height px; t_parent_camera: (4, 4)
    camera optical frame in `parent_frame` ("base" for a fixed camera, "tool0" for a wrist
    camera); t_board: (4, 4) board pose (or None); raw: the whole dict.
    """

    k: np.ndarray
    dist: np.ndarray
    width: int
    height: int
    parent_frame: str
    t_parent_camera: np.ndarray
    t_board: np.ndarray | None
    raw: dict

    def intrinsics(self) -> CameraIntrinsics:
        return CameraIntrinsics(self.width, self.height, float(self.k[0, 0]), float(self.k[1, 1]),
                                float(self.k[0, 2]), float(self.k[1, 2]), tuple(float(v) for v in self.dist))


def load_cell_calibration(path: str | Path) -> CellCalibration:
    """Read a calibration YAML (sim_cell.yaml layout, format 1 or 2). Raises KeyError / ValueError."""
    import yaml

    cal = yaml.safe_load(Path(path).read_text())
    if not isinstance(cal, dict):
        raise ValueError(f"{path}: not a calibration mapping")  # noqa: TRY004 - bad file content
    c = cal["camera"]
    k = np.array([[c["fx"], 0.0, c["cx"]], [0.0, c["fy"], c["cy"]], [0.0, 0.0, 1.0]], dtype=float)
    ext = cal["extrinsics"]
    t = transform_from_dict(ext, f"{path}: extrinsics")
    board = None
    he = cal.get("hand_eye")
    if isinstance(he, dict) and "board_pose" in he:
        board = transform_from_dict(he["board_pose"], f"{path}: hand_eye.board_pose")
    return CellCalibration(k, np.asarray(c.get("distortion", [0.0] * 5), dtype=float), int(c["width"]),
                           int(c["height"]), str(ext.get("parent_frame", "base")), t, board, cal)


# ---------------------------------------------------------------------- report
def report_dict(res: HandEyeResult, cal: dict, ground_truth: dict | None = None) -> dict:
    """Everything in the consistency report (JSON-serialisable)."""
    rep = {
        "cell": cal.get("cell"), "date_utc": cal.get("date_utc"), "mode": res.mode, "method": res.method,
        "n_views": res.n_views,
        "summary": hand_eye_summary(res),
        "per_view_reprojection_rms_px": [_r(v, 4) for v in res.per_view_rms_px],
        "board_spread_per_view_deg": [_r(v, 5) for v in res.board_spread_deg],
        "board_spread_per_view_mm": [_r(v, 4) for v in res.board_spread_mm],
        "axxb_pairs": {"rotation_deg": [_r(v, 5) for v in res.axxb_rotation_deg],
                       "translation_mm": [_r(v, 4) for v in res.axxb_translation_mm]},
        "methods": cal["hand_eye"]["methods"],
        "extrinsics": cal["extrinsics"],
        "board_pose": cal["hand_eye"]["board_pose"],
    }
    if res.loo:
        rep["leave_one_out"] = {k: ([_r(x, 5) for x in v] if isinstance(v, np.ndarray) else _r(v, 5))
                                for k, v in res.loo.items()}
    if ground_truth:
        rep["ground_truth"] = ground_truth
    return rep


def report_markdown(rep: dict) -> str:
    """Markdown rendering of `report_dict`."""
    s = rep["summary"]
    lines = [
        f"# Hand-eye calibration report: {rep['cell']}",
        "",
        f"- date (UTC): {rep['date_utc']}",
        f"- mode: {rep['mode']}; chosen method: **{rep['method']}**; views: {rep['n_views']}",
        (f"- X ({rep['extrinsics']['parent_frame']} -> {rep['extrinsics']['child_frame']}): "
         f"t = {rep['extrinsics']['translation_m']} m, q_wxyz = {rep['extrinsics']['rotation_quat_wxyz']}"),
        f"- board ({rep['board_pose']['parent_frame']} -> calibration_board): t = {rep['board_pose']['translation_m']} m",
        "",
        "## Residuals of the chosen solution",
        "",
        "| quantity | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in s.items()]
    lines += ["", "## Methods (chain reprojection RMS picks the initial solution)", "",
              "| method | reproj RMS px | AX=XB rot RMS deg | AX=XB trans RMS mm | board spread deg | board spread mm |",
              "|---|---|---|---|---|---|"]
    for name, m in rep["methods"].items():
        if "error" in m:
            lines.append(f"| {name} | failed: {m['error']} | | | | |")
            continue
        lines.append(f"| {name} | {m['reprojection_rms_px']} | {m['axxb_rotation_rms_deg']} | "
                     f"{m['axxb_translation_rms_mm']} | {m['board_spread_rotation_rms_deg']} | "
                     f"{m['board_spread_translation_rms_mm']} |")
    lines += ["", "## Per view", "", "| view | reproj RMS px | board spread deg | board spread mm | LOO held-out px |",
              "|---|---|---|---|---|"]
    loo = rep.get("leave_one_out", {}).get("held_out_reprojection_rms_px")
    for i, v in enumerate(rep["per_view_reprojection_rms_px"]):
        lines.append(f"| {i} | {v} | {rep['board_spread_per_view_deg'][i]} | {rep['board_spread_per_view_mm'][i]} | "
                     f"{loo[i] if loo else ''} |")
    if "ground_truth" in rep:
        lines += ["", "## Against ground truth (simulation)", ""]
        lines += [f"- {k}: {v}" for k, v in rep["ground_truth"].items()]
    return "\n".join(lines) + "\n"


def write_report(yaml_path: str | Path, res: HandEyeResult, cal: dict,
                 ground_truth: dict | None = None) -> tuple[Path, Path]:
    """Write `<stem>.report.json` and `<stem>.report.md` next to the YAML; returns both paths."""
    p = Path(yaml_path)
    rep = report_dict(res, cal, ground_truth)
    pj = p.with_name(p.stem + ".report.json")
    pm = p.with_name(p.stem + ".report.md")
    pj.write_text(json.dumps(rep, indent=2))
    pm.write_text(report_markdown(rep))
    return pj, pm
