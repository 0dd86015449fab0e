"""OOD evaluation session on the real cell, run with an operator: ood_session_node.

  ros2 launch dynaflip_ros real_cell.launch.py robot_ip:=192.168.1.102          # terminal 1: the cell
  ros2 launch dynaflip_ros ood_session.launch.py out:=/data/ood/session_01 \\
      conditions:="distractors:1,lighting:0.5,novel_object:1" seeds:=100000-100009  # terminal 2
  ros2 service call /ood_session/confirm std_srvs/srv/Trigger        # the scene is set up: start
  ros2 service call /ood_session/mark_success std_srvs/srv/Trigger   # also mark_wrong_object, mark_failure, abort
  ros2 topic echo /ood_session/status                                # the current setup sheet (JSON)

The node announces each episode's setup sheet (objects and where they go, light, table cloth,
camera offset; a reference picture under <out>/setup/), starts the episode on the operator's
confirmation (instruction, /ur3_driver/start_episode, an MCAP bag per episode), ends it on the
operator's mark, a safety stop or the time-out, and writes the same session files and report as
`dynaflip eval-ood` (eval/ood_records.py). The marks are services, so a second person or a foot
pedal can give them; the keyboard (Enter / s / w / f) needs a terminal, which ros2 launch does
not give its processes: use `ros2 run dynaflip_ros ood_session_node --ros-args -p keyboard:=true
-p session_dir:=... ` or `dynaflip eval-ood --real` for it. Re-running with the same out:= and
settings resumes the session; the launch ends when the session does.

Parameters: section `ood_session:` of params_file (default config/real_cell.yaml); the
arguments below override it (empty = keep the file's value) and are checked before the node
starts (dynaflip_ros/ros/launch_args.py `ood_session_overrides`).
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction, Shutdown
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from dynaflip_ros.ros.launch_args import describe, ood_session_overrides, read_params_file, write_overrides_file

PACKAGE = "dynaflip_ros"


def _session(context, *args, **kwargs):
    params_file = LaunchConfiguration("params_file").perform(context)
    overrides = ood_session_overrides(
        read_params_file(params_file),
        out=LaunchConfiguration("out").perform(context),
        conditions=LaunchConfiguration("conditions").perform(context),
        seeds=LaunchConfiguration("seeds").perform(context),
        model=LaunchConfiguration("model").perform(context),
        episode_timeout_s=LaunchConfiguration("episode_timeout_s").perform(context),
    )
    overrides_file = str(write_overrides_file({"ood_session": overrides}))
    session = Node(
        package=PACKAGE, executable="ood_session_node", name="ood_session", output="screen",
        parameters=[params_file, overrides_file],
        on_exit=Shutdown(reason="OOD session ended"),
    )
    return [LogInfo(msg=f"OOD session, params file {params_file}; overrides ({overrides_file}):\n"
                        f"{describe({'ood_session': overrides})}"), session]


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare(PACKAGE)
    arguments = [
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([share, "config", "real_cell.yaml"]),
                              description="ROS 2 params file with an `ood_session:` section"),
        DeclareLaunchArgument("out", default_value="",
                              description="session directory (required; resumed when it holds this session)"),
        DeclareLaunchArgument("conditions", default_value="",
                              description="comma-separated OOD conditions, e.g. distractors:1,lighting:0.5; empty = params file"),
        DeclareLaunchArgument("seeds", default_value="",
                              description="episode seeds 'A-B' or 'A,B,C'; empty = params file (episodes from seed)"),
        DeclareLaunchArgument("model", default_value="",
                              description="name of the running encoder / policy pair in the session; empty = params file"),
        DeclareLaunchArgument("episode_timeout_s", default_value="",
                              description="wall seconds before a running episode ends as a timeout; empty = params file"),
    ]
    return LaunchDescription(arguments + [OpaqueFunction(function=_session)])
