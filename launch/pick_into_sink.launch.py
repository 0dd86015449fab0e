"""Pick-into-Sink node graph, sim or real (ROS 2 Jazzy: launch + launch_ros).

  ros2 launch dynaflip_ros pick_into_sink.launch.py                        # sim, 20 episodes
  ros2 launch dynaflip_ros pick_into_sink.launch.py episodes:=5 seed:=100
  ros2 launch dynaflip_ros pick_into_sink.launch.py use_sim:=false robot_ip:=192.168.1.102
      (= ros2 launch dynaflip_ros real_cell.launch.py robot_ip:=192.168.1.102)

use_sim:=true  -> sim_cell_node (nodes sim_cell, camera, ur3_driver in one process: one MuJoCo
                  world; every episode places 2-4 objects and an instruction naming one of
                  them, all drawn by the seed), episode_manager_node (the launch ends when it
                  finishes; outcomes success / wrong_object / timeout / safety_stop), and
                  encoder_policy.launch.py (encoder_node, policy_node);
use_sim:=false -> real_cell.launch.py (camera_node, ur3_driver_node + encoder_policy.launch.py).
Each node list lives in exactly one file; this file only picks the branch. Arguments of the
included files (encoder_model_dir, encoder_backend, policy_model_dir, instruction; robot_ip,
ur_type, camera_serial, gripper, servo_rate_hz for the real cell) are given on this command line too:
`ros2 launch` puts command-line arguments in the launch context, which included files share.
Every node reads params_file (sim: config/pick_into_sink.yaml; real: real_cell.launch.py's
params_file, config/real_cell.yaml unless given). Without a ROS 2 install,
`dynaflip launch pick_into_sink --sim` starts the same processes (dynaflip_ros/ros/bringup.py).
The node graph is described once in dynaflip_ros/ros/graph.py; tests/test_ros_launch_graph.py
holds this file and its includes to that description (executables, names, branches, parameters).
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, Shutdown
from launch.conditions import IfCondition, UnlessCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

PACKAGE = "dynaflip_ros"


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare(PACKAGE)
    use_sim = LaunchConfiguration("use_sim")
    params_file = LaunchConfiguration("params_file")

    arguments = [
        DeclareLaunchArgument("use_sim", default_value="true", choices=["true", "false"],
                              description="MuJoCo cell (true) or the real UR3 + RealSense (false: real_cell.launch.py)"),
        DeclareLaunchArgument("episodes", default_value="20", description="episodes to run (sim)"),
        DeclareLaunchArgument("seed", default_value="100000", description="seed of episode 0 (episode i: seed + i); held out from the demos (seeds 0..N)"),
        DeclareLaunchArgument("episode_timeout_s", default_value="20.0", description="wall-clock limit per episode (sim)"),
        # Declared (given its default) only for the sim branch: with use_sim:=false an unset
        # params_file must fall through to real_cell.launch.py's default (config/real_cell.yaml).
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([share, "config", "pick_into_sink.yaml"]),
                              description="ROS 2 params file with one section per node (default: config/pick_into_sink.yaml "
                                          "with use_sim:=true, config/real_cell.yaml with use_sim:=false)",
                              condition=IfCondition(use_sim)),
    ]

    sim_cell = Node(
        package=PACKAGE, executable="sim_cell_node",  # hosts sim_cell + camera + ur3_driver: no name= remap
        parameters=[params_file], output="screen", condition=IfCondition(use_sim),
    )
    episode_manager = Node(
        package=PACKAGE, executable="episode_manager_node", name="episode_manager", output="screen",
        parameters=[params_file, {
            "episodes": ParameterValue(LaunchConfiguration("episodes"), value_type=int),
            "seed": ParameterValue(LaunchConfiguration("seed"), value_type=int),
            "episode_timeout_s": ParameterValue(LaunchConfiguration("episode_timeout_s"), value_type=float),
        }],
        condition=IfCondition(use_sim),
        on_exit=Shutdown(reason="episode manager finished"),
    )
    encoder_policy = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(PathJoinSubstitution([share, "launch", "encoder_policy.launch.py"])),
        launch_arguments={"params_file": params_file}.items(),
        condition=IfCondition(use_sim),
    )
    real_cell = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(PathJoinSubstitution([share, "launch", "real_cell.launch.py"])),
        condition=UnlessCondition(use_sim),
    )
    return LaunchDescription(arguments + [sim_cell, episode_manager, encoder_policy, real_cell])
