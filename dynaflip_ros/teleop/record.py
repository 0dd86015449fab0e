"""Teleop recording session: build arm / camera / device / recorder for a TeleopSession.

Sim (`--sim`): the MuJoCo pick-into-sink cell; its camera renders the frames. A replay device
runs in lock-step (`LockstepSimDriver`: deterministic, faster than real time, the replay file's
times are simulation seconds); a human device runs in real time (`RealtimeSimDriver`);
`--realtime` forces real time for a replay too. Real (`--robot-ip`): `URRtdeArm` (ur_rtde) with
the servo loop at the controller rate (125 Hz CB3 / 500 Hz e-Series) and a RealSense camera
whose frames are centre-cropped to the dataset's aspect ratio and area-resized to --image-size.

Settings: one `teleop.config.TeleopConfig`, from the flags (`teleop.cli`, the command-line
adapter, which also runs the session) or, in the ROS node, from its parameters;
`open_session(config)` builds everything from it, and the session loop's `SessionConfig` is
derived from it (`session_config`). A raw bag of a
real-time session (human device, `--realtime`, real arm) is stamped in wall-clock (ROS) time,
a lock-step replay's in sim time (`teleop.rosbag_log`).
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from dynaflip_ros.cameras.base import Frame
from dynaflip_ros.teleop.config import DEFAULT_TASK, TeleopConfig
from dynaflip_ros.teleop.session import SessionConfig, TeleopSession

log = logging.getLogger(__name__)

def fit_image(rgb: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
    """(H0, W0, 3) uint8 -> (H, W, 3) uint8: centre crop to the aspect ratio of image_hw, then
    area resize (OpenCV INTER_AREA). Identity when the size already matches."""
    h, w = image_hw
    h0, w0 = rgb.shape[:2]
    if (h0, w0) == (h, w):
        return rgb
    import cv2

    target = w / h
    if w0 / h0 > target:  # too wide: crop width
        cw = int(round(h0 * target))
        x0 = (w0 - cw) // 2
        rgb = rgb[:, x0:x0 + cw]
    else:
        ch = int(round(w0 / target))
        y0 = (h0 - ch) // 2
        rgb = rgb[y0:y0 + ch]
    return np.ascontiguousarray(cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA))


class FittedCamera:
    """Wraps a Camera so its frames have the dataset's image size (`fit_image`); depth and
    intrinsics are dropped (the dataset stores RGB only). `settings()` reports the wrapped
    camera's settings plus the preprocessing."""

    def __init__(self, camera: Any, image_hw: tuple[int, int]) -> None:
        self.camera = camera
        self.image_hw = tuple(image_hw)

    def connect(self) -> None:
        self.camera.connect()

    def read(self) -> Frame:
        f = self.camera.read()
        return Frame(rgb=fit_image(f.rgb, self.image_hw), depth=None, intrinsics=f.intrinsics,
                     stamp_s=f.stamp_s, frame_id=f.frame_id, sequence=f.sequence)

    def disconnect(self) -> None:
        self.camera.disconnect()

    def settings(self) -> dict:
        from dynaflip_ros.teleop.provenance import camera_settings

        return {"wrapped": camera_settings(self.camera),
                "preprocessing": f"centre crop to {self.image_hw[1]}:{self.image_hw[0]} aspect, INTER_AREA resize "
                                 f"to {self.image_hw[0]}x{self.image_hw[1]} (HxW)"}


def real_cell_hardware(cell_params: str, robot_ip: str, ur_type: str, camera_serial: str):
    """(URRtdeConfig, RealSenseConfig) of the real cell: the `ur3_driver.ur_rtde` and
    `camera.realsense` sections of the ROS params file `cell_params` ("" = the package's
    config/real_cell.yaml; none found = dataclass defaults), with robot_ip / ur_type /
    camera_serial overriding when given. Demos are thereby recorded with the deployment's camera
    settings (exposure, white balance, gain: experiment conditions) and servoj settings.
    Raises ValueError on a missing file or an invalid value."""
    from dynaflip_ros.configs.realsense import RealSenseConfig
    from dynaflip_ros.configs.robot import URRtdeConfig
    from dynaflip_ros.configs.params_file import (
        LaunchArgumentError,
        effective_config,
        node_parameters,
        read_params_file,
        sub_parameters,
    )

    doc: dict = {}
    if cell_params:
        path = Path(cell_params)
    else:
        from dynaflip_ros import resources

        try:
            path = resources.params_file("real_cell")
        except FileNotFoundError:
            path = None
    try:
        if path is not None:
            doc = read_params_file(path)
        arm_over = {k: v for k, v in (("robot_ip", robot_ip), ("ur_type", ur_type)) if v}
        arm = effective_config(URRtdeConfig, sub_parameters(node_parameters(doc, "ur3_driver"), "ur_rtde"), arm_over,
                         f"ur3_driver.ur_rtde of {path}")
        cam_over = {"enable_depth": False, **({"serial": camera_serial} if camera_serial else {})}
        cam = effective_config(RealSenseConfig, sub_parameters(node_parameters(doc, "camera"), "realsense"), cam_over,
                         f"camera.realsense of {path}")
    except LaunchArgumentError as e:
        raise ValueError(str(e)) from e
    return arm, cam


def make_real_arm(config):
    """URRtdeArm(config: URRtdeConfig); ImportError names what is missing."""
    from dynaflip_ros.robot.ur_rtde_arm import URRtdeArm

    return URRtdeArm(config)


def make_realsense(config):
    """RealSenseCamera(config: RealSenseConfig); ImportError names what is missing."""
    from dynaflip_ros.cameras.realsense import RealSenseCamera

    return RealSenseCamera(config)


def default_bag_dir(out: Path) -> Path:
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return out.parent / f"{out.name}_rosbag" / f"session_{stamp}"


def session_config(config: TeleopConfig) -> SessionConfig:
    """The session loop's `SessionConfig` of `config`: task ("" = the default task, and the sim
    scene's instruction in the sim), episodes, rates, seed, source "sim" | "real"."""
    return SessionConfig(task=config.task or DEFAULT_TASK, task_override=bool(config.task),
                         episodes=config.episodes, command_rate_hz=float(config.command_rate_hz),
                         max_episode_s=float(config.max_episode_s), seed=config.seed,
                         source="sim" if config.sim else "real")


class SessionResources:
    """Everything a teleop session holds: env (sim), driver, camera, device, bag, recorder and
    the `TeleopSession`. Build with `open_session`; `close()` releases all of it (idempotent,
    every closer runs)."""

    def __init__(self) -> None:
        self.env = self.driver = self.camera = self.device = self.bag = self.recorder = self.session = None
        self.real_camera = False

    def close(self) -> None:
        closers = [
            ("recorder", lambda: self.recorder.close()),
            ("driver", lambda: self.driver.close()),
            ("rosbag", lambda: self.bag.close()),
            ("camera", lambda: self.camera.disconnect() if self.real_camera else None),
            ("arm", lambda: self.driver.safe.disconnect() if self.env is None else None),
            ("sim", lambda: self.env.close()),
        ]
        for name, fn in closers:
            if getattr(self, {"arm": "driver", "sim": "env", "rosbag": "bag"}.get(name, name), None) is None:
                continue
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - every closer must run
                log.error("closing the %s failed: %s: %s", name, type(e).__name__, e)
        self.recorder = self.driver = self.bag = self.camera = self.env = None


def open_session(opts: TeleopConfig, echo=None, keyboard_events: bool | None = None,
                 replay_quit_at_end: bool = True) -> SessionResources:
    """Build env/arm, camera, device, optional bag and the recorder for the settings `opts`.

    keyboard_events: add the keyboard for episode events to gamepad / spacemouse / freedrive
    (None = when stdin is a terminal; the ROS node passes False); replay_quit_at_end: a replay
    ends the session at its end (the ROS node passes False); echo: progress lines.
    Raises ValueError (bad options), DeviceError is raised later by `session.run()` when the
    device cannot open, ImportError / ArmError / CameraError when a real backend is missing
    or unreachable, FileExistsError / DatasetSchemaError from the recorder. Partially built
    resources are released before raising.
    """
    from dynaflip_ros.data import dataset_io, schema
    from dynaflip_ros.data.recorder import EpisodeRecorder
    from dynaflip_ros.teleop.devices import make_device
    from dynaflip_ros.teleop.provenance import camera_settings, session_provenance

    if opts.device == "freedrive" and opts.sim:
        raise ValueError("freedrive moves the real arm by hand; the sim arm has no freedrive "
                         "(use keyboard, gamepad, spacemouse or replay:FILE with the sim)")
    if not opts.sim and not opts.robot_ip:
        raise ValueError("the real cell needs robot_ip")
    image_hw = (int(opts.image_hw[0]), int(opts.image_hw[1]))
    provenance = session_provenance(opts.encoder or None, opts.policy or None, opts.operator, opts.note)
    is_replay = opts.device.startswith("replay:")
    res = SessionResources()
    try:
        if opts.sim:
            import dynaflip_ros.sim  # noqa: F401 - picks the headless GL backend first
            from dynaflip_ros.configs.sim import SimConfig
            from dynaflip_ros.sim.pick_into_sink import PickIntoSinkEnv
            from dynaflip_ros.teleop.drivers import LockstepSimDriver, RealtimeSimDriver

            res.env = PickIntoSinkEnv(SimConfig(image_hw=image_hw))
            safety = opts.safety
            if is_replay and not opts.realtime:
                res.driver = LockstepSimDriver(res.env, safety)
            else:
                res.driver = RealtimeSimDriver(res.env, safety)
            res.camera = res.env.camera
            cam_settings = camera_settings(res.camera, res.env)
        else:
            from dynaflip_ros.teleop.drivers import RealArmDriver

            model = "ur3e" if opts.ur_type == "e-series" else "ur3_cb3"
            safety = opts.safety
            if safety.robot_model != model:  # the kinematic model follows the controller generation
                log.info("safety robot_model %s -> %s (ur_type %s)", safety.robot_model, model, opts.ur_type)
                safety = dataclasses.replace(safety, robot_model=model)
            arm_cfg, cam_cfg = real_cell_hardware(opts.cell_params_file, opts.robot_ip, opts.ur_type, opts.camera_serial)
            arm = make_real_arm(arm_cfg)
            res.camera = FittedCamera(make_realsense(cam_cfg), image_hw)
            res.camera.connect()
            res.real_camera = True
            res.driver = RealArmDriver(arm, safety, servo_rate_hz=arm.config.controller_rate_hz)
            cam_settings = camera_settings(res.camera)
        dev_opts = {"quit_at_end": replay_quit_at_end} if is_replay else {}
        res.device = make_device(opts.device, arm=res.driver.raw_arm, clock=res.driver.now_s,
                                 keyboard_events=False if is_replay else keyboard_events, **dev_opts)
        if opts.rosbag_dir:
            from dynaflip_ros.teleop.rosbag_log import SessionBag

            res.bag = SessionBag(opts.rosbag_dir, wall_clock=time.time if res.driver.realtime else None,
                                 sim_time=res.driver.is_sim)
        res.recorder = EpisodeRecorder(opts.out, image_hw, fps=schema.RECORD_FPS,
                                       repo_id=opts.repo_id or dataset_io.DEFAULT_REPO_ID, resume=opts.resume)
        res.session = TeleopSession(res.recorder, res.driver, res.device, res.camera, session_config(opts),
                                    episode_extra={"provenance": provenance, "camera": cam_settings},
                                    bag=res.bag, echo=echo)
    except BaseException:
        res.close()
        raise
    return res
