"""dynaflip_ros.teleop: teleoperated demonstration recording (keyboard, gamepad, SpaceMouse,
UR freedrive, replay) into the same LeRobotDataset v3.0 schema as the sim expert demos.

Modules: `config` (`TeleopConfig`: the one set of teleop settings for the CLI, YAML files and
the ROS node), `devices` (package, one module per device; one `TeleopDevice` interface,
`TeleopCommand`), `twist` (TCP twist -> target pose -> damped-least-squares IK -> joint target),
`drivers` (SafeArm + servo loop for the sim in lock-step / real time and for a real arm),
`session` (the 10 Hz recording loop and episode control), `record` (builds a session from a
`TeleopConfig`; `dynaflip record --teleop`), `rosbag_log` (optional raw MCAP log),
`provenance` (per-episode metadata). ROS-free (imports no `dynaflip_ros.ros`); the ROS node is
`dynaflip_ros.ros.nodes.teleop_recorder`.
"""
