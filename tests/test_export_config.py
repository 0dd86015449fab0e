"""ExportConfig: the YAML defaults equal the dataclass defaults; bad values raise."""
from __future__ import annotations

from pathlib import Path

import pytest

from dynaflip_ros.configs.export import ExportConfig, ParityTolerance
from dynaflip_ros.configs.io import ConfigError, from_dict, load_yaml, to_dict

REPO = Path(__file__).resolve().parents[1]


def test_yaml_matches_dataclass_defaults():
    assert load_yaml(ExportConfig, REPO / "config" / "export.yaml") == ExportConfig()


def test_round_trip_through_dict():
    cfg = ExportConfig(precision="fp32", trt_max_batch=16, onnx_tolerance=ParityTolerance(1e-5, None, 0.99999))
    assert from_dict(ExportConfig, to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    "bad",
    [
        {"opset": 9},
        {"exporter": "onnxscript"},
        {"tensorrt": "maybe"},
        {"precision": "int8"},
        {"trt_min_batch": 4, "trt_opt_batch": 2},
        {"parity_batch_sizes": []},
        {"parity_image_hw": [4, 4]},
        {"onnx_tolerance": {"max_abs_diff": -1.0}},
        {"unknown_key": 1},
    ],
)
def test_bad_values_raise(bad):
    with pytest.raises(ConfigError):
        from_dict(ExportConfig, bad)
