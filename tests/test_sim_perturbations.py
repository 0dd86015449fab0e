"""OOD conditions of the sim cell (sim/perturbations.py): parsing, seeding and matching (the
same seed gives the same layout under every condition), each family's effect on the scene and
the rendered frame, restoration of the nominal scene, composition."""
from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("mujoco")

from dynaflip_ros.configs.sim import SimConfig  # noqa: E402
from dynaflip_ros.sim.perturbations import (  # noqa: E402
    FAMILIES, NOVEL_COLOUR_ONLY, NOVEL_SHAPE_AND_COLOUR, Condition, Perturbation, parse_condition, parse_conditions,
)
from dynaflip_ros.sim.pick_into_sink import PickIntoSinkEnv  # noqa: E402
from dynaflip_ros.task.catalogue import objects_in_split  # noqa: E402
from dynaflip_ros.task.instructions import instruction_paraphrases  # noqa: E402

SEEDS = (100000, 100001, 100002)


@pytest.fixture(scope="module")
def env():
    e = PickIntoSinkEnv(SimConfig(image_hw=(64, 64)))
    yield e
    e.close()


def layout(env) -> dict[str, np.ndarray]:
    return {n: env.object_pose(n) for n in env.episode.objects}


def frame(env, seed, spec="nominal"):
    info = env.reset(seed=seed, perturbation=parse_condition(spec))
    return info, env.camera.read().rgb.astype(int)


def test_parse_specs_and_errors():
    p = parse_condition("texture:0.25+distractors@novel:0.5+lighting")
    assert p.name == "distractors@novel:0.5+lighting:1+texture:0.25"  # FAMILIES order, canonical
    assert p.families == ["distractors", "lighting", "texture"] and p.severity == 1.0
    assert parse_condition("nominal").name == "nominal" == parse_condition("lighting:0").name
    assert [c.name for c in parse_conditions("lighting:0.5, lighting:0.50,camera_pose")] == ["lighting:0.5",
                                                                                             "camera_pose:1"]
    for bad, match in (("fog", "unknown condition"), ("lighting:1.5", r"\[0, 1\]"), ("lighting:-0.1", r"\[0, 1\]"),
                       ("lighting:nan", r"\[0, 1\]"), ("lighting:x", "not a number"),
                       ("texture@novel:1", "distractors only"), ("distractors@other:1", "distractors only"),
                       ("lighting:0.5+lighting:1", "twice")):
        with pytest.raises(ValueError, match=match):
            parse_condition(bad)
    with pytest.raises(ValueError, match="no condition"):
        parse_conditions(" , ")
    assert set(FAMILIES) == {"distractors", "novel_object", "lighting", "texture", "camera_pose", "placement"}


@pytest.mark.parametrize("seed", SEEDS)
def test_same_seed_same_layout_under_visual_conditions(env, seed):
    env.reset(seed=seed)
    nominal, info0 = layout(env), env.episode
    for spec in ("lighting:1", "texture:1", "camera_pose:1", "lighting:0.5+texture:0.5+camera_pose:0.5"):
        info = env.reset(seed=seed, perturbation=parse_condition(spec))
        assert (info.object_name, info.instruction, info.distractors) == (info0.object_name, info0.instruction,
                                                                          info0.distractors)
        for name, pose in layout(env).items():
            np.testing.assert_allclose(pose, nominal[name], atol=1e-9)


@pytest.mark.parametrize("seed", SEEDS)
def test_distractors_join_the_unchanged_scene_near_the_target(env, seed):
    env.reset(seed=seed)
    nominal, info0 = layout(env), env.episode
    for split, severity in (("train", 0.5), ("train", 1.0), ("novel", 1.0)):
        info = env.reset(seed=seed, perturbation=Perturbation((Condition("distractors", severity, split),)))
        added = info.distractors[len(info0.distractors):]
        assert info.distractors[:len(info0.distractors)] == info0.distractors and info.object_name == info0.object_name
        assert 1 <= len(added) <= math.ceil(4 * severity) and set(added) <= set(objects_in_split(split))
        assert not set(added) & set(info0.objects)
        for name, pose in nominal.items():
            np.testing.assert_allclose(env.object_pose(name), pose, atol=1e-9)
        target = env.object_pose(info.object_name)[:2]
        for name in added:
            clearance = (np.linalg.norm(env.object_pose(name)[:2] - target) - env.object_specs[name].radius_xy_m
                         - env.object_specs[info.object_name].radius_xy_m)
            assert env.config.min_object_gap_m < clearance < env.config.min_object_gap_m + 0.05
        assert info.instruction in instruction_paraphrases(info.object_name, info.objects)  # still unambiguous
        assert env.outcome() is None


@pytest.mark.parametrize("seed", SEEDS)
def test_novel_target_replaces_the_target_in_place(env, seed):
    env.reset(seed=seed)
    nominal, info0 = layout(env), env.episode
    for severity, pool in ((0.5, NOVEL_COLOUR_ONLY), (1.0, NOVEL_SHAPE_AND_COLOUR)):
        info = env.reset(seed=seed, perturbation=parse_condition(f"novel_object:{severity}"))
        assert info.object_name in pool and info.distractors == info0.distractors
        assert info.instruction in instruction_paraphrases(info.object_name, info.objects)
        assert np.linalg.norm(env.object_pose(info.object_name)[:2] - nominal[info0.object_name][:2]) <= 0.06 + 1e-9
        assert env.object_pose(info0.object_name)[2] < -0.5  # the nominal target is parked off the table
        for name in info0.distractors:
            np.testing.assert_allclose(env.object_pose(name), nominal[name], atol=1e-9)


@pytest.mark.parametrize("seed", SEEDS)
def test_placement_moves_only_the_target_outside_the_training_region(env, seed):
    env.reset(seed=seed)
    nominal, info0 = layout(env), env.episode
    (x0, x1), (y0, y1) = env.config.object_region_x_m, env.config.object_region_y_m
    for severity in (0.25, 1.0):
        info = env.reset(seed=seed, perturbation=parse_condition(f"placement:{severity}"))
        x, y = env.object_pose(info.object_name)[:2]
        outside = max(x0 - x, x - x1, y0 - y, y - y1)
        assert outside == pytest.approx(0.015 + 0.045 * severity, abs=2e-3)  # after settling
        assert info.instruction == info0.instruction
        for name in info0.distractors:
            np.testing.assert_allclose(env.object_pose(name), nominal[name], atol=1e-9)


def test_each_family_changes_the_frame_and_severity_zero_does_not(env):
    seed = SEEDS[0]
    _, nominal = frame(env, seed)
    diffs = {}
    for family in FAMILIES:
        _, zero = frame(env, seed, f"{family}:0")
        assert np.array_equal(zero, nominal), family
        diffs[family] = {s: float(np.abs(frame(env, seed, f"{family}:{s}")[1] - nominal).mean()) for s in (0.5, 1.0)}
    for family, d in diffs.items():
        assert d[1.0] > 0.3, (family, d)  # mean absolute pixel change (0..255)
    for family in ("lighting", "texture", "camera_pose"):  # continuous severities: more is more
        assert diffs[family][1.0] > diffs[family][0.5], (family, diffs[family])
    info, dark = frame(env, seed, "lighting:1")
    assert info.scene["perturbation"]["lighting"]["shadows"] and env.model.light_castshadow[0]
    _, again = frame(env, seed)  # restored: the nominal scene renders exactly as before
    assert np.array_equal(again, nominal) and not env.model.light_castshadow.any()


def test_draws_are_seeded_and_do_not_depend_on_composition(env):
    seed = SEEDS[1]
    a, fa = frame(env, seed, "lighting:0.7+texture:0.7")
    b, fb = frame(env, seed, "lighting:0.7+texture:0.7")
    assert np.array_equal(fa, fb) and a.scene == b.scene
    alone, _ = frame(env, seed, "lighting:0.7")
    assert alone.scene["perturbation"]["lighting"] == a.scene["perturbation"]["lighting"]
    other, _ = frame(env, SEEDS[2], "lighting:0.7")
    assert other.scene["perturbation"]["lighting"] != alone.scene["perturbation"]["lighting"]
