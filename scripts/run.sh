#!/usr/bin/env bash
# README run command (the main job): set up whatever is missing, then run closed-loop
# Pick-into-Sink episodes in simulation through the ROS 2 graph with the shipped models, and
# print the success rate and per-stage latency. Extra arguments go to `dynaflip launch`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup_env.sh"
cd "$root"
exec .venv/bin/dynaflip launch pick_into_sink --sim --episodes 20 "$@"
