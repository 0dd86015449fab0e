"""`SimCamera`: a fixed RGB-D camera of the MuJoCo Pick-into-Sink cell (implements `Camera`).

Renders offscreen with `mujoco.Renderer` (EGL or OSMesa, chosen by `dynaflip_ros.sim` when
MUJOCO_GL is unset) at `SimConfig.image_hw`, shadows and reflections off unless configured.
Depth is planar Z along the optical axis in metres (what RealSense reports; MuJoCo's renderer
linearises its depth buffer to camera-space Z). Intrinsics follow from the vertical field of
view: fy = (H / 2) / tan(fovy / 2), fx = fy (square pixels), principal point at the image
centre in OpenCV pixel coordinates ((W - 1) / 2, (H - 1) / 2). Pixels that hit nothing before
the far plane read depth 0 (no data).

OpenGL contexts are bound to a thread, so all GL work (create, render, free) runs on one private
worker thread; `read()` may be called from any thread (e.g. ROS executor threads). The scene is
captured from MuJoCo data under the scene's lock, then rendered without holding it.
Call `disconnect()` (or `env.close()`) to free the renderer explicitly.

Depends only on the `MjScene` it is given (model, data, lock, config), not on the env module.
"""
from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from dynaflip_ros.cameras.base import CameraError, CameraIntrinsics, Frame
from dynaflip_ros.sim.mj_scene import MjScene

OPTICAL_FRAME_ID = "camera_color_optical_frame"


def intrinsics_from_fovy(height: int, width: int, fovy_deg: float) -> CameraIntrinsics:
    """Pinhole intrinsics of a MuJoCo camera with vertical field of view `fovy_deg`."""
    fy = 0.5 * height / math.tan(math.radians(fovy_deg) / 2)
    return CameraIntrinsics(width=width, height=height, fx=fy, fy=fy, cx=(width - 1) / 2, cy=(height - 1) / 2)


class SimCamera:
    """Fixed RGB-D camera of the sim cell.

    Args:
        scene: the `MjScene` (model, data, lock, config) to render, e.g. a
            `sim.pick_into_sink.PickIntoSinkEnv` (which creates its camera: use `env.camera`).
        camera_name: MJCF camera to render.
        depth: also render depth (metres) into `Frame.depth`.
    """

    def __init__(self, scene: MjScene, camera_name: str, depth: bool = True) -> None:
        self._scene = scene
        self.camera_name = camera_name
        self.depth_enabled = depth
        h, w = scene.config.image_hw
        self.intrinsics = intrinsics_from_fovy(h, w, scene.config.camera_fovy_deg)
        self._renderer = None
        self._worker: ThreadPoolExecutor | None = None
        self._read_lock = threading.Lock()
        self._sequence = 0

    # ------------------------------------------------------------------ Camera protocol
    def connect(self) -> None:
        """Create the offscreen renderer (idempotent). Raises CameraError when no OpenGL
        backend works (hint: MUJOCO_GL=egl or osmesa, set before mujoco is imported)."""
        with self._read_lock:
            if self._renderer is not None:
                return
            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sim_camera_gl")
            try:
                self._renderer = self._worker.submit(self._create).result()
            except Exception as e:  # noqa: BLE001 - any GL failure becomes a CameraError
                self._worker.shutdown(wait=True)
                self._worker = None
                from dynaflip_ros import sim

                hint = (" (mujoco was imported before dynaflip_ros.sim with MUJOCO_GL unset, so it "
                        "chose GLFW: import dynaflip_ros.sim first or export MUJOCO_GL)"
                        if sim.MUJOCO_IMPORTED_BEFORE_GL_DEFAULT else "")
                raise CameraError(
                    f"cannot create a MuJoCo offscreen renderer ({type(e).__name__}: {e}); "
                    "set MUJOCO_GL=egl (GPU/EGL) or MUJOCO_GL=osmesa (CPU, needs libosmesa6) "
                    f"before importing mujoco{hint}") from e

    def read(self) -> Frame:
        """Render the current state: rgb (H, W, 3) uint8, depth (H, W) float32 metres (planar Z),
        intrinsics, stamp_s = simulation time. Connects lazily on first use."""
        if self._renderer is None:
            self.connect()
        with self._read_lock:
            r = self._renderer
            if r is None:
                raise CameraError("SimCamera was disconnected")
            scene = self._scene
            with scene.lock:
                r.update_scene(scene.data, camera=self.camera_name)
                stamp_s = float(scene.data.time)
                # shadows when configured, or while a light casts one (an OOD lighting condition)
                shadows = bool(scene.config.shadows or scene.model.light_castshadow.any())
            rgb, depth = self._worker.submit(self._render, r, shadows).result()
            self._sequence += 1
            return Frame(rgb=rgb, depth=depth, intrinsics=self.intrinsics, stamp_s=stamp_s,
                         frame_id=OPTICAL_FRAME_ID, sequence=self._sequence)

    def disconnect(self) -> None:
        """Free the renderer and its GL context (idempotent)."""
        with self._read_lock:
            if self._renderer is not None and self._worker is not None:
                self._worker.submit(self._renderer.close).result()
            self._renderer = None
            if self._worker is not None:
                self._worker.shutdown(wait=True)
                self._worker = None

    # ------------------------------------------------------------------ GL thread
    def _create(self):
        import mujoco

        h, w = self._scene.config.image_hw
        r = mujoco.Renderer(self._scene.model, height=h, width=w)
        flags = r.scene.flags
        flags[mujoco.mjtRndFlag.mjRND_SHADOW] = bool(self._scene.config.shadows)
        flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = bool(self._scene.config.reflections)
        flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = False
        return r

    def _render(self, r, shadows: bool) -> tuple[np.ndarray, np.ndarray | None]:
        import mujoco

        r.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = shadows
        rgb = r.render()  # (H, W, 3) uint8
        depth = None
        if self.depth_enabled:
            r.enable_depth_rendering()
            try:
                depth = r.render().astype(np.float32, copy=False)  # (H, W) metres
                depth[depth >= 0.999 * self._scene.config.camera_zfar_m] = 0.0  # no surface: no data
            finally:
                r.disable_depth_rendering()
        return rgb, depth
