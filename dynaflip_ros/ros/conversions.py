"""ROS 2 message <-> numpy / core-type conversions (the only place that knows both sides).

Standard message types only (no custom interfaces can be built here; docs/architecture.md "Messages"):

| core value                                   | ROS message                                     |
|----------------------------------------------|-------------------------------------------------|
| float seconds                                | builtin_interfaces/Time, Duration               |
| rgb uint8 (H, W, 3)                          | sensor_msgs/Image "rgb8" (also reads "bgr8")    |
| embedding float32 (D,)                       | sensor_msgs/Image "32FC1", height 1, width D    |
| cameras.base.CameraIntrinsics                | sensor_msgs/CameraInfo (plumb_bob)              |
| depth float32 (H, W) m, 0 = no data          | sensor_msgs/Image "32FC1" m, NaN = no data (REP 118); also reads "16UC1" mm |
| robot.arm.ArmState / state vector (7,)       | sensor_msgs/JointState (UR joints + gripper)    |
| policies.base.ActionChunk                    | trajectory_msgs/JointTrajectory                 |

Sources: sensor_msgs/Image and CameraInfo message definitions (REP 104 for the camera model),
trajectory_msgs/JointTrajectory (points' time_from_start relative to header.stamp).
Every function raises ValueError on malformed input (wrong encoding, size, missing joints).
"""
from __future__ import annotations

import math
import sys
from typing import Sequence

import numpy as np
from builtin_interfaces.msg import Duration, Time
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Header
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from dynaflip_ros.cameras.base import CameraIntrinsics
from dynaflip_ros.policies.base import ActionChunk
from dynaflip_ros.robot.arm import UR_JOINT_NAMES, ArmState

# Name of the gripper "joint" in JointState / JointTrajectory: value 0 = open .. 1 = closed.
GRIPPER_JOINT_NAME = "gripper"
# Order of the (7,) state and action vectors (data/schema.py): 6 UR joints (rad) + gripper.
ACTION_JOINT_NAMES: tuple[str, ...] = tuple(UR_JOINT_NAMES) + (GRIPPER_JOINT_NAME,)

_NS_PER_S = 1_000_000_000


# ----------------------------------------------------------------------------- time
def s_to_stamp(t_s: float) -> Time:
    """Float seconds (>= 0) -> builtin_interfaces/Time. Raises ValueError if negative/non-finite."""
    if not math.isfinite(t_s) or t_s < 0:
        raise ValueError(f"stamp must be finite and >= 0 s, got {t_s!r}")
    ns = int(round(t_s * _NS_PER_S))
    return Time(sec=ns // _NS_PER_S, nanosec=ns % _NS_PER_S)


def stamp_to_s(stamp: Time) -> float:
    """builtin_interfaces/Time -> float seconds."""
    return stamp.sec + stamp.nanosec * 1e-9


def s_to_duration(d_s: float) -> Duration:
    """Float seconds -> builtin_interfaces/Duration (may be negative). Raises on non-finite."""
    if not math.isfinite(d_s):
        raise ValueError(f"duration must be finite, got {d_s!r}")
    ns = int(round(d_s * _NS_PER_S))
    return Duration(sec=ns // _NS_PER_S, nanosec=ns % _NS_PER_S)


def duration_to_s(d: Duration) -> float:
    """builtin_interfaces/Duration -> float seconds."""
    return d.sec + d.nanosec * 1e-9


def make_header(stamp_s: float, frame_id: str = "") -> Header:
    """std_msgs/Header with a float-second stamp."""
    return Header(stamp=s_to_stamp(stamp_s), frame_id=frame_id)


# ----------------------------------------------------------------------------- images
def rgb_to_image(rgb: np.ndarray, stamp_s: float, frame_id: str) -> Image:
    """uint8 (H, W, 3) RGB -> sensor_msgs/Image "rgb8" (row step 3W, little-endian flag 0)."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected uint8 (H, W, 3) RGB, got {rgb.dtype} {rgb.shape}")
    h, w, _ = rgb.shape
    msg = Image(header=make_header(stamp_s, frame_id), height=h, width=w, encoding="rgb8")
    msg.is_bigendian = 0
    msg.step = 3 * w
    msg.data = np.ascontiguousarray(rgb).tobytes()
    return msg


def image_to_rgb(msg: Image) -> np.ndarray:
    """sensor_msgs/Image "rgb8" or "bgr8" -> uint8 (H, W, 3) RGB (a copy; honours `step` padding).

    Raises ValueError on another encoding or a data size that does not match height * step.
    """
    if msg.encoding not in ("rgb8", "bgr8"):
        raise ValueError(f"expected an rgb8/bgr8 image, got encoding {msg.encoding!r}")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    buf = np.frombuffer(msg.data, dtype=np.uint8)  # array('B') / bytes, zero-copy
    if step < 3 * w or buf.size != h * step:
        raise ValueError(f"image data size {buf.size} != height {h} * step {step} (width {w})")
    rgb = buf.reshape(h, step)[:, : 3 * w].reshape(h, w, 3)  # (H, W, 3)
    if msg.encoding == "bgr8":
        rgb = rgb[:, :, ::-1]
    return np.ascontiguousarray(rgb)


def embedding_to_image(embedding: np.ndarray, header: Header) -> Image:
    """float32 (D,) embedding -> sensor_msgs/Image "32FC1", height 1, width D (stamped).

    The header is copied from the source image so the embedding keeps the capture stamp
    (docs/architecture.md, "Messages"). Raises ValueError on a non-1-D or non-finite embedding.
    """
    e = np.asarray(embedding, dtype=np.float32)
    if e.ndim != 1 or e.size == 0:
        raise ValueError(f"expected a (D,) embedding, got shape {e.shape}")
    if not np.all(np.isfinite(e)):
        raise ValueError("embedding contains NaN/inf")
    msg = Image(header=header, height=1, width=int(e.size), encoding="32FC1")
    msg.is_bigendian = int(sys.byteorder == "big")
    msg.step = 4 * int(e.size)
    msg.data = e.tobytes()
    return msg


def image_to_embedding(msg: Image) -> np.ndarray:
    """sensor_msgs/Image "32FC1" (height 1, width D) -> float32 (D,) (a copy).

    Raises ValueError on another encoding, height != 1, or a wrong data size.
    """
    if msg.encoding != "32FC1":
        raise ValueError(f"expected a 32FC1 embedding image, got encoding {msg.encoding!r}")
    if int(msg.height) != 1:
        raise ValueError(f"expected an embedding image of height 1, got {msg.height}")
    d = int(msg.width)
    dtype = np.dtype(">f4" if msg.is_bigendian else "<f4")
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    if buf.size != 4 * d or int(msg.step) != 4 * d:
        raise ValueError(f"embedding data {buf.size} B / step {msg.step} != 4 * width {d}")
    return buf.view(dtype).astype(np.float32)  # (D,)


def camera_info_from_intrinsics(intr: CameraIntrinsics, stamp_s: float, frame_id: str) -> CameraInfo:
    """cameras.base.CameraIntrinsics -> sensor_msgs/CameraInfo (plumb_bob, no rectification).

    K = [fx 0 cx; 0 fy cy; 0 0 1], R = I, P = [K | 0] (monocular), D = the 5 OpenCV coefficients.
    """
    d = tuple(float(v) for v in intr.distortion)
    msg = CameraInfo(header=make_header(stamp_s, frame_id), height=int(intr.height), width=int(intr.width))
    msg.distortion_model = "plumb_bob" if len(d) == 5 else "rational_polynomial"
    msg.d = list(d)
    msg.k = [float(v) for v in intr.matrix().reshape(-1)]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [intr.fx, 0.0, intr.cx, 0.0, 0.0, intr.fy, intr.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    msg.p = [float(v) for v in msg.p]
    return msg


def intrinsics_from_camera_info(msg: CameraInfo) -> CameraIntrinsics:
    """sensor_msgs/CameraInfo -> cameras.base.CameraIntrinsics (from K and D)."""
    k = np.asarray(msg.k, dtype=float).reshape(3, 3)
    if k[0, 0] <= 0 or k[1, 1] <= 0:
        raise ValueError(f"CameraInfo K has non-positive focal lengths: {k.tolist()}")
    d = tuple(float(v) for v in msg.d) or (0.0, 0.0, 0.0, 0.0, 0.0)
    return CameraIntrinsics(
        width=int(msg.width), height=int(msg.height), fx=float(k[0, 0]), fy=float(k[1, 1]),
        cx=float(k[0, 2]), cy=float(k[1, 2]), distortion=d,
    )


# Distortion models sensor_msgs/CameraInfo defines (sensor_msgs/distortion_models.hpp) with the
# number of coefficients each takes.
CAMERA_INFO_DISTORTION_MODELS: dict[str, tuple[int, ...]] = {
    "plumb_bob": (5,), "rational_polynomial": (8,), "equidistant": (4,),
}


def camera_info_with_model(intr: CameraIntrinsics, stamp_s: float, frame_id: str,
                           distortion_model: str) -> CameraInfo:
    """`camera_info_from_intrinsics` with an explicit distortion_model (e.g. a RealSense camera's
    `RealSenseCamera.distortion_model`: "plumb_bob" for the Brown-Conrady variants of D4xx).

    Raises ValueError for a model CameraInfo does not define or a coefficient count that does not
    fit it (plumb_bob 5, rational_polynomial 8, equidistant 4).
    """
    if distortion_model not in CAMERA_INFO_DISTORTION_MODELS:
        raise ValueError(f"unknown distortion model {distortion_model!r}; one of {sorted(CAMERA_INFO_DISTORTION_MODELS)}")
    n = len(intr.distortion)
    if n not in CAMERA_INFO_DISTORTION_MODELS[distortion_model]:
        raise ValueError(f"{distortion_model} takes {CAMERA_INFO_DISTORTION_MODELS[distortion_model]} coefficients, got {n}")
    msg = camera_info_from_intrinsics(intr, stamp_s, frame_id)
    msg.distortion_model = distortion_model
    return msg


def depth_to_image(depth_m: np.ndarray, stamp_s: float, frame_id: str) -> Image:
    """float32 (H, W) depth in metres (0 = no data, the core convention) -> sensor_msgs/Image
    "32FC1" in metres with NaN for no data (REP 118: float depth in m, NaN = invalid).

    Raises ValueError on a non-2-D array or negative depth.
    """
    d = np.asarray(depth_m, dtype=np.float32)
    if d.ndim != 2 or d.size == 0:
        raise ValueError(f"expected (H, W) depth, got shape {d.shape}")
    if np.any(d < 0):
        raise ValueError("depth must be >= 0 m (0 = no data)")
    d = np.where(d > 0, d, np.float32(np.nan)).astype(np.float32)  # (H, W)
    h, w = d.shape
    msg = Image(header=make_header(stamp_s, frame_id), height=h, width=w, encoding="32FC1")
    msg.is_bigendian = int(sys.byteorder == "big")
    msg.step = 4 * w
    msg.data = np.ascontiguousarray(d).tobytes()
    return msg


def image_to_depth(msg: Image) -> np.ndarray:
    """sensor_msgs/Image "32FC1" (m) or "16UC1" (mm, realsense-ros) -> float32 (H, W) metres with
    0 = no data (NaN / inf / 0 of REP 118 become 0). Honours `step` and `is_bigendian`.

    Raises ValueError on another encoding or a data size that does not match height * step.
    """
    if msg.encoding not in ("32FC1", "16UC1"):
        raise ValueError(f"expected a 32FC1 or 16UC1 depth image, got encoding {msg.encoding!r}")
    size = 4 if msg.encoding == "32FC1" else 2
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    if step < size * w or buf.size != h * step:
        raise ValueError(f"depth data size {buf.size} != height {h} * step {step} (width {w})")
    rows = buf.reshape(h, step)[:, : size * w].copy()
    end = ">" if msg.is_bigendian else "<"
    if msg.encoding == "32FC1":
        d = rows.view(np.dtype(end + "f4")).reshape(h, w).astype(np.float32)
        d[~np.isfinite(d) | (d < 0)] = 0.0
    else:
        d = rows.view(np.dtype(end + "u2")).reshape(h, w).astype(np.float32) * np.float32(1e-3)
    return d  # (H, W)


# ----------------------------------------------------------------------------- joints
def state_vector(state: ArmState) -> np.ndarray:
    """ArmState -> (7,) float32: 6 joint positions (rad) + gripper (0 open..1 closed)."""
    return np.concatenate([np.asarray(state.q, dtype=np.float32).reshape(6),
                           np.float32([state.gripper])])  # (7,)


def joint_state_from_arm_state(state: ArmState, stamp_s: float) -> JointState:
    """ArmState -> sensor_msgs/JointState over ACTION_JOINT_NAMES (gripper velocity/effort 0).

    `stamp_s` is the ROS-clock time of the reading (the ArmState's own stamp may be sim time).
    """
    q = np.asarray(state.q, dtype=float).reshape(6)
    dq = np.asarray(state.dq, dtype=float).reshape(6)
    msg = JointState(header=make_header(stamp_s, "base"))
    msg.name = list(ACTION_JOINT_NAMES)
    msg.position = [float(v) for v in q] + [float(state.gripper)]
    msg.velocity = [float(v) for v in dq] + [0.0]
    return msg


def _index_by_name(names: Sequence[str], wanted: Sequence[str], what: str) -> list[int]:
    lookup = {n: i for i, n in enumerate(names)}
    missing = [n for n in wanted if n not in lookup]
    if missing:
        raise ValueError(f"{what} lacks joints {missing}; has {list(names)}")
    return [lookup[n] for n in wanted]


def state_vector_from_joint_state(msg: JointState) -> np.ndarray:
    """sensor_msgs/JointState (any joint order) -> (7,) float32 in ACTION_JOINT_NAMES order.

    Raises ValueError when a UR joint or the gripper is missing, or lengths differ.
    """
    if len(msg.position) != len(msg.name):
        raise ValueError(f"JointState has {len(msg.name)} names but {len(msg.position)} positions")
    idx = _index_by_name(msg.name, ACTION_JOINT_NAMES, "JointState")
    pos = np.asarray(msg.position, dtype=np.float32)
    return pos[idx]  # (7,)


def arm_state_from_joint_state(msg: JointState, tcp_pose: np.ndarray | None = None) -> ArmState:
    """sensor_msgs/JointState -> ArmState (stamp_s = header stamp, ROS clock).

    tcp_pose: (7,) x, y, z, qw, qx, qy, qz in the UR base frame; None -> computed by forward
    kinematics of the UR3 CB3 flange (`robot.kinematics`). Velocities default to 0 when absent.
    """
    from dynaflip_ros.robot.kinematics import forward_kinematics, pose_from_transform

    x = state_vector_from_joint_state(msg).astype(float)
    if len(msg.velocity) == len(msg.name):
        idx = _index_by_name(msg.name, UR_JOINT_NAMES, "JointState")
        dq = np.asarray(msg.velocity, dtype=float)[idx]
    else:
        dq = np.zeros(6)
    if tcp_pose is None:
        tcp_pose = pose_from_transform(forward_kinematics(x[:6]))
    return ArmState(q=x[:6], dq=dq, tcp_pose=np.asarray(tcp_pose, dtype=float), gripper=float(x[6]),
                    stamp_s=stamp_to_s(msg.header.stamp))


# ----------------------------------------------------------------------------- action chunks
def action_chunk_to_trajectory(chunk: ActionChunk, stamp_s: float | None = None,
                               frame_id: str = "base") -> JointTrajectory:
    """ActionChunk (H, 7) -> trajectory_msgs/JointTrajectory over ACTION_JOINT_NAMES.

    header.stamp = `stamp_s` (default chunk.t0_s: the observation's image stamp);
    point i has time_from_start = chunk.t0_s + i * chunk.dt_s - stamp_s. Raises ValueError on a
    wrong shape, NaN/inf, dt_s <= 0, or a point before the header stamp.
    """
    a = np.asarray(chunk.actions, dtype=float)
    if a.ndim != 2 or a.shape[1] != len(ACTION_JOINT_NAMES) or a.shape[0] == 0:
        raise ValueError(f"expected actions (H, {len(ACTION_JOINT_NAMES)}), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("action chunk contains NaN/inf")
    if not (chunk.dt_s > 0 and math.isfinite(chunk.dt_s)):
        raise ValueError(f"action chunk dt_s must be > 0, got {chunk.dt_s!r}")
    stamp_s = chunk.t0_s if stamp_s is None else stamp_s
    offsets = chunk.times_s() - stamp_s  # (H,)
    if offsets[0] < -1e-9:
        raise ValueError(f"first action ({chunk.t0_s}) is before the header stamp ({stamp_s})")
    msg = JointTrajectory(header=make_header(stamp_s, frame_id), joint_names=list(ACTION_JOINT_NAMES))
    msg.points = [
        JointTrajectoryPoint(positions=[float(v) for v in row], time_from_start=s_to_duration(float(off)))
        for row, off in zip(a, offsets)
    ]
    return msg


def trajectory_to_times_targets(msg: JointTrajectory) -> tuple[np.ndarray, np.ndarray]:
    """JointTrajectory -> (times_s (H,) absolute = header.stamp + time_from_start, targets (H, 7)).

    Joints are reordered to ACTION_JOINT_NAMES. Raises ValueError on missing joints, an empty or
    ragged trajectory, NaN/inf, or times that do not strictly increase.
    """
    if not msg.points:
        raise ValueError("JointTrajectory has no points")
    idx = _index_by_name(msg.joint_names, ACTION_JOINT_NAMES, "JointTrajectory")
    n = len(msg.joint_names)
    rows = []
    for i, p in enumerate(msg.points):
        if len(p.positions) != n:
            raise ValueError(f"point {i} has {len(p.positions)} positions for {n} joint names")
        rows.append(np.asarray(p.positions, dtype=float)[idx])
    targets = np.stack(rows)  # (H, 7)
    if not np.all(np.isfinite(targets)):
        raise ValueError("JointTrajectory contains NaN/inf positions")
    t0 = stamp_to_s(msg.header.stamp)
    times = t0 + np.array([duration_to_s(p.time_from_start) for p in msg.points])  # (H,)
    if np.any(np.diff(times) <= 0):
        raise ValueError(f"JointTrajectory times must strictly increase, got {times - t0}")
    return times, targets


def trajectory_to_action_chunk(msg: JointTrajectory, rtol: float = 1e-3) -> ActionChunk:
    """JointTrajectory with uniformly spaced points -> ActionChunk (t0_s = first point's time).

    Raises ValueError (besides `trajectory_to_times_targets`' errors) when the spacing is not
    uniform within `rtol`, or there is a single point (dt undefined).
    """
    times, targets = trajectory_to_times_targets(msg)
    if len(times) < 2:
        raise ValueError("a single-point trajectory has no dt; need >= 2 points")
    dts = np.diff(times)
    dt = float(dts.mean())
    if np.any(np.abs(dts - dt) > rtol * dt + 1e-6):
        raise ValueError(f"trajectory points are not uniformly spaced: dt = {dts}")
    return ActionChunk(actions=targets.astype(np.float32), t0_s=float(times[0]), dt_s=dt)
