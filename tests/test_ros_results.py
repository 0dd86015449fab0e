"""Results helpers of the ROS evaluation run (dynaflip_ros/ros/results.py; ROS-free)."""
import numpy as np
import pytest

from dynaflip_ros.ros.results import LATENCY_STAGES, counter_delta, format_summary, latency_summary


def test_latency_summary_percentiles_and_order():
    samples = {"policy": list(range(1, 101)), "capture": [10.0] * 5, "zeta_custom": [1.0], "encode": []}
    s = latency_summary(samples)
    assert list(s) == ["capture", "policy", "zeta_custom"]  # pipeline order, custom stages last, empty dropped
    assert s["policy"]["n"] == 100
    assert s["policy"]["p50_ms"] == pytest.approx(np.percentile(np.arange(1, 101), 50))
    assert s["policy"]["p95_ms"] == pytest.approx(95.05)
    assert s["policy"]["max_ms"] == 100 and s["capture"]["mean_ms"] == 10.0
    assert LATENCY_STAGES[0] == "capture" and LATENCY_STAGES[-1] == "command"


def test_format_summary():
    res = {"mode": "sim", "summary": {"episodes": 4, "successes": 3, "success_rate": 0.75, "mean_duration_s": 6.25},
           "latency": latency_summary({"encode": [17.0, 19.0]}), "results_path": "/x/r.json"}
    text = format_summary(res)
    assert "success 3/4 (75.0 %)" in text and "encode" in text and "18.00" in text and "/x/r.json" in text


def test_counter_delta():
    start = {"safety": {"accepted": 10, "halted": False}, "servo": {"jitter_ms": 1.5, "ticks": 100}}
    end = {"safety": {"accepted": 25, "halted": True}, "servo": {"jitter_ms": 2.5, "ticks": 350}, "new": 3}
    assert counter_delta(start, end) == {"safety": {"accepted": 15, "halted": True},
                                         "servo": {"jitter_ms": 2.5, "ticks": 250}, "new": 3}
    assert counter_delta(None, {"a": 1}) == {"a": 1}
