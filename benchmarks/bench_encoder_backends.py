"""Latency of the image encoder per backend: PyTorch eager vs ONNX Runtime (vs TensorRT on a GPU).

Same process, same inputs, same thread count; each backend gets `--warmup` untimed calls, then
`--iters` timed calls (interleaved round-robin across backends) of `embed_preprocessed` (the network only: float32 (B, 3, h, w) -> (B, D);
preprocessing is shared by all backends). Prints p50 / p95 per backend and batch size and the
torch / backend ratios (> 1: faster than torch eager).

    .venv/bin/python benchmarks/bench_encoder_backends.py                 # default encoder, random init
    .venv/bin/python benchmarks/bench_encoder_backends.py --encoder models/encoder --batch-sizes 1 8
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_default_encoder(out_dir: Path) -> Path:
    """Export the default DynaFLIP image encoder (configs.encoder defaults, random init) to out_dir."""
    from dynaflip_ros.configs.encoder import EncoderConfig
    from dynaflip_ros.encoder.model import DynaFlipModel, save_encoder
    from dynaflip_ros.export.onnx_export import export_onnx

    cfg = EncoderConfig()
    save_encoder(out_dir / "trained", DynaFlipModel(cfg, imagenet_init=False), cfg)
    export_onnx(out_dir / "trained", out_dir / "exported", parity_batch_sizes=(1,), n_parity_images=2,
                show_progress=False)
    return out_dir / "exported"


def time_backends(fns: dict, x: np.ndarray, warmup: int, iters: int) -> dict[str, np.ndarray]:
    """Wall-clock latency in ms of each fn(x), (iters,) per backend name.

    Calls are interleaved (round-robin over the backends every iteration), so a change in
    machine load hits every backend alike and the ratios stay comparable.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn(x)
    times = {name: np.empty(iters) for name in fns}
    for i in range(iters):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn(x)
            times[name][i] = (time.perf_counter() - t0) * 1e3
    return times


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", default=None, help="exported encoder dir (default: export the default encoder to a temp dir)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime intra-op threads")
    p.add_argument("--out", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)

    import torch
    from tqdm import tqdm

    from dynaflip_ros.export.tensorrt_engine import tensorrt_unavailable_reason
    from dynaflip_ros.inference.onnxruntime_backend import OnnxRuntimeEncoderBackend
    from dynaflip_ros.inference.torch_backend import TorchEncoderBackend

    torch.set_num_threads(args.threads)
    tmp = None
    if args.encoder is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_encoder_")
        print("exporting the default encoder (random init) ...", file=sys.stderr)
        encoder_dir = make_default_encoder(Path(tmp.name))
    else:
        encoder_dir = Path(args.encoder)

    backends = {
        "torch": TorchEncoderBackend(encoder_dir, num_threads=args.threads),
        "onnxruntime": OnnxRuntimeEncoderBackend(encoder_dir, providers=["CPUExecutionProvider"],
                                                 intra_op_num_threads=args.threads),
    }
    trt_reason = tensorrt_unavailable_reason()
    if trt_reason is None:
        from dynaflip_ros.inference.tensorrt_backend import TensorRTEncoderBackend

        backends["tensorrt"] = TensorRTEncoderBackend(encoder_dir, max_batch=max(args.batch_sizes))
    manifest = backends["torch"].manifest
    h, w = manifest.input_hw
    rng = np.random.default_rng(0)

    results = []
    load_before = os.getloadavg()
    for b in tqdm(args.batch_sizes, desc="benchmark", unit="batch size", file=sys.stderr):
        x = rng.standard_normal((b, 3, h, w)).astype(np.float32)  # (B, 3, h, w)
        times = time_backends({n: be.embed_preprocessed for n, be in backends.items()}, x, args.warmup, args.iters)
        for name, t in times.items():
            results.append({"backend": name, "batch": b, "p50_ms": float(np.percentile(t, 50)),
                            "p95_ms": float(np.percentile(t, 95)), "mean_ms": float(t.mean())})
    load_after = os.getloadavg()

    print(f"\nencoder: {manifest.architecture}, input {h}x{w}, D={manifest.embedding_dim}; "
          f"threads={args.threads}, warmup={args.warmup}, iters={args.iters}; torch {torch.__version__}")
    print(f"machine: {os.cpu_count()} CPUs, 1-min load average {load_before[0]:.1f} before / {load_after[0]:.1f} after "
          "(other processes share the cores: compare ratios, not absolute times)")
    if trt_reason:
        print(f"TensorRT not benchmarked: {trt_reason}")
    print(f"{'backend':<12} {'batch':>5} {'p50 ms':>9} {'p95 ms':>9} {'ms/img p50':>11} {'torch/x p50':>12} {'torch/x p95':>12}")
    ref = {(r["batch"]): r for r in results if r["backend"] == "torch"}
    for r in results:
        t = ref[r["batch"]]
        r["speedup_vs_torch_p50"] = t["p50_ms"] / r["p50_ms"]
        r["speedup_vs_torch_p95"] = t["p95_ms"] / r["p95_ms"]
        print(f"{r['backend']:<12} {r['batch']:>5} {r['p50_ms']:>9.2f} {r['p95_ms']:>9.2f} "
              f"{r['p50_ms'] / r['batch']:>11.2f} {r['speedup_vs_torch_p50']:>12.2f} {r['speedup_vs_torch_p95']:>12.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"encoder": str(encoder_dir), "results": results}, indent=2) + "\n")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
