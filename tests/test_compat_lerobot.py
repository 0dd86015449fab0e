"""Recordings open in LeRobot's own tools from the venv as they are (the torchvision shim runs on
the first `import torchvision` of any venv process: dynaflip_ros/_compat/torchvision_hook.py)."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np

from dynaflip_ros.data.recorder import EpisodeRecorder


def test_lerobot_dataset_opens_a_recording_in_a_fresh_process(tmp_path):
    root = tmp_path / "demos"
    rng = np.random.default_rng(0)
    with EpisodeRecorder(root, (24, 32), resume=False) as rec:
        rec.begin_episode("Pick the red cube into the sink", seed=0, object_name="red cube")
        for _ in range(3):
            rec.add_frame(image=rng.integers(0, 256, (24, 32, 3), dtype=np.uint8), state=np.zeros(7),
                          action=np.zeros(7, np.float32), point_tracks=np.zeros((96, 3), np.float32),
                          point_valid=np.zeros(96, bool), phase=0)
        rec.end_episode(True, keep=True)
    # nothing of dynaflip_ros is imported by the child: only LeRobot, as a user would
    code = textwrap.dedent(f"""
        from lerobot.datasets.lerobot_dataset import LeRobotDataset
        ds = LeRobotDataset("local/demos", root={str(root)!r})
        item = ds[0]
        print(ds.num_episodes, len(ds), tuple(item["observation.image"].shape), item["task"])
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[:5] == ["1", "3", "(3,", "24,", "32)"], out.stdout
