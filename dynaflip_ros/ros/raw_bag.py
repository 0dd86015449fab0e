"""Record ROS topics as they arrive into a rosbag2 MCAP file: the serialized (CDR) messages of
rclpy subscriptions with `raw=True` written unchanged with `rosbags` (no `ros2 bag` needed).

`RawBag(path, {topic: "pkg/msg/Type"})` opens the bag; `write(topic, stamp_ns, data)` appends one
message (record time = receive time, ns; made non-decreasing); `close()` writes metadata.yaml.
Read back with `teleop.rosbag_log.read_bag`. Thread-safe (one lock, a leaf: nothing else is
taken while it is held). Source: rosbags 0.11 docs, "Rosbag2" writer
(`Writer(path, version=9, storage_plugin=MCAP)`, `add_connection`, `write(connection, ns, rawdata)`).
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Mapping


class RawBag:
    """One MCAP bag at `path` (a new directory) with one connection per topic.

    Raises FileExistsError when `path` exists, KeyError in `write` for a topic not given here,
    RuntimeError after `close`."""

    def __init__(self, path: str | Path, topics: Mapping[str, str]) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f"{self.path} exists; a rosbag2 directory must be new")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        ts = get_typestore(Stores.ROS2_KILTED)
        self._lock = threading.Lock()
        self._writer = Writer(self.path, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._conn = {t: self._writer.add_connection(t, msgtype, typestore=ts) for t, msgtype in topics.items()}
        self._last_ns = 0
        self.messages = 0

    def write(self, topic: str, stamp_ns: int, data: bytes) -> None:
        with self._lock:
            if self._writer is None:
                raise RuntimeError(f"RawBag {self.path} is closed")
            ns = max(int(stamp_ns), self._last_ns)
            self._last_ns = ns
            self._writer.write(self._conn[topic], ns, bytes(data))
            self.messages += 1

    def close(self) -> None:
        """Idempotent."""
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
