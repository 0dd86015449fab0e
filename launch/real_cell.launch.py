"""Real Pick-into-Sink cell: UR3 over ur_rtde + RealSense + encoder + policy (ROS 2 Jazzy).

  ros2 launch dynaflip_ros real_cell.launch.py robot_ip:=192.168.1.102
  ros2 launch dynaflip_ros real_cell.launch.py robot_ip:=192.168.1.102 \
      instruction:="put the red cube in the sink"
  ros2 launch dynaflip_ros real_cell.launch.py robot_ip:=192.168.1.102 ur_type:=e-series \
      camera_serial:=831612073525 gripper:=none encoder_backend:=tensorrt
  ros2 launch dynaflip_ros real_cell.launch.py --show-args

Processes (each dies -> the whole launch shuts down, so nothing runs half-connected):
  camera_node     (camera)      RealSense -> /camera/color/image_raw + camera_info
  ur3_driver_node (ur3_driver)  /dynaflip/action_chunk -> servo loop -> SafeArm -> ur_rtde;
                                /joint_states, /ur3_driver/status, /ur3_driver/rearm (Trigger)
  encoder_policy.launch.py      encoder_node (encoder), policy_node (policy)
No episode manager: real-cell episodes are started and judged by the operator. The task sentence
comes from instruction:= (encoder_policy.launch.py; latched on /dynaflip/instruction) or is
published on /dynaflip/instruction at run time.

Parameters: params_file (default config/real_cell.yaml; one commented section per node) is the
primary place for every setting, exposure and white balance included (experiment conditions
belong in a versioned file, not in a shell history). The hardware identity comes from the
command line and overrides the file: robot_ip, ur_type, gripper -> ur3_driver.ur_rtde.*,
camera_serial -> camera.realsense.serial; an empty argument keeps the file's value.
ur_type also sets ur3_driver.servo_rate_hz (125 Hz CB3 / 500 Hz e-Series, unless
servo_rate_hz:=<Hz>) and, through ur_rtde.rtde_frequency_hz 0, the RTDE rate. The mapping and
its validation live in dynaflip_ros/ros/launch_args.py (tested without ROS); a bad value stops
the launch before any process starts.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, LogInfo, OpaqueFunction, Shutdown
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from dynaflip_ros.configs.robot import GRIPPERS, UR_TYPES
from dynaflip_ros.ros.launch_args import describe, read_params_file, real_cell_overrides, write_overrides_file

PACKAGE = "dynaflip_ros"


def _hardware_nodes(context, *args, **kwargs):
    params_file = LaunchConfiguration("params_file").perform(context)
    overrides = real_cell_overrides(
        read_params_file(params_file),
        robot_ip=LaunchConfiguration("robot_ip").perform(context),
        ur_type=LaunchConfiguration("ur_type").perform(context),
        gripper=LaunchConfiguration("gripper").perform(context),
        servo_rate_hz=LaunchConfiguration("servo_rate_hz").perform(context),
        camera_serial=LaunchConfiguration("camera_serial").perform(context),
    )
    # One params file with a section per node, after params_file (later wins). Not a launch_ros
    # parameters dict: its strings would reach rcl unquoted (launch_args.write_overrides_file).
    overrides_file = str(write_overrides_file(overrides))
    camera = Node(
        package=PACKAGE, executable="camera_node", name="camera", output="screen",
        parameters=[params_file, overrides_file],
        on_exit=Shutdown(reason="camera_node exited"),
    )
    ur3_driver = Node(
        package=PACKAGE, executable="ur3_driver_node", name="ur3_driver", output="screen",
        parameters=[params_file, overrides_file],
        on_exit=Shutdown(reason="ur3_driver_node exited"),
    )
    return [LogInfo(msg=f"real cell, params file {params_file}; overrides ({overrides_file}):\n{describe(overrides)}"),
            camera, ur3_driver]


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare(PACKAGE)
    params_file = LaunchConfiguration("params_file")
    arguments = [
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([share, "config", "real_cell.yaml"]),
                              description="ROS 2 params file with one section per node (camera, ur3_driver, encoder, policy)"),
        DeclareLaunchArgument("robot_ip", default_value="",
                              description="UR controller address (IPv4/IPv6/host name); required unless the params file "
                                          "sets ur3_driver.ur_rtde.robot_ip"),
        DeclareLaunchArgument("ur_type", default_value="", choices=["", *UR_TYPES],
                              description="controller generation: cb3 (125 Hz servo/RTDE) or e-series (500 Hz); "
                                          "empty = the params file's ur3_driver.ur_rtde.ur_type"),
        DeclareLaunchArgument("servo_rate_hz", default_value="auto",
                              description="servo loop rate in Hz; auto = the controller rate of ur_type"),
        DeclareLaunchArgument("gripper", default_value="", choices=["", *GRIPPERS],
                              description="robotiq_urcap (Robotiq 2F over the URCap socket, port 63352) or none; "
                                          "empty = the params file's ur3_driver.ur_rtde.gripper"),
        DeclareLaunchArgument("camera_serial", default_value="",
                              description="RealSense serial number (rs-enumerate-devices -s); empty = the params "
                                          "file's camera.realsense.serial, empty there too = the only connected camera"),
    ]
    encoder_policy = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(PathJoinSubstitution([share, "launch", "encoder_policy.launch.py"])),
        launch_arguments={"params_file": params_file}.items(),
    )
    return LaunchDescription(arguments + [OpaqueFunction(function=_hardware_nodes), encoder_policy])
