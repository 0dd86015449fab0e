#!/usr/bin/env bash
# Entry point of the dynaflip_ros images (docker/Dockerfile, docker/Dockerfile.cuda): source
# ROS 2 Jazzy and the colcon overlay, then exec the command (PID 1 stays the command itself, so
# SIGINT/SIGTERM from `docker stop` reach `ros2 launch`, which stops the nodes: the UR3 driver
# stops the arm on shutdown).
#   docker run --rm -it dynaflip_ros:jazzy ros2 launch dynaflip_ros pick_into_sink.launch.py
#   docker run --rm -it dynaflip_ros:jazzy dynaflip --help
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

if [ "$#" -eq 0 ]; then
  set -- bash
fi
exec "$@"
