"""task.instructions: unambiguous referring expressions, instruction paraphrases and sampling,
clip sentences."""
from __future__ import annotations

import numpy as np
import pytest

from dynaflip_ros.task.catalogue import CATALOGUE, get_object
from dynaflip_ros.task.instructions import (
    CLIP_TEMPLATES,
    clip_sentences,
    instruction_paraphrases,
    referring_expressions,
    sample_instruction,
)


def _named(text: str, scene: list[str]) -> set[str]:
    """Objects of `scene` a referring expression fits (colour / shape words of the catalogue)."""
    words = text.removeprefix("the ")
    out = set()
    for n in scene:
        o = get_object(n)
        fits = ({f"{c} {s}" for c in o.colour_words for s in o.shape_words} | set(o.shape_words)
                | {f"{c} {w}" for c in o.colour_words for w in ("one", "object")})
        if words in fits:
            out.add(n)
    return out


def test_every_referring_expression_names_exactly_the_target():
    rng = np.random.default_rng(0)
    names = list(CATALOGUE)
    for _ in range(200):
        scene = list(rng.choice(names, size=int(rng.integers(1, 5)), replace=False))
        target = scene[int(rng.integers(len(scene)))]
        refs = referring_expressions(target, scene)
        assert {r.mode for r in refs} >= {"both"}
        for r in refs:
            assert _named(r.text, scene) == {target}, (r, scene)


def test_colour_or_shape_alone_only_when_unambiguous():
    modes = lambda t, s: {r.mode for r in referring_expressions(t, s)}  # noqa: E731
    assert modes("red cube", ["red cube", "blue bar"]) == {"both", "colour", "shape"}
    assert modes("red cube", ["red cube", "green cube"]) == {"both", "colour"}  # two cubes
    assert modes("green cube", ["green cube", "green cylinder"]) == {"both", "shape"}  # two green things
    assert modes("green cube", ["green cube", "green cylinder", "red cube"]) == {"both"}
    with pytest.raises(ValueError, match="not in the scene"):
        referring_expressions("red cube", ["blue bar"])
    with pytest.raises(ValueError, match="unknown object"):
        referring_expressions("teal torus", ["teal torus"])


def test_sampled_instructions_vary_and_stay_paraphrases():
    scene = ["red cube", "blue bar", "yellow ball"]
    rng = np.random.default_rng(1)
    drawn = [sample_instruction("red cube", scene, rng) for _ in range(100)]
    allowed = set(instruction_paraphrases("red cube", scene))
    assert set(drawn) <= allowed and len(set(drawn)) > 20
    assert any("the red one" in d or "the red object" in d for d in drawn)  # colour only
    assert any(d.endswith(("the cube in the sink", "the block into the basin")) or " the box " in d for d in drawn)
    again = np.random.default_rng(1)
    assert drawn == [sample_instruction("red cube", scene, again) for _ in range(100)]  # seeded


def test_clip_sentences_per_phase():
    for phase in CLIP_TEMPLATES:
        s = clip_sentences(phase, "white mug")
        assert len(s) >= 3 and len(set(s)) == len(s)
        if phase != "retreat":
            assert all("mug" in x or "cup" in x for x in s)
    assert all("object" in x or "gripper" in x or "arm" in x for x in clip_sentences("approach", None))
    assert clip_sentences("still", "red cube") and all("red" not in x for x in clip_sentences("still", "red cube"))
    with pytest.raises(ValueError, match="unknown phase"):
        clip_sentences("wave", "red cube")
