"""The core is ROS-free (docs/architecture.md, "One rule for the layout"): only `dynaflip_ros/ros/` may import
rclpy, message packages or launch. Every other module of the package (discovered with pkgutil, so
new modules are covered automatically) is imported in a fresh interpreter, one after the other,
and after each import no ROS module may be loaded."""
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import dynaflip_ros

ROS_PACKAGES = (
    "rclpy", "rcl_interfaces", "builtin_interfaces", "std_msgs", "std_srvs", "sensor_msgs",
    "geometry_msgs", "trajectory_msgs", "launch", "launch_ros", "ament_index_python",
)

_PROBE = r"""
import importlib, json, sys
forbidden = set(json.loads(sys.argv[1]))
out = {"imported": [], "offender": None, "errors": {}}
for name in json.loads(sys.argv[2]):
    try:
        importlib.import_module(name)
    except Exception as e:  # report, keep going: a broken module must not hide a ROS import
        out["errors"][name] = f"{type(e).__name__}: {e}"
        continue
    out["imported"].append(name)
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in forbidden)
    if loaded:
        out["offender"] = [name, loaded[:10]]
        break
print("RESULT" + json.dumps(out))
"""


def core_modules() -> list[str]:
    """Every module of dynaflip_ros outside dynaflip_ros.ros (pkgutil walk of the source tree)."""
    root = Path(dynaflip_ros.__file__).parent
    names = ["dynaflip_ros"]
    for info in pkgutil.walk_packages([str(root)], prefix="dynaflip_ros."):
        if info.name == "dynaflip_ros.ros" or info.name.startswith("dynaflip_ros.ros."):
            continue
        names.append(info.name)
    return names


def test_core_modules_are_found():
    mods = core_modules()
    # the walk must see the packages the design names (guards against a silently empty walk)
    for expected in ("dynaflip_ros.configs.io", "dynaflip_ros.robot.safety", "dynaflip_ros.resources",
                     "dynaflip_ros.cli"):
        assert expected in mods
    assert not any(m.startswith("dynaflip_ros.ros") for m in mods)


def test_no_ros_import_outside_ros_package():
    mods = core_modules()
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(ROS_PACKAGES), json.dumps(mods)],
        capture_output=True, text=True, timeout=240,
    )
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    assert line, f"probe crashed (rc {proc.returncode}):\n{proc.stderr[-3000:]}"
    out = json.loads(line[-1][len("RESULT"):])
    assert out["offender"] is None, f"{out['offender'][0]} imports ROS modules {out['offender'][1]}"
    assert not out["errors"], f"core modules failed to import: {out['errors']}"
    assert len(out["imported"]) == len(mods)
