"""dynaflip_ros.calibration: camera intrinsics, hand-eye (eye-to-hand / eye-in-hand) and
camera-to-robot latency calibration of a cell, sim (MuJoCo, known truth) or real (UR3 + RealSense).

Modules: `board` (ChArUco), `transforms`, `handeye` (OpenCV solvers + refinement + residuals),
`poses` (IK, diverse calibration poses), `procedure` (capture / record / solve), `results`
(per-cell YAML, JSON/Markdown report), `intrinsics`, `latency`, `sim_scene`, `cli`
(`dynaflip calibrate ...`). ROS-free.
"""
