"""Teleoperated demonstration recording on the real cell (or the sim): teleop_recorder_node.

  ros2 launch dynaflip_ros record_teleop.launch.py robot_ip:=192.168.1.102 device:=gamepad \
      out:=/data/outputs/demos_real
  ros2 launch dynaflip_ros record_teleop.launch.py use_sim:=true device:=spacemouse out:=outputs/demos_sim
  ros2 service call /teleop_recorder/start std_srvs/srv/Trigger     # also: stop, discard, rerecord

One process, no camera_node and no ur3_driver_node: the recorder owns the arm (ur_rtde through
SafeArm, its own servo loop at the controller rate) and the RealSense. That is deliberate:
freedrive (teach mode) needs the arm's owner, the recorded action must be exactly the target
the teleop loop commanded for t + 0.1 s, and the operator's device -> arm path should not
cross DDS. A RealSense can be opened by one process only, so do not run this next to
real_cell.launch.py (nor the compose `real` service). The keyboard device needs a terminal,
which launched processes do not get: use `ros2 run dynaflip_ros teleop_recorder_node --ros-args
-p device:=keyboard ...` for it. The launch ends when the session does (episodes saved / quit).

Parameters: section `teleop_recorder:` of params_file (default config/real_cell.yaml, next to
the deployment settings); the arguments below override it (empty = keep the file's value) and
are checked before the node starts (dynaflip_ros/ros/launch_args.py `teleop_overrides`).
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction, Shutdown
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from dynaflip_ros.configs.robot import UR_TYPES
from dynaflip_ros.ros.launch_args import (
    LAUNCHABLE_TELEOP_DEVICES,
    describe,
    read_params_file,
    teleop_overrides,
    write_overrides_file,
)

PACKAGE = "dynaflip_ros"


def _recorder(context, *args, **kwargs):
    params_file = LaunchConfiguration("params_file").perform(context)
    overrides = teleop_overrides(
        read_params_file(params_file),
        use_sim=LaunchConfiguration("use_sim").perform(context) == "true",
        robot_ip=LaunchConfiguration("robot_ip").perform(context),
        ur_type=LaunchConfiguration("ur_type").perform(context),
        camera_serial=LaunchConfiguration("camera_serial").perform(context),
        device=LaunchConfiguration("device").perform(context),
        out=LaunchConfiguration("out").perform(context),
    )
    # camera / arm settings of the recording = the cell's deployment settings (same params file)
    overrides["cell_params_file"] = params_file
    # a params file after params_file, strings quoted (launch_args.write_overrides_file)
    overrides_file = str(write_overrides_file({"teleop_recorder": overrides}))
    recorder = Node(
        package=PACKAGE, executable="teleop_recorder_node", name="teleop_recorder", output="screen",
        parameters=[params_file, overrides_file],
        on_exit=Shutdown(reason="teleop recording session ended"),
    )
    return [LogInfo(msg=f"teleop recording, params file {params_file}; overrides ({overrides_file}):\n"
                        f"{describe({'teleop_recorder': overrides})}"), recorder]


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare(PACKAGE)
    arguments = [
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([share, "config", "real_cell.yaml"]),
                              description="ROS 2 params file with a `teleop_recorder:` section"),
        DeclareLaunchArgument("use_sim", default_value="false", choices=["true", "false"],
                              description="record in the MuJoCo cell (true) or on the real UR3 + RealSense (false)"),
        DeclareLaunchArgument("robot_ip", default_value="",
                              description="UR controller address; required with use_sim:=false unless the params file sets it"),
        DeclareLaunchArgument("ur_type", default_value="", choices=["", *UR_TYPES],
                              description="controller generation: cb3 (125 Hz) or e-series (500 Hz); empty = params file"),
        DeclareLaunchArgument("camera_serial", default_value="",
                              description="RealSense serial number; empty = params file, empty there = the only camera"),
        DeclareLaunchArgument("device", default_value="",
                              description=f"teleop device: one of {', '.join(LAUNCHABLE_TELEOP_DEVICES)} or "
                                          "replay:FILE; empty = params file"),
        DeclareLaunchArgument("out", default_value="",
                              description="LeRobotDataset directory to record into (required; relative to the working directory)"),
    ]
    return LaunchDescription(arguments + [OpaqueFunction(function=_recorder)])
