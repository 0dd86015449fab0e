"""Apply the torchvision shim (`torchvision_shim.apply`) the moment anything imports torchvision.

`scripts/setup_env.sh` installs `dynaflip_torchvision_shim.pth` into the venv's site-packages;
Python runs its one line at start-up, which calls `install()`. That only adds a finder to
`sys.meta_path` (no torch import, no cost for processes that never touch torchvision). The first
`import torchvision` (by LeRobot, timm, transformers or our code) calls the shim once, then the
normal import proceeds. So LeRobot's own tools work from the venv as they are
(`from lerobot.datasets.lerobot_dataset import LeRobotDataset`). Python's `site` module documents
.pth files: https://docs.python.org/3/library/site.html
"""
from __future__ import annotations

import sys


class _ShimFinder:
    """A meta-path finder that never finds anything: it only runs the shim before torchvision."""

    _busy = False

    def find_spec(self, name, path=None, target=None):  # noqa: D401 - importlib protocol
        if name != "torchvision" or _ShimFinder._busy:
            return None
        _ShimFinder._busy = True
        try:
            sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _ShimFinder)]
            from dynaflip_ros._compat import torchvision_shim

            torchvision_shim.apply()
        finally:
            _ShimFinder._busy = False
        return None  # let the regular finders import torchvision


def install() -> None:
    """Add the finder once (idempotent)."""
    if "torchvision" not in sys.modules and not any(isinstance(f, _ShimFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _ShimFinder())
