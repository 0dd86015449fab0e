#!/usr/bin/env bash
# README run command (the main job): set up whatever is missing, then run 20 closed-loop
# multi-object Pick-into-Sink episodes in simulation through the ROS 2 graph with the shipped
# models (each seed puts 2-4 objects on the table and an instruction naming one of them), and
# print success_rate / wrong_object_rate / timeout_rate (Wilson 95 % CIs, overall and per target
# object) and per-stage latency; the record goes to outputs/eval/ros_<UTC>.json (the same keys as
# `dynaflip eval`). Extra arguments go to `dynaflip launch`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup_env.sh"
cd "$root"
exec .venv/bin/dynaflip launch pick_into_sink --sim --episodes 20 "$@"
