"""The real-cell node graph end to end without hardware: `dynaflip launch pick_into_sink --real`
(camera_node on a synthetic RealSense recording, encoder_node, policy_node with the shipped
models, ur3_driver_node with URRtdeArm) against the loopback UR controller. The policy only acts
after the operator starts an episode (/ur3_driver/start_episode); its chunks must then reach the
controller as servoJ targets, through the parameters of config/real_cell.yaml. The images are
synthetic, so what the policy does is irrelevant here: the test checks the wiring."""
import itertools
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("rtde_control", reason="ur_rtde not installed")
pytest.importorskip("pyrealsense2", reason="pyrealsense2 not installed")

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from dynaflip_ros.ros.qos import (  # noqa: E402
    ACTION_CHUNK_TOPIC, COMMAND_QOS, DRIVER_STATUS_TOPIC, EMBEDDING_TOPIC, EVENT_QOS, IMAGE_QOS, INSTRUCTION_TOPIC,
    LATCHED_QOS,
)

from dynaflip_ros.sim.ur_loopback import LoopbackURController  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.1.130"
_domains = itertools.count()


def test_real_cell_graph_drives_the_loopback_arm(tmp_path):
    from dynaflip_ros.cameras.realsense_playback import write_synthetic_recording

    # 20 s of 320x180 colour at 30 fps, written at the frame rate and played back in real time:
    # the camera then behaves like a live D435 (the node samples the newest frame at 10 Hz with
    # capture stamps on the host clock), and the policy (loaded ~10 s after launch) still sees
    # about 10 s of frames once the episode starts.
    rec = tmp_path / "d435.db3"
    write_synthetic_recording(rec, n_frames=600, width=320, height=180, fps=30, enable_depth=False, pace_s=1 / 30)
    params = yaml.safe_load((ROOT / "config" / "real_cell.yaml").read_text())
    rs_params = params["camera"]["ros__parameters"]["realsense"]
    rs_params.update(playback_path=str(rec), playback_realtime=True, width=320, height=180, fps=30,
                     exposure_us=15600.0)
    params["ur3_driver"]["ros__parameters"]["ur_rtde"].update(rt_priority=0, controller_watchdog_hz=2.0)
    # Wiring, not latency: a CI machine running six processes on two cores may deliver
    # observations and chunks later than the deployment limits allow.
    params["ur3_driver"]["ros__parameters"]["max_chunk_age_s"] = 3.0
    params["policy"]["ros__parameters"]["max_observation_age_s"] = 3.0
    params["policy"]["ros__parameters"]["max_joint_state_age_s"] = 3.0
    # and the shipped policy's chunks cheaply: one torch thread, one sample per ensemble member
    params["policy"]["ros__parameters"].update(num_threads=1, samples_per_chunk=1)
    cell = tmp_path / "cell.yaml"
    cell.write_text(yaml.safe_dump(params))
    domain = str(150 + (os.getpid() * 7 + next(_domains)) % 80)
    env = dict(os.environ, ROS_DOMAIN_ID=domain, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")

    with LoopbackURController(host=HOST, ur_version=(5, 11, 1, 108318), with_gripper=True) as ctrl:
        launch = subprocess.Popen(
            [sys.executable, "-m", "dynaflip_ros.cli", "launch", "pick_into_sink", "--real", "--robot-ip", HOST,
             "--ur-type", "e-series", "--params-file", str(cell), "--timeout-s", "90",
             "--instruction", "put the red cube in the sink"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines: list[str] = []
        threading.Thread(target=lambda: lines.extend(launch.stdout), daemon=True).start()
        os.environ["ROS_DOMAIN_ID"] = domain
        rclpy.init()
        probe = Node("real_graph_probe")
        start = probe.create_client(Trigger, "/ur3_driver/start_episode")
        seen = {"chunks": 0, "embeddings": 0, "driver": None}
        probe.create_subscription(JointTrajectory, ACTION_CHUNK_TOPIC,
                                  lambda m: seen.__setitem__("chunks", seen["chunks"] + 1), COMMAND_QOS)
        ages = []

        def on_embedding(m):
            seen["embeddings"] += 1
            ages.append(probe.get_clock().now().nanoseconds * 1e-9 - (m.header.stamp.sec + m.header.stamp.nanosec * 1e-9))

        probe.create_subscription(Image, EMBEDDING_TOPIC, on_embedding, IMAGE_QOS)
        probe.create_subscription(String, DRIVER_STATUS_TOPIC, lambda m: seen.__setitem__("driver", m.data), EVENT_QOS)
        instructions: list[str] = []  # --instruction: latched by the policy node
        probe.create_subscription(String, INSTRUCTION_TOPIC, lambda m: instructions.append(m.data), LATCHED_QOS)
        ex = SingleThreadedExecutor()
        ex.add_node(probe)
        threading.Thread(target=ex.spin, daemon=True).start()
        try:
            deadline = time.monotonic() + 75.0
            while time.monotonic() < deadline and not any("policy loaded" in ln for ln in lines):
                assert launch.poll() is None, "".join(lines[-30:])
                time.sleep(0.2)
            assert any("policy loaded" in ln for ln in lines), "".join(lines[-30:])
            assert start.wait_for_service(timeout_sec=10.0)
            assert ctrl.snapshot()["n_servoj"] == 0  # nothing moves before the episode starts
            fut = start.call_async(Trigger.Request())
            t_end = time.monotonic() + 10.0
            while not fut.done() and time.monotonic() < t_end:
                time.sleep(0.05)
            assert fut.done() and fut.result().success, fut.result() if fut.done() else "no reply"
            t_end = time.monotonic() + 20.0
            while ctrl.snapshot()["n_servoj"] < 200 and time.monotonic() < t_end:
                time.sleep(0.2)
            snap = ctrl.snapshot()
            import json as _json

            drv = _json.loads(seen["driver"]) if seen["driver"] else {}
            assert snap["n_servoj"] >= 200, (seen["chunks"], seen["embeddings"], drv.get("chunks"), drv.get("halted"),
                                             ages[-3:], "".join(lines[-12:]))  # the policy's chunks reached the arm
            assert snap["errors"] == [] and snap["runtime_state"] == 2
            assert instructions == ["put the red cube in the sink"]
        finally:
            ex.shutdown(timeout_sec=1.0)
            probe.destroy_node()
            rclpy.try_shutdown()
            launch.terminate()
            try:
                launch.wait(timeout=20.0)
            except subprocess.TimeoutExpired:
                launch.kill()
                launch.wait()
