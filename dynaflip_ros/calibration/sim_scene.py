"""MuJoCo calibration scene with known ground truth: the Pick-into-Sink cell plus a ChArUco board.

* eye-to-hand: the board (a textured plate) sits on a bracket beside the gripper (centre at
  `board_mount_m` in tool0, printed face normal along tool +x tilted by `board_tilt_deg` towards
  -z, i.e. facing up towards the camera when the flange points down); the cell's fixed camera
  `front_rgbd` observes it. Truth: X = T_base_cam (`camera_pose_optical()`), Z = T_tool0_board.
* eye-in-hand: the board lies flat on the table; a wrist camera `wrist_rgb` on the gripper
  (offset from the flange, optical axis tilted towards the tool axis) observes it. Truth:
  X = T_tool0_cam, Z = T_base_board.

The scene is the cell's `mujoco.MjSpec` (`sim.cell.build_cell_spec`) with the board and the wrist
camera added through the model-editing API
(https://mujoco.readthedocs.io/en/stable/programming/modeledit.html). The board image comes from
`cv2.aruco` (`BoardSpec.image`), handed to MuJoCo as the texture's RGB bytes (linear colour
space, as MuJoCo decodes a PNG file). MuJoCo maps a 2-D texture once over each box face: image
column -> +x, image row -> -y of the geom on its +z face, so the board frame (x right, y down, z
into the board) is the geom frame rotated by diag(1, -1, -1), its origin at the top-left corner of
the squares. Rendering is offscreen (EGL / OSMesa), shadows and reflections off.
"""
from __future__ import annotations

import math

import numpy as np

from dynaflip_ros.calibration.board import BoardSpec
from dynaflip_ros.calibration.handeye import MODES
from dynaflip_ros.calibration.poses import solve_ik
from dynaflip_ros.calibration.transforms import invert, make_transform
from dynaflip_ros.configs.sim import SimConfig
from dynaflip_ros.robot.kinematics import UR3_CB3_DH
from dynaflip_ros.sim import cell
from dynaflip_ros.sim.pick_into_sink import PickIntoSinkEnv

WRIST_CAMERA_NAME = "wrist_rgb"
BOARD_BODY = "calib_board"
BOARD_THICKNESS_M = 0.003
_OPTICAL_FROM_MJ = np.diag([1.0, -1.0, -1.0])
_BOARD_FROM_GEOM_R = np.diag([1.0, -1.0, -1.0])


def default_config(image_hw: tuple[int, int] = (480, 640)) -> SimConfig:
    """SimConfig for calibration renders: D435-like colour 640x480 (fovy 42.7 deg, docs/hardware.md §3.3)."""
    return SimConfig(image_hw=image_hw)


class CalibrationSimEnv(PickIntoSinkEnv):
    """PickIntoSinkEnv with a ChArUco board (and a wrist camera for eye-in-hand).

    Args:
        mode: "eye-to-hand" or "eye-in-hand".
        config: SimConfig (default `default_config()`).
        board: the board (default `BoardSpec()`: 5x7 squares of 30 mm, 22 mm markers, 5X5 dict).
        board_mount_m / board_tilt_deg: eye-to-hand: plate centre in tool0 (m) and tilt of its
            normal from tool +x towards tool -z (deg).
        board_center_xy_m: eye-in-hand: board centre on the table (UR base frame).
        wrist_offset_m: eye-in-hand: wrist camera position in tool0 (m); wrist_tilt_deg: tilt of
            its optical axis towards the tool axis; wrist_fovy_deg: its vertical field of view.
    Attributes: `calibration_camera` (the SimCamera to calibrate), `board`, `mode`.
    Raises ValueError on a bad mode.
    """

    def __init__(self, mode: str, config: SimConfig | None = None, board: BoardSpec | None = None,
                 board_mount_m: tuple[float, float, float] = (0.10, 0.0, 0.08), board_tilt_deg: float = 40.0,
                 board_center_xy_m: tuple[float, float] = (0.26, -0.08),
                 wrist_offset_m: tuple[float, float, float] = (0.07, 0.0, 0.05), wrist_tilt_deg: float = 12.0,
                 wrist_fovy_deg: float = 58.0) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.board = board if board is not None else BoardSpec()
        self.board_mount_m = np.asarray(board_mount_m, dtype=float)
        self.board_tilt_deg = float(board_tilt_deg)
        self.board_center_xy_m = tuple(board_center_xy_m)
        self.wrist_offset_m = np.asarray(wrist_offset_m, dtype=float)
        self.wrist_tilt_deg = float(wrist_tilt_deg)
        self.wrist_fovy_deg = float(wrist_fovy_deg)
        super().__init__(config if config is not None else default_config())
        import mujoco

        from dynaflip_ros.sim.camera import SimCamera, intrinsics_from_fovy

        self.board_geom_id = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_GEOM, BOARD_BODY + "_geom")
        if mode == "eye-in-hand":
            self.wrist_camera_id = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, WRIST_CAMERA_NAME)
            cam = SimCamera(self, WRIST_CAMERA_NAME, depth=False)
            h, w = self.config.image_hw
            cam.intrinsics = intrinsics_from_fovy(h, w, self.wrist_fovy_deg)
        else:
            cam = SimCamera(self, cell.CAMERA_NAME, depth=False)
        self.calibration_camera = cam

    # ------------------------------------------------------------------ model
    def _build_model(self):
        """The cell's MjSpec (`sim.cell.build_cell_spec`) plus the board texture, material and body
        (and the wrist camera for eye-in-hand), compiled. Numbers are rounded as the scene's
        earlier MJCF text wrote them (`cell.round_sig`: 6 significant digits, 9 for the axes), so
        the compiled model is unchanged. Raises ValueError (from MuJoCo) on a bad model."""
        import mujoco

        img = self.board.image(px_per_square=120)  # (H, W) uint8
        spec = cell.build_cell_spec(self.config)
        texture = spec.add_texture(name="charuco", type=mujoco.mjtTexture.mjTEXTURE_2D, width=img.shape[1],
                                   height=img.shape[0], nchannel=3,
                                   colorspace=mujoco.mjtColorSpace.mjCOLORSPACE_LINEAR)
        texture.data = np.repeat(img[:, :, None], 3, axis=2).tobytes()
        material = spec.add_material(name="charuco", specular=0, shininess=0, reflectance=0)
        material.textures[mujoco.mjtTextureRole.mjTEXROLE_RGB] = "charuco"
        pw, ph = self.board.plate_size_m()
        ht = BOARD_THICKNESS_M / 2
        xyaxes = mujoco.mjtOrientation.mjORIENTATION_XYAXES
        gripper = spec.body("gripper")
        if self.mode == "eye-to-hand":
            s_, c_ = math.sin(math.radians(self.board_tilt_deg)), math.cos(math.radians(self.board_tilt_deg))
            # geom z (printed face normal) = (c, 0, -s), geom y = tool y, geom x = y x z = (-s, 0, -c)
            body = gripper.add_body(name=BOARD_BODY, pos=cell.round_sig_vec(self.board_mount_m, 6), gravcomp=1)
            body.alt.type = xyaxes
            body.alt.xyaxes = cell.round_sig_vec([-s_, 0, -c_, 0, 1, 0], 9)
        else:
            x, y = self.board_center_xy_m
            body = spec.worldbody.add_body(name=BOARD_BODY, pos=cell.round_sig_vec([x, y, ht + 1e-4], 6))
            s, c = math.sin(math.radians(self.wrist_tilt_deg)), math.cos(math.radians(self.wrist_tilt_deg))
            z_opt = np.array([-s, 0.0, c]) if self.wrist_offset_m[0] >= 0 else np.array([s, 0.0, c])
            x_opt = np.array([0.0, 1.0, 0.0])
            y_opt = np.cross(z_opt, x_opt)
            cam = gripper.add_camera(name=WRIST_CAMERA_NAME, pos=cell.round_sig_vec(self.wrist_offset_m, 6),
                                     fovy=self.wrist_fovy_deg)
            cam.alt.type = xyaxes
            cam.alt.xyaxes = cell.round_sig_vec(np.concatenate([x_opt, -y_opt]), 9)
        geom = body.add_geom(name=BOARD_BODY + "_geom", type=mujoco.mjtGeom.mjGEOM_BOX, material="charuco",
                             contype=0, conaffinity=0, mass=0.05)
        geom.size = cell.round_sig_vec([pw / 2, ph / 2, ht], 6)
        return spec.compile()

    def reset(self, seed=None, object_name=None, objects=1, instruction=None):
        """PickIntoSinkEnv.reset (one object on the table by default), then the target object
        goes into the sink (keeps the board clear)."""
        info = super().reset(seed, object_name, objects, instruction)
        cx, cy = self.config.sink_center_xy_m
        self.place_object(info.object_name, cx, cy)
        return info

    # ------------------------------------------------------------------ ground truth
    def t_base_flange(self) -> np.ndarray:
        """(4, 4) tool0 pose in `base` from the MuJoCo flange site."""
        with self.lock:
            return make_transform(self.data.site_xmat[self.flange_site_id].reshape(3, 3),
                                  self.data.site_xpos[self.flange_site_id])

    def t_base_board(self) -> np.ndarray:
        """(4, 4) board frame in `base` (from the board geom's pose)."""
        with self.lock:
            t_geom = make_transform(self.data.geom_xmat[self.board_geom_id].reshape(3, 3),
                                    self.data.geom_xpos[self.board_geom_id])
        w, h = self.board.size_m
        return t_geom @ make_transform(_BOARD_FROM_GEOM_R, [-w / 2, h / 2, BOARD_THICKNESS_M / 2])

    def t_base_camera(self) -> np.ndarray:
        """(4, 4) optical frame of the calibrated camera in `base`."""
        if self.mode == "eye-to-hand":
            return self.camera_pose_optical()
        with self.lock:
            r = self.data.cam_xmat[self.wrist_camera_id].reshape(3, 3) @ _OPTICAL_FROM_MJ
            return make_transform(r, self.data.cam_xpos[self.wrist_camera_id])

    def ground_truth(self) -> tuple[np.ndarray, np.ndarray]:
        """(X, Z) as in `calibration.handeye` for this mode."""
        tbf = self.t_base_flange()
        if self.mode == "eye-to-hand":
            return self.t_base_camera(), invert(tbf) @ self.t_base_board()
        return invert(tbf) @ self.t_base_camera(), self.t_base_board()

    # ------------------------------------------------------------------ start pose
    def start_joints(self, distance_m: float | None = None) -> np.ndarray:
        """(6,) joints with the board well inside the calibrated camera's view (IK on the DH model)."""
        q_home = np.asarray(self.config.home_q_rad, dtype=float)
        if self.mode == "eye-to-hand":
            # Flange down, tool x = base x (the board bracket faces +x and up, towards the camera),
            # board centre near `center`.
            center = np.array([0.30, 0.0, 0.20])
            r = np.array([[1.0, 0, 0], [0, -1.0, 0], [0, 0, -1.0]])
            q = solve_ik(make_transform(r, center - r @ self.board_mount_m), q_home, UR3_CB3_DH)
        else:
            height = 0.30 if distance_m is None else float(distance_m)
            bx, by = self.board_center_xy_m
            r = np.array([[1.0, 0, 0], [0, -1.0, 0], [0, 0, -1.0]])  # flange down, tool x = base x
            tilt = math.radians(self.wrist_tilt_deg)
            off = self.wrist_offset_m
            cam_world = np.array([bx + height * math.tan(tilt) * np.sign(off[0] or 1.0), by, height])
            p_flange = cam_world - r @ off
            q = solve_ik(make_transform(r, p_flange), q_home, UR3_CB3_DH)
        q = (q + np.pi) % (2 * np.pi) - np.pi  # wrap to (-pi, pi]: same pose, inside every limit
        return q

    def set_joints(self, q: np.ndarray) -> None:
        """Teleport the arm to q (6,) rad at rest and hold it (test set-up only, not a motion)."""
        with self.lock:
            self.data.qpos[self.arm_qpos_adr] = np.asarray(q, dtype=float)
            self.data.qvel[:] = 0.0
            self.arm.hold(np.asarray(q, dtype=float))
            self._mj.mj_forward(self.model, self.data)

    def close(self) -> None:
        """Free the renderers (idempotent)."""
        try:
            if getattr(self, "calibration_camera", None) is not None:
                self.calibration_camera.disconnect()
        finally:
            super().close()
