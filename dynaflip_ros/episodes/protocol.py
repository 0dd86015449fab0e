"""The episode protocol: typed `EpisodeCommand` / `EpisodeStatus` messages and their one JSON form.

Who sends what (the node graph in docs/architecture.md):

- the episode manager (or an operator's tool) sends commands on /episode/command:
  `reset` (start episode `episode` with `seed`, optionally a target object, an instruction and
  an evaluation condition) and `stop` (end the running episode; the arm holds);
- the episode's owner answers on /episode/status: the sim cell in simulation, the UR3 driver on
  the real cell (there the operator starts episodes through the driver's `start_episode`
  service, so the driver sends statuses but receives no reset);
- the policy node follows both (it acts only while an episode runs; `episodes.gate`).

Wire format: one JSON object per std_msgs/String message (no custom .msg can be built here),
with `"protocol": PROTOCOL` first. `from_json` validates the whole message before anything is
applied: a message of another protocol version, an unknown or missing field, or a field of the
wrong type raises `ProtocolError` with one line naming the problem, and the receiver logs it and
keeps its state. Non-finite floats are sent as null (JSON has no NaN).

Times: `stamp_s` and `reset_stamp_s` are ROS-clock seconds (system time unless use_sim_time);
`sim_time_s`, `episode_sim_time_s` and `success_time_s` are simulation seconds;
`episode_wall_time_s` is monotonic seconds since the reset.
"""
from __future__ import annotations

import dataclasses
import enum
import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

PROTOCOL = "dynaflip_ros.episode/3"
"""Name and version of the wire format. Version 3 added the statuses' `objects` and the
outcomes `wrong_object` and `safety_stop` (version 2 called it `halted`); version 1 was the
untyped JSON used before (no "protocol" field). Other versions are refused with a clear error."""


class ProtocolError(ValueError):
    """A message that is not a valid episode message of this protocol version."""


class Phase(str, enum.Enum):
    """Where the episode owner is: `idle` (no episode; the arm holds) or `running`."""

    IDLE = "idle"
    RUNNING = "running"


class Outcome(str, enum.Enum):
    """How an episode ended (or its decided outcome while it still runs).

    success: the task's success test held (the named object rests in the basin, nothing else
    is in it); wrong_object: another object than the one the instruction names reached the
    basin; timeout: the episode ran out of time (decided by the episode manager / evaluator);
    safety_stop: the safety layer halted the arm (protective / emergency stop, lost connection;
    `HALTED` is another name of the same member);
    stopped: a stop command or a new reset ended it; error: the evaluation could not run the
    episode (a node failed). `TERMINAL`: the outcomes that end an evaluated episode at once."""

    SUCCESS = "success"
    WRONG_OBJECT = "wrong_object"
    TIMEOUT = "timeout"
    SAFETY_STOP = "safety_stop"
    HALTED = "safety_stop"  # an alias (the arm driver's name for it)
    STOPPED = "stopped"
    ERROR = "error"


TERMINAL_OUTCOMES: frozenset[Outcome] = frozenset(
    {Outcome.SUCCESS, Outcome.WRONG_OBJECT, Outcome.SAFETY_STOP, Outcome.STOPPED, Outcome.ERROR})
"""Outcomes an episode owner decides itself (the evaluators add `timeout`): once a status of
the episode carries one of these, the evaluator records it and moves on."""


class CommandKind(str, enum.Enum):
    """`reset`: start an episode (idempotent for the running episode); `stop`: end it."""

    RESET = "reset"
    STOP = "stop"


def json_safe(value: Any) -> Any:
    """JSON-safe copy of a nested value: non-finite floats -> None (JSON has no NaN), numpy
    scalars -> Python numbers, enums -> their values, tuples -> lists, keys -> str."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        return json_safe(value.item())
    return value


def _check_type(owner: str, name: str, value: Any, kind: str) -> Any:
    """Validate one decoded field. kind: int, float, str, bool, mapping, with a trailing `?`
    for optional (None allowed). Returns the value (ints are accepted as floats)."""
    optional = kind.endswith("?")
    kind = kind.rstrip("?")
    if value is None:
        if optional:
            return None
        raise ProtocolError(f"{owner}.{name} must not be null")
    ok = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "str": isinstance(value, str),
        "bool": isinstance(value, bool),
        "mapping": isinstance(value, dict),
        "strlist": isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value),
    }[kind]
    if not ok:
        raise ProtocolError(f"{owner}.{name} must be {kind}{' or null' if optional else ''}, "
                            f"got {type(value).__name__} {str(value)[:60]!r}")
    if kind == "float":
        value = float(value)
        if not math.isfinite(value):
            raise ProtocolError(f"{owner}.{name} must be finite, got {value}")
    if kind == "strlist":
        value = tuple(value)
    return value


def _decode(cls: type, text: str, kinds: dict[str, str]) -> dict[str, Any]:
    """Parse and validate `text` as a `cls` message; returns its fields (not yet applied)."""
    owner = cls.__name__
    try:
        d = json.loads(text)
    except (json.JSONDecodeError, TypeError) as e:
        raise ProtocolError(f"{owner}: invalid JSON ({e}): {str(text)[:120]!r}") from e
    if not isinstance(d, dict):
        raise ProtocolError(f"{owner}: expected a JSON object, got {type(d).__name__}")
    version = d.pop("protocol", None)
    if version != PROTOCOL:
        raise ProtocolError(f"{owner}: protocol {version!r} is not {PROTOCOL!r} "
                            f"(a sender of another version; update every node of the graph)")
    unknown = sorted(set(d) - set(kinds))
    if unknown:
        raise ProtocolError(f"{owner}: unknown field(s) {unknown}")
    out = {}
    for name, kind in kinds.items():
        if name not in d and not kind.endswith("?"):
            raise ProtocolError(f"{owner}: missing field {name!r}")
        out[name] = _check_type(owner, name, d.get(name), kind)
    return out


def _encode(msg: Any) -> str:
    d = {"protocol": PROTOCOL, **{f.name: getattr(msg, f.name) for f in dataclasses.fields(msg)}}
    return json.dumps(json_safe(d), separators=(",", ":"), allow_nan=False)


@dataclass(frozen=True)
class EpisodeCommand:
    """A command to the episode owner (/episode/command).

    kind: reset | stop. episode: the episode id (>= 0; required for reset). seed: the world's
    seed (>= 0; default = episode). object_name: target object of a reset ("" or None = drawn
    from the seed). instruction: the language instruction to follow, free-form ("drop the red
    block into the basin"; None = the owner draws one naming the target,
    `task.instructions.sample_instruction`; given, the owner uses it as is; blank is refused).
    condition: evaluation condition label (e.g. "nominal", an OOD
    condition name; None = nominal). stamp_s: ROS time the command was sent.
    Raises ProtocolError on invalid values.
    """

    kind: CommandKind
    episode: int | None = None
    seed: int | None = None
    object_name: str | None = None
    instruction: str | None = None
    condition: str | None = None
    stamp_s: float = 0.0

    _KINDS = {"kind": "str", "episode": "int?", "seed": "int?", "object_name": "str?",
              "instruction": "str?", "condition": "str?", "stamp_s": "float"}

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "kind", CommandKind(self.kind))
        except ValueError:
            raise ProtocolError(f"EpisodeCommand.kind must be one of {[k.value for k in CommandKind]}, "
                                f"got {self.kind!r}") from None
        for name in ("episode", "seed"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                raise ProtocolError(f"EpisodeCommand.{name} must be an int >= 0, got {v!r}")
        if self.kind is CommandKind.RESET and self.episode is None:
            raise ProtocolError("EpisodeCommand: a reset needs an episode id")
        if not (isinstance(self.stamp_s, (int, float)) and math.isfinite(self.stamp_s)):
            raise ProtocolError(f"EpisodeCommand.stamp_s must be a finite number, got {self.stamp_s!r}")
        if self.instruction is not None and not (isinstance(self.instruction, str) and self.instruction.strip()):
            raise ProtocolError(f"EpisodeCommand.instruction must be a non-blank string or null, got {self.instruction!r}")

    @classmethod
    def reset(cls, episode: int, seed: int | None = None, *, object_name: str | None = None,
              instruction: str | None = None, condition: str | None = None, stamp_s: float = 0.0) -> "EpisodeCommand":
        return cls(CommandKind.RESET, episode, episode if seed is None else seed, object_name or None,
                   instruction, condition, stamp_s)

    @classmethod
    def stop(cls, stamp_s: float = 0.0) -> "EpisodeCommand":
        return cls(CommandKind.STOP, stamp_s=stamp_s)

    def to_json(self) -> str:
        return _encode(self)

    @classmethod
    def from_json(cls, text: str) -> "EpisodeCommand":
        """Parse and validate; raises ProtocolError (nothing is applied on error)."""
        return cls(**_decode(cls, text, cls._KINDS))


@dataclass(frozen=True)
class EpisodeStatus:
    """The episode owner's state (/episode/status), sent at a fixed rate and after every command.

    source: the sending node (sim_cell | ur3_driver). episode: id of the current / last episode
    (None before the first). phase: idle | running. outcome: None while undecided, `success` as
    soon as the task's success test holds (the episode keeps running until the next command),
    `wrong_object` as soon as another object reached the basin (the first decided outcome
    stays), or how it ended (stopped, safety_stop). reason: free text for the outcome (e.g. the
    halt reason). seed / object_name (the target) / objects (every object on the table, the
    target first) / instruction / condition: what the episode is (None where the owner does
    not know, e.g. the real cell's seed). reset_stamp_s: ROS time the reset finished
    (observations stamped before it belong to the previous episode). stamp_s: ROS time of this
    status. success_time_s: simulation seconds from the reset to the first success.
    sim_time_s, episode_sim_time_s, episode_wall_time_s: see the module docstring.
    halted: the safety layer holds the arm. realtime / safety / driver: telemetry counters of the
    real-time stepper, SafeArm and the driver (JSON objects, for the evaluation record).
    """

    source: str
    phase: Phase
    episode: int | None = None
    outcome: Outcome | None = None
    reason: str = ""
    seed: int | None = None
    object_name: str | None = None
    objects: tuple[str, ...] | None = None
    instruction: str | None = None
    condition: str | None = None
    reset_stamp_s: float = 0.0
    stamp_s: float = 0.0
    success_time_s: float | None = None
    sim_time_s: float | None = None
    episode_sim_time_s: float | None = None
    episode_wall_time_s: float | None = None
    halted: bool = False
    realtime: dict[str, Any] | None = None
    safety: dict[str, Any] | None = None
    driver: dict[str, Any] | None = field(default=None)

    _KINDS = {"source": "str", "phase": "str", "episode": "int?", "outcome": "str?", "reason": "str",
              "seed": "int?", "object_name": "str?", "objects": "strlist?", "instruction": "str?",
              "condition": "str?", "reset_stamp_s": "float", "stamp_s": "float", "success_time_s": "float?", "sim_time_s": "float?",
              "episode_sim_time_s": "float?", "episode_wall_time_s": "float?", "halted": "bool",
              "realtime": "mapping?", "safety": "mapping?", "driver": "mapping?"}

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "phase", Phase(self.phase))
            if self.outcome is not None:
                object.__setattr__(self, "outcome", Outcome(self.outcome))
        except ValueError as e:
            raise ProtocolError(f"EpisodeStatus: {e}") from None
        if self.episode is not None and (isinstance(self.episode, bool) or self.episode < 0):
            raise ProtocolError(f"EpisodeStatus.episode must be >= 0 or None, got {self.episode!r}")
        if self.objects is not None:
            object.__setattr__(self, "objects", tuple(str(o) for o in self.objects))

    @property
    def running(self) -> bool:
        return self.phase is Phase.RUNNING

    @property
    def succeeded(self) -> bool:
        return self.outcome is Outcome.SUCCESS

    @property
    def decided(self) -> bool:
        """Whether the owner decided this episode's outcome (`TERMINAL_OUTCOMES`)."""
        return self.outcome in TERMINAL_OUTCOMES

    def to_json(self) -> str:
        return _encode(self)

    @classmethod
    def from_json(cls, text: str) -> "EpisodeStatus":
        """Parse and validate; raises ProtocolError (nothing is applied on error)."""
        return cls(**_decode(cls, text, cls._KINDS))
