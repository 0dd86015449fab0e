"""Hand-eye math on synthetic views (no rendering): exact recovery without noise, bounded error
with pixel noise, residual bookkeeping, degenerate inputs, transform helpers, YAML round trip."""
from __future__ import annotations

import numpy as np
import pytest

from dynaflip_ros.calibration.board import BoardSpec, project_points, solve_board_pose
from dynaflip_ros.calibration.handeye import (
    ALL_METHODS,
    MODES,
    Observations,
    axxb_residuals,
    calibrate_hand_eye,
    check_pose_diversity,
    solve_closed_form,
)
from dynaflip_ros.calibration.results import (
    hand_eye_calibration_dict,
    load_cell_calibration,
    report_dict,
    write_calibration_yaml,
    write_report,
)
from dynaflip_ros.calibration.transforms import (
    invert,
    make_transform,
    matrix_to_rotvec,
    mean_transform,
    pose7_from_transform,
    quat_wxyz_to_matrix,
    rotvec_to_matrix,
    transform_error,
    transform_from_pose7,
    transform_from_ur_pose,
)
from dynaflip_ros.cameras.base import CameraIntrinsics

K = np.array([[600.0, 0, 320], [0, 600.0, 240], [0, 0, 1]])
INTR = CameraIntrinsics(640, 480, 600.0, 600.0, 320.0, 240.0)
SPEC = BoardSpec()


def truth(mode):
    if mode == "eye-to-hand":  # X = T_base_cam, Z = T_tool0_board
        return (make_transform(rotvec_to_matrix([2.2, 0.0, 0.1]), [0.6, 0.02, 0.7]),
                make_transform(rotvec_to_matrix([0.1, -0.9, 0.2]), [0.1, -0.05, 0.08]))
    return (make_transform(rotvec_to_matrix([0.0, 0.21, 0.05]), [0.07, 0.0, 0.05]),  # X = T_tool0_cam
            make_transform(rotvec_to_matrix([0.0, 0.0, 0.4]), [0.2, -0.1, 0.003]))  # Z = T_base_board


def synth(mode, n=10, noise_px=0.0, seed=0):
    """Views whose board poses in the camera are drawn directly (board 0.4-0.6 m ahead, tilted
    up to ~25 deg); the robot pose follows from the chain."""
    rng = np.random.default_rng(seed)
    x, z = truth(mode)
    pts = SPEC.corners_board_m()
    w, h = SPEC.size_m
    tbf, tcb, ops, ips = [], [], [], []
    for _ in range(n):
        r = rotvec_to_matrix(rng.normal(size=3) * 0.25)
        c = np.array([rng.uniform(-0.05, 0.05), rng.uniform(-0.04, 0.04), rng.uniform(0.4, 0.6)])
        t_cb = make_transform(r, c - r @ np.array([w / 2, h / 2, 0]))
        t_bf = x @ t_cb @ invert(z) if mode == "eye-to-hand" else invert(x @ t_cb @ invert(z))
        px = project_points(pts, t_cb, K) + rng.normal(size=(len(pts), 2)) * noise_px
        t_est, _ = solve_board_pose(pts, px, K, np.zeros(5))
        tbf.append(t_bf)
        tcb.append(t_est)
        ops.append(pts)
        ips.append(px)
    return Observations(np.array(tbf), np.array(tcb), ops, ips, K)


def test_transform_helpers_round_trip():
    rng = np.random.default_rng(1)
    for _ in range(20):
        rv = rng.normal(size=3)
        rv *= min(1.0, 3.0 / np.linalg.norm(rv))
        r = rotvec_to_matrix(rv)
        np.testing.assert_allclose(matrix_to_rotvec(r), rv, atol=1e-9)
        t = make_transform(r, rng.normal(size=3))
        np.testing.assert_allclose(transform_from_pose7(pose7_from_transform(t)), t, atol=1e-12)
        np.testing.assert_allclose(invert(t) @ t, np.eye(4), atol=1e-12)
        np.testing.assert_allclose(transform_from_ur_pose(np.r_[t[:3, 3], rv]), t, atol=1e-12)
    np.testing.assert_allclose(quat_wxyz_to_matrix(np.array([0.0, 0.0, 0.0, 1.0])), np.diag([-1.0, -1.0, 1.0]))
    # near-pi rotation vector
    r = rotvec_to_matrix([np.pi - 1e-8, 0, 0])
    assert abs(np.linalg.norm(matrix_to_rotvec(r)) - np.pi) < 1e-6
    # mean of two poses 10 deg apart about z is 5 deg from each
    a, b = make_transform(np.eye(3), [0, 0, 0]), make_transform(rotvec_to_matrix([0, 0, np.radians(10)]), [0, 0, 0.02])
    m = mean_transform(np.stack([a, b]))
    assert transform_error(a, m)[0] == pytest.approx(5.0, abs=1e-6)
    assert transform_error(a, m)[1] == pytest.approx(10.0, abs=1e-9)
    with pytest.raises(ValueError):
        quat_wxyz_to_matrix(np.zeros(4))


@pytest.mark.parametrize("mode", MODES)
def test_noise_free_views_are_recovered_exactly_by_every_method(mode):
    obs = synth(mode, n=8)
    x, z = truth(mode)
    for m in ALL_METHODS:
        xm, zm = solve_closed_form(mode, m, obs.t_base_flange, obs.t_cam_board)
        dr, dt = transform_error(x, xm)
        assert dr < 1e-5 and dt < 1e-4, (m, dr, dt)
        dr, dt = transform_error(z, zm)
        assert dr < 1e-5 and dt < 1e-4, (m, dr, dt)
    res = calibrate_hand_eye(obs, mode)
    assert transform_error(x, res.x)[1] < 1e-6 and transform_error(z, res.z)[1] < 1e-6
    assert res.reprojection_rms_px < 1e-6
    assert np.max(res.axxb_rotation_deg) < 1e-5 and np.max(res.axxb_translation_mm) < 1e-4
    assert res.loo["x_translation_max_mm"] < 1e-6
    rot, _tr = axxb_residuals(mode, x, obs.t_base_flange, obs.t_cam_board)
    assert len(rot) == 8 * 7 // 2 and np.max(rot) < 1e-5
    # A wrong X shows up in the AX=XB residuals (the check can fail).
    x_bad = x @ make_transform(rotvec_to_matrix([0, 0, np.radians(1.0)]), [0.002, 0, 0])
    rot_b, tr_b = axxb_residuals(mode, x_bad, obs.t_base_flange, obs.t_cam_board)
    assert np.max(rot_b) > 0.1 and np.max(tr_b) > 1.0


@pytest.mark.parametrize("mode", MODES)
def test_pixel_noise_gives_bounded_error_and_refinement_helps(mode):
    obs = synth(mode, n=12, noise_px=0.3, seed=2)
    x, _z = truth(mode)
    res = calibrate_hand_eye(obs, mode)
    dr, dt = transform_error(x, res.x)
    assert dr < 0.2 and dt < 2.0, (res.method, dr, dt)
    assert res.method.endswith("+refine")
    closed = [transform_error(x, r.x)[1] for name, r in res.methods.items() if "+" not in name and not r.error]
    assert dt <= min(closed) + 0.5  # refinement is at least about as good as the best closed form
    # The reprojection RMS of the refined chain is near the injected noise (0.3 px).
    assert 0.15 < res.reprojection_rms_px < 0.45
    assert res.loo["held_out_rms_px"] < 0.6
    assert len(res.per_view_rms_px) == 12


def test_degenerate_inputs_are_refused():
    obs = synth("eye-in-hand", n=8)
    with pytest.raises(ValueError, match="at least 3"):
        calibrate_hand_eye(obs.subset([0, 1]), "eye-in-hand")
    with pytest.raises(ValueError, match="mode"):
        calibrate_hand_eye(obs, "eye-on-table")
    with pytest.raises(ValueError, match="unknown methods"):
        calibrate_hand_eye(obs, "eye-in-hand", methods=("TSAI", "MAGIC"))
    # Pure translations: no rotation information.
    tbf = np.stack([make_transform(np.eye(3), [0.1 * i, 0.0, 0.3]) for i in range(5)])
    with pytest.raises(ValueError, match="rotation"):
        check_pose_diversity(tbf)
    # Rotations about one axis only.
    tbf = np.stack([make_transform(rotvec_to_matrix([0, 0, 0.3 * i]), [0.0, 0.0, 0.3]) for i in range(5)])
    with pytest.raises(ValueError, match="one axis"):
        check_pose_diversity(tbf)
    with pytest.raises(ValueError):
        Observations(obs.t_base_flange[:3], obs.t_cam_board[:4], obs.object_points[:3], obs.image_points[:3], K)


def test_yaml_and_report_round_trip(tmp_path):
    obs = synth("eye-to-hand", n=8, noise_px=0.2, seed=3)
    res = calibrate_hand_eye(obs, "eye-to-hand")
    cal = hand_eye_calibration_dict(res, INTR, SPEC, "unit_cell", "ur3_cb3", "fk", intrinsics_source="test")
    p = write_calibration_yaml(tmp_path / "unit_cell_eye-to-hand.yaml", cal)
    loaded = load_cell_calibration(p)
    np.testing.assert_allclose(loaded.t_parent_camera, res.x, atol=1e-8)
    np.testing.assert_allclose(loaded.t_board, res.z, atol=1e-8)
    np.testing.assert_allclose(loaded.k, K)
    assert loaded.parent_frame == "base" and loaded.intrinsics() == INTR
    # The sim loader (existing reader of the format) reads an eye-to-hand file unchanged.
    from dynaflip_ros.sim.calibration import load_calibration

    _k2, t2 = load_calibration(p)
    np.testing.assert_allclose(t2, res.x, atol=1e-8)
    he = loaded.raw["hand_eye"]
    assert he["mode"] == "eye-to-hand" and he["n_views"] == 8 and he["board"]["squares_x"] == 5
    assert set(ALL_METHODS) <= set(he["methods"])
    assert loaded.raw["units"]["length"] == "m" and loaded.raw["format_version"] == 2
    pj, pm = write_report(p, res, cal, ground_truth={"x_error_deg_mm": [0.0, 0.0]})
    import json

    rep = json.loads(pj.read_text())
    assert len(rep["per_view_reprojection_rms_px"]) == 8
    assert len(rep["axxb_pairs"]["rotation_deg"]) == 28
    assert len(rep["leave_one_out"]["held_out_reprojection_rms_px"]) == 8
    md = pm.read_text()
    assert "| TSAI |" in md and "Per view" in md and "ground truth" in md
    assert report_dict(res, cal)["method"] == res.method
    # Eye-in-hand files (parent tool0) are refused by the base-frame loader instead of misread.
    obs2 = synth("eye-in-hand", n=6)
    res2 = calibrate_hand_eye(obs2, "eye-in-hand", leave_one_out=False)
    p2 = write_calibration_yaml(tmp_path / "wrist.yaml",
                                hand_eye_calibration_dict(res2, INTR, SPEC, "unit_cell", "ur3_cb3", "fk"))
    with pytest.raises(ValueError, match="tool0"):
        load_calibration(p2)
    assert load_cell_calibration(p2).parent_frame == "tool0"


def test_generated_poses_respect_limits_and_diversity():
    from dynaflip_ros.calibration.poses import generate_joint_poses, solve_ik
    from dynaflip_ros.calibration.transforms import rotation_angle_deg
    from dynaflip_ros.configs.safety import SafetyConfig
    from dynaflip_ros.configs.sim import DEFAULT_HOME_Q_RAD
    from dynaflip_ros.robot.kinematics import UR3_CB3_DH, forward_kinematics

    cfg = SafetyConfig()
    q0 = np.asarray(DEFAULT_HOME_Q_RAD)
    poses = generate_joint_poses(q0, 10, cfg, seed=4, min_rotation_deg=6.0)
    assert poses.shape == (10, 6)
    np.testing.assert_array_equal(poses, generate_joint_poses(q0, 10, cfg, seed=4, min_rotation_deg=6.0))
    rots = []
    for q in poses:
        t = forward_kinematics(q, cfg.dh, cfg.tool_transform)
        assert np.all(t[:3, 3] >= cfg.workspace_min_m) and np.all(t[:3, 3] <= cfg.workspace_max_m)
        assert np.all(q >= cfg.joint_lower_rad) and np.all(q <= cfg.joint_upper_rad)
        rots.append(t[:3, :3])
    for i in range(10):
        for j in range(i):
            assert rotation_angle_deg(rots[i].T @ rots[j]) >= 6.0
    check_pose_diversity(np.stack([forward_kinematics(q, cfg.dh) for q in poses]))  # solvable set
    with pytest.raises(ValueError, match="found only"):
        generate_joint_poses(q0, 10, cfg, perturbation_rad=(0, 0, 0, 0, 0, 0.01), max_draws=200)
    # IK reproduces an FK pose
    t = forward_kinematics(poses[3], UR3_CB3_DH)
    q = solve_ik(t, q0, UR3_CB3_DH)
    assert transform_error(t, forward_kinematics(q, UR3_CB3_DH))[1] < 2e-3  # mm (IK tol 1 um)
