"""configs/validate.py: the shared config checks and their message texts."""
from __future__ import annotations

import math

import numpy as np
import pytest

from dynaflip_ros.configs.io import ConfigError
from dynaflip_ros.configs.validate import (
    is_finite_number,
    require_choice,
    require_finite,
    require_int,
    require_non_empty,
    require_positive,
    require_range,
)


def test_is_finite_number():
    assert is_finite_number(1) and is_finite_number(0.5) and is_finite_number(np.float64(2.0))
    assert not any(is_finite_number(v) for v in (True, math.nan, math.inf, "1", None, np.int64(1)))


def test_require_range_messages_and_bounds():
    assert require_range("URRtdeConfig", "servo_gain", 300.0, 100.0, 2000.0) == 300.0
    with pytest.raises(ConfigError, match=r"^URRtdeConfig\.servo_gain must be a number in \[100\.0, 2000\.0\], got 50$"):
        require_range("URRtdeConfig", "servo_gain", 50, 100.0, 2000.0)
    with pytest.raises(ConfigError, match=r"^speed_scale must be in \(0, 1\], got 0\.0$"):
        require_range("", "speed_scale", 0.0, 0, 1, lo_open=True, kind="")
    with pytest.raises(ConfigError, match=r"^tcp_offset_m must be in \[0, 0\.5\] m, got nan$"):
        require_range("", "tcp_offset_m", math.nan, 0, 0.5, kind="", unit="m")
    for bad in (True, "1", math.inf):
        with pytest.raises(ConfigError):
            require_range("A", "b", bad, 0, 2)
    require_range("A", "b", 2, 0, 2)
    with pytest.raises(ConfigError):
        require_range("A", "b", 2, 0, 2, hi_open=True)
    with pytest.raises(ValueError, match=r"^trunk_stages must be in \[1, 4\], got 5$"):
        require_range("", "trunk_stages", 5, 1, 4, kind="", strict_type=False)


def test_require_positive_int_finite_choice_non_empty():
    with pytest.raises(ConfigError, match=r"^X\.rate_hz must be a number in \(0, 120\.0\], got 0$"):
        require_positive("X", "rate_hz", 0, 120.0)
    with pytest.raises(ConfigError, match=r"^X\.n must be an int in \[1, 64\], got 65$"):
        require_int("X", "n", 65, 1, 64)
    with pytest.raises(ConfigError, match=r"^X\.n must be an int >= 0, got -1$"):
        require_int("X", "n", -1, 0)
    with pytest.raises(ConfigError, match=r"^X\.n must be an int, got True$"):
        require_int("X", "n", True)
    with pytest.raises(ConfigError, match=r"^X\.v must be finite and >= 0, got -1$"):
        require_finite("X", "v", -1, lo=0)
    with pytest.raises(ConfigError, match=r"^X\.b must be one of \('a', 'b'\), got 'c'$"):
        require_choice("X", "b", "c", ("a", "b"))
    with pytest.raises(ConfigError, match=r"^X\.d must not be empty$"):
        require_non_empty("X", "d", "")
