"""SimCamera rendering (CPU offscreen): image shape/dtype, planar metric depth, intrinsics, and
point tracks that project (K) onto the target object's pixels."""
from __future__ import annotations

import threading

import numpy as np
import pytest

pytest.importorskip("mujoco")

from dynaflip_ros.cameras.base import Camera  # noqa: E402
from dynaflip_ros.configs.sim import SimConfig  # noqa: E402
from dynaflip_ros.sim.pick_into_sink import PickIntoSinkEnv  # noqa: E402
from dynaflip_ros.task.catalogue import CATALOGUE  # noqa: E402

HW = (120, 160)  # non-square: catches an H/W swap


@pytest.fixture(scope="module")
def env():
    e = PickIntoSinkEnv(SimConfig(image_hw=HW))
    yield e
    e.close()


def segmentation(env) -> np.ndarray:
    """(H, W) geom id per pixel (-1 background), same camera, separate renderer."""
    import mujoco

    h, w = env.config.image_hw
    with mujoco.Renderer(env.model, height=h, width=w) as r:
        r.update_scene(env.data, camera=env.camera.camera_name)
        r.enable_segmentation_rendering()
        seg = r.render()  # (H, W, 2): object id, object type
    ids = seg[..., 0].copy()
    ids[seg[..., 1] != int(mujoco.mjtObj.mjOBJ_GEOM)] = -1
    return ids


def test_frame_shape_dtype_depth_and_intrinsics(env):
    assert isinstance(env.camera, Camera)
    env.reset(seed=0)
    f = env.camera.read()
    h, w = HW
    assert f.rgb.shape == (h, w, 3) and f.rgb.dtype == np.uint8
    assert f.depth.shape == (h, w) and f.depth.dtype == np.float32
    assert f.stamp_s == env.sim_time_s and f.frame_id == "camera_color_optical_frame"
    assert f.rgb.std() > 10  # not a blank image
    # The camera frames the work area from 0.6-0.9 m (docs/hardware.md §4): the table centre is there.
    centre = f.depth[h // 2 - 5:h // 2 + 5, w // 2 - 5:w // 2 + 5]
    assert 0.6 < float(np.median(centre)) < 0.9
    assert f.depth.min() > 0.2 and f.depth.max() < 3.0
    k = f.intrinsics
    assert (k.width, k.height) == (w, h)
    fovy = np.deg2rad(env.config.camera_fovy_deg)
    assert k.fy == pytest.approx(h / 2 / np.tan(fovy / 2)) and k.fx == pytest.approx(k.fy)
    # Planar depth: a table point deprojected with K and its depth lies on the table plane z = 0.
    t = env.camera_pose_optical()
    for v, u in [(h - 3, 3), (h - 3, w - 4), (h // 2, w // 2)]:
        z = float(f.depth[v, u])
        p_cam = np.array([(u - k.cx) / k.fx * z, (v - k.cy) / k.fy * z, z])
        p_base = t[:3, :3] @ p_cam + t[:3, 3]
        assert abs(p_base[2]) < 2e-3, (u, v, p_base)
    f2 = env.camera.read()
    assert f2.sequence == f.sequence + 1


@pytest.mark.parametrize("seed", [0, 1])
def test_point_tracks_project_onto_the_target_object(env, seed):
    for name in CATALOGUE:  # alone on the table: nothing occludes it
        env.reset(seed=seed, object_name=name, objects=[name])
        f = env.camera.read()
        tracks = env.point_tracks()
        assert tracks.shape == (32, 3) and tracks.dtype == np.float32
        assert np.all(tracks[:, 2] > 0.3)  # in front of the camera
        k = f.intrinsics.matrix()
        uvw = tracks.astype(float) @ k.T  # (32, 3)
        uv = uvw[:, :2] / uvw[:, 2:3]
        px = np.round(uv).astype(int)
        h, w = HW
        assert np.all((px[:, 0] >= 0) & (px[:, 0] < w) & (px[:, 1] >= 0) & (px[:, 1] < h))
        seg = segmentation(env)
        body = env.model.body(env.object_specs[name].body).id
        mask = np.isin(seg, np.flatnonzero(env.model.geom_bodyid == body))  # every part
        assert mask.sum() > 10
        # dilate the mask by one pixel (points on the silhouette edge)
        grown = mask.copy()
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                grown |= np.roll(np.roll(mask, dy, 0), dx, 1)
        inside = grown[px[:, 1], px[:, 0]]
        assert inside.mean() >= 0.95, (name, inside.mean())
        # Depth agrees: the rendered surface is never behind a track point, and the visible
        # points (front faces) sit on the rendered surface (planar Z, not ray length).
        d = f.depth[px[:, 1], px[:, 0]]
        pad = np.pad(f.depth, 1, mode="edge")
        d_min = np.min([pad[px[:, 1] + 1 + dy, px[:, 0] + 1 + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)
        assert np.all(d_min <= tracks[:, 2] + 4e-3)  # (3x3 neighbourhood: silhouette-edge points)
        visible = np.abs(d - tracks[:, 2]) < 4e-3
        assert visible.sum() >= 5, (name, visible.sum())
        # The colour under the visible points is the object's colour family.
        rgba = np.asarray(env.object_specs[name].rgba[:3])
        colours = f.rgb[px[visible, 1], px[visible, 0]].astype(float) / 255
        # The colour under the visible points has the object's hue (shading scales it).
        mean = colours.mean(axis=0)
        cosine = float(mean @ rgba / (np.linalg.norm(mean) * np.linalg.norm(rgba)))
        assert cosine > 0.97, (name, mean, rgba)


def test_point_tracks_follow_the_object(env):
    env.reset(seed=3, object_name="blue bar")
    before = env.point_tracks()
    pose = env.object_pose()
    env.place_object("blue bar", pose[0] + 0.05, pose[1], yaw_rad=0.0)
    after = env.point_tracks()
    shift = np.linalg.norm(after.mean(0) - before.mean(0))
    assert 0.04 < shift < 0.07
    # rigid: pairwise distances preserved
    dist = lambda p: np.linalg.norm(p[:, None] - p[None], axis=-1)  # noqa: E731
    np.testing.assert_allclose(dist(after), dist(before), atol=1e-5)


def test_read_from_another_thread_and_close(env):
    env.reset(seed=4)
    out = {}

    def worker():
        out["frame"] = env.camera.read()

    th = threading.Thread(target=worker)
    th.start()
    th.join(30)
    assert out["frame"].rgb.shape == (*HW, 3)
    cam = env.camera
    cam.disconnect()
    cam.disconnect()  # idempotent
    assert cam.read().rgb.shape == (*HW, 3)  # reconnects lazily
