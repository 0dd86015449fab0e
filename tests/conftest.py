"""Test-wide environment: offline hubs, CPU rendering, ROS discovery confined to localhost."""
import os

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
