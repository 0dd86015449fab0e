#!/usr/bin/env bash
# README test command: set up whatever is missing (scripts/setup_env.sh), then run the test suite.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup_env.sh"
cd "$root"
exec .venv/bin/python -m pytest "$@"
