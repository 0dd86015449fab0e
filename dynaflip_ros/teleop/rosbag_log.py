"""Optional raw log of a teleop session as a rosbag2 MCAP file, written with `rosbags` (no ROS).

Topics (message types of ROS 2 Kilted, `rosbags.typesys.Stores.ROS2_KILTED`):

| topic                          | type                          | when                         |
|--------------------------------|-------------------------------|------------------------------|
| /camera/color/image_raw        | sensor_msgs/msg/Image (rgb8)  | every record tick (10 Hz)    |
| /joint_states                  | sensor_msgs/msg/JointState    | every record tick: measured q (rad), dq (rad/s), + gripper closure |
| /teleop/twist                  | geometry_msgs/msg/TwistStamped | every command tick, frame "base" (m/s, rad/s) |
| /teleop/joint_target           | sensor_msgs/msg/JointState    | every command tick: q target (rad) + gripper target |
| /teleop/events                 | std_msgs/msg/String           | episode events and their outcome |
| /clock                         | rosgraph_msgs/msg/Clock       | wall-clock bags of a sim session: the sim time of every stamp |

Stamps (header stamps; the bag's record timestamps are the same values in ns, non-decreasing):
- lock-step sessions (`wall_clock=None`; replays, deterministic): the session clock, sim time;
- real-time sessions (`wall_clock=time.time`: the real-time sim and the real arm): wall-clock
  (ROS) time, read once per session-clock instant (every message of one tick has the same stamp),
  as `ros2 bag record` would stamp them; with `sim_time=True` the session's sim time of each
  instant is kept as a /clock message (the ROS field for sim time) at the same wall stamp.
Read back with `rosbags.rosbag2.Reader` + `typestore.deserialize_cdr` (tests/test_teleop_rosbag.py).
Source: rosbags 0.11 docs, "Rosbag2" writer (`Writer(path, version=9, storage_plugin=MCAP)`).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from dynaflip_ros.robot.arm import UR_JOINT_NAMES

TOPIC_IMAGE = "/camera/color/image_raw"
TOPIC_JOINT_STATES = "/joint_states"
TOPIC_TWIST = "/teleop/twist"
TOPIC_JOINT_TARGET = "/teleop/joint_target"
TOPIC_EVENTS = "/teleop/events"
TOPIC_CLOCK = "/clock"
JOINT_NAMES_WITH_GRIPPER = (*UR_JOINT_NAMES, "gripper")


class SessionBag:
    """Writes one session's MCAP bag at `path` (a directory rosbags creates; must not exist).

    Args:
        path: the bag directory.
        wall_clock: None = stamp with the session clock (the `stamp_s` the writers get); a
            callable returning wall-clock seconds since the epoch (`time.time`) = stamp real-time
            sessions in ROS time (see the module docstring).
        sim_time: with `wall_clock`, the session clock is sim time: keep it on /clock.
    Raises FileExistsError when `path` exists, ImportError when rosbags is missing.
    Not thread-safe: call from the session loop only. `close()` is idempotent and must run for
    the bag's metadata.yaml to be written (the session closes it in `finally`).
    """

    def __init__(self, path: str | Path, wall_clock: Callable[[], float] | None = None, sim_time: bool = False) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f"{self.path} exists; a rosbag2 directory must be new")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.ts = get_typestore(Stores.ROS2_KILTED)
        self._writer = Writer(self.path, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._conn = {
            TOPIC_IMAGE: self._writer.add_connection(TOPIC_IMAGE, "sensor_msgs/msg/Image", typestore=self.ts),
            TOPIC_JOINT_STATES: self._writer.add_connection(TOPIC_JOINT_STATES, "sensor_msgs/msg/JointState", typestore=self.ts),
            TOPIC_TWIST: self._writer.add_connection(TOPIC_TWIST, "geometry_msgs/msg/TwistStamped", typestore=self.ts),
            TOPIC_JOINT_TARGET: self._writer.add_connection(TOPIC_JOINT_TARGET, "sensor_msgs/msg/JointState", typestore=self.ts),
            TOPIC_EVENTS: self._writer.add_connection(TOPIC_EVENTS, "std_msgs/msg/String", typestore=self.ts),
        }
        self.wall_clock = wall_clock
        self.sim_time = bool(sim_time and wall_clock is not None)
        if self.sim_time:
            self._conn[TOPIC_CLOCK] = self._writer.add_connection(TOPIC_CLOCK, "rosgraph_msgs/msg/Clock",
                                                                  typestore=self.ts)
        self.messages = 0
        self._last_ns = 0
        self._session_s: float | None = None  # session-clock instant of the last stamp
        self._wall_s = 0.0  # its wall-clock stamp

    # ------------------------------------------------------------------ helpers
    def _time(self, stamp_s: float):
        """builtin_interfaces/Time of `stamp_s` seconds."""
        sec = int(math.floor(stamp_s))
        nsec = int(round((stamp_s - sec) * 1e9))
        if nsec >= 1_000_000_000:
            sec, nsec = sec + 1, nsec - 1_000_000_000
        return self.ts.types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec)

    def stamp(self, session_s: float) -> float:
        """The bag stamp (s) of session-clock time `session_s`: itself (lock-step), or the wall
        clock read at the first write of that instant (real time; writes a /clock message of
        the sim time when `sim_time`)."""
        if self.wall_clock is None:
            return session_s
        if self._session_s != session_s:
            if self._writer is None:
                raise RuntimeError(f"SessionBag {self.path} is closed")
            self._session_s, self._wall_s = session_s, float(self.wall_clock())
            if self.sim_time:
                clock = self.ts.types["rosgraph_msgs/msg/Clock"](clock=self._time(session_s))
                self._write(TOPIC_CLOCK, clock, self._wall_s)
        return self._wall_s

    def _header(self, stamp_s: float, frame_id: str):
        return self.ts.types["std_msgs/msg/Header"](stamp=self._time(stamp_s), frame_id=frame_id)

    def _write(self, topic: str, msg, stamp_s: float) -> None:
        """Write `msg` at bag stamp `stamp_s` (s, already mapped by `stamp`)."""
        if self._writer is None:
            raise RuntimeError(f"SessionBag {self.path} is closed")
        if self.wall_clock is None:
            ns = int(round(stamp_s * 1e9))
        else:  # epoch seconds: split first, a float product would lose ~100 ns
            t = self._time(stamp_s)
            ns = t.sec * 1_000_000_000 + t.nanosec
        ns = max(ns, self._last_ns)  # non-decreasing record times
        self._last_ns = ns
        self._writer.write(self._conn[topic], ns, self.ts.serialize_cdr(msg, msg.__msgtype__))
        self.messages += 1

    def _joint_state(self, stamp_s: float, position: np.ndarray, velocity: np.ndarray | None):
        T = self.ts.types
        pos = np.asarray(position, dtype=np.float64)
        vel = np.zeros(0) if velocity is None else np.asarray(velocity, dtype=np.float64)
        return T["sensor_msgs/msg/JointState"](header=self._header(stamp_s, "base"),
                                               name=list(JOINT_NAMES_WITH_GRIPPER[:len(pos)]),
                                               position=pos, velocity=vel, effort=np.zeros(0))

    # ------------------------------------------------------------------ writers
    def write_image(self, stamp_s: float, rgb: np.ndarray, frame_id: str = "camera_color_optical_frame") -> None:
        """rgb: (H, W, 3) uint8."""
        stamp_s = self.stamp(stamp_s)
        T = self.ts.types
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        h, w = rgb.shape[:2]
        msg = T["sensor_msgs/msg/Image"](header=self._header(stamp_s, frame_id), height=h, width=w, encoding="rgb8",
                                         is_bigendian=0, step=3 * w, data=rgb.reshape(-1))
        self._write(TOPIC_IMAGE, msg, stamp_s)

    def write_joint_state(self, stamp_s: float, q: np.ndarray, dq: np.ndarray, gripper: float) -> None:
        """q, dq: (6,) rad, rad/s; gripper: measured closure 0..1 (appended as a 7th "joint")."""
        stamp_s = self.stamp(stamp_s)
        pos = np.concatenate([np.asarray(q, dtype=float), [float(gripper)]])
        vel = np.concatenate([np.asarray(dq, dtype=float), [0.0]])
        self._write(TOPIC_JOINT_STATES, self._joint_state(stamp_s, pos, vel), stamp_s)

    def write_command(self, stamp_s: float, twist: np.ndarray, q_target: np.ndarray | None, gripper: float) -> None:
        """twist (6,) m/s + rad/s in the base frame; q_target (6,) rad (None: not streaming)."""
        stamp_s = self.stamp(stamp_s)
        T = self.ts.types
        tw = np.asarray(twist, dtype=float)
        V = T["geometry_msgs/msg/Vector3"]
        msg = T["geometry_msgs/msg/TwistStamped"](
            header=self._header(stamp_s, "base"),
            twist=T["geometry_msgs/msg/Twist"](linear=V(x=tw[0], y=tw[1], z=tw[2]), angular=V(x=tw[3], y=tw[4], z=tw[5])))
        self._write(TOPIC_TWIST, msg, stamp_s)
        if q_target is not None:
            pos = np.concatenate([np.asarray(q_target, dtype=float), [float(gripper)]])
            self._write(TOPIC_JOINT_TARGET, self._joint_state(stamp_s, pos, None), stamp_s)

    def write_event(self, stamp_s: float, text: str) -> None:
        """An episode event and its outcome at session-clock time stamp_s."""
        stamp_s = self.stamp(stamp_s)
        self._write(TOPIC_EVENTS, self.ts.types["std_msgs/msg/String"](data=str(text)), stamp_s)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def read_bag(path: str | Path) -> dict[str, list[tuple[int, object]]]:
    """All messages of a session bag: {topic: [(timestamp_ns, deserialized message), ...]}."""
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_KILTED)
    out: dict[str, list[tuple[int, object]]] = {}
    with Reader(Path(path)) as reader:
        for conn, t_ns, raw in reader.messages():
            out.setdefault(conn.topic, []).append((t_ns, ts.deserialize_cdr(raw, conn.msgtype)))
    return out
