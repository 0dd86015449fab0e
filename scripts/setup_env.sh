#!/usr/bin/env bash
# Sets up whatever is missing for dynaflip_ros on a Debian/Ubuntu machine with Python 3.11 and
# no ROS install: Debian packages, the .venv at the repository root, pinned pip installs, and
# the package itself (editable, so `dynaflip` is on the venv's PATH).
# Idempotent: a second run installs nothing (a stamp keyed on the requirement files' hash).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), "dynaflip_ros needs Python 3.11 (ROS 2 wheels, lerobot 0.4.4)"'

# 1. Debian packages: OSMesa (MuJoCo CPU rendering fallback), libusb (pyrealsense2), ffmpeg
#    (lerobot video decode), libegl1 (MuJoCo EGL), hidapi (SpaceMouse teleop).
deb_pkgs=(libosmesa6 libegl1 libgl1 libusb-1.0-0 ffmpeg libhidapi-hidraw0 libhidapi-libusb0)
missing=()
for p in "${deb_pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[setup] installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. The virtual environment.
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PY" -m venv .venv
fi
# The torchvision shim runs on the first `import torchvision` in any venv process, so LeRobot's
# own tools open our recordings as they are (dynaflip_ros/_compat/torchvision_hook.py).
write_shim_pth() {
  local site
  site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  # one line (a .pth runs lines that start with "import"); silent where dynaflip_ros is not importable
  printf '%s\n' 'import sys; exec("try:\n from dynaflip_ros._compat.torchvision_hook import install\nexcept ImportError:\n pass\nelse:\n install()")' \
    > "$site/dynaflip_torchvision_shim.pth"
}
stamp=.venv/.dynaflip_setup_stamp
want=$(cat requirements/*.txt setup.py setup.cfg | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  write_shim_pth  # cheap; keeps the line current in an existing venv
  exit 0
fi
pip=(.venv/bin/python -m pip --disable-pip-version-check)
echo "[setup] installing Python packages into .venv (first run: a few minutes, ~3 GB)"
"${pip[@]}" install -q -U pip
# torch first and alone: 2.13.0 resolves to the local CPU wheel; anything else pulls CUDA.
"${pip[@]}" install -q torch==2.13.0
"${pip[@]}" install -q -c requirements/constraints.txt -r requirements/base.txt
"${pip[@]}" install -q --no-deps -c requirements/constraints.txt -r requirements/nodeps.txt
"${pip[@]}" install -q --no-deps --no-build-isolation -e .
.venv/bin/python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
write_shim_pth
echo "$want" > "$stamp"
echo "[setup] done"
