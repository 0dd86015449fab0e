"""`EpisodeGate`: the one episode state machine, shared by the episode's owner and its followers.

The owner (the sim cell in simulation, the UR3 driver on the real cell) drives it with
`begin` / `decide` (`succeed`) / `end` and publishes `status_fields()` as its /episode/status. A follower
(the policy node) feeds it the commands and statuses it receives (`expect`, `follow`) and asks
`admits(stamp_s)` whether an observation or action chunk stamped `stamp_s` belongs to the
running episode.

States and transitions (owner side):

    idle --begin(episode, seed)--> running --end(outcome)--> idle
    running --begin(other episode or seed)--> running (the old one ends as `stopped`)
    running --begin(same episode and seed)--> running (idempotent: nothing happens)
    running --decide(outcome, t)--> running with outcome `success` / `wrong_object` (the first
                                   decided outcome stays; `succeed(t)` = decide(success, t))

Follower side: a reset command makes the gate wait (`pending`) for the owner's status of that
episode whose `reset_stamp_s` is not older than the command; until then, and after a status that
is not running, nothing is admitted. A status of a new running episode also starts the follower
when it missed the command (a late joiner). Stamps before the episode's `reset_stamp_s`, and
stamps not newer than the last admitted one, are refused.

Thread safety: one internal lock, a leaf: the gate never calls out while holding it, so any
caller may hold its own locks when calling in (document your order as "yours, then the gate's").
Clock: `clock()` (monotonic seconds, injectable for tests) times `episode_wall_time_s`.
"""
from __future__ import annotations

import enum
import threading
import time
from dataclasses import dataclass, replace
from typing import Callable

from dynaflip_ros.episodes.protocol import CommandKind, EpisodeCommand, EpisodeStatus, Outcome, Phase


class Transition(str, enum.Enum):
    """What a follower must do after `expect` / `follow`: nothing, stop acting (and clear its
    history), or start acting in a new episode (clear its history first)."""

    NONE = "none"
    STOP = "stop"
    START = "start"


@dataclass(frozen=True)
class EpisodeState:
    """A consistent snapshot of the gate (see `EpisodeStatus` for the field meanings)."""

    phase: Phase = Phase.IDLE
    episode: int | None = None
    seed: int | None = None
    object_name: str | None = None
    objects: tuple[str, ...] | None = None
    instruction: str | None = None
    condition: str | None = None
    outcome: Outcome | None = None
    reason: str = ""
    reset_stamp_s: float = 0.0
    success_time_s: float | None = None
    wall_t0_s: float = 0.0

    @property
    def running(self) -> bool:
        return self.phase is Phase.RUNNING


class EpisodeGate:
    """The episode state machine (module docstring). Construct one per node."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()  # leaf lock: nothing is called while it is held
        self._state = EpisodeState(wall_t0_s=clock())
        self._pending: tuple[int, float] | None = None  # follower: (episode, command stamp_s)
        self._last_admitted_s = -1.0

    # ------------------------------------------------------------------ owner side
    def state(self) -> EpisodeState:
        with self._lock:
            return self._state

    def is_running(self, episode: int, seed: int | None) -> bool:
        """Whether `episode` with `seed` is the running episode (a repeated reset is a no-op)."""
        with self._lock:
            s = self._state
            return s.running and s.episode == episode and s.seed == seed

    def next_episode(self) -> int:
        """The id after the last episode (0 for the first): the real cell numbers its own."""
        with self._lock:
            return 0 if self._state.episode is None else self._state.episode + 1

    def begin(self, episode: int, seed: int | None, reset_stamp_s: float, *, object_name: str | None = None,
              objects: tuple[str, ...] | None = None, instruction: str | None = None,
              condition: str | None = None) -> bool:
        """Start `episode` (running, no outcome). Returns False (and changes nothing) when it is
        already the running episode with the same seed."""
        with self._lock:
            s = self._state
            if s.running and s.episode == episode and s.seed == seed:
                return False
            self._state = EpisodeState(
                phase=Phase.RUNNING, episode=episode, seed=seed, object_name=object_name,
                objects=None if objects is None else tuple(objects), instruction=instruction,
                condition=condition, reset_stamp_s=float(reset_stamp_s), wall_t0_s=self._clock())
            self._last_admitted_s = -1.0
            return True

    def decide(self, outcome: Outcome | str, time_s: float) -> bool:
        """Record the running episode's outcome (`success` or `wrong_object`, decided by the
        task at `time_s` simulation seconds after the reset; the episode keeps running until the
        next command). Only the first decision counts; True if this call recorded it. Raises
        ValueError for another outcome (timeouts are the evaluator's, stops go through `end`)."""
        outcome = Outcome(outcome)
        if outcome not in (Outcome.SUCCESS, Outcome.WRONG_OBJECT):
            raise ValueError(f"decide() takes success or wrong_object, got {outcome.value!r}")
        with self._lock:
            s = self._state
            if not s.running or s.outcome is not None:
                return False
            self._state = replace(s, outcome=outcome,
                                  success_time_s=float(time_s) if outcome is Outcome.SUCCESS else None)
            return True

    def succeed(self, success_time_s: float) -> bool:
        """`decide(Outcome.SUCCESS, success_time_s)`."""
        return self.decide(Outcome.SUCCESS, success_time_s)

    def end(self, outcome: Outcome = Outcome.STOPPED, reason: str = "") -> bool:
        """End the running episode: idle, with `outcome` unless it already has one (a success
        stays a success). Returns whether an episode was running."""
        with self._lock:
            s = self._state
            if not s.running:
                return False
            self._state = replace(s, phase=Phase.IDLE, outcome=s.outcome or Outcome(outcome),
                                  reason=s.reason or reason)
            return True

    def status(self, source: str, stamp_s: float, **telemetry) -> EpisodeStatus:
        """The owner's /episode/status for this state; `telemetry` fills the remaining fields
        (sim_time_s, episode_sim_time_s, halted, realtime, safety, driver)."""
        with self._lock:
            s = self._state
            wall_s = self._clock() - s.wall_t0_s
        return EpisodeStatus(
            source=source, phase=s.phase, episode=s.episode, outcome=s.outcome, reason=s.reason, seed=s.seed,
            object_name=s.object_name, objects=s.objects, instruction=s.instruction, condition=s.condition,
            reset_stamp_s=s.reset_stamp_s, stamp_s=stamp_s, success_time_s=s.success_time_s,
            episode_wall_time_s=wall_s, **telemetry)

    # ------------------------------------------------------------------ follower side
    def expect(self, command: EpisodeCommand) -> Transition:
        """A command seen on /episode/command. A stop ends the episode; a reset of a new episode
        ends the current one and waits for the owner's status of that episode."""
        with self._lock:
            s = self._state
            if command.kind is CommandKind.STOP:
                self._pending = None
                self._state = replace(s, phase=Phase.IDLE)
                return Transition.STOP
            if s.running and command.episode == s.episode:
                return Transition.NONE  # a duplicate reset of the running episode
            if self._pending is not None and self._pending[0] == command.episode:
                return Transition.NONE  # re-sent while waiting for the owner
            self._pending = (int(command.episode), float(command.stamp_s))
            self._state = replace(s, phase=Phase.IDLE)
            return Transition.STOP

    def follow(self, status: EpisodeStatus) -> Transition:
        """A status seen on /episode/status (module docstring for the rules)."""
        with self._lock:
            s = self._state
            if not status.running:
                if status.episode == s.episode:
                    self._state = replace(s, phase=Phase.IDLE)
                    return Transition.STOP
                return Transition.NONE
            if s.running and status.episode == s.episode:
                return Transition.NONE
            if self._pending is not None:
                start = status.episode == self._pending[0] and status.reset_stamp_s >= self._pending[1]
            else:
                start = status.episode is not None and status.episode != s.episode
            if not start:
                return Transition.NONE
            self._pending = None
            self._state = EpisodeState(
                phase=Phase.RUNNING, episode=status.episode, seed=status.seed, object_name=status.object_name,
                objects=status.objects, instruction=status.instruction, condition=status.condition, reset_stamp_s=status.reset_stamp_s,
                wall_t0_s=self._clock())
            self._last_admitted_s = -1.0
            return Transition.START

    def admits(self, stamp_s: float) -> bool:
        """Whether data stamped `stamp_s` (ROS seconds) belongs to the running episode and is
        newer than the last data used (`used`)."""
        with self._lock:
            s = self._state
            return s.running and stamp_s >= s.reset_stamp_s and stamp_s > self._last_admitted_s

    def used(self, stamp_s: float) -> None:
        """Record that data stamped `stamp_s` was used: older or equal stamps are refused next."""
        with self._lock:
            self._last_admitted_s = max(self._last_admitted_s, float(stamp_s))
