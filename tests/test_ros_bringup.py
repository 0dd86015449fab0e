"""Process orchestration of `dynaflip launch` (dynaflip_ros/ros/bringup.py) with stand-in processes.

The stand-ins are tiny Python modules (no ROS) that print, exit with a given code, or ignore
SIGINT, so the start / log-prefix / teardown-escalation / failure logic is tested in seconds.
"""
import io
import os
import sys
import textwrap

import pytest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
import yaml

from dynaflip_ros.ros import bringup
from dynaflip_ros.ros.launch_cli import build_overrides, register

STANDINS = {
    # prints its argv, then waits for SIGINT and exits 0
    "standin_server": """
        import signal, sys, time
        print("server up", " ".join(sys.argv[1:]), flush=True)
        signal.signal(signal.SIGINT, lambda *a: (print("server got SIGINT", flush=True), sys.exit(0)))
        while True:
            time.sleep(0.05)
    """,
    # ignores SIGINT: must be escalated to SIGTERM
    "standin_stubborn": """
        import signal, time
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print("stubborn up", flush=True)
        while True:
            time.sleep(0.05)
    """,
    # the main process: works briefly, prints a summary, exits with STANDIN_RC
    "standin_main": """
        import os, time
        time.sleep(0.5)
        print("summary: success 1/1", flush=True)
        raise SystemExit(int(os.environ.get("STANDIN_RC", "0")))
    """,
    # dies right away with code 3
    "standin_crash": """
        print("crashing", flush=True)
        raise SystemExit(3)
    """,
}


@pytest.fixture()
def standin_env(tmp_path):
    for name, src in STANDINS.items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(src))
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tmp_path) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def spec(name):
    return bringup.ProcessSpec(name, name, name, (name,))


def test_main_exit_code_prefixes_and_clean_teardown(standin_env, tmp_path):
    out = io.StringIO()
    params = tmp_path / "p.yaml"
    params.write_text("{}\n")
    res = bringup.run_graph([spec("standin_server"), spec("standin_main")], [params], main="standin_main",
                            env=standin_env, out=out, grace_s=3.0)
    log = out.getvalue()
    assert res.exit_code == 0 and res.failed == ""
    assert "[standin_main  ] summary: success 1/1" in log
    # the params file reached the node as ROS arguments
    assert f"[standin_server] server up --ros-args --params-file {params}" in log
    assert "server got SIGINT" in log  # SIGINT first, no escalation needed
    assert res.escalations == {} and res.exit_codes["standin_server"] == 0  # so no wait for the 3 s grace


def test_main_failure_code_is_returned(standin_env, tmp_path):
    standin_env["STANDIN_RC"] = "2"
    res = bringup.run_graph([spec("standin_main")], [], main="standin_main", env=standin_env, out=io.StringIO())
    assert res.exit_code == 2


def test_dead_node_stops_the_graph_with_failure(standin_env):
    out = io.StringIO()
    res = bringup.run_graph([spec("standin_crash"), spec("standin_server"), spec("standin_main")], [],
                            main="standin_main", env=standin_env, out=out, grace_s=2.0)
    assert res.exit_code == 1 and res.failed == "standin_crash"
    assert res.exit_codes["standin_crash"] == 3
    assert "process standin_crash exited with code 3" in out.getvalue()
    assert res.exit_codes["standin_server"] is not None  # torn down


def test_sigint_ignoring_process_is_escalated(standin_env):
    out = io.StringIO()
    res = bringup.run_graph([spec("standin_stubborn"), spec("standin_main")], [], main="standin_main",
                            env=standin_env, out=out, grace_s=0.5)
    assert res.exit_code == 0
    assert res.escalations == {"standin_stubborn": "SIGTERM"}
    assert res.exit_codes["standin_stubborn"] == -15  # SIGTERM ended it: no SIGKILL needed


def test_timeout(standin_env):
    res = bringup.run_graph([spec("standin_server")], [], main="standin_server", env=standin_env,
                            out=io.StringIO(), timeout_s=0.5, grace_s=2.0)
    assert res.exit_code == 124


def test_unknown_main_is_rejected():
    with pytest.raises(ValueError, match="not among"):
        bringup.run_graph([spec("a")], [], main="b")


def test_node_command_and_overrides_file(tmp_path):
    cmd = bringup.node_command(bringup.ENCODER, ["a.yaml", tmp_path / "b.yaml"], python="py")
    assert cmd == ["py", "-m", "dynaflip_ros.ros.child_process", "dynaflip_ros.ros.nodes.encoder", "--ros-args",
                   "--params-file", "a.yaml",
                   "--params-file", str(tmp_path / "b.yaml")]
    f = bringup.write_overrides({"encoder": {"backend": "onnxruntime"}, "policy": {}}, tmp_path / "o.yaml")
    assert yaml.safe_load(f.read_text()) == {"encoder": {"ros__parameters": {"backend": "onnxruntime"}}}


def test_launch_cli_overrides_per_node():
    import argparse

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["launch", "pick_into_sink", "--sim", "--episodes", "3", "--seed", "7",
                              "--encoder", "/m/enc", "--backend", "onnxruntime",
                              "--episode-timeout-s", "12.5"])
    ov = build_overrides(args, "/tmp/r.json")
    assert ov == {"encoder": {"model_dir": "/m/enc", "backend": "onnxruntime"},
                  "episode_manager": {"results_path": "/tmp/r.json", "episodes": 3, "seed": 7,
                                      "episode_timeout_s": 12.5}}
    from dynaflip_ros.ros.launch_args import LaunchArgumentError, read_params_file

    real_doc = read_params_file(ROOT / "config" / "real_cell.yaml")
    args = parser.parse_args(["launch", "pick_into_sink", "--real"])
    with pytest.raises(LaunchArgumentError, match="no UR controller address"):
        build_overrides(args, "/tmp/r.json", real_doc)
    args = parser.parse_args(["launch", "pick_into_sink", "--real", "--robot-ip", "192.168.1.102", "--ur-type",
                              "e-series", "--camera-serial", "012345678901"])
    ov = build_overrides(args, "/tmp/r.json", real_doc)
    assert args.use_sim is False and "episode_manager" not in ov
    assert ov["ur3_driver"]["backend"] == "ur_rtde" and ov["camera"]["backend"] == "realsense"
    assert ov["ur3_driver"]["ur_rtde.robot_ip"] == "192.168.1.102" and ov["ur3_driver"]["servo_rate_hz"] == 500.0
    assert ov["camera"]["realsense.serial"] == "012345678901"


def test_launch_cli_fails_clearly_without_models(tmp_path, capsys):
    from dynaflip_ros.cli import main

    rc = main(["launch", "pick_into_sink", "--sim", "--encoder", str(tmp_path / "nope"),
               "--policy", str(tmp_path)])
    assert rc == 2
    assert "encoder model not found" in capsys.readouterr().err


def test_launch_cli_module_imports_only_argparse():
    import subprocess

    code = ("import sys; import dynaflip_ros.ros.launch_cli; "
            "bad = [m for m in ('rclpy', 'yaml', 'numpy', 'torch', 'mujoco') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_dead_node_is_reported_with_its_reason(standin_env, tmp_path):
    (tmp_path / "standin_refuses.py").write_text(textwrap.dedent("""
        print("loading the policy", flush=True)
        print("[ERROR] policy refuses to run: EncoderMismatchError: trained on another encoder", flush=True)
        print("shutting down", flush=True)
        raise SystemExit(2)
    """))
    standin_env["PYTHONPATH"] = str(tmp_path) + os.pathsep + standin_env["PYTHONPATH"]
    out = io.StringIO()
    res = bringup.run_graph([spec("standin_refuses"), spec("standin_server"), spec("standin_main")], [],
                            main="standin_main", env=standin_env, out=out, grace_s=2.0)
    assert res.failed == "standin_refuses" and res.exit_code == 1
    assert res.failure_reason.startswith("exit code 2: [ERROR] policy refuses to run: EncoderMismatchError")
    report = next(ln for ln in out.getvalue().splitlines() if "exited with code 2" in ln)
    assert "EncoderMismatchError" in report and report.endswith("stopping the graph")


def test_death_reason_names_the_signal_and_the_last_error():
    assert bringup.death_reason(-9, ["a", "b"]) == "killed by SIGKILL: b"
    assert bringup.death_reason(1, ["Traceback (most recent call last):", "  x", "ValueError: bad", "bye"]) \
        == "exit code 1: ValueError: bad"
    assert bringup.death_reason(0, []) == "exit code 0"


def test_without_a_main_process_an_interrupt_is_the_normal_end(standin_env):
    import signal
    import threading

    out = io.StringIO()
    # Python's Ctrl-C handler, explicitly: a test run started in the background by a non-interactive
    # shell (`nohup ... &`) inherits SIGINT ignored, and the interrupt below would never arrive.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    try:
        res = bringup.run_graph([spec("standin_server")], [], main=None, env=standin_env, out=out, grace_s=2.0)
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    assert res.exit_code == 0 and "interrupted" in out.getvalue() and res.exit_codes["standin_server"] == 0


def test_the_arm_process_is_interrupted_first(standin_env):
    out = io.StringIO()
    arm = bringup.ProcessSpec("standin_server", "standin_server", "standin_server", ("ur3_driver",))
    other = bringup.ProcessSpec("standin_other", "standin_server", "standin_server", ("policy",))
    res = bringup.run_graph([other, arm, spec("standin_main")], [], main="standin_main", env=standin_env, out=out,
                            grace_s=2.0)
    lines = [ln for ln in out.getvalue().splitlines() if "got SIGINT" in ln]
    assert res.exit_code == 0 and lines[0].startswith("[standin_server")


def test_combined_inference_moves_the_encoder_into_the_policy_process():
    import argparse

    from dynaflip_ros.ros.launch_args import read_params_file

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    doc = read_params_file(ROOT / "config" / "pick_into_sink.yaml")
    args = parser.parse_args(["launch", "pick_into_sink", "--sim", "--combined-inference", "--encoder", "/m/enc"])
    ov = build_overrides(args, "/tmp/r.json", doc)
    assert "encoder" not in ov
    assert ov["policy"]["encoder_in_process"] is True and ov["policy"]["encoder.model_dir"] == "/m/enc"
    assert ov["policy"]["encoder.backend"] == "auto" and ov["policy"]["encoder.num_threads"] == 1  # the file's section
    names = [s.executable for s in bringup.pick_into_sink_processes(True, combined_inference=True)]
    assert "encoder_node" not in names and "policy_node" in names and "sim_cell_node" in names
    assert "encoder_node" in [s.executable for s in bringup.pick_into_sink_processes(True)]
    from dynaflip_ros.configs.params_file import nest_parameters
    from dynaflip_ros.configs.io import from_dict
    from dynaflip_ros.configs.ros import PolicyNodeConfig

    cfg = from_dict(PolicyNodeConfig, nest_parameters(PolicyNodeConfig, ov["policy"], "policy"))
    assert cfg.encoder_in_process and cfg.encoder.model_dir == "/m/enc"  # what the node will read


LAUNCHER = """
import sys
from dynaflip_ros.ros import bringup
spec = bringup.ProcessSpec("standin_server", "standin_server", "standin_server", ("standin_server",))
bringup.run_graph([spec], [], main=None, on_started=lambda pids: print("started", pids["standin_server"], flush=True))
"""


def _gone(pid: int) -> bool:
    """The process has exited (a zombie nobody reaps counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_a_node_process_dies_with_a_killed_launcher(standin_env):
    import signal
    import subprocess
    import threading
    import time

    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER], env=standin_env, stdout=subprocess.PIPE, text=True)
    node_pid = None
    guard = threading.Timer(120.0, launcher.kill)  # a launcher that never starts the node ends the read below
    guard.start()
    try:
        for line in launcher.stdout:
            if line.startswith("started"):
                node_pid = int(line.split()[1])
            if "server up" in line:  # the node runs its module: the guard is armed
                break
        assert node_pid is not None and not _gone(node_pid)
        launcher.kill()  # SIGKILL: no teardown runs in the launcher
        launcher.wait()
        deadline = time.monotonic() + 10.0  # the kernel signals at once; this bounds a failure
        while not _gone(node_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(node_pid), "the node process outlived its SIGKILLed launcher"
    finally:
        guard.cancel()
        launcher.kill()
        if node_pid is not None and not _gone(node_pid):
            os.kill(node_pid, signal.SIGKILL)


def test_a_node_process_whose_launcher_is_gone_does_not_start(standin_env):
    import subprocess

    from dynaflip_ros.ros import child_process

    env = dict(standin_env, **{child_process.LAUNCHER_PID_ENV: str(os.getpid() + 10**6)})  # not our parent
    r = subprocess.run([sys.executable, "-m", "dynaflip_ros.ros.child_process", "standin_main"], env=env,
                       capture_output=True, text=True, timeout=60)
    if sys.platform.startswith("linux"):
        assert r.returncode == 1 and "exited before this process started" in r.stderr
        assert "summary" not in r.stdout  # the module never ran
    env.pop(child_process.LAUNCHER_PID_ENV)
    env["STANDIN_RC"] = "4"
    r = subprocess.run([sys.executable, "-m", "dynaflip_ros.ros.child_process", "standin_main", "x"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 4 and "summary: success 1/1" in r.stdout  # run as -m runs it, its exit code kept
