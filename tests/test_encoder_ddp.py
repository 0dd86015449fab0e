"""Data-parallel encoder training (encoder/train.py through Accelerate): two gloo processes on CPU
started by torchrun, as a lab would start N GPUs."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from synthetic_dataset import write_synthetic_dataset
from test_encoder_resume import _cfg, _train

WORKER = Path(__file__).with_name("ddp_encoder_worker.py")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("synth") / "ds", n_episodes=4, length=20, idle_tail=4)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(dataset, out: Path, mode: str = "fresh", crash: int = 0) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(WORKER.parent)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()),
           str(WORKER), str(dataset), str(out), mode, str(crash)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def _ranks(out: Path) -> list[dict]:
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


@pytest.fixture(scope="module")
def two_process_run(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "a"
    proc = _torchrun(dataset, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_two_gloo_processes_train_one_model_written_once(two_process_run):
    r0, r1 = _ranks(two_process_run)
    assert (r0["world_size"], r0["backend"], r0["is_main"], r1["is_main"]) == (2, "gloo", True, False)
    assert r0["weights_sha256"] == r1["weights_sha256"]  # rank 1 returns the artifact rank 0 wrote
    manifest = json.loads((two_process_run / "manifest.json").read_text())
    assert manifest["config"]["run"]["processes"] == 2
    log = [json.loads(line) for line in (two_process_run / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["event"] == "train"] == list(range(6))  # one log, not one per rank
    latest = json.loads((two_process_run / "checkpoints" / "latest.json").read_text())
    assert latest["fingerprint"]["world_size"] == 2 and len(latest["numpy_rng_ranks"]) == 2
    assert latest["numpy_rng_ranks"][0] != latest["numpy_rng_ranks"][1]  # each rank samples its own batches


def test_the_second_process_contributes_gradients(two_process_run, dataset, tmp_path):
    single = _train(dataset, tmp_path / "one", _cfg())
    assert single.manifest.weights_sha256 != _ranks(two_process_run)[0]["weights_sha256"]


def test_a_crashed_two_process_run_resumes_to_the_same_weights(two_process_run, dataset, tmp_path):
    out = tmp_path / "b"
    crashed = _torchrun(dataset, out, crash=4)
    assert crashed.returncode != 0 and json.loads((out / "checkpoints" / "latest.json").read_text())["step"] == 4
    resumed = _torchrun(dataset, out, mode="resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _ranks(out)[0]["weights_sha256"] == _ranks(two_process_run)[0]["weights_sha256"]
