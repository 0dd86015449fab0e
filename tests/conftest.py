"""Test-wide environment and shared fixtures.

Environment: offline hubs, CPU rendering, ROS discovery confined to localhost. Fixtures:
`wait_until` (tests/waiting.py: poll a condition, the timeout only a hang guard). Markers
(registered in setup.cfg): `timing` marks real-time performance checks (rates, latencies, jitter
on the wall clock) and is skipped by default (`addopts = -m "not timing"`); run them with
`./scripts/test.sh -m timing` on an idle machine.

Shared helpers that tests construct with arguments stay plain modules that test files import
by name (no test module imports another test module): arm_doubles.py (Arm double, fake clock),
recorder_frames.py (EpisodeRecorder frames), synthetic_dataset.py (encoder dataset),
encoder_artifact.py (a small encoder), launch_static.py (launch files by AST), waiting.py.
"""
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("OMP_NUM_THREADS", "2")

# lerobot/datasets copy every opened dataset into an Arrow cache: keep it per test session, not in ~.
if "HF_DATASETS_CACHE" not in os.environ:
    import tempfile

    os.environ["HF_DATASETS_CACHE"] = tempfile.mkdtemp(prefix="dynaflip_hf_datasets_")


def pytest_configure(config):
    """Create (and destroy) one ROS 2 node before any test can create a pyrealsense2 context.

    librealsense 2.59 carries its own copies of ROS 2 libraries (for its rosbag2 .db3 files);
    when an `rs.context()` exists before the first Fast DDS participant of the process, the
    process frees a corrupted pointer in its C exit handlers (SIGSEGV after every test passed;
    reproduced with `rs.context()` then `rclpy.create_node()`; the reverse order exits cleanly).
    The ROS nodes that own a RealSense (camera_node, teleop_recorder_node) create their node
    first, so only a process mixing both in that order (this test session) needs this.
    """
    try:
        import rclpy
    except ImportError:  # no ROS here: nothing to order
        return
    rclpy.init()
    try:
        rclpy.create_node("dynaflip_test_session").destroy_node()
    finally:
        rclpy.shutdown()


# Hypothesis profiles (tests/test_robot_safety_properties.py): "ci" is the default, with a fixed
# seed and a bounded number of examples; "safety-long" is the long run
# (`./scripts/test.sh tests/test_robot_safety_properties.py --hypothesis-profile=safety-long`).
try:
    from hypothesis import HealthCheck, settings

    settings.register_profile("ci", max_examples=300, stateful_step_count=60, derandomize=True, deadline=None,
                              database=None, print_blob=True,
                              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    settings.register_profile("safety-long", max_examples=5000, stateful_step_count=100, derandomize=False,
                              deadline=None, database=None, print_blob=True,
                              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
except ImportError:  # hypothesis is a test dependency (requirements/base.txt)
    pass


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Print how many commands the safety property suite generated (the closing figure of issue 8)."""
    import sys

    mod = sys.modules.get("test_robot_safety_properties")
    counts = getattr(mod, "COUNTS", None)
    if counts and counts.get("commands"):
        terminalreporter.write_line(
            "safety properties: {commands} generated servo commands ({reached_arm} reached the arm, {refused} "
            "refused: {by_reason}), {gripper_commands} gripper commands, {steps} machine steps; every property "
            "held".format(**counts) if exitstatus == 0 else
            "safety properties: {commands} generated servo commands before the failure".format(**counts))


@pytest.fixture
def wait_until():
    """tests/waiting.wait_until(predicate, timeout_s=HANG_GUARD_S, poll_s=0.01): poll until truthy."""
    from waiting import wait_until as _wait_until

    return _wait_until
