"""dynaflip_ros.sim: the MuJoCo Pick-into-Sink cell, its scripted expert and sim runners.

Importing this package picks a headless OpenGL backend for MuJoCo when MUJOCO_GL is unset:
"egl" when libEGL is present, else "osmesa" (MuJoCo reads MUJOCO_GL once, when `mujoco` is
first imported, so this must happen before that import).
"""
import ctypes.util
import os
import sys

# Set when `mujoco` had already been imported with MUJOCO_GL unset (it then picked GLFW, which
# needs a display): SimCamera reports this if creating the renderer fails.
MUJOCO_IMPORTED_BEFORE_GL_DEFAULT = False


def _default_mujoco_gl() -> None:
    global MUJOCO_IMPORTED_BEFORE_GL_DEFAULT
    if os.environ.get("MUJOCO_GL"):
        return
    MUJOCO_IMPORTED_BEFORE_GL_DEFAULT = "mujoco" in sys.modules
    os.environ["MUJOCO_GL"] = "egl" if ctypes.util.find_library("EGL") else "osmesa"


_default_mujoco_gl()
