"""Build a TensorRT engine from the exported ONNX on the target GPU machine, and cache it.

docs/architecture.md "Artifacts": engines are never committed; they are built on the target from the ONNX
and cached under a key of (ONNX sha256, TensorRT version, GPU name, compute capability,
precision, input shape and batch profile), and rebuilt automatically when the key changes or
deserialisation fails. The cache lives outside the repository by default
($DYNAFLIP_TRT_CACHE or ~/.cache/dynaflip_ros/tensorrt/<precision>_b<min>-<opt>-<max>_<hash>/
holding encoder.engine and key.json; `*.engine` is also git-ignored).

TensorRT Python API used (10.x and 11.x; docs.nvidia.com/deeplearning/tensorrt, Python API
"Builder", "OnnxParser", "Runtime", and the 10.x -> 11.x migration guide):
  Builder(logger).create_network(flags) (explicit batch is implicit since 10.0; the
  EXPLICIT_BATCH flag is only set for < 10), OnnxParser(network, logger).parse_from_file,
  create_builder_config + set_memory_pool_limit(MemoryPoolType.WORKSPACE, bytes),
  create_optimization_profile().set_shape(name, min, opt, max) for the dynamic batch,
  build_serialized_network, Runtime(logger).deserialize_cuda_engine.
Precision: "fp32" clears BuilderFlag.TF32 (so the engine matches PyTorch fp32). "fp16" builds
encoder_fp16.onnx (fp16 weights/compute, fp32 I/O; strongly typed) when present — the only way
on TensorRT 11, which removed BuilderFlag.FP16 — and otherwise falls back to BuilderFlag.FP16
on the fp32 graph (TensorRT 10.x only).

Import-guarded: importing this module needs neither tensorrt nor a GPU; `build_engine` raises
TensorRTUnavailableError with the plain reason when either is missing.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from dynaflip_ros.configs.export import PRECISIONS
from dynaflip_ros.encoder.manifest import sha256_file
from dynaflip_ros.errors import UserError
from dynaflip_ros.export.artifact import (
    INPUT_NAME,
    ONNX_FILENAME,
    ONNX_FP16_FILENAME,
    OUTPUT_NAME,
    BackendUnavailableError,
)

log = logging.getLogger(__name__)

ENGINE_FILENAME = "encoder.engine"
KEY_FILENAME = "key.json"
CACHE_ENV = "DYNAFLIP_TRT_CACHE"
KEY_SCHEMA_VERSION = 1


class TensorRTUnavailableError(BackendUnavailableError):
    """TensorRT or a CUDA GPU is missing on this machine; the message says which and why."""


class TensorRTBuildError(RuntimeError, UserError):
    """TensorRT is present but could not parse the ONNX or build/deserialise the engine."""


# ----------------------------------------------------------------------------- availability
def import_tensorrt() -> Any:
    """`import tensorrt`, or raise TensorRTUnavailableError with the reason."""
    try:
        import tensorrt as trt
    except ImportError as e:
        raise TensorRTUnavailableError(f"the tensorrt Python package is not installed ({e})") from e
    except Exception as e:  # a broken install (missing libnvinfer) raises OSError and friends
        raise TensorRTUnavailableError(f"the tensorrt Python package failed to import ({type(e).__name__}: {e})") from e
    return trt


def cuda_device_info(device_index: int = 0) -> tuple[str, str]:
    """(GPU name, compute capability "major.minor") of CUDA device `device_index`.

    Queried through torch.cuda (the TensorRT backend moves buffers with torch). Raises
    TensorRTUnavailableError when torch has no CUDA or no such device exists.
    """
    try:
        import torch
    except ImportError as e:
        raise TensorRTUnavailableError(f"torch is not installed ({e}); it provides the CUDA buffers") from e
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
        raise TensorRTUnavailableError(f"no CUDA GPU visible (torch {torch.__version__}, {build})")
    n = torch.cuda.device_count()
    if not 0 <= device_index < n:
        raise TensorRTUnavailableError(f"CUDA device {device_index} does not exist ({n} visible)")
    major, minor = torch.cuda.get_device_capability(device_index)
    return torch.cuda.get_device_name(device_index), f"{major}.{minor}"


def tensorrt_unavailable_reason(device_index: int = 0) -> str | None:
    """None when TensorRT and a CUDA GPU are usable, else the plain reason why not."""
    try:
        import_tensorrt()
        cuda_device_info(device_index)
    except TensorRTUnavailableError as e:
        return str(e)
    return None


# ----------------------------------------------------------------------------- cache key
@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on; any change means a different cache entry.

    onnx_sha256: sha256 of the ONNX file the engine is built from; tensorrt_version: e.g.
    "10.13.0.35"; gpu_name / compute_capability ("8.9"): the device (engines are not portable);
    precision: "fp16" | "fp32"; input_chw: (3, h, w); min/opt/max_batch: the optimisation
    profile of the batch dimension.
    """

    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    input_name: str
    input_chw: tuple[int, int, int]
    min_batch: int
    opt_batch: int
    max_batch: int
    schema: int = KEY_SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if len(self.onnx_sha256) != 64:
            raise ValueError(f"onnx_sha256 must be a hex sha256, got {self.onnx_sha256!r}")
        if not (1 <= self.min_batch <= self.opt_batch <= self.max_batch):
            raise ValueError(f"need 1 <= min <= opt <= max batch, got {self.min_batch}/{self.opt_batch}/{self.max_batch}")
        if len(self.input_chw) != 3 or any(int(v) < 1 for v in self.input_chw):
            raise ValueError(f"input_chw must be (C, H, W) >= 1, got {self.input_chw!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_chw"] = list(self.input_chw)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EngineKey":
        d = dict(d)
        d["input_chw"] = tuple(d["input_chw"])
        return cls(**d)

    def digest(self) -> str:
        """sha256 of the canonical JSON of every field."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def dirname(self) -> str:
        """Cache sub-directory: readable prefix + 16 hex digits of the digest."""
        return f"{self.precision}_b{self.min_batch}-{self.opt_batch}-{self.max_batch}_{self.digest()[:16]}"


def default_cache_root() -> Path:
    """$DYNAFLIP_TRT_CACHE, else ~/.cache/dynaflip_ros/tensorrt (outside the repository)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dynaflip_ros" / "tensorrt"


# ----------------------------------------------------------------------------- cache
T = TypeVar("T")


@dataclass
class CacheOutcome:
    """How `EngineCache.load_or_build` got its engine.

    status: "hit" (deserialised from the cache) or "built"; reason: why it was built ("miss":
    no entry, "key_mismatch": the entry's key.json differs, "deserialize_failed": the cached
    bytes did not load, "forced"); engine_path: the engine file; build_s: build time, s.
    """

    status: str
    reason: str
    engine_path: str
    key_digest: str
    build_s: float = 0.0


class EngineCache(Generic[T]):
    """Directory cache of serialised engines keyed by `EngineKey` (pure Python, no TensorRT).

    Entry: <root>/<key.dirname()>/{encoder.engine, key.json}; written atomically (temp file +
    os.replace), so a crashed build never leaves a half-written engine under the final name.
    """

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root else default_cache_root()

    def entry_dir(self, key: EngineKey) -> Path:
        return self.root / key.dirname()

    def engine_path(self, key: EngineKey) -> Path:
        return self.entry_dir(key) / ENGINE_FILENAME

    def _stored_key(self, key: EngineKey) -> EngineKey | None:
        try:
            return EngineKey.from_dict(json.loads((self.entry_dir(key) / KEY_FILENAME).read_text()))
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def load_or_build(
        self,
        key: EngineKey,
        build_fn: Callable[[], bytes],
        deserialize_fn: Callable[[bytes], T | None],
        force_rebuild: bool = False,
    ) -> tuple[T, CacheOutcome]:
        """Return (deserialised engine, outcome): from the cache when possible, else built.

        build_fn() -> serialised engine bytes; deserialize_fn(bytes) -> engine, or None / an
        exception when the bytes do not load. Raises TensorRTBuildError when a freshly built
        engine does not deserialise.
        """
        path = self.engine_path(key)
        reason = "forced" if force_rebuild else "miss"
        if not force_rebuild and path.is_file():
            stored = self._stored_key(key)
            if stored != key:
                reason = "key_mismatch"
                log.warning("TensorRT cache entry %s has a different key.json: rebuilding", path.parent)
            else:
                engine = self._try_deserialize(deserialize_fn, path.read_bytes(), path)
                if engine is not None:
                    return engine, CacheOutcome("hit", "", str(path), key.digest())
                reason = "deserialize_failed"
                log.warning("cached TensorRT engine %s failed to deserialise: rebuilding", path)
        t0 = time.monotonic()
        data = build_fn()
        build_s = time.monotonic() - t0
        self._write(key, bytes(data))
        engine = self._try_deserialize(deserialize_fn, bytes(data), path)
        if engine is None:
            raise TensorRTBuildError(f"freshly built engine {path} does not deserialise")
        return engine, CacheOutcome("built", reason, str(path), key.digest(), round(build_s, 3))

    @staticmethod
    def _try_deserialize(fn: Callable[[bytes], T | None], data: bytes, path: Path) -> T | None:
        try:
            return fn(data)
        except Exception as e:  # TensorRT raises or returns None depending on the failure
            log.warning("deserialising %s raised %s: %s", path, type(e).__name__, e)
            return None

    def _write(self, key: EngineKey, data: bytes) -> None:
        d = self.entry_dir(key)
        d.mkdir(parents=True, exist_ok=True)
        for name, payload in ((ENGINE_FILENAME, data), (KEY_FILENAME, json.dumps(key.to_dict(), indent=2).encode())):
            tmp = d / f".{name}.{os.getpid()}.tmp"
            tmp.write_bytes(payload)
            os.replace(tmp, d / name)


# ----------------------------------------------------------------------------- TensorRT build
@dataclass
class EngineBuildResult:
    """What `build_engine` did: the key, the cache outcome, and which ONNX was built."""

    key: EngineKey
    outcome: CacheOutcome
    onnx_path: str
    strongly_typed_fp16: bool

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key.to_dict(), "outcome": asdict(self.outcome), "onnx_path": self.onnx_path,
                "strongly_typed_fp16": self.strongly_typed_fp16}


def select_onnx(encoder_dir: str | Path, precision: str, trt: Any) -> tuple[Path, bool]:
    """The ONNX to build for `precision`: (path, strongly_typed_fp16).

    fp32 -> encoder.onnx. fp16 -> encoder_fp16.onnx when present (strongly typed fp16 graph),
    else encoder.onnx with BuilderFlag.FP16 where TensorRT still has it (10.x). Raises
    FileNotFoundError when the ONNX is missing, TensorRTUnavailableError when fp16 cannot be
    built here (TensorRT 11 without encoder_fp16.onnx).
    """
    d = Path(encoder_dir)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp16" and (d / ONNX_FP16_FILENAME).is_file():
        return d / ONNX_FP16_FILENAME, True
    path = d / ONNX_FILENAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `dynaflip export` first")
    if precision == "fp16" and not hasattr(trt.BuilderFlag, "FP16"):
        # Unavailable (not a build error): `load_encoder_backend("auto")` falls back to ONNX Runtime.
        raise TensorRTUnavailableError(
            f"TensorRT {trt.__version__} builds strongly typed networks only (no BuilderFlag.FP16) and "
            f"{d / ONNX_FP16_FILENAME} is missing: re-export with `dynaflip export --precision fp16`"
        )
    return path, False


def make_engine_key(
    onnx_path: str | Path,
    precision: str,
    input_chw: tuple[int, int, int],
    min_batch: int,
    opt_batch: int,
    max_batch: int,
    tensorrt_version: str,
    gpu_name: str,
    compute_capability: str,
) -> EngineKey:
    """EngineKey for building `onnx_path` (hashes the file)."""
    return EngineKey(
        onnx_sha256=sha256_file(onnx_path),
        tensorrt_version=tensorrt_version,
        gpu_name=gpu_name,
        compute_capability=compute_capability,
        precision=precision,
        input_name=INPUT_NAME,
        input_chw=tuple(int(v) for v in input_chw),
        min_batch=min_batch,
        opt_batch=opt_batch,
        max_batch=max_batch,
    )


def _serialize_network(
    trt: Any,
    onnx_path: Path,
    key: EngineKey,
    strongly_typed_fp16: bool,
    workspace_mib: int,
) -> bytes:
    """Parse the ONNX and build a serialised engine (TensorRT Builder API)."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = int(trt.__version__.split(".")[0])
    flags = 0
    if major < 10:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if strongly_typed_fp16 and major == 10 and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)  # always on in 11.x
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TensorRTBuildError(f"TensorRT could not parse {onnx_path}: {errors}")
    if network.num_inputs != 1 or network.num_outputs != 1:
        raise TensorRTBuildError(f"{onnx_path}: expected 1 input / 1 output, got {network.num_inputs} / {network.num_outputs}")
    inp = network.get_input(0)
    shape = tuple(inp.shape)  # (B or -1, 3, h, w)
    if inp.name != key.input_name or shape[1:] != tuple(key.input_chw):
        raise TensorRTBuildError(f"{onnx_path}: input {inp.name} {shape} != {key.input_name} (B, {key.input_chw})")
    if network.get_output(0).name != OUTPUT_NAME:
        raise TensorRTBuildError(f"{onnx_path}: output {network.get_output(0).name!r} != {OUTPUT_NAME!r}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mib) << 20)
    if key.precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # TF32 is on by default; fp32 must match PyTorch
    if key.precision == "fp16" and not strongly_typed_fp16:
        config.set_flag(trt.BuilderFlag.FP16)  # TensorRT 10.x weak typing (select_onnx checked it exists)
    if shape[0] == -1:
        profile = builder.create_optimization_profile()
        chw = tuple(key.input_chw)
        profile.set_shape(key.input_name, (key.min_batch, *chw), (key.opt_batch, *chw), (key.max_batch, *chw))
        config.add_optimization_profile(profile)
    elif not key.min_batch == key.opt_batch == key.max_batch == shape[0]:
        raise TensorRTBuildError(
            f"{onnx_path} has a static batch of {shape[0]}; build it with min=opt=max batch {shape[0]}"
        )
    log.info("building TensorRT %s engine from %s (this takes a while)…", key.precision, onnx_path.name)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TensorRTBuildError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)")
    return bytes(serialized)


def load_or_build_engine(
    encoder_dir: str | Path,
    input_chw: tuple[int, int, int],
    precision: str = "fp16",
    min_batch: int = 1,
    opt_batch: int = 1,
    max_batch: int = 8,
    workspace_mib: int = 1024,
    cache_root: str | Path | None = None,
    device_index: int = 0,
    force_rebuild: bool = False,
) -> tuple[Any, Any, EngineBuildResult]:
    """(ICudaEngine, trt.Runtime, EngineBuildResult) for the ONNX in encoder_dir, via the cache.

    The runtime must outlive the engine (keep both). Raises TensorRTUnavailableError (no
    tensorrt / no CUDA GPU), FileNotFoundError (no ONNX), TensorRTBuildError (parse/build).
    """
    trt = import_tensorrt()
    gpu_name, cc = cuda_device_info(device_index)
    import torch

    torch.cuda.set_device(device_index)  # TensorRT builds and runs on the current CUDA device
    onnx_path, strongly_typed = select_onnx(encoder_dir, precision, trt)
    key = make_engine_key(onnx_path, precision, input_chw, min_batch, opt_batch, max_batch, trt.__version__, gpu_name, cc)
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    cache: EngineCache[Any] = EngineCache(cache_root)
    engine, outcome = cache.load_or_build(
        key,
        lambda: _serialize_network(trt, onnx_path, key, strongly_typed, workspace_mib),
        runtime.deserialize_cuda_engine,
        force_rebuild=force_rebuild,
    )
    log.info("TensorRT engine %s (%s%s)", outcome.engine_path, outcome.status, f": {outcome.reason}" if outcome.reason else "")
    return engine, runtime, EngineBuildResult(key, outcome, str(onnx_path), strongly_typed)


def build_engine(
    encoder_dir: str | Path,
    input_chw: tuple[int, int, int],
    precision: str = "fp16",
    min_batch: int = 1,
    opt_batch: int = 1,
    max_batch: int = 8,
    workspace_mib: int = 1024,
    cache_root: str | Path | None = None,
    device_index: int = 0,
    force_rebuild: bool = False,
) -> EngineBuildResult:
    """Make sure the engine for encoder_dir's ONNX is in the cache (build it if needed).

    Same arguments and errors as `load_or_build_engine`; returns only the build result.
    """
    _, _, result = load_or_build_engine(
        encoder_dir, input_chw, precision, min_batch, opt_batch, max_batch, workspace_mib, cache_root,
        device_index, force_rebuild,
    )
    return result
