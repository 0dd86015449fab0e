"""The learned half of the Pick-into-Sink graph: encoder_node + policy_node (ROS 2 Jazzy).

Included by pick_into_sink.launch.py (use_sim:=true) and real_cell.launch.py, which pass
params_file; it declares the model arguments once for both graphs (arguments given on the
`ros2 launch` command line reach included files). On its own it runs the two nodes against
whatever publishes /camera/color/image_raw and /joint_states, e.g. a rosbag2 replay:

  ros2 launch dynaflip_ros encoder_policy.launch.py \
      params_file:=$(ros2 pkg prefix dynaflip_ros)/share/dynaflip_ros/config/real_cell.yaml

  encoder_node (encoder): /camera/color/image_raw -> /dynaflip/embedding
  policy_node  (policy):  /dynaflip/embedding + /joint_states -> /dynaflip/action_chunk

combined_inference:=true is the CPU-frugal layout for machines without a GPU: no encoder_node;
policy_node runs the encoder in its own process on /camera/color/image_raw (no embedding topic).

instruction:="put the red cube in the sink" gives the policy its task sentence (published
latched on /dynaflip/instruction; a language-conditioned policy sends nothing without one). It
can be set or changed at run time too:
  ros2 topic pub --once --qos-durability transient_local --qos-reliability reliable \
      /dynaflip/instruction std_msgs/msg/String "{data: 'drop the blue bar into the basin'}"
In simulation every episode brings its own instruction (the sim cell's), which takes precedence.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import UnlessCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

PACKAGE = "dynaflip_ros"


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare(PACKAGE)
    params_file = LaunchConfiguration("params_file")
    arguments = [
        DeclareLaunchArgument("params_file",
                              description="ROS 2 params file with `encoder:` and `policy:` sections "
                                          "(config/pick_into_sink.yaml or config/real_cell.yaml)"),
        DeclareLaunchArgument("encoder_model_dir", default_value=PathJoinSubstitution([share, "models", "encoder"]),
                              description="encoder artifact dir (manifest.json, encoder.onnx, ...)"),
        DeclareLaunchArgument("encoder_backend", default_value="auto",
                              choices=["auto", "onnxruntime", "tensorrt", "torch"],
                              description="encoder inference backend (auto: tensorrt, else onnxruntime, else torch)"),
        DeclareLaunchArgument("policy_model_dir", default_value=PathJoinSubstitution([share, "models", "policy"]),
                              description="policy checkpoint dir (must name the encoder's sha256)"),
        DeclareLaunchArgument("instruction", default_value="",
                              description="task sentence for the policy, e.g. 'put the red cube in the sink' "
                                          "(real cell; empty = none until one is published on /dynaflip/instruction; "
                                          "in simulation each episode brings its own)"),
        DeclareLaunchArgument("combined_inference", default_value="false", choices=["true", "false"],
                              description="true: no encoder_node, the policy node runs the encoder in its own "
                                          "process (CPU-frugal; no embedding topic)"),
    ]
    encoder = Node(
        package=PACKAGE, executable="encoder_node", name="encoder", output="screen",
        parameters=[params_file, {"model_dir": LaunchConfiguration("encoder_model_dir"),
                                  "backend": LaunchConfiguration("encoder_backend")}],
        condition=UnlessCondition(LaunchConfiguration("combined_inference")),
    )
    policy = Node(
        package=PACKAGE, executable="policy_node", name="policy", output="screen",
        parameters=[params_file, {"model_dir": LaunchConfiguration("policy_model_dir"),
                                  "instruction": ParameterValue(LaunchConfiguration("instruction"), value_type=str),
                                  "encoder_in_process": ParameterValue(LaunchConfiguration("combined_inference"),
                                                                       value_type=bool),
                                  "encoder.model_dir": LaunchConfiguration("encoder_model_dir"),
                                  "encoder.backend": LaunchConfiguration("encoder_backend")}],
    )
    return LaunchDescription(arguments + [encoder, policy])
