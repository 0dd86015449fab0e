"""ament_python package for dynaflip_ros (also pip-installable without ROS: scripts/setup_env.sh)."""
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
    package_data={"dynaflip_ros": ["sim/assets/*.xml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", _files("launch/*.launch.py")),
        ("share/" + package_name + "/config", _files("config/*.yaml")),
        *_tree("models"),
        ("share/" + package_name + "/calibration", _files("calibration/*.yaml")),
    ],
    install_requires=["setuptools"],
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
        ],
    },
)
