"""The sim world's lock has one owner (sim/pick_into_sink.py): everything else goes through the
env's API (advance_until / advance_period / exclusive / task_state)."""
from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# The env owns the lock; its components (arm, camera) share it through the MjScene protocol.
OWNERS = {"dynaflip_ros/sim/pick_into_sink.py", "dynaflip_ros/sim/arm.py", "dynaflip_ros/sim/camera.py",
          "dynaflip_ros/sim/mj_scene.py"}
LOCK_USE = re.compile(r"\b(env|scene|_scene)\.lock\b")


def test_no_module_outside_the_owner_takes_the_world_lock():
    users = []
    for path in sorted([*ROOT.glob("dynaflip_ros/**/*.py"), *ROOT.glob("tests/*.py"), *ROOT.glob("benchmarks/*.py")]):
        rel = str(path.relative_to(ROOT))
        if rel in OWNERS or rel == "tests/test_sim_world_lock.py":
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if LOCK_USE.search(code) and "`" not in code:
                users.append(f"{rel}:{i}: {line.strip()}")
    assert not users, "take the world through PickIntoSinkEnv's API instead:\n" + "\n".join(users)


def test_owner_api_advances_and_excludes():
    from dynaflip_ros.configs.sim import SimConfig
    from dynaflip_ros.sim.pick_into_sink import PickIntoSinkEnv
    from dynaflip_ros.sim.realtime import RealtimeSimStepper

    env = PickIntoSinkEnv(SimConfig(image_hw=(32, 32)))
    try:
        t0 = env.sim_time_s
        seen = []
        periods, steps = env.advance_until(t0 + 0.1, 0.008, seen.append)
        assert periods == 13 and steps == 13 * 4 and len(seen) == 13  # 0.1 s / 8 ms, rounded up
        assert np.allclose(np.diff(seen), 0.008) and env.sim_time_s >= t0 + 0.1 - 1e-9
        assert env.advance_period(0.008) == env.sim_time_s
        info, sim_time_s, outcome = env.task_state()
        assert info is env.episode and sim_time_s == env.sim_time_s and outcome is None  # objects on the table

        with RealtimeSimStepper(env) as stepper:
            def frozen() -> float:
                """Inside exclusive() the stepper cannot advance the world."""
                a = env.sim_time_s
                entered.set()
                time.sleep(0.05)  # the stepper runs at 125 Hz: it would step several times
                return env.sim_time_s - a

            entered = threading.Event()
            assert env.exclusive(frozen) == 0.0
            ticks = stepper.stats.ticks
            deadline = time.monotonic() + 60.0  # hang guard only
            while stepper.stats.ticks == ticks and time.monotonic() < deadline:
                time.sleep(0.01)
            assert stepper.stats.ticks > ticks  # and it resumes afterwards
    finally:
        env.close()
