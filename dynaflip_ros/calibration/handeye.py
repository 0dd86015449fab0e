"""Hand-eye calibration from ChArUco views: OpenCV closed-form solvers, chain refinement, residuals.

Two set-ups (docs/hardware.md §1.7 frames: UR `base`, `tool0` = flange with z out of the flange;
§3.4: camera optical frame +x right, +y down, +z forward):

* eye-to-hand: the camera is fixed in the cell, the board rides on the flange/gripper.
  Unknowns X = T_base_cam (camera optical frame in `base`) and Z = T_flange_board.
  Chain per view i: T_cam_board_i = X^-1 · T_base_flange_i · Z.
* eye-in-hand: the camera rides on the wrist, the board is fixed in the cell.
  Unknowns X = T_flange_cam and Z = T_base_board.
  Chain per view i: T_cam_board_i = X^-1 · T_base_flange_i^-1 · Z.

Closed-form solvers (`cv2.calibrateHandEye`, AX = XB): TSAI, PARK, HORAUD, ANDREFF,
DANIILIDIS. OpenCV documents eye-in-hand with gripper->base poses; for eye-to-hand it says to pass
base->gripper (the inverted robot poses), and the result is then camera->base. Z then follows
per view from the chain and is averaged (chordal mean). The robot-world solvers
(`cv2.calibrateRobotWorldHandEye`, AX = ZB: SHAH, LI) give X and Z together. Every candidate is
scored by the reprojection RMS of the board corners through the full chain (K from the camera);
the best is refined by non-linear least squares on that reprojection error over X and Z
(`scipy.optimize.least_squares`, the "reprojection error" refinement of e.g. Tabb & Ahmad Yousef 2017).

Residuals reported: per-view chain reprojection RMS (px); AX = XB over all view pairs (rotation
deg, translation mm); spread of the per-view Z_i (deg, mm); leave-one-out X spread and the
held-out view's reprojection error.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from dynaflip_ros.calibration.board import project_points
from dynaflip_ros.calibration.transforms import (
    check_transform,
    invert,
    make_transform,
    matrix_to_rotvec,
    mean_transform,
    rotation_angle_deg,
    rotvec_to_matrix,
    transform_error,
)

MODES: tuple[str, ...] = ("eye-to-hand", "eye-in-hand")
AXXB_METHODS: tuple[str, ...] = ("TSAI", "PARK", "HORAUD", "ANDREFF", "DANIILIDIS")
AXZB_METHODS: tuple[str, ...] = ("SHAH", "LI")
ALL_METHODS: tuple[str, ...] = AXXB_METHODS + AXZB_METHODS
MIN_VIEWS = 3


def frames_of(mode: str) -> dict[str, tuple[str, str]]:
    """Parent/child frame names of X and Z for a mode."""
    _check_mode(mode)
    if mode == "eye-to-hand":
        return {"X": ("base", "camera_color_optical_frame"), "Z": ("tool0", "calibration_board")}
    return {"X": ("tool0", "camera_color_optical_frame"), "Z": ("base", "calibration_board")}


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def _stack(ts, name: str) -> np.ndarray:
    a = np.asarray(ts, dtype=float)
    if a.ndim != 3 or a.shape[1:] != (4, 4):
        raise ValueError(f"{name} must be (N, 4, 4), got {a.shape}")
    for i, t in enumerate(a):
        check_transform(t, f"{name}[{i}]", tol=1e-5)
    return a


# ---------------------------------------------------------------------- chain algebra
def predicted_T_cam_board(mode: str, x: np.ndarray, z: np.ndarray, t_base_flange: np.ndarray) -> np.ndarray:
    """(4, 4) board pose in the camera predicted by the chain for one robot pose (see module doc)."""
    if mode == "eye-to-hand":
        return invert(x) @ t_base_flange @ z
    return invert(x) @ invert(t_base_flange) @ z


def board_poses_from_chain(mode: str, x: np.ndarray, t_base_flange: np.ndarray, t_cam_board: np.ndarray) -> np.ndarray:
    """(N, 4, 4) per-view Z_i implied by X and each view (Z = T_flange_board or T_base_board)."""
    out = []
    for tbf, tcb in zip(t_base_flange, t_cam_board):
        out.append(invert(tbf) @ x @ tcb if mode == "eye-to-hand" else tbf @ x @ tcb)
    return np.asarray(out)


def axxb_residuals(mode: str, x: np.ndarray, t_base_flange: np.ndarray, t_cam_board: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AX = XB residuals over all view pairs (i < j): (rotation deg (P,), translation mm (P,)).

    eye-in-hand: A = T_bf_j^-1 T_bf_i, B = T_cb_j T_cb_i^-1; eye-to-hand: A = T_bf_j T_bf_i^-1,
    B = T_cb_j T_cb_i^-1 (both from equating the chain's Z for views i and j).
    """
    rot, tr = [], []
    for i, j in itertools.combinations(range(len(t_base_flange)), 2):
        if mode == "eye-in-hand":
            a = invert(t_base_flange[j]) @ t_base_flange[i]
        else:
            a = t_base_flange[j] @ invert(t_base_flange[i])
        b = t_cam_board[j] @ invert(t_cam_board[i])
        e = invert(a @ x) @ (x @ b)
        rot.append(rotation_angle_deg(e[:3, :3]))
        tr.append(float(np.linalg.norm((a @ x)[:3, 3] - (x @ b)[:3, 3]) * 1000.0))
    return np.asarray(rot), np.asarray(tr)


def check_pose_diversity(t_base_flange: np.ndarray, min_rotation_deg: float = 5.0) -> None:
    """Raise ValueError unless the robot poses rotate about at least two distinct axes by at least
    `min_rotation_deg` (AX = XB is unsolvable from pure translations or a single rotation axis;
    Tsai & Lenz 1989, §IV)."""
    axes = []
    for i, j in itertools.combinations(range(len(t_base_flange)), 2):
        rel = invert(t_base_flange[i]) @ t_base_flange[j]
        rv = matrix_to_rotvec(rel[:3, :3])
        if np.degrees(np.linalg.norm(rv)) >= min_rotation_deg:
            axes.append(rv / np.linalg.norm(rv))
    if not axes:
        raise ValueError(f"robot poses differ by less than {min_rotation_deg} deg in rotation: "
                         "add views with wrist rotations")
    a = np.asarray(axes)
    if np.linalg.svd(a, compute_uv=False)[1] < 0.1 * math.sqrt(len(a)):
        raise ValueError("all view-to-view rotations share one axis: rotate about other wrist joints too")


# ---------------------------------------------------------------------- solvers
def solve_closed_form(mode: str, method: str, t_base_flange: np.ndarray, t_cam_board: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One OpenCV solver -> (X, Z) (see module doc for their meaning). Raises ValueError."""
    import cv2

    _check_mode(mode)
    if method in AXXB_METHODS:
        if mode == "eye-to-hand":
            rob = [invert(t) for t in t_base_flange]  # base -> gripper, as OpenCV documents
        else:
            rob = list(t_base_flange)  # gripper -> base
        r_x, t_x = cv2.calibrateHandEye(
            [np.ascontiguousarray(t[:3, :3]) for t in rob], [np.ascontiguousarray(t[:3, 3]) for t in rob],
            [np.ascontiguousarray(t[:3, :3]) for t in t_cam_board], [np.ascontiguousarray(t[:3, 3]) for t in t_cam_board],
            method=getattr(cv2, f"CALIB_HAND_EYE_{method}"))
        x = make_transform(r_x, t_x.ravel())
        z = mean_transform(board_poses_from_chain(mode, x, t_base_flange, t_cam_board))
        return x, z
    if method in AXZB_METHODS:
        # OpenCV: cTw = cTg · gTb · bTw. eye-in-hand: c = camera, w = board, g = flange.
        # eye-to-hand: c := board, w := camera (boardTcam = boardTflange · flangeTbase · baseTcam).
        w2c = list(t_cam_board) if mode == "eye-in-hand" else [invert(t) for t in t_cam_board]
        b2g = [invert(t) for t in t_base_flange]
        r_bw, t_bw, r_gc, t_gc = cv2.calibrateRobotWorldHandEye(
            [np.ascontiguousarray(t[:3, :3]) for t in w2c], [np.ascontiguousarray(t[:3, 3]) for t in w2c],
            [np.ascontiguousarray(t[:3, :3]) for t in b2g], [np.ascontiguousarray(t[:3, 3]) for t in b2g],
            method=getattr(cv2, f"CALIB_ROBOT_WORLD_HAND_EYE_{method}"))
        t_world_base = make_transform(r_bw, t_bw.ravel())
        t_c_g = make_transform(r_gc, t_gc.ravel())
        if mode == "eye-in-hand":
            return invert(t_c_g), invert(t_world_base)  # X = T_flange_cam, Z = T_base_board
        return invert(t_world_base), invert(t_c_g)  # X = T_base_cam, Z = T_flange_board
    raise ValueError(f"method must be one of {ALL_METHODS}, got {method!r}")


@dataclass
class Observations:
    """Hand-eye input: N views.

    t_base_flange: (N, 4, 4) tool0 poses in `base`; t_cam_board: (N, 4, 4) board poses from PnP;
    object_points / image_points: per view (M_i, 3) board metres / (M_i, 2) px detected corners;
    k: (3, 3) camera matrix; dist: distortion coefficients.
    """

    t_base_flange: np.ndarray
    t_cam_board: np.ndarray
    object_points: list
    image_points: list
    k: np.ndarray
    dist: np.ndarray = field(default_factory=lambda: np.zeros(5))

    def __post_init__(self) -> None:
        self.t_base_flange = _stack(self.t_base_flange, "t_base_flange")
        self.t_cam_board = _stack(self.t_cam_board, "t_cam_board")
        n = len(self.t_base_flange)
        if len(self.t_cam_board) != n or len(self.object_points) != n or len(self.image_points) != n:
            raise ValueError("t_base_flange, t_cam_board, object_points and image_points need one entry per view")
        self.k = np.asarray(self.k, dtype=float)
        if self.k.shape != (3, 3):
            raise ValueError(f"k must be (3, 3), got {self.k.shape}")
        self.dist = np.asarray(self.dist, dtype=float).ravel()

    def __len__(self) -> int:
        return len(self.t_base_flange)

    def subset(self, idx) -> Observations:
        idx = list(idx)
        return Observations(self.t_base_flange[idx], self.t_cam_board[idx],
                            [self.object_points[i] for i in idx], [self.image_points[i] for i in idx],
                            self.k, self.dist)


def chain_reprojection_px(mode: str, x: np.ndarray, z: np.ndarray, obs: Observations) -> list[np.ndarray]:
    """Per view (M_i,) pixel errors of the detected corners against the chain's prediction."""
    out = []
    for tbf, op, ip in zip(obs.t_base_flange, obs.object_points, obs.image_points):
        pred = project_points(op, predicted_T_cam_board(mode, x, z, tbf), obs.k, obs.dist)
        out.append(np.linalg.norm(pred - ip, axis=1))
    return out


def _rms(errs: list[np.ndarray]) -> float:
    e = np.concatenate(errs) if errs else np.zeros(0)
    return float(np.sqrt(np.mean(e ** 2))) if len(e) else float("nan")


def refine_chain(mode: str, x0: np.ndarray, z0: np.ndarray, obs: Observations) -> tuple[np.ndarray, np.ndarray]:
    """Minimise the chain reprojection error over X and Z (12 parameters, Levenberg-Marquardt via
    `scipy.optimize.least_squares`, x_scale per block) starting from (x0, z0)."""
    import cv2
    from scipy.optimize import least_squares

    def unpack(p):
        return make_transform(rotvec_to_matrix(p[0:3]), p[3:6]), make_transform(rotvec_to_matrix(p[6:9]), p[9:12])

    obj = [np.ascontiguousarray(o, dtype=np.float64).reshape(-1, 1, 3) for o in obs.object_points]
    ip = [np.asarray(i, dtype=float) for i in obs.image_points]

    def residuals(p):
        x, z = unpack(p)
        res = []
        for tbf, o, i in zip(obs.t_base_flange, obj, ip):
            t = predicted_T_cam_board(mode, x, z, tbf)
            rvec, _ = cv2.Rodrigues(np.ascontiguousarray(t[:3, :3]))
            px, _ = cv2.projectPoints(o, rvec, np.ascontiguousarray(t[:3, 3]), obs.k, obs.dist)
            res.append((px.reshape(-1, 2) - i).ravel())
        return np.concatenate(res)

    p0 = np.concatenate([matrix_to_rotvec(x0[:3, :3]), x0[:3, 3], matrix_to_rotvec(z0[:3, :3]), z0[:3, 3]])
    sol = least_squares(residuals, p0, method="lm", x_scale=([0.01] * 3 + [0.001] * 3) * 2,
                        xtol=1e-12, ftol=1e-12, gtol=1e-12, max_nfev=2000)
    return unpack(sol.x)


@dataclass
class MethodResult:
    """One solver's answer and its scores (reprojection RMS px; AX=XB RMS deg / mm; Z spread)."""

    method: str
    x: np.ndarray
    z: np.ndarray
    reprojection_rms_px: float
    axxb_rotation_rms_deg: float
    axxb_translation_rms_mm: float
    z_spread_rotation_rms_deg: float
    z_spread_translation_rms_mm: float
    error: str = ""

    def summary(self) -> dict:
        if self.error:
            return {"error": self.error}
        return {
            "reprojection_rms_px": round(self.reprojection_rms_px, 4),
            "axxb_rotation_rms_deg": round(self.axxb_rotation_rms_deg, 5),
            "axxb_translation_rms_mm": round(self.axxb_translation_rms_mm, 4),
            "board_spread_rotation_rms_deg": round(self.z_spread_rotation_rms_deg, 5),
            "board_spread_translation_rms_mm": round(self.z_spread_translation_rms_mm, 4),
        }


def score(mode: str, method: str, x: np.ndarray, z: np.ndarray, obs: Observations) -> MethodResult:
    """Score (X, Z) on the observations (see `MethodResult`)."""
    rot, tr = axxb_residuals(mode, x, obs.t_base_flange, obs.t_cam_board)
    zs = board_poses_from_chain(mode, x, obs.t_base_flange, obs.t_cam_board)
    spread = np.array([transform_error(z, zi) for zi in zs])
    return MethodResult(
        method, x, z, _rms(chain_reprojection_px(mode, x, z, obs)),
        float(np.sqrt(np.mean(rot ** 2))) if len(rot) else float("nan"),
        float(np.sqrt(np.mean(tr ** 2))) if len(tr) else float("nan"),
        float(np.sqrt(np.mean(spread[:, 0] ** 2))), float(np.sqrt(np.mean(spread[:, 1] ** 2))))


@dataclass
class HandEyeResult:
    """Outcome of `calibrate_hand_eye`.

    mode; method: chosen pipeline name (e.g. "TSAI+refine"); x, z: (4, 4) (module doc);
    methods: every candidate's `MethodResult`; per_view_rms_px: (N,) chain reprojection RMS of
    the chosen answer; axxb_rotation_deg / axxb_translation_mm: per-pair residuals;
    loo: leave-one-out dict (per view X deviation deg / mm and held-out RMS px); n_views.
    """

    mode: str
    method: str
    x: np.ndarray
    z: np.ndarray
    methods: dict
    per_view_rms_px: np.ndarray
    axxb_rotation_deg: np.ndarray
    axxb_translation_mm: np.ndarray
    board_spread_deg: np.ndarray
    board_spread_mm: np.ndarray
    loo: dict
    n_views: int

    @property
    def reprojection_rms_px(self) -> float:
        return float(np.sqrt(np.mean(self.per_view_rms_px ** 2)))


def _solve_pipeline(mode: str, obs: Observations, methods, refine: bool) -> tuple[str, np.ndarray, np.ndarray, dict]:
    results: dict[str, MethodResult] = {}
    for m in methods:
        try:
            x, z = solve_closed_form(mode, m, obs.t_base_flange, obs.t_cam_board)
        except Exception as e:  # noqa: BLE001 - a solver failing (cv2.error) is reported, not fatal
            results[m] = MethodResult(m, np.full((4, 4), np.nan), np.full((4, 4), np.nan), float("inf"),
                                      float("nan"), float("nan"), float("nan"), float("nan"),
                                      error=f"{type(e).__name__}: {e}")
            continue
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(z))):
            results[m] = MethodResult(m, x, z, float("inf"), float("nan"), float("nan"), float("nan"), float("nan"),
                                      error="solver returned a non-finite result")
            continue
        results[m] = score(mode, m, x, z, obs)
    finite = [r for r in results.values() if np.isfinite(r.reprojection_rms_px)]
    if not finite:
        raise ValueError("every hand-eye solver failed; check the views (pose diversity, detections)")
    best = min(finite, key=lambda r: r.reprojection_rms_px)
    name, x, z = best.method, best.x, best.z
    if refine:
        xr, zr = refine_chain(mode, x, z, obs)
        ref = score(mode, f"{best.method}+refine", xr, zr, obs)
        results[ref.method] = ref
        if ref.reprojection_rms_px <= best.reprojection_rms_px:
            name, x, z = ref.method, xr, zr
    return name, x, z, results


def calibrate_hand_eye(obs: Observations, mode: str, methods: tuple[str, ...] = ALL_METHODS,
                       refine: bool = True, leave_one_out: bool = True) -> HandEyeResult:
    """Solve the hand-eye problem with every method, pick the lowest chain reprojection RMS,
    refine it, and compute the residual report.

    Raises ValueError for an unknown mode/method, fewer than 3 views, or poses without rotation
    diversity (`check_pose_diversity`).
    """
    _check_mode(mode)
    bad = [m for m in methods if m not in ALL_METHODS]
    if bad:
        raise ValueError(f"unknown methods {bad}; choose from {ALL_METHODS}")
    if len(obs) < MIN_VIEWS:
        raise ValueError(f"need at least {MIN_VIEWS} views with the board detected, got {len(obs)}")
    check_pose_diversity(obs.t_base_flange)
    name, x, z, results = _solve_pipeline(mode, obs, methods, refine)
    per_view = np.array([float(np.sqrt(np.mean(e ** 2))) for e in chain_reprojection_px(mode, x, z, obs)])
    rot, tr = axxb_residuals(mode, x, obs.t_base_flange, obs.t_cam_board)
    spread = np.array([transform_error(z, zi) for zi in board_poses_from_chain(mode, x, obs.t_base_flange, obs.t_cam_board)])
    loo: dict = {}
    if leave_one_out and len(obs) > MIN_VIEWS:
        base_method = name.split("+")[0]
        dev_deg, dev_mm, held_px = [], [], []
        for i in range(len(obs)):
            keep = [j for j in range(len(obs)) if j != i]
            sub = obs.subset(keep)
            try:
                _, xi, zi, _ = _solve_pipeline(mode, sub, (base_method,), refine and "+refine" in name)
            except ValueError:
                dev_deg.append(float("nan")); dev_mm.append(float("nan")); held_px.append(float("nan"))
                continue
            d, m = transform_error(x, xi)
            dev_deg.append(d)
            dev_mm.append(m)
            held_px.append(_rms(chain_reprojection_px(mode, xi, zi, obs.subset([i]))))
        dev_deg, dev_mm, held_px = map(np.asarray, (dev_deg, dev_mm, held_px))
        loo = {
            "x_rotation_deviation_deg": dev_deg, "x_translation_deviation_mm": dev_mm,
            "held_out_reprojection_rms_px": held_px,
            "x_rotation_max_deg": float(np.nanmax(dev_deg)), "x_translation_max_mm": float(np.nanmax(dev_mm)),
            "x_rotation_rms_deg": float(np.sqrt(np.nanmean(dev_deg ** 2))),
            "x_translation_rms_mm": float(np.sqrt(np.nanmean(dev_mm ** 2))),
            "held_out_rms_px": float(np.sqrt(np.nanmean(held_px ** 2))),
        }
    return HandEyeResult(mode, name, x, z, results, per_view, rot, tr, spread[:, 0], spread[:, 1], loo, len(obs))
