"""TensorRT engine cache + build logic (docs/architecture.md "Artifacts").

The cache key, the cache's rebuild rules, the "unavailable" path and the builder calls (against
a recording stand-in of the tensorrt module) run everywhere; the real engine build needs
TensorRT and a CUDA GPU and is skipped without them.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from dynaflip_ros.export import tensorrt_engine as te
from dynaflip_ros.export.artifact import BackendUnavailableError
from dynaflip_ros.export.tensorrt_engine import (
    EngineCache,
    EngineKey,
    TensorRTBuildError,
    TensorRTUnavailableError,
    build_engine,
    select_onnx,
)

SHA = "ab" * 32


def key(**over) -> EngineKey:
    base = dict(
        onnx_sha256=SHA, tensorrt_version="10.13.0.35", gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0",
        precision="fp16", input_name="images", input_chw=(3, 128, 128), min_batch=1, opt_batch=1, max_batch=8,
    )
    base.update(over)
    return EngineKey(**base)


# ----------------------------------------------------------------------------- key
@pytest.mark.parametrize(
    "field,value",
    [
        ("onnx_sha256", "cd" * 32),
        ("tensorrt_version", "11.4.0.1"),
        ("gpu_name", "NVIDIA GeForce RTX 4090"),
        ("compute_capability", "8.9"),
        ("precision", "fp32"),
        ("input_chw", (3, 224, 224)),
        ("min_batch", 2),
        ("opt_batch", 2),
        ("max_batch", 16),
    ],
)
def test_every_key_field_changes_the_cache_entry(field, value):
    k0 = key(opt_batch=4)
    k1 = dataclasses.replace(k0, **{field: value})
    assert k1.digest() != k0.digest()
    assert k1.dirname() != k0.dirname()


def test_key_is_deterministic_and_round_trips():
    k = key()
    assert k.digest() == key().digest()
    assert EngineKey.from_dict(json.loads(json.dumps(k.to_dict()))) == k
    assert k.dirname().startswith("fp16_b1-1-8_") and len(k.dirname().split("_")[-1]) == 16


@pytest.mark.parametrize(
    "over",
    [dict(precision="int8"), dict(onnx_sha256="abc"), dict(min_batch=2, opt_batch=1), dict(input_chw=(3, 0, 5))],
)
def test_key_rejects_bad_values(over):
    with pytest.raises(ValueError):
        key(**over)


def test_default_cache_root_env(monkeypatch, tmp_path):
    monkeypatch.setenv(te.CACHE_ENV, str(tmp_path / "c"))
    assert te.default_cache_root() == tmp_path / "c"
    monkeypatch.delenv(te.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert te.default_cache_root() == tmp_path / "xdg" / "dynaflip_ros" / "tensorrt"


# ----------------------------------------------------------------------------- cache rules
class FakeEngines:
    """build() -> bytes naming a build number; deserialize(bytes) -> engine or None if corrupt."""

    def __init__(self):
        self.builds = 0

    def build(self) -> bytes:
        self.builds += 1
        return f"ENGINE#{self.builds}".encode()

    @staticmethod
    def deserialize(data: bytes):
        return data.decode() if data.startswith(b"ENGINE#") else None


def test_cache_miss_then_hit(tmp_path):
    cache, fake = EngineCache(tmp_path), FakeEngines()
    engine, outcome = cache.load_or_build(key(), fake.build, fake.deserialize)
    assert (engine, outcome.status, outcome.reason, fake.builds) == ("ENGINE#1", "built", "miss", 1)
    assert Path(outcome.engine_path) == tmp_path / key().dirname() / te.ENGINE_FILENAME
    assert json.loads((tmp_path / key().dirname() / te.KEY_FILENAME).read_text()) == key().to_dict()
    engine, outcome = cache.load_or_build(key(), fake.build, fake.deserialize)
    assert (engine, outcome.status, fake.builds) == ("ENGINE#1", "hit", 1)
    assert not [p for p in (tmp_path / key().dirname()).iterdir() if p.name.endswith(".tmp")]


def test_cache_rebuilds_when_key_changes(tmp_path):
    cache, fake = EngineCache(tmp_path), FakeEngines()
    cache.load_or_build(key(), fake.build, fake.deserialize)
    engine, outcome = cache.load_or_build(key(gpu_name="NVIDIA L4"), fake.build, fake.deserialize)
    assert (engine, outcome.status, fake.builds) == ("ENGINE#2", "built", 2)
    assert len(list(tmp_path.iterdir())) == 2  # one entry per key


def test_cache_rebuilds_when_deserialisation_fails(tmp_path):
    cache, fake = EngineCache(tmp_path), FakeEngines()
    _, first = cache.load_or_build(key(), fake.build, fake.deserialize)
    Path(first.engine_path).write_bytes(b"\x00garbage from another TensorRT")
    engine, outcome = cache.load_or_build(key(), fake.build, fake.deserialize)
    assert (engine, outcome.status, outcome.reason) == ("ENGINE#2", "built", "deserialize_failed")

    def raising(data: bytes):
        raise RuntimeError("Serialization assertion failed")

    Path(first.engine_path).write_bytes(b"\x00garbage again")
    engine, outcome = cache.load_or_build(key(), fake.build, lambda d: fake.deserialize(d) if d.startswith(b"ENGINE#3") else raising(d))
    assert (engine, outcome.reason) == ("ENGINE#3", "deserialize_failed")


def test_cache_rebuilds_on_tampered_key_file_and_when_forced(tmp_path):
    cache, fake = EngineCache(tmp_path), FakeEngines()
    cache.load_or_build(key(), fake.build, fake.deserialize)
    (tmp_path / key().dirname() / te.KEY_FILENAME).write_text(json.dumps(key(gpu_name="other").to_dict()))
    _, outcome = cache.load_or_build(key(), fake.build, fake.deserialize)
    assert (outcome.status, outcome.reason) == ("built", "key_mismatch")
    _, outcome = cache.load_or_build(key(), fake.build, fake.deserialize, force_rebuild=True)
    assert (outcome.status, outcome.reason, fake.builds) == ("built", "forced", 3)


def test_fresh_engine_that_does_not_deserialise_is_an_error(tmp_path):
    with pytest.raises(TensorRTBuildError):
        EngineCache(tmp_path).load_or_build(key(), lambda: b"not an engine", FakeEngines.deserialize)


# ----------------------------------------------------------------------------- unavailable path
def test_build_engine_without_tensorrt_raises_unavailable(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` raise ImportError
    with pytest.raises(TensorRTUnavailableError, match="tensorrt Python package is not installed") as info:
        build_engine(tmp_path, (3, 64, 64), cache_root=tmp_path / "cache")
    assert isinstance(info.value, BackendUnavailableError)
    assert te.tensorrt_unavailable_reason() is not None


def test_build_engine_without_gpu_raises_unavailable(monkeypatch, tmp_path):
    import torch

    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_trt("10.13.0.35", calls={}))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(TensorRTUnavailableError, match="no CUDA GPU"):
        build_engine(tmp_path, (3, 64, 64), cache_root=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


# ----------------------------------------------------------------------------- builder calls
def make_fake_trt(version: str, calls: dict, input_shape=(-1, 3, 64, 64), parse_ok=True, build_ok=True):
    """A recording stand-in for the parts of the tensorrt module the builder uses."""
    major = int(version.split(".")[0])
    m = types.ModuleType("tensorrt")
    m.__version__ = version

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    flags = {"STRONGLY_TYPED": 1}
    if major < 11:
        flags["EXPLICIT_BATCH"] = 0
    m.NetworkDefinitionCreationFlag = types.SimpleNamespace(**flags)
    builder_flags = {"TF32": 6}
    if major < 11:
        builder_flags["FP16"] = 0
    m.BuilderFlag = types.SimpleNamespace(**builder_flags)
    m.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")

    class Tensor:
        def __init__(self, name, shape):
            self.name, self.shape = name, shape

    class Network:
        num_inputs = num_outputs = 1

        def get_input(self, i):
            return Tensor("images", input_shape)

        def get_output(self, i):
            return Tensor("embedding", (input_shape[0], 32))

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            calls["profile"] = (name, tuple(lo), tuple(opt), tuple(hi))

    class Config:
        def set_memory_pool_limit(self, pool, size):
            calls["workspace"] = (pool, size)

        def set_flag(self, flag):
            calls.setdefault("set_flags", []).append(flag)

        def clear_flag(self, flag):
            calls.setdefault("cleared_flags", []).append(flag)

        def add_optimization_profile(self, p):
            calls["profiles_added"] = calls.get("profiles_added", 0) + 1

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, f):
            calls["network_flags"] = f
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            calls["built"] = True
            return b"ENGINE-BYTES" if build_ok else None

    class OnnxParser:
        num_errors = 0 if parse_ok else 1

        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            calls["parsed"] = path
            return parse_ok

        def get_error(self, i):
            return "Unsupported ONNX op: FancyOp"

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            calls["deserialized"] = calls.get("deserialized", 0) + 1
            return {"engine": bytes(data)} if bytes(data) == b"ENGINE-BYTES" else None

    m.Logger, m.Builder, m.OnnxParser, m.Runtime = Logger, Builder, OnnxParser, Runtime
    return m


def test_builder_calls_fp32_tensorrt10(tmp_path):
    calls: dict = {}
    trt = make_fake_trt("10.13.0.35", calls)
    data = te._serialize_network(trt, tmp_path / "encoder.onnx", key(precision="fp32", input_chw=(3, 64, 64)),
                                 strongly_typed_fp16=False, workspace_mib=512)
    assert data == b"ENGINE-BYTES"
    assert calls["network_flags"] == 0  # explicit batch is implicit since TensorRT 10
    assert calls["workspace"] == ("WORKSPACE", 512 << 20)
    assert calls["cleared_flags"] == [trt.BuilderFlag.TF32] and "set_flags" not in calls
    assert calls["profile"] == ("images", (1, 3, 64, 64), (1, 3, 64, 64), (8, 3, 64, 64))


def test_builder_calls_fp16_weakly_typed_tensorrt10(tmp_path):
    calls: dict = {}
    trt = make_fake_trt("10.13.0.35", calls)
    te._serialize_network(trt, tmp_path / "encoder.onnx", key(input_chw=(3, 64, 64), opt_batch=4),
                          strongly_typed_fp16=False, workspace_mib=1024)
    assert calls["set_flags"] == [trt.BuilderFlag.FP16]
    assert calls["profile"][2] == (4, 3, 64, 64)


def test_builder_calls_fp16_strongly_typed(tmp_path):
    calls: dict = {}
    trt10 = make_fake_trt("10.13.0.35", calls)
    te._serialize_network(trt10, tmp_path / "e.onnx", key(input_chw=(3, 64, 64)), strongly_typed_fp16=True, workspace_mib=64)
    assert calls["network_flags"] == 1 << trt10.NetworkDefinitionCreationFlag.STRONGLY_TYPED
    assert "set_flags" not in calls
    calls.clear()
    trt11 = make_fake_trt("11.4.0.1", calls)
    te._serialize_network(trt11, tmp_path / "e.onnx", key(input_chw=(3, 64, 64)), strongly_typed_fp16=True, workspace_mib=64)
    assert calls["network_flags"] == 0 and "set_flags" not in calls  # strong typing is always on in 11.x


def test_builder_calls_tensorrt8_sets_explicit_batch(tmp_path):
    calls: dict = {}
    trt = make_fake_trt("8.6.1", calls)
    te._serialize_network(trt, tmp_path / "e.onnx", key(precision="fp32", input_chw=(3, 64, 64)), False, 64)
    assert calls["network_flags"] == 1 << trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH


def test_builder_errors(tmp_path):
    with pytest.raises(TensorRTBuildError, match="FancyOp"):
        te._serialize_network(make_fake_trt("10.1.0", {}, parse_ok=False), tmp_path / "e.onnx",
                              key(input_chw=(3, 64, 64)), False, 64)
    with pytest.raises(TensorRTBuildError, match="failed to build"):
        te._serialize_network(make_fake_trt("10.1.0", {}, build_ok=False), tmp_path / "e.onnx",
                              key(input_chw=(3, 64, 64)), False, 64)
    with pytest.raises(TensorRTBuildError, match="input"):
        te._serialize_network(make_fake_trt("10.1.0", {}), tmp_path / "e.onnx", key(input_chw=(3, 96, 96)), False, 64)
    with pytest.raises(TensorRTBuildError, match="static batch"):
        te._serialize_network(make_fake_trt("10.1.0", {}, input_shape=(1, 3, 64, 64)), tmp_path / "e.onnx",
                              key(input_chw=(3, 64, 64)), False, 64)
    static = {}
    te._serialize_network(make_fake_trt("10.1.0", static, input_shape=(1, 3, 64, 64)), tmp_path / "e.onnx",
                          key(input_chw=(3, 64, 64), max_batch=1), False, 64)
    assert "profile" not in static  # static shapes need no optimisation profile


def test_select_onnx(tmp_path):
    trt10, trt11 = make_fake_trt("10.13.0.35", {}), make_fake_trt("11.4.0.1", {})
    with pytest.raises(FileNotFoundError):
        select_onnx(tmp_path, "fp32", trt10)
    (tmp_path / "encoder.onnx").write_bytes(b"x")
    assert select_onnx(tmp_path, "fp32", trt11) == (tmp_path / "encoder.onnx", False)
    assert select_onnx(tmp_path, "fp16", trt10) == (tmp_path / "encoder.onnx", False)  # BuilderFlag.FP16
    with pytest.raises(TensorRTUnavailableError, match="strongly typed"):
        select_onnx(tmp_path, "fp16", trt11)  # auto falls back to ONNX Runtime
    (tmp_path / "encoder_fp16.onnx").write_bytes(b"y")
    assert select_onnx(tmp_path, "fp16", trt11) == (tmp_path / "encoder_fp16.onnx", True)
    assert select_onnx(tmp_path, "fp32", trt11) == (tmp_path / "encoder.onnx", False)


def test_load_or_build_engine_end_to_end_with_stand_ins(monkeypatch, tmp_path):
    """Key from the real ONNX bytes + device info, cache miss -> build, then hit, then GPU change."""
    import torch

    calls: dict = {}
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_trt("10.13.0.35", calls))
    gpu = {"name": "NVIDIA H100", "cc": "9.0"}
    monkeypatch.setattr(te, "cuda_device_info", lambda i=0: (gpu["name"], gpu["cc"]))
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: None)
    enc = tmp_path / "enc"
    enc.mkdir()
    (enc / "encoder.onnx").write_bytes(b"onnx-bytes")
    cache = tmp_path / "cache"
    engine, _, r1 = te.load_or_build_engine(enc, (3, 64, 64), "fp32", cache_root=cache)
    assert engine == {"engine": b"ENGINE-BYTES"} and r1.outcome.status == "built"
    assert r1.key.onnx_sha256 == te.sha256_file(enc / "encoder.onnx") and r1.key.gpu_name == "NVIDIA H100"
    _, _, r2 = te.load_or_build_engine(enc, (3, 64, 64), "fp32", cache_root=cache)
    assert r2.outcome.status == "hit" and r2.outcome.engine_path == r1.outcome.engine_path
    gpu["cc"] = "8.9"
    _, _, r3 = te.load_or_build_engine(enc, (3, 64, 64), "fp32", cache_root=cache)
    assert r3.outcome.status == "built" and r3.outcome.engine_path != r1.outcome.engine_path
    (enc / "encoder.onnx").write_bytes(b"re-exported onnx")
    _, _, r4 = te.load_or_build_engine(enc, (3, 64, 64), "fp32", cache_root=cache)
    assert r4.outcome.status == "built" and r4.key.onnx_sha256 != r3.key.onnx_sha256


# ----------------------------------------------------------------------------- real build (GPU)
def test_real_tensorrt_engine_build_and_parity(tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT not installable on this machine (docs/environment.md)")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU on this machine")
    from encoder_artifact import make_encoder_dir

    from dynaflip_ros.export.onnx_export import export_onnx
    from dynaflip_ros.export.parity import parity_inputs
    from dynaflip_ros.inference.onnxruntime_backend import OnnxRuntimeEncoderBackend
    from dynaflip_ros.inference.tensorrt_backend import TensorRTEncoderBackend

    enc = tmp_path / "enc"
    make_encoder_dir(enc)
    export_onnx(enc, enc, fp16=True, show_progress=False)
    ort_backend = OnnxRuntimeEncoderBackend(enc, providers=["CPUExecutionProvider"])
    inputs = parity_inputs(ort_backend.manifest, batch_sizes=(1, 5, 11))
    for precision, tol in (("fp32", 1e-3), ("fp16", 3e-2)):
        trt_backend = TensorRTEncoderBackend(enc, precision=precision, cache_root=tmp_path / "cache")
        assert trt_backend.build.outcome.status == "built"
        for _, x in inputs:
            ref, out = ort_backend.embed_preprocessed(x), trt_backend.embed_preprocessed(x)
            assert np.abs(ref - out).max() <= tol * max(1.0, np.abs(ref).max())
        again = TensorRTEncoderBackend(enc, precision=precision, cache_root=tmp_path / "cache")
        assert again.build.outcome.status == "hit"
        Path(again.build.outcome.engine_path).write_bytes(b"corrupt")
        rebuilt = TensorRTEncoderBackend(enc, precision=precision, cache_root=tmp_path / "cache")
        assert (rebuilt.build.outcome.status, rebuilt.build.outcome.reason) == ("built", "deserialize_failed")
