"""configs/image.py (the one image-size rule) and the YAML-boolean message of validate.require_choice."""
from __future__ import annotations

import pytest
import yaml

from dynaflip_ros.configs.export import ExportConfig
from dynaflip_ros.configs.image import parse_image_hw, require_image_hw
from dynaflip_ros.configs.io import ConfigError, from_dict
from dynaflip_ros.configs.realsense import RealSenseConfig
from dynaflip_ros.configs.record import RecordConfig
from dynaflip_ros.configs.sim import SimConfig
from dynaflip_ros.configs.validate import require_range_pair
from dynaflip_ros.errors import UserError


def test_unquoted_off_in_yaml_gets_the_quote_it_message():
    raw = yaml.safe_load("power_line_frequency: off\n")
    assert raw == {"power_line_frequency": False}  # YAML 1.1
    with pytest.raises(ConfigError) as info:
        from_dict(RealSenseConfig, {**raw, "playback_path": "x.db3"})
    msg = str(info.value)
    assert "got the boolean False: YAML reads an unquoted off/on/yes/no as a boolean; quote it: " \
           'power_line_frequency: "off"' in msg
    assert isinstance(info.value, UserError)
    with pytest.raises(ConfigError, match='quote it: tensorrt: "off"'):
        from_dict(ExportConfig, yaml.safe_load("tensorrt: off\n"))
    assert from_dict(ExportConfig, yaml.safe_load('tensorrt: "off"\n')).tensorrt == "off"


def test_range_pair():
    assert require_range_pair("SimConfig", "x", (0, 1)) == (0.0, 1.0)
    for bad in ((1, 0), (0, float("nan")), (0,), 3, (True, 2)):
        with pytest.raises(ConfigError, match=r"SimConfig.x must be a finite \(low, high\) pair with low <= high"):
            require_range_pair("SimConfig", "x", bad)


def test_image_hw_rule():
    assert parse_image_hw("224") == (224, 224) and parse_image_hw("120X160") == (120, 160)
    for bad in ("a", "1x2x3", "8", "5000"):
        with pytest.raises(ValueError, match="image size must be N or HxW"):
            parse_image_hw(bad)
    assert require_image_hw("SimConfig", "image_hw", [120, 160]) == (120, 160)
    for bad in ((8, 8), (16, 5000), (True, 20), (16.0, 16), 16, (16, 16, 16)):
        with pytest.raises(ConfigError, match=r"must be two ints in \[16, 4096\]"):
            require_image_hw("SimConfig", "image_hw", bad)
    assert SimConfig(image_hw=[64, 96]).image_hw == (64, 96)
    assert RecordConfig(image_hw=[64, 96]).image_hw == (64, 96)
    with pytest.raises(ConfigError, match=r"RecordConfig.image_hw must be two ints in \[16, 4096\], got \(8, 8\)"):
        RecordConfig(image_hw=(8, 8))
