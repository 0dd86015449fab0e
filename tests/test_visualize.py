"""`dynaflip visualize` (eval/visualize.py): patch-feature PCA and policy Grad-CAM."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dynaflip_ros.cli import main
from dynaflip_ros.eval.visualize import grad_cam, pca_rgb
from synthetic_dataset import write_synthetic_dataset

MODELS = Path(__file__).resolve().parents[1] / "models"


def test_pca_separates_two_kinds_of_cells_and_is_deterministic():
    rng = np.random.default_rng(0)
    maps = rng.normal(scale=0.01, size=(2, 8, 4, 4))
    maps[:, :, :2] += rng.normal(size=8)[None, :, None, None] * 5  # top half: one feature vector
    rgb = pca_rgb(maps)
    assert rgb.shape == (2, 4, 4, 3) and rgb.min() >= 0 and rgb.max() <= 1
    first = rgb[..., 0]
    assert abs(first[:, :2].mean() - first[:, 2:].mean()) > 0.9  # the first component splits the halves
    assert np.array_equal(pca_rgb(maps), rgb)
    assert np.allclose(pca_rgb(maps + 3.0), rgb)  # centred: a common offset changes no colour
    with pytest.raises(ValueError, match="token_maps"):
        pca_rgb(maps[:, :2])


def test_grad_cam_weights_channels_by_their_mean_gradient():
    a = np.zeros((2, 2, 2))
    a[0, 0, 0], a[1, 1, 1] = 1.0, 1.0
    g = np.stack([np.full((2, 2), 0.5), np.full((2, 2), -1.0)])  # channel 0 pushes S up, channel 1 down
    cam = grad_cam(a, g)
    assert cam[0, 0] == 1.0 and cam[1, 1] == 0.0 and cam.sum() == 1.0
    assert not grad_cam(a, np.zeros_like(a)).any()
    with pytest.raises(ValueError):
        grad_cam(a, g[:1])


def test_visualize_with_the_shipped_encoder_and_policy(tmp_path):
    ds = write_synthetic_dataset(tmp_path / "ds", n_episodes=2, length=16, idle_tail=2)
    args = ["visualize", "--dataset", str(ds), "--encoder", str(MODELS / "encoder"), "--policy", str(MODELS / "policy"),
            "--episodes", "0,1", "--frame-index", "3", "--noise-samples", "2", "--threads", "1"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    report = json.loads((tmp_path / "a" / "analysis.json").read_text())
    assert report["feature_map"] == [40, 24, 24]  # the stride-8 token map of the shipped export
    frames = report["frames"]
    assert [(f["episode"], f["frame_index"]) for f in frames] == [(0, 3), (1, 3)]
    assert all(f["saliency_s"] > 0 for f in frames)
    for name in [f["image"] for f in frames] + ["overview.png"]:
        assert (tmp_path / "a" / name).stat().st_size > 5000
    assert main(args + ["--out", str(tmp_path / "b")]) == 0  # seeded: the same scalar again
    again = json.loads((tmp_path / "b" / "analysis.json").read_text())["frames"]
    assert [f["saliency_s"] for f in again] == pytest.approx([f["saliency_s"] for f in frames], rel=1e-6)
    assert main(["visualize", "--dataset", str(ds), "--encoder", str(MODELS / "encoder"), "--episodes", "5",
                 "--out", str(tmp_path / "c")]) == 2  # no such episode row: one line, exit 2
