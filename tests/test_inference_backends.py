"""Encoder backends (torch / ONNX Runtime / TensorRT) and `load_encoder_backend`'s fallback rules."""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from dynaflip_ros.encoder.manifest import EncoderManifest
from dynaflip_ros.errors import UserError
from dynaflip_ros.export.artifact import BackendUnavailableError, EncoderArtifactError
from dynaflip_ros.export.onnx_export import export_onnx
from dynaflip_ros.export.parity import synthetic_scene_images
from dynaflip_ros.export.tensorrt_engine import TensorRTUnavailableError, tensorrt_unavailable_reason
from dynaflip_ros.inference.base import EncoderBackend
from dynaflip_ros.inference.factory import load_encoder_backend
from dynaflip_ros.inference.onnxruntime_backend import OnnxRuntimeEncoderBackend

from encoder_artifact import EMBEDDING_DIM, make_encoder_dir

REPO = Path(__file__).resolve().parents[1]
TRT_REASON = tensorrt_unavailable_reason()


def _export(enc: Path, out: Path) -> None:
    export_onnx(enc, out, parity_batch_sizes=(2,), n_parity_images=2, num_threads=2, show_progress=False)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    enc = tmp_path_factory.mktemp("enc")
    make_encoder_dir(enc, seed=0)
    out = tmp_path_factory.mktemp("exported")
    _export(enc, out)
    return out


@pytest.fixture(scope="module")
def other_export(tmp_path_factory) -> Path:
    """An export of different weights (same architecture), for swap tests."""
    enc = tmp_path_factory.mktemp("enc_other")
    make_encoder_dir(enc, seed=1)
    out = tmp_path_factory.mktemp("exported_other")
    _export(enc, out)
    return out


@pytest.fixture()
def images() -> np.ndarray:
    return synthetic_scene_images(3, (120, 160), seed=4)  # (3, 120, 160, 3) uint8


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit_manifest(d: Path, **changes) -> None:
    m = EncoderManifest.from_json(d / "manifest.json")
    dataclasses.replace(m, **changes).to_json(d / "manifest.json")


def test_onnxruntime_backend_does_not_import_torch(exported):
    code = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        from dynaflip_ros.inference.factory import load_encoder_backend
        enc = load_encoder_backend({str(exported)!r}, backend="onnxruntime",
                                   onnxruntime_options={{"intra_op_num_threads": 1}})
        emb = enc.embed(np.zeros((2, 64, 64, 3), np.uint8))
        assert emb.shape == (2, {EMBEDDING_DIM}), emb.shape
        assert "torch" not in sys.modules, "onnxruntime backend imported torch"
        try:
            import tensorrt  # noqa: F401
            has_trt = True
        except ImportError:
            has_trt = False
        if not has_trt:  # auto probes TensorRT first; without it, no torch either
            auto = load_encoder_backend({str(exported)!r}, backend="auto")
            assert auto.name == "onnxruntime", auto.name
            assert "torch" not in sys.modules, "auto (-> onnxruntime) imported torch"
        print("OK")
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout + proc.stderr


def test_torch_and_onnxruntime_backends_agree(exported, images):
    from dynaflip_ros.inference.torch_backend import TorchEncoderBackend

    torch_be = TorchEncoderBackend(exported, num_threads=2)
    ort_be = OnnxRuntimeEncoderBackend(exported, intra_op_num_threads=2)
    for be in (torch_be, ort_be):
        assert isinstance(be, EncoderBackend)
        assert be.manifest.embedding_dim == EMBEDDING_DIM
    a, b = torch_be.embed(images), ort_be.embed(images)
    assert a.shape == b.shape == (3, EMBEDDING_DIM) and a.dtype == b.dtype == np.float32
    assert np.abs(a - b).max() <= 1e-4
    assert np.abs(a[0] - a[1]).max() > 1e-3  # different images, different embeddings
    assert ort_be.providers == ["CPUExecutionProvider"]


def test_embed_rejects_bad_images(exported):
    be = OnnxRuntimeEncoderBackend(exported)
    with pytest.raises(ValueError, match="uint8"):
        be.embed(np.zeros((1, 64, 64, 3), np.float32))
    with pytest.raises(ValueError):
        be.embed(np.zeros((64, 64, 3), np.uint8))


@pytest.mark.skipif(TRT_REASON is None, reason="TensorRT and a GPU are available here")
def test_auto_falls_back_to_onnxruntime_and_logs_why(exported, caplog):
    with caplog.at_level(logging.INFO, logger="dynaflip_ros.inference.factory"):
        enc = load_encoder_backend(exported, backend="auto")
    assert enc.name == "onnxruntime"
    assert set(enc.fallback_reasons) == {"tensorrt"}
    assert enc.fallback_reasons["tensorrt"] == TRT_REASON
    assert "encoder backend: onnxruntime" in caplog.text and "tensorrt unavailable" in caplog.text


@pytest.mark.skipif(TRT_REASON is None, reason="TensorRT and a GPU are available here")
def test_explicit_tensorrt_raises_unavailable(exported):
    with pytest.raises(TensorRTUnavailableError):
        load_encoder_backend(exported, backend="tensorrt")


def test_auto_falls_back_to_torch_without_onnx(exported, tmp_path):
    d = _copy(exported, tmp_path / "no_onnx")
    (d / "encoder.onnx").unlink()
    enc = load_encoder_backend(d, backend="auto", torch_options={"num_threads": 2})
    assert enc.name == "torch"
    assert "onnxruntime" in enc.fallback_reasons and "encoder.onnx" in enc.fallback_reasons["onnxruntime"]
    assert enc.embed(np.zeros((1, 64, 64, 3), np.uint8)).shape == (1, EMBEDDING_DIM)


def test_factory_rejects_unknown_backend_and_wrong_dir(exported, tmp_path):
    with pytest.raises(ValueError, match="backend"):
        load_encoder_backend(exported, backend="openvino")
    with pytest.raises(EncoderArtifactError, match="manifest.json"):
        load_encoder_backend(tmp_path, backend="auto")


def test_manifest_weights_mismatch_is_an_error_not_a_fallback(exported, tmp_path):
    d = _copy(exported, tmp_path / "skew")
    _edit_manifest(d, weights_sha256="f" * 64)
    with pytest.raises(EncoderArtifactError, match="sha256"):
        OnnxRuntimeEncoderBackend(d)
    with pytest.raises(EncoderArtifactError):
        load_encoder_backend(d, backend="auto")  # must not silently fall back to another backend
    # ONNX-only deployment (no safetensors): the ONNX metadata still catches the skew.
    (d / "image_encoder.safetensors").unlink()
    (d / "export_report.json").unlink()
    with pytest.raises(EncoderArtifactError, match="exported from weights"):
        OnnxRuntimeEncoderBackend(d)


def test_embedding_dim_mismatch_is_an_error(exported, tmp_path):
    d = _copy(exported, tmp_path / "dim")
    _edit_manifest(d, embedding_dim=EMBEDDING_DIM + 1)
    with pytest.raises(EncoderArtifactError, match="embedding_dim"):
        OnnxRuntimeEncoderBackend(d)


def test_swapped_onnx_is_detected(exported, other_export, tmp_path):
    d = _copy(exported, tmp_path / "swapped")
    shutil.copy2(other_export / "encoder.onnx", d / "encoder.onnx")
    with pytest.raises(EncoderArtifactError, match="parity gate"):
        OnnxRuntimeEncoderBackend(d)  # not the file the report vouches for
    (d / "export_report.json").unlink()
    with pytest.raises(EncoderArtifactError, match="exported from weights"):
        OnnxRuntimeEncoderBackend(d)  # metadata names the other weights


def test_torch_backend_rejects_tampered_weights(exported, tmp_path):
    from dynaflip_ros.inference.torch_backend import TorchEncoderBackend

    d = _copy(exported, tmp_path / "tampered")
    data = bytearray((d / "image_encoder.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (d / "image_encoder.safetensors").write_bytes(bytes(data))
    with pytest.raises(EncoderArtifactError, match="sha256"):
        TorchEncoderBackend(d)


def test_unavailable_errors_are_backend_unavailable():
    assert issubclass(TensorRTUnavailableError, BackendUnavailableError)


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("with_report", [True, False])
def test_truncated_onnx_is_reported_as_damaged(exported, tmp_path, with_report):
    d = _copy(exported, tmp_path / "trunc_onnx")
    _truncate(d / "encoder.onnx")
    if not with_report:
        (d / "export_report.json").unlink()
    with pytest.raises(EncoderArtifactError, match=r"damaged or truncated; re-export it") as info:
        OnnxRuntimeEncoderBackend(d)
    assert str(d / "encoder.onnx") in str(info.value)
    assert isinstance(info.value, UserError) and isinstance(info.value, ValueError)
    with pytest.raises(EncoderArtifactError, match="damaged or truncated"):
        load_encoder_backend(d, backend="onnxruntime")


def test_truncated_safetensors_is_damaged_not_another_encoder(exported, other_export, tmp_path):
    from dynaflip_ros.encoder.model import load_image_encoder
    from dynaflip_ros.inference.torch_backend import TorchEncoderBackend

    d = _copy(exported, tmp_path / "trunc_weights")
    weights = d / "image_encoder.safetensors"
    _truncate(weights, keep=0.9)
    for load in (OnnxRuntimeEncoderBackend, TorchEncoderBackend, load_image_encoder):
        with pytest.raises(EncoderArtifactError, match="damaged or truncated") as info:
            load(d)
        assert str(weights) in str(info.value) and "different encoders" not in str(info.value)
    # an intact file of another encoder is still "different encoders"
    shutil.copy2(other_export / "image_encoder.safetensors", weights)
    with pytest.raises(EncoderArtifactError, match="different encoders"):
        OnnxRuntimeEncoderBackend(d)


def test_safetensors_damage_check(exported, tmp_path):
    from dynaflip_ros.encoder.manifest import safetensors_damage

    src = exported / "image_encoder.safetensors"
    assert safetensors_damage(src) is None
    for keep, why in ((0.999, "header describes"), (0.0001, "header claims"), (0.0, "shorter than")):
        bad = tmp_path / f"cut_{keep}.safetensors"
        bad.write_bytes(src.read_bytes()[: int(src.stat().st_size * keep)])
        assert why in safetensors_damage(bad)


def test_truncated_manifest_is_an_artifact_error(exported, tmp_path):
    d = _copy(exported, tmp_path / "trunc_manifest")
    _truncate(d / "manifest.json")
    with pytest.raises(EncoderArtifactError, match="unreadable manifest"):
        load_encoder_backend(d, backend="auto")
