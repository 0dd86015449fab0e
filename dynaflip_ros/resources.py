"""Locate the package's data directories (config/, models/, launch/, calibration/) — ROS-free.

Two layouts are supported:

- an ament install (`colcon build`, setup.py `data_files`): `<prefix>/share/dynaflip_ros/{config,
  models,launch,calibration}`, found through the ament resource index on `AMENT_PREFIX_PATH`
  (the same lookup `ament_index_python.get_package_share_directory` does, without importing it);
- this source checkout (or an editable pip install of it): the repository root, the directory
  above the `dynaflip_ros` package that holds `setup.py`.

`DYNAFLIP_ROS_SHARE=<dir>` overrides both. Search order: the override, the source checkout,
then the ament index (so a developer's edits in the checkout win over a stale install).
Source: REP 122 / ament_index "resource index" layout
(github.com/ament/ament_index/blob/rolling/doc/resource_index.md).
"""
from __future__ import annotations

import os
from pathlib import Path

from dynaflip_ros.errors import UserError

PACKAGE_NAME = "dynaflip_ros"
SHARE_ENV = "DYNAFLIP_ROS_SHARE"
DATA_DIRS: tuple[str, ...] = ("config", "models", "launch", "calibration")


class ResourceNotFoundError(FileNotFoundError, UserError):
    """A data directory or file of the package could not be found; the message lists where it looked."""


def checkout_root() -> Path | None:
    """Repository root when running from a source checkout (holds setup.py and package.xml), else None."""
    root = Path(__file__).resolve().parent.parent
    if (root / "setup.py").is_file() and (root / "package.xml").is_file():
        return root
    return None


def ament_share_dir() -> Path | None:
    """`<prefix>/share/dynaflip_ros` of the first AMENT_PREFIX_PATH prefix that registers the
    package in its ament resource index, else None."""
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if not prefix:
            continue
        marker = Path(prefix) / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE_NAME
        share = Path(prefix) / "share" / PACKAGE_NAME
        if marker.is_file() and share.is_dir():
            return share
    return None


def search_roots() -> list[Path]:
    """Candidate roots in search order (override, checkout, ament share); existing dirs only."""
    roots: list[Path] = []
    override = os.environ.get(SHARE_ENV)
    if override:
        roots.append(Path(override).expanduser().resolve())
    for r in (checkout_root(), ament_share_dir()):
        if r is not None and r not in roots:
            roots.append(r)
    return [r for r in roots if r.is_dir()]


def data_dir(kind: str) -> Path:
    """Directory `kind` (one of DATA_DIRS) of the package.

    Raises ValueError for an unknown kind and ResourceNotFoundError when no root has it.
    """
    if kind not in DATA_DIRS:
        raise ValueError(f"unknown data directory {kind!r}; one of {DATA_DIRS}")
    roots = search_roots()
    for root in roots:
        if (root / kind).is_dir():
            return root / kind
    raise ResourceNotFoundError(
        f"no '{kind}/' directory of {PACKAGE_NAME} found; looked in {[str(r) for r in roots] or 'nothing'} "
        f"(set {SHARE_ENV}, run from the source checkout, or source an ament install that has "
        f"share/{PACKAGE_NAME})"
    )


def config_dir() -> Path:
    return data_dir("config")


def models_dir() -> Path:
    return data_dir("models")


def launch_dir() -> Path:
    return data_dir("launch")


def resolve_path(path: str | os.PathLike, must_exist: bool = True) -> Path:
    """Resolve a user path: absolute as is; relative against the working directory first, then
    every search root (so `models/encoder` works from anywhere in a checkout or an install).

    Raises ResourceNotFoundError (with every place tried) if `must_exist` and nothing exists.
    """
    p = Path(path).expanduser()
    if p.is_absolute():
        if must_exist and not p.exists():
            raise ResourceNotFoundError(f"{p} does not exist")
        return p
    tried = [Path.cwd() / p] + [r / p for r in search_roots()]
    for cand in tried:
        if cand.exists():
            return cand.resolve()
    if must_exist:
        raise ResourceNotFoundError(f"{path} not found; tried {[str(c) for c in tried]}")
    return tried[0]


def launch_file(name: str) -> Path:
    """`launch/<name>.launch.py` of the package. Raises ResourceNotFoundError if absent."""
    f = launch_dir() / f"{name}.launch.py"
    if not f.is_file():
        available = sorted(p.name.removesuffix(".launch.py") for p in launch_dir().glob("*.launch.py"))
        raise ResourceNotFoundError(f"no launch file {f}; available: {available}")
    return f


def params_file(name: str) -> Path:
    """`config/<name>.yaml` of the package. Raises ResourceNotFoundError if absent."""
    f = config_dir() / f"{name}.yaml"
    if not f.is_file():
        raise ResourceNotFoundError(f"no params file {f}")
    return f
