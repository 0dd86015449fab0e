"""Camera-to-robot latency by cross-correlating a tracked board with the robot's joint readings.

In the spirit of UMI (Chi et al. 2024, "Universal Manipulation Interface", §IV latency matching:
camera latency against a clock, robot latency by cross-correlating commanded/measured motion):
the arm follows a smooth joint sine through `SafeArm` (servoJ stream, `move_to_joints` to the
centre first); the camera tracks the ChArUco board (PnP board position per frame, stamped with
`Frame.stamp_s`); the robot's readings are `ArmState.q` stamped with `ArmState.stamp_s` (the
same host monotonic clock on the real cell; simulation time in sim).

Model: a frame stamped t shows the robot as it was at t - d. For each candidate d the moving
joint's angle is interpolated at (t_k - d) and the board track is regressed on [q, q^2, 1]; d
minimises the residual (a cross-correlation generalised to several image channels and a mild
non-linearity), searched on a grid and refined to sub-frame resolution by a parabola through the
three best grid points. Uncertainty: the same estimate on K consecutive segments; reported as
mean ± standard error (std / sqrt(K)).
"""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from dynaflip_ros.cameras.base import Frame


@dataclass
class LatencyEstimate:
    """latency_s: d (camera stamp minus the robot stamp of the same physical instant, s);
    segment_latencies_s: per segment; sem_s: standard error of their mean; std_s: their spread;
    n_frames: frames used; frame_period_s: median frame spacing; r2: fit quality at d (1 = perfect)."""

    latency_s: float
    std_s: float
    sem_s: float
    segment_latencies_s: list
    n_frames: int
    frame_period_s: float
    r2: float

    def to_dict(self) -> dict:
        return {"latency_s": float(self.latency_s), "latency_std_s": float(self.std_s), "latency_sem_s": float(self.sem_s),
                "segment_latencies_s": [float(v) for v in self.segment_latencies_s], "n_frames": self.n_frames,
                "frame_period_s": float(self.frame_period_s), "fit_r2": float(self.r2),
                "convention": "a frame stamped t shows the robot state stamped t - latency_s"}


def _cost(d: float, robot_t, robot_sig, cam_t, cam_sig) -> tuple[float, float]:
    r = np.interp(cam_t - d, robot_t, robot_sig)  # (M,)
    feats = np.stack([r, r * r, np.ones_like(r)], axis=1)
    coef, *_ = np.linalg.lstsq(feats, cam_sig, rcond=None)
    res = cam_sig - feats @ coef
    ss = float(np.sum(res ** 2))
    tot = float(np.sum((cam_sig - cam_sig.mean(axis=0)) ** 2))
    return ss, 1.0 - ss / tot if tot > 0 else float("nan")


def _best_delay(robot_t, robot_sig, cam_t, cam_sig, max_delay_s, step_s) -> tuple[float, float]:
    grid = np.arange(-max_delay_s, max_delay_s + step_s / 2, step_s)
    costs = np.array([_cost(d, robot_t, robot_sig, cam_t, cam_sig)[0] for d in grid])
    i = int(np.argmin(costs))
    d = float(grid[i])
    if 0 < i < len(grid) - 1:  # parabola through the three best grid points
        c0, c1, c2 = costs[i - 1], costs[i], costs[i + 1]
        den = c0 - 2 * c1 + c2
        if den > 0:
            d += 0.5 * step_s * (c0 - c2) / den
    return d, _cost(d, robot_t, robot_sig, cam_t, cam_sig)[1]


def estimate_latency(robot_t: np.ndarray, robot_q: np.ndarray, cam_t: np.ndarray, cam_sig: np.ndarray,
                     max_delay_s: float = 0.3, step_s: float = 0.001, n_segments: int = 4) -> LatencyEstimate:
    """Estimate d from robot samples and camera tracks.

    Args:
        robot_t: (N,) robot stamps (s, increasing); robot_q: (N,) the moving joint (rad) or (N, J)
            (the joint with the largest spread is used).
        cam_t: (M,) camera stamps (s); cam_sig: (M,) or (M, C) tracked quantity (e.g. board
            position in the camera, m).
        max_delay_s: search range ±; step_s: grid step before sub-step refinement.
        n_segments: consecutive segments for the uncertainty.
    Raises ValueError on bad shapes, too few frames, or camera stamps outside the robot record.
    """
    robot_t = np.asarray(robot_t, float)
    q = np.asarray(robot_q, float)
    if q.ndim == 2:
        q = q[:, int(np.argmax(q.std(axis=0)))]
    cam_t = np.asarray(cam_t, float)
    sig = np.asarray(cam_sig, float)
    sig = sig[:, None] if sig.ndim == 1 else sig
    if robot_t.ndim != 1 or len(robot_t) != len(q) or len(robot_t) < 10:
        raise ValueError("robot_t and robot_q need the same length N >= 10")
    if np.any(np.diff(robot_t) <= 0):
        raise ValueError("robot_t must be strictly increasing")
    if len(cam_t) != len(sig) or len(cam_t) < 12:
        raise ValueError(f"need >= 12 camera samples with matching cam_sig, got {len(cam_t)}")
    keep = (cam_t - max_delay_s >= robot_t[0]) & (cam_t + max_delay_s <= robot_t[-1])
    if keep.sum() < 12:
        raise ValueError("camera stamps do not overlap the robot record by more than max_delay_s; "
                         "check that both use the same clock")
    cam_t, sig = cam_t[keep], sig[keep]
    d, r2 = _best_delay(robot_t, q, cam_t, sig, max_delay_s, step_s)
    segs = []
    n_segments = max(1, int(n_segments))
    for idx in np.array_split(np.arange(len(cam_t)), n_segments):
        if len(idx) >= 12:
            segs.append(_best_delay(robot_t, q, cam_t[idx], sig[idx], max_delay_s, step_s)[0])
    std = float(np.std(segs, ddof=1)) if len(segs) > 1 else float("nan")
    sem = std / math.sqrt(len(segs)) if len(segs) > 1 else float("nan")
    return LatencyEstimate(d, std, sem, segs, len(cam_t), float(np.median(np.diff(cam_t))), r2)


class StampOffsetCamera:
    """Camera wrapper that adds `delay_s` to every frame stamp (simulates a camera whose stamps are
    late by `delay_s`, e.g. host-arrival stamps after transport; implements `Camera`)."""

    def __init__(self, camera, delay_s: float) -> None:
        self._camera = camera
        self.delay_s = float(delay_s)

    def connect(self) -> None:
        self._camera.connect()

    def read(self) -> Frame:
        f = self._camera.read()
        return Frame(rgb=f.rgb, depth=f.depth, intrinsics=f.intrinsics, stamp_s=f.stamp_s + self.delay_s,
                     frame_id=f.frame_id, sequence=f.sequence)

    def disconnect(self) -> None:
        self._camera.disconnect()


@dataclass
class SineRecord:
    """Raw data of one latency run: robot (stamp s, measured joints rad), commands (clock time s
    when sent, commanded joints rad) and camera (stamp s, board centre in the camera optical
    frame m, or NaN when not detected)."""

    cmd_t: list = field(default_factory=list)
    cmd_q: list = field(default_factory=list)
    robot_t: list = field(default_factory=list)
    robot_q: list = field(default_factory=list)
    cam_t: list = field(default_factory=list)
    cam_xyz: list = field(default_factory=list)


def _board_center(frame: Frame, board, k, dist) -> np.ndarray:
    from dynaflip_ros.calibration.board import detect_board

    det = detect_board(frame.rgb, board, k, dist, min_corners=6)
    if det is None or det.T_cam_board is None:
        return np.full(3, np.nan)
    w, h = board.size_m
    return det.T_cam_board[:3, :3] @ np.array([w / 2, h / 2, 0.0]) + det.T_cam_board[:3, 3]


def record_sine(safe_arm, camera, board, q_center: np.ndarray, joint: int = 0, amplitude_rad: float = 0.1,
                frequency_hz: float = 0.5, duration_s: float = 6.0, rate_hz: float = 125.0,
                clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], object] = time.sleep,
                lockstep_frame_period_s: float | None = None, progress: Callable[[str], None] = print) -> SineRecord:
    """Stream q(t) = q_center + A·w(t)·sin(2π f t) on one joint through SafeArm and record.

    w(t) ramps the amplitude in and out with a min-jerk envelope over one period, so the motion
    starts and ends at rest. Camera capture: `lockstep_frame_period_s` given (simulation) -> a
    frame is read in the servo loop whenever that much time has passed; None (real devices) ->
    a background thread reads frames as they come. Board detection happens in the capture path.
    Raises ValueError on bad arguments (speed A·2πf above SafeArm's limit), ArmError from the arm.
    """
    from dynaflip_ros.robot.arm import ArmError
    from dynaflip_ros.robot.motion import min_jerk, move_to_joints

    q_center = np.asarray(q_center, float)
    if not 0 <= joint < 6:
        raise ValueError(f"joint must be 0..5, got {joint}")
    vmax = amplitude_rad * 2 * math.pi * frequency_hz
    limit = float(safe_arm.config.joint_speed_limit_rad_s[joint])
    if not (0 < vmax < 0.9 * limit):
        raise ValueError(f"sine peak speed {vmax:.3f} rad/s must be in (0, {0.9 * limit:.3f}) rad/s")
    if duration_s < 3.0 / frequency_hz:
        raise ValueError("duration_s must cover at least 3 periods")
    for u in np.linspace(-1, 1, 41):
        q = q_center.copy()
        q[joint] += u * amplitude_rad
        if not safe_arm.within_joint_limits(q) or not safe_arm.in_workspace(q):
            raise ValueError(f"the sine leaves the joint limits / workspace at offset {u * amplitude_rad:+.3f} rad")
    move_to_joints(safe_arm, q_center, clock=clock, sleep=sleep, stop_at_end=False)
    camera_k = None
    rec = SineRecord()
    period = 1.0 / rate_hz
    ramp = 1.0 / frequency_hz
    stop_evt = threading.Event()
    thread = None
    lock = threading.Lock()

    def handle(frame: Frame):
        nonlocal camera_k
        if camera_k is None:
            camera_k = (frame.intrinsics.matrix(), np.asarray(frame.intrinsics.distortion, float))
        c = _board_center(frame, board, *camera_k)
        with lock:
            rec.cam_t.append(float(frame.stamp_s))
            rec.cam_xyz.append(c)

    if lockstep_frame_period_s is None:
        def grab():
            while not stop_evt.is_set():
                handle(camera.read())
        thread = threading.Thread(target=grab, name="latency_camera", daemon=True)
        thread.start()
    t0 = clock()
    next_frame = t0
    n = 0
    last_log = t0
    try:
        while True:
            t = clock() - t0
            if t > duration_s:
                break
            env_w = min_jerk(min(t, duration_s - t) / ramp)
            q = q_center.copy()
            q[joint] += amplitude_rad * env_w * math.sin(2 * math.pi * frequency_hz * t)
            t_cmd = clock()
            sent = safe_arm.servo_joint(q, period)
            rec.cmd_t.append(float(t_cmd))
            rec.cmd_q.append(np.asarray(sent, float).copy())
            if safe_arm.check_protective_stop():
                raise ArmError("protective stop during the latency sine")
            st = safe_arm.state()
            rec.robot_t.append(float(st.stamp_s))
            rec.robot_q.append(np.asarray(st.q, float).copy())
            if lockstep_frame_period_s is not None and clock() >= next_frame:
                handle(camera.read())
                next_frame += lockstep_frame_period_s
            n += 1
            wait = t0 + n * period - clock()
            if wait > 0:
                sleep(wait)
            if clock() - last_log >= 1.0:
                last_log = clock()
                progress(f"latency sine: {t:.1f}/{duration_s:.1f} s, {len(rec.cam_t)} frames")
    finally:
        stop_evt.set()
        if thread is not None:
            thread.join(timeout=2.0)
        safe_arm.stop()
    return rec


def estimate_from_record(rec: SineRecord, joint: int, **kw) -> LatencyEstimate:
    """`estimate_latency` on a SineRecord (frames without a detection are dropped; robot samples
    with repeated stamps are de-duplicated)."""
    rt = np.asarray(rec.robot_t, float)
    rq = np.asarray(rec.robot_q, float)[:, joint]
    _, first = np.unique(rt, return_index=True)
    rt, rq = rt[first], rq[first]
    ct = np.asarray(rec.cam_t, float)
    cx = np.asarray(rec.cam_xyz, float).reshape(-1, 3)
    ok = np.all(np.isfinite(cx), axis=1)
    if ok.sum() < 12:
        raise ValueError(f"board tracked in only {int(ok.sum())} of {len(ct)} frames")
    return estimate_latency(rt, rq, ct[ok], cx[ok], **kw)


def estimate_robot_lag(rec: SineRecord, joint: int, **kw) -> LatencyEstimate:
    """Lag of the measured joint behind the commanded one (servo tracking + state reporting):
    `estimate_latency` with the commands as the reference and the measured joint as the tracked
    signal (UMI's robot-side latency). The camera-to-command latency is the sum of this and
    `estimate_from_record`'s latency."""
    ct = np.asarray(rec.cmd_t, float)
    cq = np.asarray(rec.cmd_q, float)[:, joint]
    _, first = np.unique(ct, return_index=True)
    rt = np.asarray(rec.robot_t, float)
    rq = np.asarray(rec.robot_q, float)[:, joint]
    _, rfirst = np.unique(rt, return_index=True)
    return estimate_latency(ct[first], cq[first], rt[rfirst], rq[rfirst], **kw)
