"""Crash safety: a recorder killed with SIGKILL loses at most the episode in progress.

Each case runs a recorder in a subprocess, lets it commit two episodes, then SIGKILLs it while
recording (or saving) the third: mid-episode from outside, and at chosen instants inside
`end_episode` (lerobot's data parquet written without footer, torn info.json, torn
tasks.parquet, torn side-file line, finalized but not committed). The dataset must then load
with `LeRobotDataset(repo_id, root=...)` holding exactly the two committed episodes, and a
resumed recorder must append to it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dynaflip_ros.data import dataset_io
from dynaflip_ros.data.recorder import EpisodeRecorder

sys.path.insert(0, str(Path(__file__).parent))
from recorder_frames import HW, TASKS, check_dataset, record  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NEW_TASK = "Pick the blue ball into the sink"  # new in the killed episode: tasks.parquet is rewritten

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    sys.path[:0] = [{repo!r}, {tests!r}]
    from pathlib import Path
    from dynaflip_ros.data import dataset_io
    from dynaflip_ros.data.recorder import EpisodeRecorder
    from recorder_frames import HW, TASKS, record, synthetic_frame
    root, point = sys.argv[1], sys.argv[2]

    def die():
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    def torn(path, data, mode="wb"):  # a write cut short by the kill
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, mode) as f:
            f.write(data[: len(data) // 2])
        die()

    rec = EpisodeRecorder(root, HW)
    record(rec, 0, 3, TASKS[0])
    record(rec, 1, 4, TASKS[1])

    from lerobot.datasets import lerobot_dataset as lrd
    if point == "data_written_no_footer":   # save_episode wrote the rows; writers still open
        lrd.write_info = lambda info, local_dir: die()
    elif point == "torn_info_json":
        import json
        lrd.write_info = lambda info, local_dir: torn(Path(local_dir) / "meta/info.json", json.dumps(info).encode())
    elif point == "torn_tasks_parquet":
        import io
        def write_tasks(tasks, local_dir):
            buf = io.BytesIO(); tasks.to_parquet(buf); torn(Path(local_dir) / "meta/tasks.parquet", buf.getvalue())
        lrd.write_tasks = write_tasks
    elif point == "torn_side_record":
        dataset_io.append_episode_record = lambda root, rec: torn(Path(root) / dataset_io.EPISODES_SIDE_PATH, b'{{"episode_index": 2, "task": "x"}}\\n', "ab")
    elif point == "finalized_not_committed":
        dataset_io.write_commit = lambda root, record: die()

    if point == "mid_episode":
        rec.begin_episode({new_task!r}, seed=2)
        i = 0
        while True:
            rec.add_frame(**synthetic_frame(2, i))
            i += 1
            if i == 3:
                print("READY", flush=True)
    record(rec, 2, 5, {new_task!r})
    print("NOT KILLED", flush=True)
    """
)

POINTS = [
    "mid_episode",
    "data_written_no_footer",
    "torn_info_json",
    "torn_tasks_parquet",
    "torn_side_record",
    "finalized_not_committed",
]


def _run_and_kill(root: Path, point: str) -> None:
    code = CHILD.format(repo=str(REPO), tests=str(REPO / "tests"), new_task=NEW_TASK)
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(root), point],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        if point == "mid_episode":
            line = proc.stdout.readline()
            assert line.strip() == "READY", f"child did not reach the episode: {line!r} {proc.stderr.read()}"
            os.kill(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"rc={proc.returncode}\nstdout={out}\nstderr={err[-3000:]}"


@pytest.fixture(scope="module")
def killed(tmp_path_factory) -> dict[str, Path]:
    """Run every kill scenario once, two children at a time (the machine has 2 cores)."""
    from concurrent.futures import ThreadPoolExecutor

    base = tmp_path_factory.mktemp("killed")
    cases = {point: (base / point, point) for point in POINTS}
    cases["resume_repairs"] = (base / "resume_repairs", "data_written_no_footer")
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(_run_and_kill, root, point) for root, point in cases.values()]
        for f in futures:
            f.result()
    return {name: root for name, (root, _) in cases.items()}


@pytest.mark.timeout(240)
@pytest.mark.parametrize("point", POINTS)
def test_sigkill_loses_only_the_episode_in_progress(killed, point):
    root = killed[point]
    committed = [(0, 3, TASKS[0]), (1, 4, TASKS[1])]

    if point == "mid_episode":
        # Nothing committed was being written: plain LeRobotDataset opens it as is, no repair.
        assert any((root / "images").rglob("*.png"))  # the dead episode's temporary PNGs
        check_dataset(root, committed)
    committed_files = dataset_io.committed_data_files(root)  # what direct parquet readers should use
    assert [p.relative_to(root).as_posix() for p in committed_files] == [
        "data/chunk-000/file-000.parquet",
        "data/chunk-000/file-001.parquet",
    ]
    report = dataset_io.recover(root)
    assert (report.committed_episodes, report.committed_frames) == (2, 7)
    if point in ("data_written_no_footer", "torn_info_json"):
        assert report.removed_files, report  # the unfinished episode's footer-less data parquet
    if point == "finalized_not_committed":
        assert len(report.removed_files) == 2 and report.restored_meta and report.dropped_side_records == 1
    if point in ("torn_info_json", "torn_tasks_parquet"):
        assert report.restored_meta
    check_dataset(root, committed)  # LeRobotDataset(repo_id, root=...): frames, images, tasks
    assert [r["episode_index"] for r in dataset_io.read_episode_records(root)] == [0, 1]
    assert not (root / "images").exists()

    with EpisodeRecorder(root, HW, resume=True) as rec:  # recording resumes into it
        assert rec.num_episodes == 2
        assert record(rec, 7, 3, NEW_TASK) == 2
    check_dataset(root, committed + [(7, 3, NEW_TASK)])
    assert [r["seed"] for r in dataset_io.read_episode_records(root)] == [0, 1, 7]
    assert dataset_io.recover(root).changed is False  # a clean close needs no repair


@pytest.mark.timeout(240)
def test_resume_recovers_without_explicit_repair(killed):
    """EpisodeRecorder(resume=True) runs recovery itself."""
    root = killed["resume_repairs"]
    with EpisodeRecorder(root, HW) as rec:
        assert rec.last_recovery is not None and rec.last_recovery.removed_files
        assert record(rec, 9, 2, TASKS[0]) == 2
    check_dataset(root, [(0, 3, TASKS[0]), (1, 4, TASKS[1]), (9, 2, TASKS[0])])


def _plain_lerobot_episode(ds, episode: int, length: int, task: str) -> None:
    from recorder_frames import synthetic_frame

    import numpy as np

    for i in range(length):
        f = synthetic_frame(episode, i)
        ds.add_frame({
            "observation.image": f["image"],
            "observation.state": f["state"].astype(np.float32),
            "action": f["action"],
            "observation.point_tracks": f["point_tracks"],
            "observation.point_valid": f["point_valid"].astype(np.float32),
            "observation.phase": np.array([f["phase"]], dtype=np.int64),
            "task": task,
        })
    ds.save_episode()


@pytest.mark.filterwarnings("ignore:Conversion of an array with ndim > 0:DeprecationWarning")
def test_dataset_written_by_plain_lerobot_is_adopted_or_refused(tmp_path):
    import shutil

    from dynaflip_ros.data import schema

    lerobot_dataset = dataset_io.import_lerobot()
    root = tmp_path / "plain"
    ds = lerobot_dataset.LeRobotDataset.create(
        dataset_io.DEFAULT_REPO_ID, fps=10, features=schema.features(HW), root=root, use_videos=False
    )
    _plain_lerobot_episode(ds, 0, 3, TASKS[0])
    _plain_lerobot_episode(ds, 1, 2, TASKS[1])
    killed = tmp_path / "killed"
    shutil.copytree(root, killed)  # what a SIGKILL before finalize() leaves: no parquet footer
    ds.finalize()

    with EpisodeRecorder(root, HW) as rec:  # finalized: adopted, then appended to
        assert rec.last_recovery.adopted and rec.num_episodes == 2
        assert record(rec, 4, 2, TASKS[0]) == 2
    check_dataset(root, [(0, 3, TASKS[0]), (1, 2, TASKS[1]), (4, 2, TASKS[0])])

    with pytest.raises(dataset_io.DatasetCorruptError, match="without a footer"):
        EpisodeRecorder(killed, HW)
