#!/usr/bin/env bash
# Entry point of the dynaflip_ros images (docker/Dockerfile, docker/Dockerfile.cuda): source
# ROS 2 Jazzy and the colcon overlay, put the package's executables on PATH, then exec the
# command (PID 1 stays the command itself, so SIGINT/SIGTERM from `docker stop` reach
# `ros2 launch`, which stops the nodes: the UR3 driver stops the arm on shutdown).
#   docker run --rm -it dynaflip_ros:jazzy ros2 launch dynaflip_ros pick_into_sink.launch.py
#   docker run --rm -it dynaflip_ros:jazzy dynaflip --help
#
# PATH: colcon installs an ament_python package's console scripts into
# <overlay>/dynaflip_ros/lib/dynaflip_ros (setup.cfg; where `ros2 run` and launch_ros look), which
# the overlay's setup.bash does not put on PATH; this script prepends that directory, so
# `dynaflip` (and the *_node executables) run by name.
#
# `ros2 launch` arguments: an argument with an empty value (`robot_ip:=`, what compose.yaml's
# `robot_ip:=${ROBOT_IP:-}` gives with ROBOT_IP unset) or an empty word is rejected by ros2launch
# ("malformed launch argument 'robot_ip:='", ros2launch/api/api.py parse_launch_arguments) before
# any launch file loads. Such arguments are dropped here (a note on stderr), so the launch file's
# declared default applies ("" for every hardware argument = keep the params file's value).
set -eo pipefail

ROS_SETUP="${DYNAFLIP_ROS_SETUP:-/opt/ros/${ROS_DISTRO:-jazzy}/setup.bash}"
OVERLAY_SETUP="${DYNAFLIP_OVERLAY:-/ws/install}/setup.bash"
for f in "$ROS_SETUP" "$OVERLAY_SETUP"; do
  if [ ! -f "$f" ]; then
    echo "entrypoint: $f not found (ROS 2 setup: DYNAFLIP_ROS_SETUP; colcon overlay: DYNAFLIP_OVERLAY)" >&2
    exit 1
  fi
done
# The setup scripts read unset variables (AMENT_PREFIX_PATH, ...): no `set -u` while sourcing.
# shellcheck source=/dev/null
source "$ROS_SETUP"
# shellcheck source=/dev/null
source "$OVERLAY_SETUP"

PACKAGE_BIN="${DYNAFLIP_OVERLAY:-/ws/install}/dynaflip_ros/lib/dynaflip_ros"
if [ -d "$PACKAGE_BIN" ]; then
  export PATH="$PACKAGE_BIN:$PATH"
fi

if [ "$#" -eq 0 ]; then
  set -- bash
fi

if [ "$#" -ge 2 ] && [ "$1" = ros2 ] && [ "$2" = launch ]; then
  kept=()
  for arg in "$@"; do
    if [ -z "$arg" ] || [[ "$arg" =~ ^[A-Za-z_][A-Za-z0-9_]*:=$ ]]; then
      echo "entrypoint: dropped empty launch argument '$arg' (the launch file's default applies)" >&2
      continue
    fi
    kept+=("$arg")
  done
  set -- "${kept[@]}"
fi
exec "$@"
