"""`dynaflip embedding-shift` (eval/embedding_shift.py): relative shift and scene retrieval on
points whose answer is known, the scenes it embeds, and the command with the shipped encoder."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from dynaflip_ros.cli import main
from dynaflip_ros.episodes.record import t_interval
from dynaflip_ros.eval.embedding_shift import ShiftReport, embedding_shift, shift_stats, start_frames

ROOT = Path(__file__).resolve().parents[1]


def test_relative_shift_is_the_seed_distance_over_the_mean_nominal_distance():
    nominal = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])  # pair distances 3, 4, 5: mean 4
    perturbed = nominal + np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    s = shift_stats(nominal, perturbed)
    assert s.relative_shift == pytest.approx([0.25, 0.5, 0.0])
    assert s.mean == pytest.approx(0.25)
    half = 4.302652729911275 * 0.25 / math.sqrt(3)  # t_{0.975, 2} * s / sqrt(3), s = 0.25
    assert (s.ci_low, s.ci_high) == pytest.approx((0.25 - half, 0.25 + half))
    assert (s.retrieved, s.n) == (3, 3) and s.retrieval_ci[1] == 1.0


def test_retrieval_counts_seeds_that_land_nearest_to_their_own_scene():
    nominal = np.array([[0.0], [10.0], [20.0], [30.0]])
    perturbed = np.array([[1.0], [19.0], [21.0], [5.0]])  # seed 1 lands on seed 2's scene, seed 3 on seed 0's
    s = shift_stats(nominal, perturbed)
    assert (s.retrieved, s.n) == (2, 4)
    assert s.relative_shift == pytest.approx(np.array([1, 9, 1, 25]) / (100 / 6))  # mean pair distance 100/6


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="one shape"):
        shift_stats(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="at least 2 seeds"):
        shift_stats(np.zeros((1, 2)), np.zeros((1, 2)))
    with pytest.raises(ValueError, match="undefined"):
        shift_stats(np.ones((3, 2)), np.zeros((3, 2)))
    assert t_interval([]) == (None, None, None) and t_interval([2.0]) == (2.0, None, None)


def test_report_round_trips_through_json():
    s = shift_stats(np.array([[0.0], [1.0], [3.0]]), np.array([[0.5], [1.0], [2.0]]))
    r = ShiftReport(encoder={"weights_sha256": "ab"}, seeds=[5, 6, 7], conditions=["lighting:0.1"],
                    stats={"output": {"lighting:0.1": s}})
    assert ShiftReport.from_dict(json.loads(json.dumps(r.to_dict()))) == r


class MeanColour:
    """A stand-in encoder: the mean RGB of the image (3 numbers)."""

    class manifest:  # noqa: N801 - the attribute EncoderBackend has
        weights_sha256 = "mean-colour"

    def embed(self, images: np.ndarray) -> np.ndarray:
        return images.reshape(len(images), -1, 3).mean(axis=1)


def test_frames_are_the_seeded_scenes_and_lighting_moves_a_colour_encoder():
    from dynaflip_ros.configs.sim import SimConfig
    from dynaflip_ros.sim.pick_into_sink import PickIntoSinkEnv

    env = PickIntoSinkEnv(SimConfig())
    try:
        a = start_frames(env, [100000, 100001], "nominal")
        b = start_frames(env, [100000, 100001], "nominal")
        assert a.dtype == np.uint8 and a.shape[0] == 2 and np.array_equal(a, b)  # a seed is one scene
        assert not np.array_equal(a[0], a[1])
        report = embedding_shift(MeanColour(), env, [100000, 100001, 100002], ["lighting:1"])
    finally:
        env.close()
    assert report.conditions == ["lighting:1"] and list(report.stats) == ["output"]  # nominal is the reference
    assert report.stats["output"]["lighting:1"].mean > 0.5  # full-severity lighting changes the mean colour


def test_command_with_the_shipped_encoder(tmp_path, capsys):
    out = tmp_path / "shift.json"
    rc = main(["embedding-shift", "--encoder", str(ROOT / "models" / "encoder"), "--seeds", "100000-100002",
               "--conditions", "lighting:0.1,distractors:0.5", "--threads", "1", "--out", str(out)])
    assert rc == 0
    report = ShiftReport.from_dict(json.loads(out.read_text()))
    assert report.seeds == [100000, 100001, 100002] and report.conditions == ["lighting:0.1", "distractors:0.5"]
    assert set(report.stats) == {"output", "embedding"}  # the shipped encoder outputs patch tokens too
    assert all(s.n == 3 and s.mean > 0 for per in report.stats.values() for s in per.values())
    assert "relative shift" in capsys.readouterr().out
    assert main(["embedding-shift", "--encoder", str(ROOT / "models" / "encoder"), "--seeds", "100000",
                 "--conditions", "lighting:0.1"]) == 2  # one seed: no distance between scenes
    assert main(["embedding-shift", "--encoder", str(ROOT / "models" / "encoder"), "--conditions", "nominal"]) == 2
    assert "besides nominal" in capsys.readouterr().err
