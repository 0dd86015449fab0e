"""ament_python package for dynaflip_ros (also pip-installable without ROS: scripts/setup_env.sh).

`colcon build` (ROS 2 Jazzy) installs the Python package, the node executables under
lib/dynaflip_ros/ (setup.cfg: `ros2 run` / launch_ros look there) and, through data_files, the
ament resource-index marker, package.xml, launch/, config/, calibration/ and models/ under
share/dynaflip_ros/ (what the launch files find with FindPackageShare). `pip install -e .`
(scripts/setup_env.sh) installs no data files: the code finds them in the checkout
(dynaflip_ros/resources.py). The Python package has no data files of its own (the MuJoCo
scene is built in code), hence no package_data.
"""
import os
from glob import glob

from setuptools import find_packages, setup

package_name = "dynaflip_ros"


def _files(pattern: str) -> list[str]:
    return [p for p in glob(pattern, recursive=True) if os.path.isfile(p)]


def _tree(top: str) -> list[tuple[str, list[str]]]:
    """data_files entries installing every file below `top` under share/<pkg>/<top>/..."""
    entries: dict[str, list[str]] = {}
    for p in _files(top + "/**/*"):
        entries.setdefault(os.path.join("share", package_name, os.path.dirname(p)), []).append(p)
    return sorted(entries.items())


setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["tests", "tests.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", _files("launch/*.py")),
        ("share/" + package_name + "/config", _files("config/*.yaml")),
        *_tree("models"),
        ("share/" + package_name + "/calibration", _files("calibration/*.yaml")),
    ],
    install_requires=["setuptools"],
    # `colcon build` writes the node executables with this shebang: the first python3 on PATH
    # runs them (a venv's, e.g. /opt/venv in docker/Dockerfile, or /usr/bin/python3), as the
    # ROS 2 docs advise for Python dependencies in a virtual environment. pip's own console
    # scripts (`pip install -e .`) keep pinning the venv's interpreter.
    options={"build_scripts": {"executable": "/usr/bin/env python3"}},
    zip_safe=False,
    maintainer="dynaflip_ros team",
    maintainer_email="dynaflip-ros@example.org",
    description="DynaFLIP image-encoder training, export and deployment on a UR3 (ROS 2).",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "dynaflip = dynaflip_ros.cli:main",
            "sim_cell_node = dynaflip_ros.ros.nodes.sim_cell:main",
            "camera_node = dynaflip_ros.ros.nodes.camera:main",
            "encoder_node = dynaflip_ros.ros.nodes.encoder:main",
            "policy_node = dynaflip_ros.ros.nodes.policy:main",
            "ur3_driver_node = dynaflip_ros.ros.nodes.ur3_driver:main",
            "episode_manager_node = dynaflip_ros.ros.nodes.episode_manager:main",
            "teleop_recorder_node = dynaflip_ros.ros.nodes.teleop_recorder:main",
            "ood_session_node = dynaflip_ros.ros.nodes.ood_session:main",
        ],
    },
)
