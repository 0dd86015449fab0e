"""Old import path of the simulated RGB-D camera: a re-export of `dynaflip_ros.sim.camera`.

Kept only because `calibration/sim_scene.py` still imports it from here; new code imports
`dynaflip_ros.sim.camera`. Delete this module once nothing imports it (cameras must not import
sim under the package layering).
"""
from dynaflip_ros.sim.camera import OPTICAL_FRAME_ID, SimCamera, intrinsics_from_fovy

__all__ = ["OPTICAL_FRAME_ID", "SimCamera", "intrinsics_from_fovy"]
