"""Hand-eye calibration on rendered MuJoCo views (ChArUco texture, offscreen CPU/EGL rendering)
against the model's ground truth, eye-to-hand and eye-in-hand, moving through SafeArm with
`move_to_joints` (lock-step: sleep = env.step). 640x480 images, 8 generated poses per mode.
The scene's board and wrist camera are pinned to the values its earlier MJCF text compiled to."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

pytest.importorskip("mujoco")
pytest.importorskip("cv2")

from dynaflip_ros.calibration.board import detect_board, project_points
from dynaflip_ros.calibration.intrinsics import (
    charuco_intrinsics_check,
    device_intrinsics,
)
from dynaflip_ros.calibration.poses import generate_joint_poses
from dynaflip_ros.calibration.procedure import (
    ViewSet,
    capture_automatic,
    load_views,
    save_views,
    solve_views,
)
from dynaflip_ros.calibration.results import (
    hand_eye_calibration_dict,
    load_cell_calibration,
    write_calibration_yaml,
)
from dynaflip_ros.calibration.sim_scene import CalibrationSimEnv
from dynaflip_ros.calibration.transforms import invert, transform_error
from dynaflip_ros.configs.safety import SafetyConfig
from dynaflip_ros.robot.motion import move_to_joints
from dynaflip_ros.robot.safety import SafeArm

# Accuracy bounds for the chosen (refined) solution vs the MJCF truth (measured ~0.01-0.02 deg,
# 0.04-0.15 mm; bounds leave margin for renderer differences).
MAX_ROT_DEG = 0.2
MAX_TRANS_MM = 2.0


def _run(mode, tmp_path, n_views=8):
    env = CalibrationSimEnv(mode)
    try:
        safety = SafetyConfig(tcp_offset_m=env.config.tcp_offset_m)
        safe = SafeArm(env.arm, safety, clock=lambda: env.sim_time_s)
        safe.connect()
        clock, sleep = (lambda: env.sim_time_s), env.step
        q0 = env.start_joints()
        move_to_joints(safe, q0, clock=clock, sleep=sleep)
        cam = env.calibration_camera
        # Texture mapping + pixel convention: corners detected at the start pose reproject
        # through the true camera and board poses to well under a pixel.
        f = cam.read()
        det = detect_board(f.rgb, env.board, f.intrinsics.matrix())
        assert det is not None and len(det.ids) == env.board.n_corners
        t_true = invert(env.t_base_camera()) @ env.t_base_board()
        err = np.linalg.norm(project_points(det.object_points, t_true, f.intrinsics.matrix()) - det.image_points, axis=1)
        assert np.sqrt(np.mean(err ** 2)) < 0.3, err
        intr, source, _ = device_intrinsics(cam)
        vs = ViewSet(mode, env.board, intr, safety.robot_model, intrinsics_source=source)
        poses = generate_joint_poses(q0, n_views + 4, safety, seed=0)  # spare candidates: some miss the board
        lines = []
        capture_automatic(safe, cam, vs, poses, clock=clock, sleep=sleep, settle_s=0.3, progress=lines.append,
                          return_q=q0, max_views=n_views)
        assert safe.stats.rejected == 0 and safe.stats.rate_limited == 0
        assert len(vs.views) == n_views, lines
        assert np.max(np.abs(safe.state().q - q0)) < 2e-3  # returned to the start pose
        out = solve_views(vs)
        x_gt, z_gt = env.ground_truth()
        return env, vs, out, x_gt, z_gt, safe.stats
    finally:
        env.close()


@pytest.mark.parametrize("mode", ["eye-to-hand", "eye-in-hand"])
def test_rendered_hand_eye_recovers_ground_truth(mode, tmp_path):
    _env, vs, out, x_gt, z_gt, _stats = _run(mode, tmp_path)
    res = out.result
    dr, dt = transform_error(x_gt, res.x)
    print(f"{mode}: {res.method} X error {dr:.4f} deg {dt:.3f} mm, views {res.n_views}, "
          f"reproj {res.reprojection_rms_px:.3f} px; closed forms: "
          + ", ".join(f"{m} {transform_error(x_gt, r.x)[0]:.3f} deg {transform_error(x_gt, r.x)[1]:.2f} mm"
                      for m, r in res.methods.items() if not r.error))
    assert dr < MAX_ROT_DEG and dt < MAX_TRANS_MM
    zr, zt = transform_error(z_gt, res.z)  # the board's place falls out of the chain
    assert zr < MAX_ROT_DEG and zt < MAX_TRANS_MM
    assert res.reprojection_rms_px < 0.5 and res.loo["x_translation_max_mm"] < MAX_TRANS_MM
    # Every closed-form method lands within a few mm / half a degree.
    for m, r in res.methods.items():
        if not r.error and m != "ANDREFF":
            a, b = transform_error(x_gt, r.x)
            assert a < 0.5 and b < 8.0, (m, a, b)
    # Recorded views round trip: the offline solve gives the same answer.
    d = tmp_path / "views"
    save_views(vs, d)
    vs2 = load_views(d)
    assert len(vs2.views) == len(vs.views) and (d / "view_000.png").is_file()
    np.testing.assert_allclose(vs2.views[0].q_rad, vs.views[0].q_rad)
    out2 = solve_views(vs2)
    assert transform_error(res.x, out2.result.x)[1] < 1e-6
    # YAML with the frames of the mode.
    cal = hand_eye_calibration_dict(res, vs.intrinsics, vs.board, "sim_calib", "ur3_cb3", "fk",
                                    intrinsics_source=vs.intrinsics_source, views_dir=str(d))
    p = write_calibration_yaml(tmp_path / f"sim_calib_{mode}.yaml", cal)
    loaded = load_cell_calibration(p)
    assert loaded.parent_frame == ("base" if mode == "eye-to-hand" else "tool0")
    np.testing.assert_allclose(loaded.t_parent_camera, res.x, atol=1e-8)
    json.dumps(cal)  # plain types only
    if mode == "eye-in-hand":
        # Intrinsics cross-check on the same views: factory (model) K fits, a free fit agrees.
        rep = charuco_intrinsics_check([v.rgb for v in vs.views], vs.board, vs.intrinsics)
        print("intrinsics check:", rep["factory_pnp_rms_px"], rep["delta_px"])
        assert rep["factory_pnp_rms_px"] < 0.3
        assert abs(rep["delta_px"]["cx"]) < 8 and abs(rep["delta_px"]["cy"]) < 8
        assert abs(rep["delta_px"]["fx"]) < 0.03 * vs.intrinsics.fx


# Board / wrist camera of the compiled scene, pinned (bit for bit) to what the scene's earlier MJCF
# text compiled to; the texture is the 680x920 RGB board image, pinned by its sha256.
_BOARD_TEXTURE_SHA256 = "2d55ff184a5538efce2df69f7d34a5bbf79d4d8ff4f86e7a8cd90cfbaac0fbcd"
_PINNED_BOARD = {
    "eye-to-hand": ("gripper", [0.1, 0.0, 0.08], [0.4226182615972298, 0.0, 0.906307787103551, 0.0]),
    "eye-in-hand": ("world", [0.26, -0.08, 0.0016], [1.0, 0.0, 0.0, 0.0]),
}


@pytest.mark.parametrize("mode", ["eye-to-hand", "eye-in-hand"])
def test_scene_board_and_wrist_camera_are_pinned(mode):
    env = CalibrationSimEnv(mode)
    try:
        m = env.model
        board = m.body("calib_board")
        parent, pos, quat = _PINNED_BOARD[mode]
        assert m.body(board.parentid[0]).name == parent
        np.testing.assert_array_equal(board.pos, pos)
        np.testing.assert_array_equal(board.quat, quat)
        assert board.mass[0] == 0.05
        np.testing.assert_array_equal(m.geom("calib_board_geom").size, [0.085, 0.115, 0.0015])
        tex = m.texture("charuco")
        assert (tex.width[0], tex.height[0], tex.nchannel[0]) == (680, 920, 3)
        data = m.tex_data[tex.adr[0]:tex.adr[0] + 680 * 920 * 3]
        assert hashlib.sha256(data.tobytes()).hexdigest() == _BOARD_TEXTURE_SHA256
        if mode == "eye-in-hand":
            cam = m.camera("wrist_rgb")
            assert m.body(cam.bodyid[0]).name == "gripper" and cam.fovy[0] == 58.0
            np.testing.assert_array_equal(cam.pos, [0.07, 0.0, 0.05])
            np.testing.assert_array_equal(cam.quat, [0.0739127852467851, 0.7032331762488617, 0.7032331762488617,
                                                     0.0739127852467851])
        else:
            assert m.ncam == 1
    finally:
        env.close()
