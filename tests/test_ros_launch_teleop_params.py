"""`ros.launch_args.teleop_overrides` reads the `teleop_recorder` section of a params file as
rcl does: dotted keys (`safety.speed_scale: 0.3`) and nested maps (`safety: {speed_scale: 0.3}`)
both reach the nested SafetyConfig of `teleop.config.TeleopConfig` (they used to be refused as
unknown keys), and a bad value there is a LaunchArgumentError naming it."""
from __future__ import annotations

import pytest

from dynaflip_ros.ros import launch_args as la
from dynaflip_ros.teleop.config import _unflatten, teleop_config

IP = "192.168.1.102"


def params_doc(safety: dict, dotted: bool) -> dict:
    params = {"device": "gamepad", "ur_type": "cb3", "camera_serial": "0123"}
    if dotted:
        params.update({f"safety.{k}": v for k, v in safety.items()})
    else:
        params["safety"] = dict(safety)
    return {"teleop_recorder": {"ros__parameters": params}}


@pytest.mark.parametrize("dotted", [True, False])
def test_safety_params_reach_the_teleop_config(dotted):
    doc = params_doc({"speed_scale": 0.3, "watchdog_timeout_s": 0.04}, dotted)
    overrides = la.teleop_overrides(doc, robot_ip=IP, out="outputs/demos_real")
    assert overrides == {"robot_ip": IP, "out": "outputs/demos_real", "sim": False}
    # What the node builds from the same section + the overrides (ros/params.load_node_config path).
    cfg = teleop_config(_unflatten(la.node_parameters(doc, "teleop_recorder")), overrides)
    assert cfg.safety.speed_scale == 0.3 and cfg.safety.watchdog_timeout_s == 0.04
    assert cfg.robot_ip == IP and cfg.camera_serial == "0123"


@pytest.mark.parametrize("dotted", [True, False])
def test_bad_safety_params_are_launch_argument_errors(dotted):
    with pytest.raises(la.LaunchArgumentError, match="speed_scale"):
        la.teleop_overrides(params_doc({"speed_scale": 5.0}, dotted), robot_ip=IP, out="o")
    with pytest.raises(la.LaunchArgumentError, match="speed_scal"):
        la.teleop_overrides(params_doc({"speed_scal": 0.3}, dotted), robot_ip=IP, out="o")
