"""Re-exports of `episodes.record` for `ros/launch_cli.py` (to be removed once it imports
`episodes.record` directly)."""
from dynaflip_ros.episodes.record import (  # noqa: F401
    LATENCY_STAGES, counter_delta, format_summary, latency_summary,
)
from dynaflip_ros.episodes.record import default_results_path as _default_results_path


def default_results_path():
    """outputs/eval/ros_<UTC time>.json."""
    return _default_results_path("ros")
