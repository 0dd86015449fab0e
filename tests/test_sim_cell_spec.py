"""The MjSpec cell (`sim.cell.build_model`) compiles to pinned values: every numeric array of the
compiled `mujoco.MjModel`, its opt / vis / stat fields and the names buffer equal, bit for bit,
tests/data/sim_cell_model.json.gz, for several configs built with the original four objects
(the catalogue of `task.catalogue` kept their geometry; the whole-catalogue cell is checked
in tests/test_sim_cell.py). That file was written from the cell's
earlier MJCF text builder (`sim/cell_mjcf.py`, deleted since) when both builders compiled to the
same model, so the MjSpec cell is pinned to the model the text described. tex_data (the 256x256
checker) is pinned by its sha256. A few numbers are also pinned by hand below.

Since issue 12 the cell also carries the OOD surface textures (`cell.ood_texture_name`, unused by
the nominal scene) and a shadow map (`cell.SHADOW_MAP_SIZE`, drawn only while a light casts a
shadow): the pinned comparison removes exactly these two additions from the spec (`_without_ood`),
so everything else is still bit for bit the pinned model, and the additions are pinned by hand."""
from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mujoco")

import dynaflip_ros.sim  # noqa: E402,F401  (picks MUJOCO_GL before mujoco is imported)
import mujoco  # noqa: E402

from dynaflip_ros.configs.sim import ORIGINAL_OBJECT_NAMES, SimConfig  # noqa: E402
from dynaflip_ros.sim import cell  # noqa: E402

PINNED = Path(__file__).resolve().parent / "data" / "sim_cell_model.json.gz"

CONFIGS = {
    # The original four-object cell: the catalogue keeps their geometry, so it is unchanged.
    "default": (SimConfig(objects=ORIGINAL_OBJECT_NAMES), False),
    "arm_only": (SimConfig(tcp_offset_m=0.12), True),
    "varied": (SimConfig(image_hw=(480, 640), timestep_s=0.001, camera_fovy_deg=58.0,
                         camera_target_m=(0.2, 0.05, 0.0), camera_range_m=1.1, camera_tilt_deg=40.0,
                         camera_azimuth_deg=30.0, camera_znear_m=0.02, camera_zfar_m=3.0,
                         objects=("yellow ball", "blue bar"), sink_center_xy_m=(0.25, 0.2),
                         sink_inner_size_m=(0.2, 0.12), sink_wall_height_m=0.09, tcp_offset_m=0.17,
                         gripper_max_force_n=35.0), False),
}


def _arrays(m) -> dict[str, np.ndarray]:
    """Every numeric array of an MjModel, plus its opt / vis / stat fields."""
    out = {}
    for name in dir(m):
        v = getattr(m, name, None) if not name.startswith("_") else None
        if isinstance(v, np.ndarray):
            out[name] = v
    for group in ("opt", "vis", "stat"):
        g = getattr(m, group)
        for name in (n for n in dir(g) if not n.startswith("_")):
            v = getattr(g, name)
            if isinstance(v, (int, float, np.ndarray)):
                out[f"{group}.{name}"] = np.asarray(v)
            elif type(v).__module__.startswith("mujoco"):
                for sub in (n for n in dir(v) if not n.startswith("_")):
                    w = getattr(v, sub)
                    if isinstance(w, (int, float, np.ndarray)):
                        out[f"{group}.{name}.{sub}"] = np.asarray(w)
    return out


@pytest.fixture(scope="module")
def pinned() -> dict:
    return json.loads(gzip.decompress(PINNED.read_bytes()))


def _without_ood(spec):
    """The spec minus the OOD additions (module docstring)."""
    for t in list(spec.textures):
        if t.name.startswith("ood_"):
            spec.delete(t)
    spec.visual.quality.shadowsize = 0
    return spec


@pytest.mark.parametrize("key", sorted(CONFIGS))
def test_spec_compiles_to_the_pinned_model(key, pinned):
    cfg, arm_only = CONFIGS[key]
    m = _without_ood(cell.build_cell_spec(cfg, arm_only=arm_only)).compile()
    arrays = _arrays(m)
    arrays["names"] = np.frombuffer(m.names, dtype=np.uint8)
    want = {k.split("/", 1)[1]: v for k, v in pinned.items() if k.startswith(key + "/")}
    assert len(want) > 300 and set(want) <= set(arrays), sorted(set(want) - set(arrays))
    for name, (dtype, shape, values) in sorted(want.items()):
        got = np.asarray(arrays[name])
        assert list(got.shape) == shape, name
        if dtype == "sha256":
            assert hashlib.sha256(got.tobytes()).hexdigest() == values, name
        else:
            assert str(got.dtype) == dtype, name
            np.testing.assert_array_equal(got, np.asarray(values, dtype=dtype).reshape(shape), err_msg=name)


def test_pinned_cell_numbers():
    m = cell.build_model(SimConfig(objects=ORIGINAL_OBJECT_NAMES))
    assert (m.nbody, m.njnt, m.ngeom, m.nu, m.nsite, m.ncam, m.nlight, m.nmat, m.ntex) == (
        16, 12, 29, 14, 2, 1, 2, 9, 1 + 2 * cell.OOD_TEXTURE_LEVELS)
    assert m.vis.quality.shadowsize == cell.SHADOW_MAP_SIZE and not m.light_castshadow.any()
    assert [m.texture(i).name for i in range(1, m.ntex)] == [cell.ood_texture_name(k, lv) for lv in range(1, 5)
                                                             for k in cell.OOD_TEXTURE_KINDS]
    assert (m.mat_texid[:, mujoco.mjtTextureRole.mjTEXROLE_RGB] >= 0).sum() == 1  # only the floor's grid is used
    np.testing.assert_allclose(m.cam_pos[0], [0.6288611491, 0.0, 0.6953216354], rtol=0, atol=1e-15)
    np.testing.assert_allclose(m.cam_quat[0], [0.6743797232030359, 0.2126311099829864, 0.2126311099829864,
                                               0.6743797232030357], rtol=0, atol=1e-15)
    np.testing.assert_allclose(m.body_pos[m.body("upper_arm_link").id], [0.0, 0.0, 0.1519], rtol=0, atol=0)
    np.testing.assert_allclose(m.light_dir[0], [-0.19245008972987523, 0.19245008972987523, -0.9622504486493761],
                               rtol=0, atol=1e-15)
    assert list(m.light_type) == [int(mujoco.mjtLightType.mjLIGHT_DIRECTIONAL)] * 2
    assert m.opt.timestep == 0.002 and m.opt.impratio == 10.0
    assert m.opt.integrator == mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    np.testing.assert_array_equal(m.geom_friction[m.geom("left_pad").id], [1.5, 0.02, 0.002])
    np.testing.assert_array_equal(m.actuator_gainprm[0][:3], [3000.0, 0.0, 0.0])
    np.testing.assert_array_equal(m.actuator_biasprm[0][:3], [0.0, -3000.0, 0.0])
    np.testing.assert_array_equal(m.actuator_biasprm[6][:3], [0.0, 0.0, -100.0])
