"""The operator's side of an OOD session on the real cell (ROS-free core; the ROS adapter is
`ros/nodes/ood_session.py`).

Setup sheet: the real scene of (condition, seed) is the sim cell's scene of the same seed and
condition (`sim.perturbations`), written out for a person: each object with its role (target,
scene object, distractor) and where it goes on the table (x, y in cm in the UR base frame, yaw in
degrees), the instruction the policy gets, and one line per visual condition (light, table
cloth, camera offset). The sim render of that scene goes with it as the reference picture.

Episode cycle (`OperatorSession`), one planned episode at a time:
  setup   -> the sheet is announced; the operator arranges the scene and confirms;
  running -> the cell publishes the instruction, starts the bag and the episode (the arm moves
             only now); it ends when the operator marks the outcome (success, wrong_object,
             failure = did not succeed in time), when the driver reports a safety stop, or after
             `timeout_s` (a timeout);
  then the cell stops the episode (the arm stops and holds) and closes the bag, the episode is
  recorded and the next sheet is announced. `abort()` stops a running episode without recording
  it (it stays to be done when the session resumes).
Times come from the injected clock (s); nothing here sleeps.
"""
from __future__ import annotations

import enum
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

OPERATOR_OUTCOMES = ("success", "wrong_object", "timeout")
"""What the operator can mark: "timeout" is the operator's "failed" (the task was not done)."""
KEYS = {"s": "success", "w": "wrong_object", "f": "timeout"}


@dataclass(frozen=True)
class PlacedObject:
    """One object of the sheet: role "target" | "scene" | "distractor"; x_cm, y_cm in the UR base
    frame (table top z = 0); yaw_deg about the vertical."""

    name: str
    role: str
    x_cm: float
    y_cm: float
    yaw_deg: float


@dataclass(frozen=True)
class SetupSheet:
    """What the operator sets up for one episode."""

    condition: str
    seed: int
    instruction: str
    objects: tuple[PlacedObject, ...]
    notes: tuple[str, ...] = ()
    reference_image: str | None = None

    def text(self) -> str:
        lines = [f"condition {self.condition}, seed {self.seed}: instruction {self.instruction!r}",
                 "objects (x, y cm in the robot base frame, yaw deg):"]
        for o in self.objects:
            lines.append(f"  {o.role:<10} {o.name:<18} x {o.x_cm:6.1f}  y {o.y_cm:6.1f}  yaw {o.yaw_deg:6.0f}")
        lines += [f"  {n}" for n in self.notes]
        if self.reference_image:
            lines.append(f"  reference picture: {self.reference_image}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def setup_sheet(env, info, reference_image: str | None = None) -> SetupSheet:
    """The sheet of the scene `env` (a PickIntoSinkEnv) was just reset into (`info`, its
    EpisodeInfo, possibly under a perturbation)."""
    from dynaflip_ros.sim.cell_params import yaw_from_quat_wxyz

    drawn = info.scene.get("perturbation", {})
    added = set(drawn.get("distractors", {}).get("added", ()))
    objects = []
    for name in info.objects:
        pose = env.object_pose(name)
        role = "target" if name == info.object_name else "distractor" if name in added else "scene"
        objects.append(PlacedObject(name=name, role=role, x_cm=round(100 * float(pose[0]), 1),
                                    y_cm=round(100 * float(pose[1]), 1),
                                    yaw_deg=round(math.degrees(yaw_from_quat_wxyz(pose[3:])))))
    return SetupSheet(condition=drawn.get("condition", "nominal"), seed=info.seed, instruction=info.instruction,
                      objects=tuple(objects), notes=tuple(condition_notes(drawn)), reference_image=reference_image)


def condition_notes(drawn: Mapping[str, Any]) -> list[str]:
    """One line per condition the operator must set up beyond the objects (from what
    `sim.perturbations` drew)."""
    notes = []
    if "novel_object" in drawn:
        d = drawn["novel_object"]
        notes.append(f"novel object: {d['target']} instead of {d['replaced']}")
    if "placement" in drawn:
        d = drawn["placement"]
        notes.append(f"placement: the target {100 * d['offset_m']:.1f} cm outside the training region ({d['side']})")
    if "lighting" in drawn:
        d = drawn["lighting"]
        notes.append(f"light: {'dim' if d['scale'] < 1 else 'brighten'} to about {100 * d['scale']:.0f} % of the usual, "
                     f"tinted RGB x{tuple(d['tint'])}, from another direction"
                     + ("; one hard light casting shadows" if d["shadows"] else ""))
    if "texture" in drawn:
        d = drawn["texture"]["table"]
        notes.append(f"table: cover with the {d['texture'].split('_')[1]} cloth (contrast level "
                     f"{d['texture'].rsplit('_', 1)[1]}), colour about RGB {tuple(round(v, 2) for v in d['rgb'])}")
    if "camera_pose" in drawn:
        d = drawn["camera_pose"]
        notes.append(f"camera: move by {tuple(round(100 * v, 1) for v in d['offset_m'])} cm (base frame) and turn "
                     f"by {d['rotation_deg']:.1f} deg; keep the calibrated extrinsics (the shift is the condition)")
    return notes


@dataclass
class PlannedEpisode:
    """One episode of the operator's queue: the session's model, condition and seed, the scene
    (`info`, an EpisodeInfo of the sim cell) and its sheet."""

    model: str
    condition: str
    seed: int
    info: Any
    sheet: SetupSheet


def plan_episodes(log, model: str, env) -> list[PlannedEpisode]:
    """The pending episodes of session `log` (an `eval.ood.SessionLog`) for `model`, seed-major:
    each scene reset in `env` (a PickIntoSinkEnv), its render saved as the sheet's reference
    picture (setup/<model>/<condition>_seed<seed>.png in the session directory)."""
    import imageio.v3 as iio

    from dynaflip_ros.eval.ood import condition_slug
    from dynaflip_ros.sim.perturbations import parse_condition

    queue = []
    for seed in log.session.seeds:
        for cond in log.session.conditions:
            if (model, cond, seed) in log.done:
                continue
            info = env.reset(seed=seed, perturbation=parse_condition(cond))
            ref = log.out / "setup" / model / f"{condition_slug(cond)}_seed{seed}.png"
            ref.parent.mkdir(parents=True, exist_ok=True)
            iio.imwrite(ref, env.camera.read().rgb)
            queue.append(PlannedEpisode(model, cond, seed, info, setup_sheet(env, info, str(ref))))
    return queue


class OperatorCell(Protocol):
    """What the session drives on the cell (the ROS adapter implements it)."""

    def start_episode(self, planned: PlannedEpisode) -> None:
        """Publish the instruction, start recording, start the episode. Raises RuntimeError when
        the cell refuses (e.g. the arm is halted): the episode stays in setup."""

    def stop_episode(self, planned: PlannedEpisode) -> dict:
        """Stop the episode (the arm stops and holds), close the recording; returns telemetry
        for the record ({"safety": {...}, "latency_ms": {...}, "frame": path or None, "camera": {...}})."""


class Phase(str, enum.Enum):
    SETUP = "setup"
    RUNNING = "running"
    DONE = "done"


@dataclass
class OperatorSession:
    """The episode cycle of the module docstring over `queue` (planned episodes not done yet).

    cell: the OperatorCell; clock: seconds (monotonic); timeout_s: longest episode;
    on_finished(planned, record, telemetry): record an episode (record: outcome,
    time_to_success_s, episode_sim_time_s = wall seconds, reason); announce(text): tell the operator.
    """

    queue: Sequence[PlannedEpisode]
    cell: OperatorCell
    clock: Callable[[], float]
    timeout_s: float
    on_finished: Callable[[PlannedEpisode, dict, dict], None]
    announce: Callable[[str], None] = print
    index: int = 0
    phase: Phase = Phase.SETUP
    started_s: float = 0.0
    finished: list[tuple[PlannedEpisode, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s!r}")
        self._announce_next()

    @property
    def current(self) -> PlannedEpisode | None:
        return self.queue[self.index] if self.index < len(self.queue) else None

    def _announce_next(self) -> None:
        p = self.current
        if p is None:
            self.phase = Phase.DONE
            self.announce(f"[eval-ood] session done: {len(self.finished)} episodes recorded")
            return
        self.phase = Phase.SETUP
        self.announce(f"[eval-ood] episode {self.index + 1}/{len(self.queue)} ({p.model}): set up the scene, then "
                      f"confirm (Enter / the confirm service)\n{p.sheet.text()}")

    def confirm(self) -> bool:
        """The scene is ready: start the episode. False (with the reason announced) when not in
        setup or when the cell refuses."""
        if self.phase is not Phase.SETUP:
            self.announce(f"[eval-ood] nothing to confirm ({self.phase.value})")
            return False
        try:
            self.cell.start_episode(self.current)
        except RuntimeError as e:
            self.announce(f"[eval-ood] the cell refused to start: {e}; fix it and confirm again")
            return False
        self.phase, self.started_s = Phase.RUNNING, self.clock()
        self.announce("[eval-ood] running: mark s = success, w = wrong object, f = failed (or the services)")
        return True

    def mark(self, outcome: str, reason: str = "operator") -> bool:
        """End the running episode with `outcome` (OPERATOR_OUTCOMES, or "safety_stop" from the
        driver). False when no episode is running. Raises ValueError for an unknown outcome."""
        if outcome not in (*OPERATOR_OUTCOMES, "safety_stop"):
            raise ValueError(f"unknown outcome {outcome!r}; one of {OPERATOR_OUTCOMES}")
        if self.phase is not Phase.RUNNING:
            return False
        elapsed_s = self.clock() - self.started_s
        p = self.current
        telemetry = self.cell.stop_episode(p)
        record = {"outcome": outcome, "time_to_success_s": elapsed_s if outcome == "success" else None,
                  "episode_sim_time_s": elapsed_s, "reason": reason}
        self.on_finished(p, record, telemetry)
        self.finished.append((p, outcome))
        self.announce(f"[eval-ood] {p.condition} seed {p.seed}: {outcome} after {elapsed_s:.1f} s ({reason})")
        self.index += 1
        self._announce_next()
        return True

    def key(self, text: str) -> bool:
        """A keyboard line: "" confirms in setup; s / w / f mark the running episode."""
        text = text.strip().lower()
        if self.phase is Phase.SETUP and text == "":
            return self.confirm()
        if self.phase is Phase.RUNNING and text in KEYS:
            return self.mark(KEYS[text], "operator (keyboard)")
        self.announce(f"[eval-ood] {text!r}: Enter confirms a setup; s / w / f mark a running episode")
        return False

    def tick(self) -> None:
        """Call periodically: ends a running episode after timeout_s as a timeout."""
        if self.phase is Phase.RUNNING and self.clock() - self.started_s >= self.timeout_s:
            self.mark("timeout", f"no outcome within {self.timeout_s:g} s")

    def safety_stop(self, reason: str) -> None:
        """The driver halted the arm: the running episode ends as a safety stop."""
        if self.phase is Phase.RUNNING:
            self.mark("safety_stop", reason)

    def abort(self) -> None:
        """Stop a running episode without recording it (it is done again on resume)."""
        if self.phase is Phase.RUNNING:
            self.cell.stop_episode(self.current)
            self.phase = Phase.SETUP
            self.announce("[eval-ood] episode aborted, not recorded")
