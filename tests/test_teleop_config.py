"""One teleop configuration: `TeleopConfig` is filled through the same path (configs.io.from_dict)
from command-line flags, a YAML file / ROS params file, and is the ROS node's parameter set;
the session loop's SessionConfig is derived from it."""
import argparse
from pathlib import Path

import pytest
import yaml

from dynaflip_ros.configs.io import ConfigError
from dynaflip_ros.teleop.config import TeleopConfig, TeleopRecorderNodeConfig, load_teleop_config, teleop_config
from dynaflip_ros.teleop.cli import teleop_config_from_args
from dynaflip_ros.teleop.record import session_config
from dynaflip_ros.teleop.session import SessionConfig

REPO = Path(__file__).resolve().parents[1]


def _args(**kw):
    from dynaflip_ros.data.cli import register

    p = argparse.ArgumentParser()
    register(p.add_subparsers())
    argv = ["record"]
    for k, v in kw.items():
        flag = "--" + k.replace("_", "-")
        argv += [flag] if v is True else [flag, str(v)]
    return p.parse_args(argv)


def test_flags_and_defaults_give_the_same_config(tmp_path):
    args = _args(teleop="gamepad", sim=True, out=tmp_path / "d")
    cfg = teleop_config_from_args(args)
    assert cfg == TeleopConfig(device="gamepad", out=str(tmp_path / "d"))
    assert TeleopRecorderNodeConfig is TeleopConfig  # the ROS node's name for it
    args = _args(teleop="replay:x.jsonl", robot_ip="10.0.0.2", ur_type="e-series", out=tmp_path / "d",
                 task="Put it away", episodes=3, command_rate_hz=100, episode_timeout_s=20, seed=4, rosbag=True,
                 image_size="96x128", operator="me", repo_id="lab/demos")
    cfg = teleop_config_from_args(args)
    assert (cfg.sim, cfg.robot_ip, cfg.ur_type, cfg.task, cfg.episodes, cfg.command_rate_hz, cfg.max_episode_s,
            cfg.seed, cfg.image_hw, cfg.operator, cfg.repo_id) == (
        False, "10.0.0.2", "e-series", "Put it away", 3, 100.0, 20.0, 4, (96, 128), "me", "lab/demos")
    assert Path(cfg.rosbag_dir).parent.name == "d_rosbag"
    s = session_config(cfg)
    assert (s.task, s.task_override, s.episodes, s.command_rate_hz, s.max_episode_s, s.seed, s.source) == (
        "Put it away", True, 3, 100.0, 20.0, 4, "real")
    s = session_config(TeleopConfig())
    assert s == SessionConfig()  # the session's defaults are the config's


def test_yaml_and_params_file_go_through_the_same_checks(tmp_path):
    flat = tmp_path / "teleop.yaml"
    flat.write_text(yaml.safe_dump({"device": "spacemouse", "episodes": 2, "safety": {"speed_scale": 0.25}}))
    cfg = load_teleop_config(flat, {"out": "/tmp/x"})
    assert cfg.device == "spacemouse" and cfg.episodes == 2 and cfg.safety.speed_scale == 0.25 and cfg.out == "/tmp/x"
    real = load_teleop_config(REPO / "config" / "real_cell.yaml")  # the teleop_recorder section
    doc = yaml.safe_load((REPO / "config" / "real_cell.yaml").read_text())["teleop_recorder"]["ros__parameters"]
    assert real.device == doc["device"] and real.command_rate_hz == doc["command_rate_hz"]
    params = tmp_path / "p.yaml"
    params.write_text(yaml.safe_dump({"teleop_recorder": {"ros__parameters": {"device": "gamepad",
                                                                              "safety.speed_scale": 0.3}}}))
    assert load_teleop_config(params).safety.speed_scale == 0.3
    for bad, match in (({"command_rate_hz": 33.0}, "multiple of 10"), ({"devcie": "gamepad"}, "unknown keys"),
                       ({"sim": False}, "robot_ip is required"), ({"max_episode_s": 0.0}, "max_episode_s")):
        with pytest.raises(ConfigError, match=match):
            teleop_config(bad)
