"""Camera-to-robot latency: cross-correlation on synthetic signals, and recovery of a known camera
stamp delay in the MuJoCo cell (board tracked in rendered frames while a joint sine is streamed
through SafeArm)."""
from __future__ import annotations

import numpy as np
import pytest

from dynaflip_ros.calibration.latency import estimate_latency


@pytest.mark.parametrize("delay_s", [0.0, 0.0385, -0.02, 0.12])
def test_synthetic_delay_is_recovered_sub_frame(delay_s):
    rng = np.random.default_rng(0)
    rt = np.arange(0, 6, 0.008)  # 125 Hz robot stamps
    rq = 0.1 * np.sin(2 * np.pi * 0.7 * rt) + 1.0
    ct = np.arange(0.5, 5.5, 1 / 30) + rng.uniform(-0.002, 0.002, 150)  # 30 fps, stamp jitter
    true_q = 0.1 * np.sin(2 * np.pi * 0.7 * (ct - delay_s)) + 1.0
    # image signal: a mildly non-linear 3-channel function of the joint + 0.1 mm noise
    sig = np.stack([0.3 * np.sin(true_q), 0.05 * true_q ** 2, 0.6 - 0.02 * true_q], axis=1)
    sig += rng.normal(size=sig.shape) * 1e-4
    est = estimate_latency(rt, rq, ct, sig)
    assert abs(est.latency_s - delay_s) < 0.003, est  # < 0.1 frame at 30 fps
    assert est.r2 > 0.99 and len(est.segment_latencies_s) == 4 and est.sem_s < 0.003
    assert est.to_dict()["convention"].startswith("a frame stamped t")


def test_bad_inputs_are_refused():
    rt = np.arange(0, 5, 0.008)
    rq = np.sin(rt)
    with pytest.raises(ValueError, match="increasing"):
        estimate_latency(rt[::-1], rq, rt[:40], rq[:40])
    with pytest.raises(ValueError, match=">= 12"):
        estimate_latency(rt, rq, rt[:5], rq[:5])
    with pytest.raises(ValueError, match="overlap"):
        estimate_latency(rt, rq, rt[:100] + 100.0, rq[:100])


def test_sim_camera_delay_is_recovered():
    pytest.importorskip("mujoco")
    from dynaflip_ros.calibration.latency import (
        StampOffsetCamera,
        estimate_from_record,
        estimate_robot_lag,
        record_sine,
    )
    from dynaflip_ros.calibration.sim_scene import CalibrationSimEnv
    from dynaflip_ros.configs.safety import SafetyConfig
    from dynaflip_ros.robot.motion import move_to_joints
    from dynaflip_ros.robot.safety import SafeArm

    injected_s = 0.047
    fps = 15.0
    env = CalibrationSimEnv("eye-to-hand")
    try:
        safe = SafeArm(env.arm, SafetyConfig(tcp_offset_m=env.config.tcp_offset_m), clock=lambda: env.sim_time_s)
        safe.connect()
        q0 = env.start_joints()
        move_to_joints(safe, q0, clock=lambda: env.sim_time_s, sleep=env.step)
        cam = StampOffsetCamera(env.calibration_camera, injected_s)
        with pytest.raises(ValueError, match="peak speed"):
            record_sine(safe, cam, env.board, q0, joint=0, amplitude_rad=1.0, frequency_hz=1.0,
                        clock=lambda: env.sim_time_s, sleep=env.step, lockstep_frame_period_s=1 / fps)
        lines = []
        rec = record_sine(safe, cam, env.board, q0, joint=0, amplitude_rad=0.08, frequency_hz=0.8, duration_s=3.75,
                          clock=lambda: env.sim_time_s, sleep=env.step, lockstep_frame_period_s=1 / fps,
                          progress=lines.append)
        assert lines and safe.stats.rejected == 0 and safe.stats.rate_limited == 0
        est = estimate_from_record(rec, joint=0)
        err_frames = (est.latency_s - injected_s) * fps
        print(f"sim latency: injected {injected_s * 1000:.1f} ms, estimated {est.latency_s * 1000:.2f} ± "
              f"{est.sem_s * 1000:.2f} ms ({err_frames:+.3f} frame), {est.n_frames} frames, r2 {est.r2:.5f}")
        assert abs(err_frames) < 0.1
        assert est.n_frames >= 40
        # Robot side: the measured joint lags the streamed command by about one servo period
        # (SimArm interpolates each servoJ target over dt = 8 ms) plus the PD tracking lag.
        lag = estimate_robot_lag(rec, joint=0)
        print(f"sim robot lag: {lag.latency_s * 1000:.2f} ms")
        assert 0.0 < lag.latency_s < 0.03 and lag.r2 > 0.999
    finally:
        env.close()
