"""`dynaflip export` -> ONNX: single-file export, parity gate (and that it fails), report, CLI exit codes."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from dynaflip_ros.configs.export import ParityTolerance
from dynaflip_ros.encoder.manifest import EncoderManifest, sha256_file
from dynaflip_ros.export.artifact import (
    META_EMBEDDING_DIM,
    META_WEIGHTS_SHA256,
    ONNX_FILENAME,
    ONNX_FP16_FILENAME,
    REJECTED_SUFFIX,
    REPORT_FILENAME,
    ExportReport,
)
from dynaflip_ros.export.onnx_export import export_onnx
from dynaflip_ros.export.parity import (
    ExportParityError,
    compare_embeddings,
    parity_inputs,
    synthetic_scene_images,
    verify_onnx_parity,
)

from encoder_artifact import EMBEDDING_DIM, INPUT_HW, make_encoder_dir


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    from dynaflip_ros.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("encoder")
    make_encoder_dir(d)
    return d


@pytest.fixture(scope="module")
def exported(encoder_dir, tmp_path_factory) -> tuple[Path, int, str]:
    """The CLI run every test below inspects (fp16 ONNX included; TensorRT if this machine has it)."""
    out = tmp_path_factory.mktemp("exported")
    cache = tmp_path_factory.mktemp("trt_cache")
    rc, stdout, stderr = run_cli(
        ["export", "--encoder", str(encoder_dir), "--out", str(out), "--precision", "fp16",
         "--tensorrt", "auto", "--cache-dir", str(cache), "--threads", "2"]
    )
    return out, rc, stdout + stderr


def test_cli_export_writes_self_contained_dir(exported, encoder_dir):
    out, rc, log = exported
    assert rc == 0, log
    for name in (ONNX_FILENAME, ONNX_FP16_FILENAME, REPORT_FILENAME, "manifest.json", "image_encoder.safetensors"):
        assert (out / name).is_file(), name
    # One self-contained file: no external-data side files, nothing left from staging.
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [ONNX_FILENAME, ONNX_FP16_FILENAME, REPORT_FILENAME, "manifest.json", "image_encoder.safetensors"]
    )
    assert sha256_file(out / "image_encoder.safetensors") == sha256_file(encoder_dir / "image_encoder.safetensors")
    # Without TensorRT the CLI says so plainly and still succeeds.
    assert "TensorRT not available (" in log or "TensorRT fp16 engine:" in log
    assert "parity onnxruntime vs pytorch" in log


def test_report_records_hashes_versions_and_parity(exported):
    out, _, _ = exported
    report = ExportReport.from_json(out / REPORT_FILENAME)
    manifest = EncoderManifest.from_json(out / "manifest.json")
    assert report.passed
    assert report.onnx_sha256 == sha256_file(out / ONNX_FILENAME)
    assert report.onnx_fp16_sha256 == sha256_file(out / ONNX_FP16_FILENAME)
    assert report.weights_sha256 == manifest.weights_sha256
    assert report.opset == 18 and report.exporter == "dynamo" and report.dynamic_batch
    assert report.input_shape[1:] == [3, *INPUT_HW] and isinstance(report.input_shape[0], str)
    assert set(report.versions) >= {"torch", "onnx", "onnxruntime"}
    assert report.parity.passed and report.parity.max_abs_diff <= 1e-4 and report.parity.min_cosine >= 0.9999
    names = [c.name for c in report.parity.cases]
    assert any(n.startswith("random_normalised") for n in names) and any(n.startswith("images_") for n in names)
    assert report.parity_fp16 is not None and report.parity_fp16.passed
    # fp16 is measurably less exact than fp32 (the gate compares against PyTorch fp32).
    assert report.parity_fp16.max_abs_diff > report.parity.max_abs_diff


def test_onnx_metadata_and_dynamic_batch(exported):
    import onnx
    import onnxruntime as ort

    out, _, _ = exported
    manifest = EncoderManifest.from_json(out / "manifest.json")
    model = onnx.load(str(out / ONNX_FILENAME), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta[META_WEIGHTS_SHA256] == manifest.weights_sha256
    assert int(meta[META_EMBEDDING_DIM]) == EMBEDDING_DIM
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    sess = ort.InferenceSession(str(out / ONNX_FILENAME), providers=["CPUExecutionProvider"])
    for b in (1, 3, 7):
        y = sess.run(None, {"images": np.zeros((b, 3, *INPUT_HW), np.float32)})[0]
        assert y.shape == (b, EMBEDDING_DIM)


def _perturbed_copy(src: Path, dst: Path, scale: float) -> None:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    # Perturb the largest float initializer (a conv / linear weight).
    init = max((i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT),
               key=lambda i: int(np.prod(i.dims)))
    w = numpy_helper.to_array(init).copy()
    w += scale * np.random.default_rng(1).standard_normal(w.shape).astype(np.float32) * (np.abs(w).mean() + 1e-3)
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    onnx.save(model, str(dst))


def test_parity_gate_passes_on_exported_onnx(exported, encoder_dir):
    out, _, _ = exported
    summary = verify_onnx_parity(encoder_dir, out / ONNX_FILENAME, num_threads=2)
    assert summary.passed and summary.max_abs_diff <= 1e-4


def test_corrupted_onnx_fails_the_gate(exported, encoder_dir, tmp_path):
    out, _, _ = exported
    bad = tmp_path / "corrupted.onnx"
    _perturbed_copy(out / ONNX_FILENAME, bad, scale=0.05)
    with pytest.raises(ExportParityError) as info:
        verify_onnx_parity(encoder_dir, bad, num_threads=2)
    assert info.value.summary is not None and not info.value.summary.passed
    assert info.value.summary.max_abs_diff > 1e-4
    assert any("max |diff|" in f for f in info.value.summary.failures)


def test_cli_parity_failure_exits_nonzero_and_installs_nothing(encoder_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("previous content")
    # max |diff| 0 and cosine 1.0 cannot both hold for float32 ONNX Runtime vs PyTorch conv nets.
    rc, stdout, stderr = run_cli(
        ["export", "--encoder", str(encoder_dir), "--out", str(out), "--tensorrt", "off",
         "--exporter", "torchscript", "--tolerance", "0", "--min-cosine", "1.0", "--threads", "2"]
    )
    assert rc == 1, stdout + stderr
    assert "parity gate FAILED" in stderr
    assert not (out / ONNX_FILENAME).exists() and not (out / REPORT_FILENAME).exists()
    assert (out / (ONNX_FILENAME + REJECTED_SUFFIX)).is_file()
    rejected = json.loads((out / (REPORT_FILENAME + REJECTED_SUFFIX)).read_text())
    assert rejected["passed"] is False and rejected["parity"]["failures"]
    assert (out / "keep.txt").read_text() == "previous content"
    assert not [p for p in out.iterdir() if p.name.startswith(".export_")]


def test_cli_tensorrt_require_fails_without_tensorrt(encoder_dir, tmp_path):
    from dynaflip_ros.export.tensorrt_engine import tensorrt_unavailable_reason

    if tensorrt_unavailable_reason() is None:
        pytest.skip("TensorRT and a GPU are available here: `require` would succeed")
    rc, stdout, stderr = run_cli(
        ["export", "--encoder", str(encoder_dir), "--out", str(tmp_path / "o"), "--tensorrt", "require"]
    )
    assert rc == 3
    assert "TensorRT required" in stderr and "not available" in stderr
    assert not (tmp_path / "o" / ONNX_FILENAME).exists()


def test_static_batch_torchscript_export(encoder_dir, tmp_path):
    report = export_onnx(
        encoder_dir, tmp_path, dynamic_batch=False, exporter="torchscript", n_parity_images=2,
        parity_batch_sizes=(1,), num_threads=2, show_progress=False,
    )
    assert report.passed and report.input_shape == [1, 3, *INPUT_HW] and report.exporter == "torchscript"
    assert not (tmp_path / ONNX_FP16_FILENAME).exists()


def test_export_rejects_tampered_weights(encoder_dir, tmp_path):
    import shutil

    from dynaflip_ros.export.artifact import EncoderArtifactError

    bad = tmp_path / "enc"
    shutil.copytree(encoder_dir, bad)
    data = bytearray((bad / "image_encoder.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (bad / "image_encoder.safetensors").write_bytes(bytes(data))
    with pytest.raises(EncoderArtifactError, match="sha256"):
        export_onnx(bad, tmp_path / "out", show_progress=False)


def test_compare_embeddings_numbers():
    ref = np.array([[1.0, 0.0], [0.0, 2.0]], np.float32)
    out = np.array([[1.0, 0.1], [0.0, 2.0]], np.float32)
    case = compare_embeddings("x", ref, out)
    assert case.max_abs_diff == pytest.approx(0.1, rel=1e-5)
    assert case.max_rel_diff == pytest.approx(0.05, rel=1e-5)
    assert case.min_cosine == pytest.approx(1 / np.sqrt(1.01), rel=1e-6)
    nan_case = compare_embeddings("nan", ref, np.full_like(ref, np.nan))
    assert nan_case.max_abs_diff == float("inf") and nan_case.min_cosine == -1.0
    with pytest.raises(ValueError):
        compare_embeddings("shape", ref, ref[:1])


def test_parity_inputs_cover_random_and_images():
    manifest = EncoderManifest(INPUT_HW, (0.5,) * 3, (0.5,) * 3, EMBEDDING_DIM, "0" * 64, "test")
    cases = parity_inputs(manifest, batch_sizes=(1, 2), n_images=3, image_hw=(48, 80), seed=0)
    assert [x.shape for _, x in cases] == [(1, 3, *INPUT_HW), (2, 3, *INPUT_HW), (3, 3, *INPUT_HW)]
    imgs = synthetic_scene_images(3, (48, 80), seed=0)
    assert imgs.dtype == np.uint8 and imgs.std() > 10  # textured, not flat
    assert np.array_equal(imgs, synthetic_scene_images(3, (48, 80), seed=0))
    x_img = cases[-1][1]
    assert -1.0 <= x_img.min() and x_img.max() <= 1.0  # mean = std = 0.5 maps [0, 255] to [-1, 1]


def test_tolerance_validation():
    with pytest.raises(ValueError):
        ParityTolerance(max_abs_diff=-1.0)
    with pytest.raises(ValueError):
        ParityTolerance(min_cosine=1.5)


def test_cli_runtime_view_exports_tokens_at_another_input_size(encoder_dir, tmp_path):
    """--input-hw / --token-stages: the same weights (sha256 unchanged) exported at another input
    size with patch tokens from an earlier stage; the ONNX output has the manifest's wider width
    and its tokens are the stage's feature map. A stage the trunk lacks is refused (exit 4) and
    nothing is installed."""
    import onnxruntime as ort
    import torch

    from dynaflip_ros.encoder.manifest import token_layout
    from dynaflip_ros.encoder.model import load_image_encoder

    out = tmp_path / "view"
    rc, stdout, stderr = run_cli(["export", "--encoder", str(encoder_dir), "--out", str(out), "--tensorrt", "off",
                                  "--input-hw", "48", "48", "--token-stages", "2", "--threads", "2"])
    assert rc == 0, stdout + stderr
    src = EncoderManifest.from_json(encoder_dir / "manifest.json")
    m = EncoderManifest.from_json(out / "manifest.json")
    assert m.weights_sha256 == src.weights_sha256 and m.input_hw == (48, 48)
    lay = token_layout(m)
    assert (lay.grid, lay.channels) == ((12, 12), 24) and m.embedding_dim == EMBEDDING_DIM + 12 * 12 * 24
    assert not any(p.name.startswith(".view_") for p in out.iterdir())
    module, _ = load_image_encoder(out)
    x = np.random.default_rng(0).uniform(-1, 1, size=(2, 3, 48, 48)).astype(np.float32)
    sess = ort.InferenceSession(str(out / ONNX_FILENAME), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    assert got.shape == (2, m.embedding_dim)
    with torch.no_grad():
        stage2 = module.eval().trunk[: 2 + 2](torch.from_numpy(x))  # (2, 24, 12, 12)
    np.testing.assert_allclose(got[:, EMBEDDING_DIM:].reshape(2, 12, 12, 24)[:, 3, 7], stage2[:, :, 3, 7].numpy(),
                               atol=1e-4, rtol=1e-4)
    bad = tmp_path / "bad"
    rc, stdout, stderr = run_cli(["export", "--encoder", str(encoder_dir), "--out", str(bad), "--tensorrt", "off",
                                  "--token-stages", "5"])
    assert rc == 4 and "token_stages" in stdout + stderr
    assert not (bad / ONNX_FILENAME).exists()
