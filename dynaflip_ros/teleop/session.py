"""`TeleopSession`: teleoperated demonstrations recorded into the sim-expert dataset schema.

Loop (one thread, on the driver's clock: sim time or `time.monotonic`), at `command_rate_hz`
(a multiple of the record rate `data.schema.RECORD_FPS` = 10 Hz; default 50 Hz):

    every command tick t:   cmd = device.read()
                            q = TwistToJointTarget.step(cmd.twist, 1 / command_rate_hz)  (IK)
                            driver.command(q, gripper, due = t + 1 / command_rate_hz)
                                -> interpolator -> ServoLoop -> SafeArm -> arm
    every 5th tick (10 Hz): episode events, then (while recording) one frame

Action convention (the same as `sim.record_demos.record_sim_episodes`): the frame recorded at t_k
holds the camera image and the measured state (6 joints + gripper closure) at t_k, and the
action = the joint target in force one record period later (t_k + 0.1 s: the target the
teleop loop had commanded for that instant) + the gripper target. Frames are therefore written
one record tick late. Freedrive (the arm moved by hand): the action joints are the measured
joints at t_k + 0.1 s. Phase is -1 (unknown); point tracks are the sim's ground truth, or zeros
on the real cell (marked `point_tracks_valid: false` in the episode metadata).

Episode control (device keys, `request()` from the ROS services):

| event    | while idle                       | while recording                                          |
|----------|----------------------------------|----------------------------------------------------------|
| start    | begin an episode                 | ignored                                                  |
| stop     | ignored                          | save the episode (committed, crash-safe), then idle      |
| discard  | ignored                          | drop the episode in progress (nothing written), idle     |
| rerecord | = start                          | drop the episode in progress and begin again at once (sim: same scene seed) |
| quit     | end the session                  | drop the episode in progress, end the session            |

Saved episodes are never modified afterwards (the recorder's crash-safety commits each one
atomically); "re-record" therefore means re-doing the take in progress. In the sim the scene is
reset (next seed) after every save / discard. A session ends after `episodes` saved episodes,
on quit, or on an error (the open episode is dropped; saved ones stay). A process crash
(SIGKILL included) loses at most the episode in progress (`EpisodeRecorder`).

Sim scene resets settle physics (0.1 s of sim time); the tick schedule is re-based after one.
Slow loop: a record tick that starts more than `slow_tick_tolerance` x period late is counted
(`slow_ticks`, `max_lateness_s` in the episode's metadata) and logged (at most every 5 s).
Episode metadata `loop`, `twist` and `driver` (SafeArm / servo loop / real-time stepper counters)
are the episode's own share: counters since the episode began (`counters_since`), not session totals.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from dynaflip_ros.data import schema
from dynaflip_ros.episodes.record import counter_delta
from dynaflip_ros.teleop.config import DEFAULT_TASK, TeleopConfig, check_command_rate_hz, check_episode_limits
from dynaflip_ros.teleop.devices import TeleopDevice, TeleopEvent
from dynaflip_ros.teleop.twist import TwistToJointTarget

log = logging.getLogger(__name__)


@dataclass
class SessionConfig:
    """Parameters of a `TeleopSession`: the session loop's view of `teleop.config.TeleopConfig`
    (built from it by `teleop.record.session_config`; the shared fields take their defaults and
    checks from there).

    Attributes:
        task: language instruction stored with real-cell episodes (sim: the scene's instruction
            unless `task_override`).
        task_override: use `task` in the sim too (TeleopConfig.task given).
        episodes: saved episodes after which the session ends (0 = until quit).
        command_rate_hz: teleop command rate, a multiple of RECORD_FPS (10, 20, 50, 100).
        max_episode_s: an episode is saved automatically at this length.
        max_linear_speed_m_s / max_angular_speed_rad_s: TCP twist clamps.
        slow_tick_tolerance: a record tick later than this fraction of the record period is slow.
        seed: first sim scene seed (scene i uses seed + i).
        source: "sim" or "real" (dataset metadata; TeleopConfig.sim).
        resync_error_rad: when the measured joints trail the target by more than this (a refused
            or halted command), the target is re-based on the measured pose.
    """

    task: str = DEFAULT_TASK
    task_override: bool = False
    episodes: int = TeleopConfig.episodes
    command_rate_hz: float = TeleopConfig.command_rate_hz
    max_episode_s: float = TeleopConfig.max_episode_s
    max_linear_speed_m_s: float = 0.25
    max_angular_speed_rad_s: float = 1.0
    slow_tick_tolerance: float = 0.5
    seed: int = TeleopConfig.seed
    source: str = "sim"
    resync_error_rad: float = 0.25

    def __post_init__(self) -> None:
        if not isinstance(self.task, str) or not self.task.strip():
            raise ValueError("task must be a non-empty string")
        check_command_rate_hz(self.command_rate_hz)
        check_episode_limits(self.episodes, self.max_episode_s, self.seed)
        if not (0 < self.slow_tick_tolerance <= 10):
            raise ValueError(f"slow_tick_tolerance must be in (0, 10], got {self.slow_tick_tolerance!r}")
        if self.source not in ("sim", "real"):
            raise ValueError(f"source must be 'sim' or 'real', got {self.source!r}")


@dataclass
class SessionSummary:
    """What a session did: saved episodes (dataset indices), discarded takes, frames saved,
    slow record ticks over the session, and why it ended ("quit", "episodes", "error: ...")."""

    saved: list[int] = dataclasses.field(default_factory=list)
    discarded: int = 0
    frames_saved: int = 0
    slow_ticks: int = 0
    record_ticks: int = 0
    ended_by: str = ""
    wall_s: float = 0.0


def counters_since(end: dict, start: dict) -> dict:
    """Per-episode share of cumulative driver statistics (`episodes.record.counter_delta`):
    every integer counter of `end` minus its value in `start` (nested dicts such as
    `rejections_by_reason` likewise; a counter absent from `start` keeps its value); floats
    (timing statistics over a recent window, maxima, factors) and bools are `end`'s values as
    they are. Both are `driver.stats()` snapshots (session totals)."""
    return counter_delta(start, end)


class _Request:
    def __init__(self, event: TeleopEvent) -> None:
        self.event = event
        self.done = threading.Event()
        self.ok = False
        self.message = ""


class TeleopSession:
    """Runs teleop + recording (see the module docstring).

    Args:
        recorder: an open `data.recorder.EpisodeRecorder` (image_hw must match the camera).
        driver: a motion driver from `teleop.drivers` (its SafeArm moves the arm).
        device: a `TeleopDevice` (opened and closed by `run()`).
        camera: a `cameras.base.Camera` (connected by the caller); frames must be image_hw.
        config: `SessionConfig`.
        episode_extra: JSON-serialisable metadata stored with every episode (provenance,
            camera settings, device settings).
        bag: optional `teleop.rosbag_log.SessionBag` (closed by the caller).
        echo: one-line progress messages (default: log.info).
    """

    def __init__(self, recorder, driver, device: TeleopDevice, camera, config: SessionConfig | None = None,
                 episode_extra: dict | None = None, bag=None, echo: Callable[[str], None] | None = None) -> None:
        self.recorder = recorder
        self.driver = driver
        self.device = device
        self.camera = camera
        self.config = config if config is not None else SessionConfig()
        self.episode_extra = dict(episode_extra or {})
        self.bag = bag
        self._echo = echo or (lambda line: log.info("%s", line))
        cfg = self.config
        self.twist = TwistToJointTarget(driver.safety, cfg.max_linear_speed_m_s, cfg.max_angular_speed_rad_s)
        self.cmd_period_s = 1.0 / cfg.command_rate_hz
        self.record_period_s = 1.0 / schema.RECORD_FPS
        self.ticks_per_record = int(round(cfg.command_rate_hz / schema.RECORD_FPS))
        self._requests: queue.Queue[_Request] = queue.Queue()
        self._lock = threading.Lock()
        self.summary = SessionSummary()
        self.recording = False
        self._stop_flag = threading.Event()
        self._scene_index = 0
        self._scene_seed: int | None = None
        self._scene_info = None
        self._task = cfg.task
        self._pending: dict | None = None  # frame waiting for its action (one record period)
        self._ep_frames = 0
        self._ep_slow = 0
        self._ep_max_late = 0.0
        self._ep_resyncs = 0
        self._ep_twist0: dict = {}
        self._ep_driver0: dict = {}
        self._ep_start_s = 0.0
        self._last_slow_log = -math.inf
        self._q_target: np.ndarray | None = None  # (6,) joint target due now
        self._gripper = 0.0
        self.last_message = ""
        self._carry_events: list[TeleopEvent] = []
        self._halt_reported = False
        self._rebase = False

    # ------------------------------------------------------------------ external control
    def request(self, event: TeleopEvent | str, timeout_s: float = 5.0) -> tuple[bool, str]:
        """Ask the loop to apply `event` at its next record tick (thread-safe; ROS services).

        Returns (applied, message). (False, "...timed out") when the loop did not answer within
        timeout_s (not running or stalled)."""
        req = _Request(TeleopEvent(event))
        self._requests.put(req)
        if not req.done.wait(timeout_s):
            return False, f"{req.event.value}: the recording loop did not answer within {timeout_s:g} s"
        return req.ok, req.message

    def stop(self) -> None:
        """End the session at the next tick (like quit), from any thread."""
        self._stop_flag.set()

    def status(self) -> dict[str, Any]:
        """Snapshot: state, frames in the open episode, saved / discarded counts, last message."""
        with self._lock:
            return {"state": "recording" if self.recording else "idle", "episode_frames": self._ep_frames,
                    "saved": len(self.summary.saved), "discarded": self.summary.discarded,
                    "slow_ticks": self.summary.slow_ticks, "scene_seed": self._scene_seed, "task": self._task,
                    "last_message": self.last_message}

    # ------------------------------------------------------------------ the loop
    def run(self) -> SessionSummary:
        """Run until quit / `episodes` saved / `stop()`. Opens and closes the device; the episode
        in progress on an error is dropped and the error re-raised. Returns the summary."""
        wall0 = time.perf_counter()
        drv = self.driver
        self._new_scene(same_seed=False)
        drv.start()
        if self.device.moves_arm_itself:
            drv.hold()  # nothing streams while the arm is moved by hand
        self.device.open()
        try:
            self._anchor()
            t0 = drv.now_s()
            k = 0
            while True:
                deadline = t0 + k * self.cmd_period_s
                drv.sleep_until(deadline)
                now = drv.now_s()
                lateness = now - deadline
                cmd = self.device.read()
                if cmd.gripper is not None:
                    self._gripper = cmd.gripper
                events = list(cmd.events)
                if k % self.ticks_per_record == 0:
                    if self._record_tick(deadline, now, lateness, events):
                        break
                    if self._rebase:  # a sim scene reset advanced the clock: re-base the schedule
                        self._rebase = False
                        now = drv.now_s()
                        t0 = now - k * self.cmd_period_s
                elif events:  # keep device events for the next record tick
                    self._carry_events.extend(events)
                self._command_tick(now, cmd.twist)
                k += 1
                if lateness > 1.0:  # hopelessly behind (e.g. a debugger): re-base the schedule
                    log.warning("teleop loop %.2f s behind schedule; re-basing it", lateness)
                    t0 = now - k * self.cmd_period_s
        except BaseException as e:
            self.summary.ended_by = self.summary.ended_by or f"error: {type(e).__name__}: {e}"
            raise
        finally:
            try:
                if self.recorder.episode_in_progress:
                    self.recorder.discard_episode()
                    log.warning("session ended with an episode in progress: it was dropped")
            finally:
                with self._lock:
                    self.recording = False
                self._fail_pending_requests()
                try:
                    self.device.close()
                finally:
                    self.summary.wall_s = round(time.perf_counter() - wall0, 3)
        return self.summary

    # ------------------------------------------------------------------ internals
    def _anchor(self) -> None:
        st = self.driver.state()
        self.twist.reset(st.q)
        self._q_target = np.asarray(st.q, dtype=float).copy()
        g = st.extra.get("gripper_command", self.driver.safe.last_gripper_command)
        self._gripper = float(np.clip(st.gripper if g is None else g, 0.0, 1.0))

    def _new_scene(self, same_seed: bool) -> None:
        """Sim: reset the scene (next seed, or the same one for a re-record). Real: no-op."""
        drv = self.driver
        if not getattr(drv, "is_sim", False):
            return
        if not same_seed or self._scene_seed is None:
            self._scene_seed = self.config.seed + self._scene_index
            self._scene_index += 1
        self._scene_info = drv.reset_scene(self._scene_seed)
        self._rebase = True
        if not self.config.task_override:
            self._task = self._scene_info.instruction
        if self._q_target is not None:
            self._anchor()
            drv.reanchor()

    def _command_tick(self, now: float, twist: np.ndarray) -> None:
        drv = self.driver
        if self.device.moves_arm_itself:
            if drv.safe.last_gripper_command != self._gripper:
                drv.safe.set_gripper(self._gripper)
            if self.bag is not None:
                self.bag.write_command(now, twist, None, self._gripper)
            return
        if drv.safe.halted:
            if not self._halt_reported:
                self._halt_reported = True
                self._echo(f"[teleop] arm halted ({drv.safe.halt_reason}): clear the stop on the controller; "
                           "discard the episode in progress (x / discard service)")
            return
        if self._halt_reported:  # re-armed elsewhere: continue from the measured pose
            self._halt_reported = False
            self.twist.sync(drv.state().q)
            drv.reanchor()
        st = drv.state()
        if float(np.max(np.abs(np.asarray(st.q) - self._q_target))) > self.config.resync_error_rad:
            log.warning("arm trails the teleop target by > %.2f rad (refused or halted?): re-basing on the "
                        "measured pose", self.config.resync_error_rad)
            self._ep_resyncs += 1
            self.twist.sync(st.q)
            drv.reanchor()
        q = self.twist.step(twist, self.cmd_period_s)
        drv.command(q, self._gripper, now + self.cmd_period_s)
        self._q_target = q
        if self.bag is not None:
            self.bag.write_command(now, twist, q, self._gripper)

    def _action_now(self, state) -> np.ndarray:
        """(7,) action for the frame one record period ago: the target in force now + gripper."""
        q = np.asarray(state.q, dtype=float) if self.device.moves_arm_itself else self._q_target
        return np.concatenate([q, [self._gripper]]).astype(np.float32)

    def _record_tick(self, deadline: float, now: float, lateness: float, events: list[TeleopEvent]) -> bool:
        """Events + one frame. Returns True when the session must end."""
        self.summary.record_ticks += 1
        if lateness > self.config.slow_tick_tolerance * self.record_period_s:
            self.summary.slow_ticks += 1
            if self.recording:
                self._ep_slow += 1
                self._ep_max_late = max(self._ep_max_late, lateness)
            if now - self._last_slow_log > 5.0:
                self._last_slow_log = now
                log.warning("teleop record loop is slow: tick %.0f ms late (nominal period %.0f ms); "
                            "%d slow ticks so far", lateness * 1e3, self.record_period_s * 1e3, self.summary.slow_ticks)
        events = self._carry_events + events
        self._carry_events = []
        reqs: list[_Request] = []
        while True:
            try:
                reqs.append(self._requests.get_nowait())
            except queue.Empty:
                break
        st = self.driver.state()
        end = False
        for ev in events:
            end = self._apply_event(ev, st, now)[2] or end
            if end:
                break
        for r in reqs:
            if end:
                r.ok, r.message = False, "session is ending"
            else:
                r.ok, r.message, e = self._apply_event(r.event, st, now)
                end = end or e
            r.done.set()
        if self._stop_flag.is_set() and not end:
            self._apply_event(TeleopEvent.QUIT, st, now)
            end = True
        if end:
            return True
        if events or reqs:
            st = self.driver.state()  # an event may have reset the scene
        if self.recording:
            if self._pending is not None:
                self._flush_pending(st)
            if self._ep_frames >= int(round(self.config.max_episode_s * schema.RECORD_FPS)):
                self._echo(f"episode reached max_episode_s = {self.config.max_episode_s:g} s: saving it")
                return self._apply_event(TeleopEvent.STOP, st, now)[2]
            self._capture(st, now)
            if self._ep_frames and self._ep_frames % (10 * schema.RECORD_FPS) == 0:
                self._echo(f"[teleop] recording: {self._ep_frames} frames ({self._ep_frames / schema.RECORD_FPS:.0f} s)")
        return False

    def _capture(self, st, now: float) -> None:
        frame = self.camera.read()
        state7 = np.concatenate([np.asarray(st.q, dtype=float), [float(st.gripper)]]).astype(np.float32)
        if getattr(self.driver, "is_sim", False):
            tracks, valid = self.driver.scene_tracks()
        else:  # no ground-truth points on a real cell: zeros, all invalid (data.schema)
            tracks, valid = np.zeros((schema.N_TRACK, 3), np.float32), np.zeros(schema.N_TRACK, bool)
        self._pending = {"image": frame.rgb, "state": state7, "tracks": tracks, "valid": valid}
        if self.bag is not None:
            self.bag.write_image(now, frame.rgb, frame.frame_id)
            self.bag.write_joint_state(now, st.q, st.dq, st.gripper)

    def _flush_pending(self, st) -> None:
        p, self._pending = self._pending, None
        self.recorder.add_frame(p["image"], p["state"], self._action_now(st), p["tracks"], p["valid"], -1)
        with self._lock:
            self._ep_frames += 1

    def _begin(self, now: float) -> str:
        extra = {
            **self.episode_extra,
            "teleop": {"device": self.device.describe(), "command_rate_hz": self.config.command_rate_hz,
                       "record_fps": schema.RECORD_FPS, "kinesthetic": bool(self.device.moves_arm_itself),
                       "driver": self.driver.kind},
            "point_tracks_valid": bool(getattr(self.driver, "is_sim", False)),
        }
        if self._scene_info is not None:
            extra["object_pose"] = [float(v) for v in self._scene_info.object_pose]
        obj = getattr(self._scene_info, "object_name", None)
        idx = self.recorder.begin_episode(self._task, seed=self._scene_seed, object_name=obj,
                                          source=self.config.source, demonstrator="teleop", extra=extra)
        with self._lock:
            self.recording = True
            self._ep_frames = 0
        self._pending = None
        self._ep_slow, self._ep_max_late, self._ep_resyncs = 0, 0.0, 0
        self._ep_twist0 = dataclasses.asdict(self.twist.stats)
        self._ep_driver0 = self.driver.stats()
        self._ep_start_s = now
        return f"episode {idx} started: {self._task!r}" + (f" (scene seed {self._scene_seed})" if self._scene_seed is not None else "")

    def _episode_outcome(self, now: float) -> dict:
        tw = dataclasses.asdict(self.twist.stats)
        return {"loop": {"slow_ticks": self._ep_slow, "max_lateness_s": round(self._ep_max_late, 4),
                         "nominal_period_s": self.record_period_s, "resyncs": self._ep_resyncs,
                         "duration_s": round(now - self._ep_start_s, 4)},
                "twist": {k: (tw[k] - self._ep_twist0.get(k, 0)) if k != "max_ik_position_error_m" else tw[k]
                          for k in tw},
                "driver": counters_since(self.driver.stats(), self._ep_driver0),
                "success_source": "sim" if getattr(self.driver, "is_sim", False) else "operator"}

    def _discard_current(self) -> None:
        self.recorder.discard_episode()
        self._pending = None
        with self._lock:
            self.recording = False
            self._ep_frames = 0
        self.summary.discarded += 1

    def _apply_event(self, ev: TeleopEvent, st, now: float) -> tuple[bool, str, bool]:
        """Apply one event; returns (applied, message, session_ends)."""
        ends = False
        if ev == TeleopEvent.START or (ev == TeleopEvent.RERECORD and not self.recording):
            if self.recording:
                ok, msg = False, "start ignored: an episode is already being recorded"
            else:
                ok, msg = True, self._begin(now)
        elif ev == TeleopEvent.STOP:
            if not self.recording:
                ok, msg = False, "stop ignored: no episode is being recorded"
            else:
                if self._pending is not None:
                    self._flush_pending(st)
                if self._ep_frames == 0:
                    self._discard_current()
                    ok, msg = False, "episode had no frame: dropped"
                else:
                    success = self.driver.success() if getattr(self.driver, "is_sim", False) else True
                    n = self._ep_frames
                    idx = self.recorder.end_episode(bool(success), extra=self._episode_outcome(now))
                    with self._lock:
                        self.recording = False
                        self.summary.saved.append(idx)
                        self.summary.frames_saved += n
                    ok, msg = True, f"episode {idx} saved ({n} frames, {n / schema.RECORD_FPS:.1f} s" + (
                        f", sim success {success})" if getattr(self.driver, "is_sim", False) else ")")
                    if self.config.episodes and len(self.summary.saved) >= self.config.episodes:
                        ends = True
                        self.summary.ended_by = "episodes"
                    else:
                        self._new_scene(same_seed=False)
        elif ev == TeleopEvent.DISCARD:
            if not self.recording:
                ok, msg = False, "discard ignored: no episode is being recorded (saved episodes are kept)"
            else:
                self._discard_current()
                ok, msg = True, "episode in progress discarded"
                self._new_scene(same_seed=False)
        elif ev == TeleopEvent.RERECORD:  # while recording
            self._discard_current()
            self._new_scene(same_seed=True)
            ok, msg = True, "take discarded; re-recording: " + self._begin(now)
        elif ev == TeleopEvent.QUIT:
            if self.recording:
                self._discard_current()
                msg = "quit: episode in progress discarded"
            else:
                msg = "quit"
            ok, ends = True, True
            self.summary.ended_by = self.summary.ended_by or "quit"
        else:  # pragma: no cover - TeleopEvent is closed
            ok, msg = False, f"unknown event {ev!r}"
        with self._lock:
            self.last_message = msg
        if self.bag is not None:
            self.bag.write_event(now, f"{ev.value}: {msg}")
        self._echo(f"[teleop] {msg}")
        return ok, msg, ends

    def _fail_pending_requests(self) -> None:
        while True:
            try:
                r = self._requests.get_nowait()
            except queue.Empty:
                return
            r.ok, r.message = False, "session ended"
            r.done.set()
