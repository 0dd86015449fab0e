"""A teleop recording killed with SIGKILL mid-episode loses only that episode: the saved ones
load, and recording resumes into the same dataset (`dynaflip record --teleop ... --resume`)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from dynaflip_ros.data import dataset_io
from dynaflip_ros.teleop.devices import ReplayStep, write_replay

REPO = Path(__file__).resolve().parents[1]


def _cmd(replay: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "dynaflip_ros.cli", "record", "--teleop", f"replay:{replay}", "--sim",
            "--out", str(out), "--image-size", "32", *extra]


def test_sigkill_mid_episode_loses_only_that_episode(tmp_path):
    replay = write_replay(tmp_path / "long.jsonl", [
        ReplayStep(0.0, events=("start",)), ReplayStep(0.05, twist=(0, 0, 0.02, 0, 0, 0)),
        ReplayStep(0.3, events=("stop",)),
        ReplayStep(0.4, events=("start",)), ReplayStep(0.8, events=("stop",)),
        ReplayStep(0.9, events=("start",)), ReplayStep(1.0, twist=(0, 0, -0.01, 0, 0, 0)),
        ReplayStep(600.0, events=("stop",)),  # never reached: killed first
    ])
    out = tmp_path / "demos"
    proc = subprocess.Popen(_cmd(replay, out), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "episode 2 started" in line:
                break
        assert lines and "episode 2 started" in lines[-1], (lines, proc.stderr.read() if proc.poll() is not None else "")
        # let it record frames of the third episode (temporary PNGs on disk), then kill it
        images = out / "images"
        t_end = time.monotonic() + 30
        while time.monotonic() < t_end and len(list(images.rglob("*.png"))) < 5:
            time.sleep(0.05)
        assert len(list(images.rglob("*.png"))) >= 5
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL

    report = dataset_io.recover(out)
    assert report.committed_episodes == 2 and report.committed_frames == 3 + 3
    assert report.removed_temp_images
    ds = dataset_io.open_dataset(out)
    assert ds.num_episodes == 2 and len(ds) == 6
    assert [r["length"] for r in dataset_io.read_episode_records(out)] == [3, 3]

    short = write_replay(tmp_path / "short.jsonl", [ReplayStep(0.0, events=("start",)),
                                                    ReplayStep(0.2, events=("stop", "quit"))])
    r = subprocess.run(_cmd(short, out, "--resume"), cwd=REPO, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout[r.stdout.index("{"):])
    assert summary["saved_episodes"] == [2] and summary["dataset_episodes"] == 3
    assert dataset_io.open_dataset(out).num_episodes == 3
