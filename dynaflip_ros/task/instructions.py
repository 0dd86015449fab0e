"""Language of the Pick-into-Sink task: instructions that name one object of the scene, and the
sentences that describe what happens in a clip (the language of a DynaFLIP training triplet).

Referring expression (`referring_expressions`): the target is named by colour ("the red one"),
by shape ("the cube") or by both ("the red cube"), with the catalogue's synonyms ("the red
block"). Only expressions that pick out exactly one object of the scene are used: colour alone
when no other object on the table shares the colour, shape alone when none shares the shape.
Instruction (`instruction_paraphrases`): a template ("put {ref} in the sink", "drop {ref} into
the basin", ...) filled with a referring expression. Clip language (`clip_sentences`): per expert
phase, several paraphrases that mention the target ("lift {ref} off the table"); the sampler
draws one per use, so each epoch sees different wording (docs/method.md).

Deterministic for a given `numpy.random.Generator`. Imports nothing but the catalogue.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from dynaflip_ros.task.catalogue import ObjectSpec, get_object

INSTRUCTION_TEMPLATES: tuple[str, ...] = (
    "put {ref} in the sink",
    "pick {ref} into the sink",
    "drop {ref} into the basin",
    "place {ref} in the sink",
    "move {ref} to the sink",
    "pick up {ref} and put it in the sink",
    "put {ref} into the basin",
    "take {ref} and drop it in the sink",
)

# Phase -> paraphrases of what the arm does in a clip of that phase (data.schema.PHASES order).
CLIP_TEMPLATES: dict[str, tuple[str, ...]] = {
    "approach": ("move the gripper above {ref}", "reach toward {ref}", "go to {ref}",
                 "bring the open gripper over {ref}"),
    "descend": ("lower the gripper onto {ref}", "move down to {ref}", "descend on {ref}"),
    "grasp": ("close the gripper on {ref}", "grasp {ref}", "grab {ref}"),
    "lift": ("lift {ref} off the table", "raise {ref}", "pick up {ref}"),
    "carry": ("carry {ref} over the sink", "move {ref} above the basin", "bring {ref} to the sink"),
    "release": ("drop {ref} into the sink", "release {ref} into the basin", "let go of {ref} over the sink"),
    "retreat": ("move the gripper away from the sink", "pull the arm back from the basin",
                "retreat after dropping {ref}"),
}
# A clip in which neither the arm nor any object moves (see data.triplets: such clips are kept
# only at a set share, with this language).
STILL_SENTENCES: tuple[str, ...] = ("hold still", "keep the arm where it is", "wait without moving")


@dataclass(frozen=True)
class Referent:
    """How an instruction names its target: `text` ("the red cube"), `mode` ("colour",
    "shape" or "both") and the object's catalogue name."""

    text: str
    mode: str
    object_name: str


def _shares(spec: ObjectSpec, others: Sequence[ObjectSpec], attr: str) -> bool:
    return any(getattr(o, attr) == getattr(spec, attr) for o in others)


def referring_expressions(target: str, scene: Sequence[str]) -> list[Referent]:
    """Every unambiguous way to name `target` among the objects `scene` (which contains it):
    all synonyms of colour + shape, colour alone ("the red one", "the red object") when no other
    scene object has that colour, shape alone when none has that shape. Raises ValueError when
    the target is not in the scene or an object is not in the catalogue."""
    if target not in scene:
        raise ValueError(f"target {target!r} is not in the scene {list(scene)}")
    spec = get_object(target)
    others = [get_object(n) for n in scene if n != target]
    out = [Referent(f"the {c} {s}", "both", target) for c in spec.colour_words for s in spec.shape_words]
    if not _shares(spec, others, "colour"):
        out += [Referent(f"the {c} {noun}", "colour", target) for c in spec.colour_words for noun in ("one", "object")]
    if not _shares(spec, others, "shape"):
        out += [Referent(f"the {s}", "shape", target) for s in spec.shape_words]
    return out


def instruction_paraphrases(target: str, scene: Sequence[str]) -> list[str]:
    """Every instruction (template x unambiguous referring expression) naming `target` in
    `scene`, in a fixed order. Raises ValueError as `referring_expressions`."""
    refs = referring_expressions(target, scene)
    return [t.format(ref=r.text) for t in INSTRUCTION_TEMPLATES for r in refs]


def sample_instruction(target: str, scene: Sequence[str], rng: np.random.Generator) -> str:
    """One instruction for `target` in `scene`: the referring mode (colour / shape / both, among
    those that are unambiguous) drawn first, so 'both' is not favoured for having more synonyms;
    then an expression of that mode and a template."""
    refs = referring_expressions(target, scene)
    modes = sorted({r.mode for r in refs})
    mode = modes[int(rng.integers(len(modes)))]
    pool = [r for r in refs if r.mode == mode]
    ref = pool[int(rng.integers(len(pool)))]
    return INSTRUCTION_TEMPLATES[int(rng.integers(len(INSTRUCTION_TEMPLATES)))].format(ref=ref.text)


def clip_sentences(phase: str | None, target: str | None) -> tuple[str, ...]:
    """The paraphrases describing a clip of expert `phase` ("approach", ..., or "still" for a
    clip without motion) about `target` (a catalogue name; "the object" when None). Every
    referring expression of the target by colour + shape is used (no scene context is needed:
    colour + shape is unique in the catalogue). Raises ValueError on an unknown phase."""
    if phase == "still":
        return STILL_SENTENCES
    if phase not in CLIP_TEMPLATES:
        raise ValueError(f"unknown phase {phase!r}; one of {list(CLIP_TEMPLATES)} or 'still'")
    if target is None:
        refs = ["the object"]
    else:
        spec = get_object(target)
        refs = [f"the {c} {s}" for c in spec.colour_words for s in spec.shape_words]
    return tuple(dict.fromkeys(t.format(ref=r) for t in CLIP_TEMPLATES[phase] for r in refs))
