"""Camera intrinsics for calibration: the device's factory values, and a ChArUco cross-check.

Source of truth: the camera's own calibration, read through the `Camera` protocol
(`Frame.intrinsics`, a `CameraIntrinsics`; RealSense colour streams carry the factory values,
docs/hardware.md §3.3, zero distortion on D4xx colour). When the camera offers `settings()` (e.g.
`RealSenseCamera`), its device facts (name, serial, firmware) are recorded too.

The check (`charuco_intrinsics_check`) uses board views: (a) per-view PnP RMS with the factory K
held fixed, (b) a free `cv2.calibrateCamera` on the same corners (initialised at the factory K)
and the difference of fx, fy, cx, cy. A factory K is fine when (a) is sub-pixel and (b) agrees
within a few pixels; OpenCV doc "Camera Calibration and 3D Reconstruction" (calibrateCamera).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from dynaflip_ros.calibration.board import BoardSpec, detect_board
from dynaflip_ros.cameras.base import CameraIntrinsics


def device_intrinsics(camera) -> tuple[CameraIntrinsics, str, dict[str, Any]]:
    """Read one frame from a connected `Camera` -> (intrinsics, source text, device facts).

    Device facts come from `camera.settings()` when available (only the small identifying keys
    are kept: device, serial, firmware, intrinsics blocks). Raises CameraError from the camera.
    """
    frame = camera.read()
    k = frame.intrinsics
    facts: dict[str, Any] = {}
    source = f"{type(camera).__name__} Frame.intrinsics"
    settings = getattr(camera, "settings", None)
    if callable(settings):
        try:
            s = settings()
        except Exception as e:  # noqa: BLE001 - provenance only; the intrinsics are already read
            facts["settings_error"] = f"{type(e).__name__}: {e}"
        else:
            for key in ("device", "serial", "firmware", "name", "usb_type", "librealsense_version",
                        "color_intrinsics", "source"):
                if key in s:
                    facts[key] = s[key]
            source = f"{type(camera).__name__} device factory calibration (Frame.intrinsics)"
    if k.width != frame.rgb.shape[1] or k.height != frame.rgb.shape[0]:
        raise ValueError(f"intrinsics size {k.width}x{k.height} != image {frame.rgb.shape[1]}x{frame.rgb.shape[0]}")
    return k, source, facts


def charuco_intrinsics_check(images: list, board: BoardSpec, factory: CameraIntrinsics,
                             min_corners: int = 8) -> dict:
    """Cross-check factory intrinsics with ChArUco views.

    images: RGB (H, W, 3) uint8 views of the board (varied tilt/distance; >= 4 used).
    Returns a dict: n_views, factory_pnp_rms_px (all corners, factory K fixed), per_view_pnp_rms_px,
    free_fit {fx, fy, cx, cy, distortion, rms_px}, delta_px {fx, fy, cx, cy} (free - factory).
    Raises ValueError with fewer than 4 usable views.
    """
    import cv2

    k0 = factory.matrix()
    d0 = np.asarray(factory.distortion, dtype=float)
    obj, img, per_view = [], [], []
    for im in images:
        det = detect_board(im, board, k0, d0, min_corners=min_corners)
        if det is None or det.T_cam_board is None:
            continue
        obj.append(det.object_points.astype(np.float32).reshape(-1, 1, 3))
        img.append(det.image_points.astype(np.float32).reshape(-1, 1, 2))
        per_view.append(det.rms_px)
    if len(obj) < 4:
        raise ValueError(f"board detected in {len(obj)} views; the intrinsics check needs >= 4")
    all_err = []
    for o, i in zip(obj, img):
        from dynaflip_ros.calibration.board import reprojection_errors, solve_board_pose

        t, _ = solve_board_pose(o.reshape(-1, 3), i.reshape(-1, 2), k0, d0)
        all_err.append(reprojection_errors(o.reshape(-1, 3), i.reshape(-1, 2), t, k0, d0))
    e = np.concatenate(all_err)
    flags = cv2.CALIB_USE_INTRINSIC_GUESS | cv2.CALIB_FIX_K3
    rms, k, dist, _, _ = cv2.calibrateCamera(obj, img, (factory.width, factory.height), k0.copy(),
                                             d0[:5].copy() if len(d0) >= 5 else np.zeros(5), flags=flags)
    return {
        "n_views": len(obj),
        "factory": {"fx": factory.fx, "fy": factory.fy, "cx": factory.cx, "cy": factory.cy,
                    "distortion": list(factory.distortion)},
        "factory_pnp_rms_px": float(np.sqrt(np.mean(e ** 2))),
        "per_view_pnp_rms_px": [float(v) for v in per_view],
        "free_fit": {"fx": float(k[0, 0]), "fy": float(k[1, 1]), "cx": float(k[0, 2]), "cy": float(k[1, 2]),
                     "distortion": [float(v) for v in np.ravel(dist)], "rms_px": float(rms)},
        "delta_px": {"fx": float(k[0, 0] - factory.fx), "fy": float(k[1, 1] - factory.fy),
                     "cx": float(k[0, 2] - factory.cx), "cy": float(k[1, 2] - factory.cy)},
    }
