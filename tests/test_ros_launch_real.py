"""Real-cell launch arguments -> node parameters (dynaflip_ros/ros/launch_args.py) and
config/real_cell.yaml, loaded into the node configs through real rclpy parameters.

The launch files themselves cannot run here (no launch / launch_ros, docs/environment.md), so what
real_cell.launch.py / record_teleop.launch.py hand to their nodes is reproduced exactly: the
params file, then the overrides returned by launch_args written as a second params file (what
launch_ros does with a parameters dict: ParameterValue(value_type=str) strings stay strings),
then rcl parses both and `ros.params.load_node_config` builds the dataclass.
"""
from pathlib import Path

import launch_static as ls
import pytest
import yaml

from dynaflip_ros.configs.io import ConfigError
from dynaflip_ros.configs.robot import CONTROLLER_RATE_HZ
from dynaflip_ros.ros import launch_args as la

ROOT = ls.ROOT
REAL = ROOT / "config" / "real_cell.yaml"
IP = "192.168.1.102"


def doc():
    return la.read_params_file(REAL)


# ----------------------------------------------------------------------------- mapping
def test_real_cell_defaults_from_the_params_file():
    o = la.real_cell_overrides(doc(), robot_ip=IP)
    assert o["ur3_driver"] == {"backend": "ur_rtde", "ur_rtde.robot_ip": IP, "servo_rate_hz": 125.0}
    assert o["camera"] == {"backend": "realsense"}


@pytest.mark.parametrize("ur_type,robot_model", [("cb3", "ur3_cb3"), ("e-series", "ur3e")])
def test_ur_type_sets_servo_rate_and_robot_model(ur_type, robot_model):
    o = la.real_cell_overrides(doc(), robot_ip=IP, ur_type=ur_type)["ur3_driver"]
    assert o["servo_rate_hz"] == CONTROLLER_RATE_HZ[ur_type] == {"cb3": 125.0, "e-series": 500.0}[ur_type]
    assert o["ur_rtde.ur_type"] == ur_type
    assert o["safety.robot_model"] == robot_model


def test_explicit_servo_rate_and_its_limits():
    o = la.real_cell_overrides(doc(), robot_ip=IP, ur_type="e-series", servo_rate_hz="125")
    assert o["ur3_driver"]["servo_rate_hz"] == 125.0
    for bad in ("600", "0", "-5", "nan", "fast"):
        with pytest.raises(la.LaunchArgumentError, match="servo_rate_hz"):
            la.real_cell_overrides(doc(), robot_ip=IP, servo_rate_hz=bad)  # CB3: at most 125 Hz


def test_robot_ip_is_required_somewhere():
    with pytest.raises(la.LaunchArgumentError, match="robot_ip:="):
        la.real_cell_overrides(doc())
    d = doc()
    d["ur3_driver"]["ros__parameters"]["ur_rtde"]["robot_ip"] = "10.0.0.7"
    o = la.real_cell_overrides(d)
    assert "ur_rtde.robot_ip" not in o["ur3_driver"]  # the file's value is kept, not re-sent


@pytest.mark.parametrize("kwargs,match", [
    ({"ur_type": "ur5"}, "ur_type"),
    ({"gripper": "onrobot"}, "gripper"),
    ({"robot_ip": "10.0.0.2 ; rm -rf /"}, "spaces"),
    ({"camera_serial": "12-34"}, "serial"),
])
def test_invalid_arguments_fail_with_the_dataclass_message(kwargs, match):
    with pytest.raises(la.LaunchArgumentError, match=match):
        la.real_cell_overrides(doc(), **{"robot_ip": IP, **kwargs})


def test_camera_serial_stays_a_string_and_numeric_yaml_serial_is_refused():
    o = la.real_cell_overrides(doc(), robot_ip=IP, camera_serial="012345678901")
    assert o["camera"]["realsense.serial"] == "012345678901"
    d = doc()
    d["camera"]["ros__parameters"]["realsense"]["serial"] = 12345678901  # unquoted in YAML
    with pytest.raises(la.LaunchArgumentError, match="quote it"):
        la.real_cell_overrides(d, robot_ip=IP)


def test_robot_model_must_match_the_file_ur_type():
    d = doc()
    d["ur3_driver"]["ros__parameters"]["ur_rtde"]["ur_type"] = "e-series"  # robot_model stays ur3_cb3
    with pytest.raises(la.LaunchArgumentError, match="robot_model"):
        la.real_cell_overrides(d, robot_ip=IP)
    # ur_type on the command line sets both
    assert la.real_cell_overrides(d, robot_ip=IP, ur_type="e-series")["ur3_driver"]["safety.robot_model"] == "ur3e"


def test_params_file_reading_follows_rcl_rules(tmp_path):
    """`/**` applies to every node, `<node>` then `/<node>` override it; dotted keys = nested maps."""
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump({
        "/**": {"ros__parameters": {"ur_rtde": {"ur_type": "e-series", "robot_ip": "10.0.0.1"}}},
        "ur3_driver": {"ros__parameters": {"ur_rtde.robot_ip": "10.0.0.2", "safety.robot_model": "ur3e"}},
        "/ur3_driver": {"ros__parameters": {"ur_rtde": {"robot_ip": "10.0.0.3"}}},
    }))
    params = la.node_parameters(la.read_params_file(p), "ur3_driver")
    assert params == {"ur_rtde.ur_type": "e-series", "ur_rtde.robot_ip": "10.0.0.3", "safety.robot_model": "ur3e"}
    overrides, cfg = la.arm_overrides(params)
    assert cfg.robot_ip == "10.0.0.3" and cfg.ur_type == "e-series" and overrides["servo_rate_hz"] == 500.0
    with pytest.raises(la.LaunchArgumentError, match="ros__parameters"):
        la.node_parameters({"ur3_driver": {"params": {}}}, "ur3_driver")
    for bad in ("- a\n- b\n", "a: [b\n"):
        p.write_text(bad)
        with pytest.raises(la.LaunchArgumentError):
            la.read_params_file(p)
    with pytest.raises(la.LaunchArgumentError, match="does not exist"):
        la.read_params_file(tmp_path / "missing.yaml")


def test_unknown_ur_rtde_parameter_in_the_file_is_an_error():
    d = doc()
    d["ur3_driver"]["ros__parameters"]["ur_rtde"]["servo_gian"] = 300.0
    with pytest.raises(la.LaunchArgumentError, match="servo_gian"):
        la.real_cell_overrides(d, robot_ip=IP)


def test_teleop_overrides():
    o = la.teleop_overrides(doc(), robot_ip=IP, out="outputs/demos_real", ur_type="e-series", camera_serial="0123")
    assert o == {"robot_ip": IP, "out": "outputs/demos_real", "ur_type": "e-series", "camera_serial": "0123",
                 "sim": False}
    assert la.teleop_overrides(doc(), use_sim=True, out="o")["sim"] is True  # sim needs no robot
    with pytest.raises(la.LaunchArgumentError, match="out:="):
        la.teleop_overrides(doc(), robot_ip=IP)
    with pytest.raises(la.LaunchArgumentError, match="terminal"):
        la.teleop_overrides(doc(), robot_ip=IP, out="o", device="keyboard")
    with pytest.raises(la.LaunchArgumentError, match="robot_ip"):
        la.teleop_overrides(doc(), out="o")
    with pytest.raises(la.LaunchArgumentError, match="device"):
        la.teleop_overrides(doc(), robot_ip=IP, out="o", device="joystick")


def test_ood_session_overrides_are_checked_before_the_launch():
    o = la.ood_session_overrides(doc(), out="outputs/ood/s1", conditions="distractors:1,lighting:0.5",
                                 seeds="100000-100002", model="shipped", episode_timeout_s="45")
    assert o == {"session_dir": "outputs/ood/s1", "conditions": "distractors:1,lighting:0.5",
                 "seeds": [100000, 100001, 100002], "model": "shipped", "episode_timeout_s": 45.0}
    assert la.ood_session_overrides(doc(), out="o") == {"session_dir": "o"}  # the rest from the params file
    for kwargs, match in (({}, "out:="), ({"conditions": "fog"}, "unknown condition"),
                          ({"conditions": "lighting:2"}, r"\[0, 1\]"), ({"seeds": "1-x"}, "seeds"),
                          ({"model": "a b"}, "model"), ({"episode_timeout_s": "-1"}, "episode_timeout_s")):
        with pytest.raises(la.LaunchArgumentError, match=match):
            la.ood_session_overrides(doc(), **{"out": "o" if kwargs else "", **kwargs})


# ----------------------------------------------------------------------------- params file
def test_real_cell_params_file_sections():
    d = yaml.safe_load(REAL.read_text())
    started = {n.name for f in ("real_cell.launch.py", "record_teleop.launch.py", "ood_session.launch.py")
               for _, n in ls.graph(f)}
    assert set(d) == started == {"camera", "ur3_driver", "encoder", "policy", "teleop_recorder", "ood_session"}
    for name, section in d.items():
        assert set(section) == {"ros__parameters"}, name
    assert d["camera"]["ros__parameters"]["backend"] == "realsense"
    assert d["ur3_driver"]["ros__parameters"]["backend"] == "ur_rtde"
    assert isinstance(d["camera"]["ros__parameters"]["realsense"]["serial"], str)


def _load_configs(files: list[Path]) -> dict:
    """Every real-cell node's config from `files` (later wins) through rcl's parser + rclpy."""
    rclpy = pytest.importorskip("rclpy")
    from rclpy.node import Node

    from dynaflip_ros.configs import ros as rc
    from dynaflip_ros.ros.params import load_node_config, node_kwargs
    from dynaflip_ros.teleop.config import TeleopRecorderNodeConfig

    classes = {"camera": rc.CameraNodeConfig, "ur3_driver": rc.Ur3DriverNodeConfig, "encoder": rc.EncoderNodeConfig,
               "policy": rc.PolicyNodeConfig, "teleop_recorder": TeleopRecorderNodeConfig}
    args = ["x", "--ros-args"]
    for f in files:
        args += ["--params-file", str(f)]
    ctx = rclpy.Context()
    rclpy.init(args=args, context=ctx)
    out = {}
    try:
        for name, cls in classes.items():
            node = Node(name, context=ctx, **node_kwargs())
            try:
                out[name] = load_node_config(node, cls)
            finally:
                node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)
    return out


def _overrides_file(tmp_path, overrides: dict[str, dict]) -> Path:
    """The overrides file real_cell.launch.py / record_teleop.launch.py pass after params_file."""
    return la.write_overrides_file(overrides, tmp_path / "launch_overrides.yaml")


def test_real_cell_params_file_loads_into_every_node_config():
    cfgs = _load_configs([REAL])
    assert cfgs["camera"].backend == "realsense" and cfgs["camera"].realsense.exposure_us == 15600.0
    assert cfgs["ur3_driver"].backend == "ur_rtde" and cfgs["ur3_driver"].ur_rtde.gripper == "robotiq_urcap"
    assert cfgs["ur3_driver"].safety.joint_limits_rad[2] == pytest.approx((-3.141592653589793, 3.141592653589793))
    assert cfgs["teleop_recorder"].image_hw == (224, 224)


@pytest.mark.parametrize("ur_type", ["cb3", "e-series"])
def test_real_cell_launch_overrides_reach_the_node_configs(tmp_path, ur_type):
    """File + the overrides real_cell.launch.py would pass -> the configs the nodes would build."""
    o = la.real_cell_overrides(doc(), robot_ip=IP, ur_type=ur_type, camera_serial="012345678901", gripper="none")
    cfgs = _load_configs([REAL, _overrides_file(tmp_path, o)])
    drv, cam = cfgs["ur3_driver"], cfgs["camera"]
    assert drv.ur_rtde.robot_ip == IP and drv.ur_rtde.ur_type == ur_type and drv.ur_rtde.gripper == "none"
    assert drv.servo_rate_hz == drv.ur_rtde.controller_rate_hz == CONTROLLER_RATE_HZ[ur_type]
    assert drv.safety.robot_model == la.UR_TYPE_ROBOT_MODEL[ur_type]
    assert cam.realsense.serial == "012345678901"  # leading zero kept: a string all the way


def test_record_teleop_overrides_reach_the_node_config(tmp_path):
    o = la.teleop_overrides(doc(), robot_ip=IP, out=str(tmp_path / "demos"), camera_serial="012345678901")
    cfg = _load_configs([REAL, _overrides_file(tmp_path, {"teleop_recorder": o})])["teleop_recorder"]
    assert cfg.sim is False and cfg.robot_ip == IP and cfg.camera_serial == "012345678901"
    assert cfg.device == "gamepad" and cfg.out == str(tmp_path / "demos")


def test_plain_yaml_strings_would_change_type_in_rcl(tmp_path):
    """Why the overrides are not a launch_ros parameters dict: PyYAML (which launch_ros uses to
    write a Node's parameters) leaves '012345678901' unquoted, rcl then reads a double, and the
    camera config refuses it. The quoted overrides file keeps the string."""
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.dump({"camera": {"ros__parameters": {"realsense.serial": "012345678901"}}}))
    assert "'012345678901'" not in plain.read_text() and '"012345678901"' not in plain.read_text()
    with pytest.raises((ConfigError, ValueError, TypeError), match="serial"):
        _load_configs([REAL, plain])
    quoted = la.write_overrides_file({"camera": {"realsense.serial": "012345678901"}}, tmp_path / "q.yaml")
    assert _load_configs([REAL, quoted])["camera"].realsense.serial == "012345678901"


def test_overrides_file_is_a_fresh_temp_file_by_default():
    p = la.write_overrides_file({"ur3_driver": {"ur_rtde.robot_ip": IP}, "camera": {}})
    try:
        assert yaml.safe_load(p.read_text()) == {"ur3_driver": {"ros__parameters": {"ur_rtde.robot_ip": IP}}}
    finally:
        p.unlink()


def test_launch_side_code_needs_only_pyyaml_and_numpy():
    """`ros2 launch` runs the launch files with the system interpreter (/usr/bin/python3 in the
    images), which has PyYAML and NumPy (rosidl-generated message modules import numpy, so every
    ROS 2 Python install has it) but not the venv's torch / OpenCV / MuJoCo: the launch-side
    helpers must not import those (nor rclpy, which the launch process does not need)."""
    import subprocess
    import sys

    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from dynaflip_ros.ros import launch_args as la\n"
        "d = la.read_params_file(sys.argv[2])\n"
        "la.real_cell_overrides(d, robot_ip='10.0.0.2'); la.teleop_overrides(d, robot_ip='10.0.0.2', out='o')\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'rclpy', 'cv2', 'mujoco', 'pyrealsense2'))\n"
        "print(heavy)\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(ROOT), str(REAL)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
