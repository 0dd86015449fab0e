"""`dynaflip export`: encoder dir -> ONNX (parity-gated) [-> TensorRT engine on a GPU machine].

Thin: the work lives in export.onnx_export and export.tensorrt_engine. Module level imports only
argparse (the `dynaflip` dispatcher imports every verb module to build --help).
"""
from __future__ import annotations

import argparse

from dynaflip_ros.cli import exit_codes_epilog

EPILOG = """examples:
  dynaflip export --encoder outputs/encoder --out models/encoder
      ONNX (+ fp16 ONNX) with the parity gate; a TensorRT engine too when TensorRT and a GPU exist
  dynaflip export --encoder outputs/encoder --out models/encoder --tensorrt off --precision fp32
      ONNX only, fp32
  dynaflip export --encoder models/encoder --out models/encoder --tensorrt require --precision fp16
      on the GPU machine: fail unless an fp16 engine is built and passes its parity gate
  dynaflip export --encoder outputs/encoder --out /tmp/enc --tolerance 1e-5 --min-cosine 0.99999
  dynaflip export --encoder outputs/encoder --out models/encoder --input-hw 192 192 --token-stages 3 --tolerance 5e-4
      the same weights at a 192 x 192 input, with 24 x 24 x 40 patch tokens (stride 8) after f(o_t)
      for a token_readout policy (values in the tens: a looser absolute parity limit)

ok = ONNX written; the engine too unless TensorRT is unavailable in auto mode.
engine cache: $DYNAFLIP_TRT_CACHE or ~/.cache/dynaflip_ros/tensorrt (never committed).
""" + exit_codes_epilog("a parity gate failed (nothing installed)",
                        c3="--tensorrt require but TensorRT / GPU missing",
                        c4="invalid encoder directory (--encoder) or TensorRT build error")

EXIT_OK, EXIT_PARITY, EXIT_TRT_REQUIRED, EXIT_INVALID = 0, 1, 3, 4


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="export the image encoder to ONNX (parity-gated) and TensorRT",
        description=(
            "Export the trained image encoder to a self-contained directory: encoder.onnx "
            "(single file), manifest.json, image_encoder.safetensors, export_report.json. The ONNX "
            "must match PyTorch on random and image inputs (max |diff|, min cosine) or nothing is "
            "installed. With TensorRT and a CUDA GPU present, also builds and caches the engine."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--encoder", required=True, help="trained encoder dir (image_encoder.safetensors + manifest.json)")
    p.add_argument("--config", default=None, help="ExportConfig YAML, e.g. config/export.yaml (default: the ExportConfig defaults); flags override it")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch / ONNX Runtime")
    v = p.add_argument_group("run-time view (changes no weight; docs/method.md §1 patch tokens)")
    v.add_argument("--input-hw", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="network input size in px (default: the encoder's)")
    v.add_argument("--token-stages", type=int, default=None, metavar="N",
                   help="append patch tokens from the feature map after N trunk stages (3: stride 8; "
                        "0: the trunk's own) (model.token_stages; default: the encoder's setting)")
    x = p.add_argument_group("ONNX export and parity gate")
    x.add_argument("--opset", type=int, default=None, help="ONNX opset (default 18)")
    x.add_argument("--exporter", choices=("dynamo", "torchscript"), default=None, help="torch.onnx exporter (default dynamo)")
    x.add_argument("--static-batch", action="store_true", help="fix the batch dimension to 1 (default: dynamic)")
    x.add_argument("--tolerance", type=float, default=None, help="ONNX parity gate: max |diff| (default 1e-4)")
    x.add_argument("--min-cosine", type=float, default=None, help="ONNX parity gate: min cosine (default 0.9999)")
    x.add_argument("--images", default=None, help="dir of .png/.jpg frames to use in the parity gate (default synthetic)")
    t = p.add_argument_group("TensorRT engine")
    t.add_argument("--tensorrt", choices=("auto", "require", "off"), default=None, help="engine build mode (default auto)")
    t.add_argument("--precision", choices=("fp16", "fp32"), default=None, help="TensorRT precision (default fp16)")
    t.add_argument("--max-batch", type=int, default=None, help="TensorRT profile max batch (default 8)")
    t.add_argument("--cache-dir", default=None, help="TensorRT engine cache root")
    t.add_argument("--rebuild", action="store_true", help="rebuild the TensorRT engine even when cached")
    o = p.add_argument_group("output")
    o.add_argument("--out", required=True, help="output dir (may equal --encoder)")
    p.set_defaults(func=run)


def _load_images(directory: str):
    import glob
    import os

    import cv2
    import numpy as np

    from dynaflip_ros.errors import UserError

    paths = sorted(p for ext in ("png", "jpg", "jpeg") for p in glob.glob(os.path.join(directory, f"*.{ext}")))
    if not paths:
        raise UserError(f"--images: no .png/.jpg images in {directory}")
    frames = []
    for path in paths:
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        if bgr is None:
            raise UserError(f"--images: cannot read image {path}")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        if frames and rgb.shape != frames[0].shape:
            rgb = cv2.resize(rgb, (frames[0].shape[1], frames[0].shape[0]), interpolation=cv2.INTER_AREA)
        frames.append(rgb)
    return np.stack(frames)  # (B, H, W, 3) uint8


def _config(args: argparse.Namespace):
    import dataclasses

    from dynaflip_ros.configs.export import ExportConfig, ParityTolerance
    from dynaflip_ros.configs.io import load_yaml

    cfg = load_yaml(ExportConfig, args.config) if args.config else ExportConfig()
    over: dict = {}
    for flag, field in (("tensorrt", "tensorrt"), ("precision", "precision"), ("opset", "opset"),
                        ("exporter", "exporter"), ("max_batch", "trt_max_batch"), ("cache_dir", "trt_cache_dir")):
        if getattr(args, flag) is not None:
            over[field] = getattr(args, flag)
    if args.static_batch:
        over["dynamic_batch"] = False
    if args.tolerance is not None or args.min_cosine is not None:
        tol = cfg.onnx_tolerance
        over["onnx_tolerance"] = ParityTolerance(
            max_abs_diff=args.tolerance if args.tolerance is not None else tol.max_abs_diff,
            max_rel_diff=tol.max_rel_diff,
            min_cosine=args.min_cosine if args.min_cosine is not None else tol.min_cosine,
        )
    if "trt_max_batch" in over and over["trt_max_batch"] < cfg.trt_opt_batch:
        over["trt_opt_batch"] = over["trt_max_batch"]
    return dataclasses.replace(cfg, **over)


def run(args: argparse.Namespace) -> int:
    import contextlib
    import sys
    import tempfile
    from pathlib import Path

    from dynaflip_ros.errors import UserError
    from dynaflip_ros.export.artifact import EncoderArtifactError

    # A bad config, flag value or image dir: one line from dynaflip_ros.cli.main (exit 2).
    try:
        cfg = _config(args)
    except ValueError as e:  # ExportConfig / ParityTolerance range checks on the flag values
        raise UserError(str(e)) from e
    images = _load_images(args.images) if args.images else None
    out = Path(args.out)
    with contextlib.ExitStack() as stack:
        encoder_dir = args.encoder
        if args.input_hw is not None or args.token_stages is not None:
            from dynaflip_ros.encoder.model import write_runtime_view

            out.mkdir(parents=True, exist_ok=True)
            encoder_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix=".view_", dir=out))
            try:
                view = write_runtime_view(args.encoder, encoder_dir, input_hw=args.input_hw,
                                          token_stages=args.token_stages)
            except (FileNotFoundError, EncoderArtifactError) as e:
                print(f"dynaflip export: {e}", file=sys.stderr)
                return EXIT_INVALID
            print(f"run-time view: {view.architecture}, input {view.input_hw[0]}x{view.input_hw[1]}, "
                  f"output width {view.embedding_dim}")
        return _export(args, cfg, images, out, encoder_dir)


def _export(args: argparse.Namespace, cfg, images, out, encoder_dir: str) -> int:
    """ONNX export + gate of `encoder_dir` into `out`, then the TensorRT engine (`run`)."""
    import sys

    from dynaflip_ros.export.artifact import EncoderArtifactError
    from dynaflip_ros.export.onnx_export import export_onnx
    from dynaflip_ros.export.parity import ExportParityError
    from dynaflip_ros.export.tensorrt_engine import tensorrt_unavailable_reason

    trt_reason = None
    if cfg.tensorrt != "off":
        trt_reason = tensorrt_unavailable_reason()
        if trt_reason and cfg.tensorrt == "require":
            print(f"dynaflip export: TensorRT required (--tensorrt require) but not available: {trt_reason}", file=sys.stderr)
            return EXIT_TRT_REQUIRED

    try:
        report = export_onnx(
            encoder_dir,
            out,
            opset=cfg.opset,
            dynamic_batch=cfg.dynamic_batch,
            tolerance=cfg.onnx_tolerance,
            exporter=cfg.exporter,
            fp16=cfg.tensorrt != "off" and cfg.precision == "fp16",
            fp16_tolerance=cfg.fp16_tolerance,
            parity_batch_sizes=cfg.parity_batch_sizes,
            n_parity_images=cfg.n_parity_images,
            parity_image_hw=cfg.parity_image_hw,
            parity_images=images,
            seed=cfg.seed,
            num_threads=args.threads,
        )
    except ExportParityError as e:
        print(f"dynaflip export: {e}", file=sys.stderr)
        return EXIT_PARITY
    except EncoderArtifactError as e:
        print(f"dynaflip export: {e}", file=sys.stderr)
        return EXIT_INVALID

    if cfg.tensorrt == "off":
        print(f"TensorRT off (--tensorrt off): wrote ONNX only ({out})")
        return EXIT_OK
    if trt_reason:
        print(f"TensorRT not available ({trt_reason}): wrote ONNX only ({out})")
        return EXIT_OK
    return _build_tensorrt(out, cfg, report, images, args.rebuild)


def _build_tensorrt(out, cfg, report, images, rebuild: bool) -> int:
    """Build (or reuse) the cached engine, gate it against ONNX Runtime, record it in the report."""
    import dataclasses
    import shutil
    import sys
    from pathlib import Path

    from dynaflip_ros.export.artifact import REPORT_FILENAME
    from dynaflip_ros.export.parity import check_parity, parity_inputs
    from dynaflip_ros.export.tensorrt_engine import TensorRTBuildError, TensorRTUnavailableError
    from dynaflip_ros.inference.onnxruntime_backend import OnnxRuntimeEncoderBackend
    from dynaflip_ros.inference.tensorrt_backend import TensorRTEncoderBackend

    try:
        trt_backend = TensorRTEncoderBackend(
            out,
            precision=cfg.precision,
            min_batch=cfg.trt_min_batch,
            opt_batch=cfg.trt_opt_batch,
            max_batch=cfg.trt_max_batch,
            workspace_mib=cfg.trt_workspace_mib,
            cache_root=cfg.trt_cache_dir or None,
            force_rebuild=rebuild,
        )
    except TensorRTUnavailableError as e:  # e.g. the GPU vanished between the check and the build
        if cfg.tensorrt == "require":
            print(f"dynaflip export: TensorRT required but not available: {e}", file=sys.stderr)
            return EXIT_TRT_REQUIRED
        print(f"TensorRT not available ({e}): wrote ONNX only ({out})")
        return EXIT_OK
    except TensorRTBuildError as e:
        print(f"dynaflip export: TensorRT engine build failed: {e}", file=sys.stderr)
        return EXIT_INVALID
    outcome = trt_backend.build.outcome
    print(f"TensorRT {cfg.precision} engine: {outcome.engine_path} ({outcome.status}"
          f"{', ' + outcome.reason if outcome.reason else ''}, {outcome.build_s:.1f} s)")

    ort_backend = OnnxRuntimeEncoderBackend(out, providers=["CPUExecutionProvider"])
    inputs = parity_inputs(trt_backend.manifest, cfg.parity_batch_sizes, cfg.n_parity_images, cfg.parity_image_hw,
                           cfg.seed, images)
    # Batches above the engine's max are split by the backend, so every case runs.
    reference = [ort_backend.embed_preprocessed(x) for _, x in inputs]
    tol = cfg.tensorrt_fp16_tolerance if cfg.precision == "fp16" else cfg.tensorrt_fp32_tolerance
    print(f"parity gate: TensorRT {cfg.precision} engine vs ONNX Runtime fp32")
    summary = check_parity(inputs, reference, trt_backend.embed_preprocessed, tol, reference="onnxruntime",
                           candidate=f"tensorrt-{cfg.precision}", raise_on_failure=False)
    report.tensorrt = {**trt_backend.build.to_dict(), "parity": dataclasses.asdict(summary), "passed": summary.passed}
    report.to_json(Path(out) / REPORT_FILENAME)
    if not summary.passed:
        shutil.rmtree(Path(outcome.engine_path).parent, ignore_errors=True)  # never reuse a failing engine
        print("dynaflip export: TensorRT parity gate FAILED (engine removed from the cache): " + "; ".join(summary.failures),
              file=sys.stderr)
        return EXIT_PARITY
    return EXIT_OK

