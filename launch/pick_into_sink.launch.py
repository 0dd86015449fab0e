"""Pick-into-Sink node graph (ROS 2 Jazzy: launch + launch_ros).

  ros2 launch dynaflip_ros pick_into_sink.launch.py                        # sim, 20 episodes
  ros2 launch dynaflip_ros pick_into_sink.launch.py episodes:=5 seed:=100
  ros2 launch dynaflip_ros pick_into_sink.launch.py use_sim:=false         # real cell (issue 3)

use_sim:=true  -> sim_cell_node (nodes sim_cell, camera, ur3_driver in one process: one MuJoCo
                  world), encoder_node, policy_node, episode_manager_node (the launch ends when
                  it finishes);
use_sim:=false -> camera_node (camera) + ur3_driver_node (ur3_driver), encoder_node, policy_node.
Every node reads params_file (config/pick_into_sink.yaml: one section per node name).
Without a ROS 2 install, `dynaflip launch pick_into_sink --sim` starts the same processes
(dynaflip_ros/ros/bringup.py).
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, Shutdown
from launch.conditions import IfCondition, UnlessCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

PACKAGE = "dynaflip_ros"


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare(PACKAGE)
    use_sim = LaunchConfiguration("use_sim")
    params_file = LaunchConfiguration("params_file")
    encoder_dir = LaunchConfiguration("encoder_model_dir")
    policy_dir = LaunchConfiguration("policy_model_dir")

    arguments = [
        DeclareLaunchArgument("use_sim", default_value="true", choices=["true", "false"],
                              description="MuJoCo cell (true) or the real UR3 + RealSense (false)"),
        DeclareLaunchArgument("episodes", default_value="20", description="episodes to run (sim)"),
        DeclareLaunchArgument("seed", default_value="100000", description="seed of episode 0 (episode i: seed + i); held out from the demos (seeds 0..N)"),
        DeclareLaunchArgument("episode_timeout_s", default_value="20.0", description="wall-clock limit per episode"),
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([share, "config", "pick_into_sink.yaml"]),
                              description="ROS 2 params file with one section per node"),
        DeclareLaunchArgument("encoder_model_dir", default_value=PathJoinSubstitution([share, "models", "encoder"]),
                              description="encoder artifact dir (manifest.json, encoder.onnx, ...)"),
        DeclareLaunchArgument("encoder_backend", default_value="auto",
                              choices=["auto", "onnxruntime", "tensorrt", "torch"],
                              description="encoder inference backend"),
        DeclareLaunchArgument("camera_backend", default_value="realsense",
                              description="camera backend of the real cell (use_sim:=false)"),
        DeclareLaunchArgument("arm_backend", default_value="ur_rtde",
                              description="arm backend of the real cell (use_sim:=false)"),
        DeclareLaunchArgument("policy_model_dir", default_value=PathJoinSubstitution([share, "models", "policy"]),
                              description="policy checkpoint dir"),
    ]

    sim_cell = Node(
        package=PACKAGE, executable="sim_cell_node",  # hosts sim_cell + camera + ur3_driver: no name= remap
        parameters=[params_file], output="screen", condition=IfCondition(use_sim),
    )
    camera = Node(
        package=PACKAGE, executable="camera_node", name="camera", output="screen",
        parameters=[params_file, {"backend": LaunchConfiguration("camera_backend")}],
        condition=UnlessCondition(use_sim),
    )
    ur3_driver = Node(
        package=PACKAGE, executable="ur3_driver_node", name="ur3_driver", output="screen",
        parameters=[params_file, {"backend": LaunchConfiguration("arm_backend")}],
        condition=UnlessCondition(use_sim),
    )
    encoder = Node(
        package=PACKAGE, executable="encoder_node", name="encoder", output="screen",
        parameters=[params_file, {"model_dir": encoder_dir,
                                  "backend": LaunchConfiguration("encoder_backend")}],
    )
    policy = Node(
        package=PACKAGE, executable="policy_node", name="policy", output="screen",
        parameters=[params_file, {"model_dir": policy_dir}],
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
    return LaunchDescription(arguments + [sim_cell, camera, ur3_driver, encoder, policy, episode_manager])
