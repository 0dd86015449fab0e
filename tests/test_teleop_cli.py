"""`dynaflip record --teleop ...`: help, usage errors, a replayed sim session end to end with a
rosbag and provenance, and clear errors for devices / backends that are not here."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dynaflip_ros.cli import main
from dynaflip_ros.data import dataset_io

REPO = Path(__file__).resolve().parents[1]
REPLAY = REPO / "tests" / "data" / "teleop_replay.jsonl"


def test_help_shows_teleop_examples(capsys):
    with pytest.raises(SystemExit) as e:
        main(["record", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for s in ("--teleop", "--robot-ip", "--ur-type", "--camera-serial", "--rosbag", "--task",
              "dynaflip record --teleop keyboard --sim", "replay:", "freedrive", "dynaflip record --sim --episodes"):
        assert s in out, s


@pytest.mark.parametrize("argv,match", [
    (["--teleop", "keyboard", "--out", "X"], "exactly one of --sim or --robot-ip"),
    (["--teleop", "keyboard", "--sim", "--robot-ip", "10.0.0.2", "--out", "X"], "exactly one of"),
    (["--teleop", "freedrive", "--sim", "--out", "X"], "no freedrive"),
    (["--teleop", "keyboard", "--sim", "--camera", "realsense", "--out", "X"], "--camera is for the real cell"),
    (["--teleop", "keyboard", "--sim"], "--out DIR is required"),
    (["--robot-ip", "10.0.0.2", "--out", "X"], "--teleop DEVICE"),
    (["--teleop", "keyboard", "--sim", "--out", "X", "--safety-config", "/nonexistent/safety.yaml"], "--safety-config"),
    (["--teleop", "keyboard", "--sim", "--out", "X", "--command-rate-hz", "33"], "multiple of 10"),
])
def test_usage_errors(tmp_path, capsys, argv, match):
    argv = [str(tmp_path / a) if a == "X" else a for a in argv]
    assert main(["record", *argv]) == 2
    assert match in capsys.readouterr().err


def test_keyboard_without_a_terminal_is_a_clear_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "dynaflip_ros.cli", "record", "--teleop", "keyboard", "--sim",
                        "--out", str(tmp_path / "kb"), "--image-size", "32"], cwd=REPO, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "interactive terminal" in r.stderr
    assert not dataset_io.is_dataset_dir(tmp_path / "kb") or dataset_io.read_episode_records(tmp_path / "kb") == []


def test_real_cell_without_camera_or_arm_is_a_clear_error(tmp_path):
    # nothing listens on this loopback address and no RealSense is connected here
    r = subprocess.run([sys.executable, "-m", "dynaflip_ros.cli", "record", "--teleop", "gamepad", "--robot-ip",
                        "127.0.0.250", "--out", str(tmp_path / "real")], cwd=REPO, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    assert "RealSense" in r.stderr or "ur_rtde" in r.stderr or "127.0.0.250" in r.stderr


def test_replay_session_end_to_end_with_rosbag_and_provenance(tmp_path):
    out = tmp_path / "demos"
    bag = tmp_path / "bag"
    r = subprocess.run([sys.executable, "-m", "dynaflip_ros.cli", "record", "--teleop", f"replay:{REPLAY}", "--sim",
                        "--out", str(out), "--image-size", "32x48", "--rosbag", "--rosbag-dir", str(bag),
                        "--encoder", str(REPO / "models" / "encoder"), "--operator", "ci", "--note", "replayed",
                        "--task", "Pick the red cube into the sink", "--seed", "5"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout[r.stdout.index("{\n"):])
    assert summary["saved_episodes"] == [0, 1] and summary["discarded"] == 1
    assert summary["driver"] == "sim-lockstep" and summary["rosbag"] == str(bag)
    assert "episode 0 saved" in r.stdout and "episode in progress discarded" in r.stdout
    recs = dataset_io.read_episode_records(out)
    assert [rec["seed"] for rec in recs] == [5, 7] and {rec["task"] for rec in recs} == {"Pick the red cube into the sink"}
    prov = recs[0]["extra"]["provenance"]
    assert prov["operator"] == "ci" and prov["operator_note"] == "replayed"
    assert len(prov["encoder"]["sha256"]) == 64 and prov["dynaflip_ros_version"]
    cam = recs[0]["extra"]["camera"]
    assert cam["type"] == "SimCamera" and cam["image_hw"] == [32, 48] and "fovy_deg" in cam
    ds = dataset_io.open_dataset(out)
    assert ds.num_episodes == 2 and tuple(ds[0]["observation.image"].shape) == (3, 32, 48)
    from dynaflip_ros.teleop.rosbag_log import TOPIC_IMAGE, read_bag

    assert len(read_bag(bag)[TOPIC_IMAGE]) == summary["frames_saved"] + 4  # + the discarded take (1.8..2.1 s)
    # the same dataset accepts more teleop episodes with --resume, and refuses without it
    r2 = subprocess.run([sys.executable, "-m", "dynaflip_ros.cli", "record", "--teleop", f"replay:{REPLAY}", "--sim",
                         "--out", str(out), "--image-size", "32x48"], cwd=REPO, capture_output=True, text=True,
                        timeout=120)
    assert r2.returncode == 2 and "--resume" in r2.stderr


@pytest.mark.timeout(180)
def test_keyboard_session_in_a_pty_real_time_sim(tmp_path):
    """A human-style session: `dynaflip record --teleop keyboard --sim` on a pseudo-terminal, keys
    typed while the MuJoCo cell runs in real time; the terminal is restored when it exits."""
    import pty
    import select
    import termios
    import time

    master, slave = pty.openpty()
    before = termios.tcgetattr(slave)
    out = tmp_path / "kb"
    proc = subprocess.Popen([sys.executable, "-m", "dynaflip_ros.cli", "record", "--teleop", "keyboard", "--sim",
                             "--out", str(out), "--image-size", "32", "--episodes", "1"],
                            cwd=REPO, stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        raw = b""
        t_end = time.monotonic() + 90
        while b"Q / Ctrl-D quit" not in raw and time.monotonic() < t_end and proc.poll() is None:
            r, _, _ = select.select([proc.stdout], [], [], 0.5)  # key map printed: device about to open
            if r:
                raw += os.read(proc.stdout.fileno(), 65536)
        assert b"Q / Ctrl-D quit" in raw, raw
        time.sleep(1.0)  # env + renderer up, terminal in cbreak mode
        os.write(master, b"b")
        for _ in range(8):  # hold "r" (up) with auto-repeat-like presses for ~0.8 s
            os.write(master, b"r")
            time.sleep(0.1)
        os.write(master, b"c")
        time.sleep(0.3)
        os.write(master, b"n")  # save -> --episodes 1 reached -> exit
        rest, err = proc.communicate(timeout=60)
        stdout, stderr = (raw + rest).decode(), err.decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        after = termios.tcgetattr(slave)
        os.close(master)
        os.close(slave)
    assert proc.returncode == 0, stderr[-3000:]
    assert after == before  # the child restored the terminal
    summary = json.loads(stdout[stdout.index("{\n"):])
    assert summary["saved_episodes"] == [0] and summary["driver"] == "sim-realtime"
    assert 8 <= summary["frames_saved"] <= 20
    ds = dataset_io.open_dataset(out)

    from dynaflip_ros.configs.safety import SafetyConfig
    from dynaflip_ros.robot.kinematics import forward_kinematics

    cfg = SafetyConfig()
    z = [forward_kinematics(ds[i]["observation.state"].numpy()[:6].astype(float), cfg.dh, cfg.tool_transform)[2, 3]
         for i in range(len(ds))]
    assert z[-1] - z[0] > 0.02  # moved up ~0.05 m/s for ~0.8 s
    assert ds[len(ds) - 1]["action"].numpy()[6] == 1.0  # "c" closed the gripper


def test_real_cell_hardware_comes_from_the_cell_params_file(tmp_path):
    """Teleop demos on the real cell use the deployment's camera settings (experiment
    conditions) and servoj settings from the cell's params file; flags override the address."""
    import yaml

    from dynaflip_ros.teleop.record import real_cell_hardware

    root = Path(__file__).resolve().parents[1]
    doc = yaml.safe_load((root / "config" / "real_cell.yaml").read_text())
    doc["camera"]["ros__parameters"]["realsense"]["exposure_us"] = 20000.0
    doc["ur3_driver"]["ros__parameters"]["ur_rtde"]["servo_lookahead_s"] = 0.05
    cell = tmp_path / "cell.yaml"
    cell.write_text(yaml.safe_dump(doc))
    arm, cam = real_cell_hardware(str(cell), "10.0.0.7", "e-series", "012345678901")
    assert arm.robot_ip == "10.0.0.7" and arm.ur_type == "e-series" and arm.servo_lookahead_s == 0.05
    assert cam.exposure_us == 20000.0 and cam.serial == "012345678901" and cam.enable_depth is False
    pkg = yaml.safe_load((root / "config" / "real_cell.yaml").read_text())
    arm, cam = real_cell_hardware("", "10.0.0.7", "", "")  # default: the package's config/real_cell.yaml
    assert cam.exposure_us == pkg["camera"]["ros__parameters"]["realsense"]["exposure_us"]
    doc["camera"]["ros__parameters"]["realsense"]["exposure_us"] = 123.0  # not a multiple of 100 us
    cell.write_text(yaml.safe_dump(doc))
    with pytest.raises(ValueError, match="exposure"):
        real_cell_hardware(str(cell), "10.0.0.7", "", "")
