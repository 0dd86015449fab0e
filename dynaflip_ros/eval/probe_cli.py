"""`dynaflip probe`: linear probe of an encoder's embeddings on a recorded dataset (eval/probe.py).

Embeds every frame with the frozen encoder (the same cache as `dynaflip train-policy`), fits a
ridge regressor per quantity on most episodes and reports held-out R^2: joints, gripper, finger
pads, the instructed object and every catalogue object's position (of f(o_t) alone when the
encoder also outputs patch tokens). With --spatial-steps, also the spatial readout probe of those
tokens (eval/spatial_probe.py): how far a learned spatial softmax places every object.
"""
from __future__ import annotations

import argparse

from dynaflip_ros.cli import exit_codes_epilog

EPILOG = """examples:
  dynaflip probe --dataset outputs/demos --encoder models/encoder
  dynaflip probe --dataset outputs/demos --encoder outputs/encoder_export --out outputs/probe.json
  # an encoder exported with model.output_tokens: also the spatial readout probe of its patch tokens
  dynaflip probe --dataset outputs/demos --encoder outputs/encoder_tok_export --spatial-steps 6000

R2 is 1 - SSE/SS0 on held-out episodes, SS0 the error of the training mean (1: linearly decodable;
0: no better than that mean).
""" + exit_codes_epilog()


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "probe", help="linear probe of encoder embeddings (joints, gripper, object positions)",
        description=__doc__.split("\n\n")[1], epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dataset", required=True, help="LeRobotDataset v3 root with point tracks (dynaflip record --sim)")
    p.add_argument("--encoder", required=True, help="exported encoder directory (manifest.json + model)")
    p.add_argument("--backend", default="onnxruntime", choices=["auto", "onnxruntime", "tensorrt", "torch"],
                   help="encoder backend (default onnxruntime)")
    p.add_argument("--threads", type=int, default=2, help="torch / ONNX Runtime threads (default 2)")
    p.add_argument("--cache-dir", default=None, help="embedding cache (default: ~/.cache/dynaflip_ros/embeddings)")
    p.add_argument("--heldout-fraction", type=float, default=0.2, help="share of episodes scored (default 0.2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the episode split (default 0)")
    p.add_argument("--ridge-alpha", type=float, default=1.0, help="ridge penalty on standardised inputs (default 1)")
    p.add_argument("--spatial-steps", type=int, default=0, metavar="N",
                   help="also train the spatial readout probe of the encoder's patch tokens for N steps "
                        "(eval/spatial_probe.py; needs an encoder with model.output_tokens; default 0: off)")
    p.add_argument("--out", metavar="PATH", help="also write the report as JSON here")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import numpy as np

    from dynaflip_ros.data.dataset_io import atomic_write_bytes
    from dynaflip_ros.data.triplets import load_episode_frames
    from dynaflip_ros.errors import UserError
    from dynaflip_ros.encoder.manifest import token_layout
    from dynaflip_ros.eval.probe import format_report, object_centres, probe
    from dynaflip_ros.eval.spatial_probe import spatial_object_probe
    from dynaflip_ros.policies.embeddings import compute_embeddings, default_cache_dir
    from dynaflip_ros.policies.train import load_encoder_backend

    for flag, path in (("--dataset", args.dataset), ("--encoder", args.encoder)):
        if not Path(path).is_dir():
            raise UserError(f"{flag} {path} is not a directory")
    if not 0.0 < args.heldout_fraction < 1.0:
        raise UserError(f"--heldout-fraction must be in (0, 1), got {args.heldout_fraction}")
    if args.spatial_steps < 0:
        raise UserError(f"--spatial-steps must be >= 0, got {args.spatial_steps}")
    frames = load_episode_frames(args.dataset, None, progress=False)  # tracks / state only, no images
    enc = load_encoder_backend(args.encoder, args.backend, args.threads)
    layout = token_layout(enc.manifest)
    if args.spatial_steps and layout is None:
        raise UserError(f"--spatial-steps: {args.encoder} outputs no patch tokens (export an encoder whose config "
                        f"has model.output_tokens: true)")
    emb = compute_embeddings(args.dataset, enc, cache_dir=default_cache_dir() if args.cache_dir is None else args.cache_dir,
                             progress=not args.no_progress)
    if not (np.array_equal(emb.episode_index, frames.episode_index) and np.array_equal(emb.frame_index, frames.frame_index)):
        raise UserError(f"{args.dataset}: the embedded frames do not line up with the dataset's rows (changed while reading?)")
    try:
        pooled = emb.embedding if layout is None else emb.embedding[:, : layout.embedding_dim]  # f(o_t), no tokens
        report = probe(pooled, frames.state, frames.tracks, frames.valid, frames.episode_index,
                       frames.episode_start, frames.episode_length,
                       [frames.objects_of(e) for e in range(len(frames.episode_ids))],
                       heldout_fraction=args.heldout_fraction, seed=args.seed, ridge_alpha=args.ridge_alpha)
    except ValueError as e:
        raise UserError(f"{args.dataset}: {e}") from e
    print(f"encoder {enc.manifest.weights_sha256[:16]}  dataset {args.dataset}  "
          f"{len(frames.episode_ids)} episodes, {len(report.test_episodes)} held out")
    print(format_report(report))
    spatial = None
    if args.spatial_steps:
        h, w = layout.grid
        tokens = emb.embedding[:, layout.embedding_dim :].reshape(len(emb.embedding), h, w, layout.channels)
        centres = object_centres(frames.tracks, frames.valid, frames.episode_start, frames.episode_length,
                                 [frames.objects_of(e) for e in range(len(frames.episode_ids))])
        try:
            spatial = spatial_object_probe(tokens, centres, frames.episode_index, heldout_fraction=args.heldout_fraction,
                                           seed=args.seed, steps=args.spatial_steps)
        except ValueError as e:
            raise UserError(f"{args.dataset}: {e}") from e
        print(f"spatial readout of {h}x{w}x{layout.channels} tokens, {spatial.steps} steps: every object's centre "
              f"median {100 * spatial.median_error_m:.1f} cm, mean {100 * spatial.mean_error_m:.1f} cm "
              f"(training mean: {100 * spatial.baseline_median_m:.1f} cm)")
    if args.out:
        out = {"encoder_sha256": enc.manifest.weights_sha256, "dataset": str(args.dataset),
               "dataset_fingerprint": emb.dataset_fingerprint, **report.to_dict(),
               **({"spatial": spatial.to_dict()} if spatial is not None else {})}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(Path(args.out), (json.dumps(out, indent=2) + "\n").encode())
        print(f"report: {args.out}")
    return 0
