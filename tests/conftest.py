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
