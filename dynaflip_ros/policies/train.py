"""Behaviour cloning of the diffusion policy on precomputed embeddings (`dynaflip train-policy`).

Samples (LeRobot delta-timestamp indexing, instruction draws, stats, validation) are built in
`policies.samples`. Optimiser: Adam + cosine schedule with linear warmup (diffusers
`get_scheduler`, as LeRobot's diffusion preset), gradient clipping. Validation is by held-out
episodes (floor(val_fraction * E) of the E episodes, none when that is 0, which is logged once
and stated in the train info): the diffusion loss at fixed noise, and the action error of sampled
chunks against the demonstrations next to a "hold the current state" baseline.

Language conditioning (docs/method.md §3): every distinct instruction is embedded once by the
frozen text encoder; each training sample draws one of its episode's paraphrases at every use.
`init_dir` starts from another policy's weights, `checkpoint_dir` + `resume` write / continue
resumable checkpoints (`policies.checkpoint`). With train.ema_max_decay > 0 the saved policy,
the validation metrics and each checkpoint's policy files use the exponential moving average of
the weights (`policies.ema`). The train info (policy.json "train") records the
data, the recipe and the step counts. Raises `policies.base.PolicyDataError` (a UserError) when
the episodes cannot train the policy (all too short for its horizon, embeddings of another
encoder) and PolicyCheckpointError for an unusable init or resume checkpoint.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dynaflip_ros.configs.io import to_dict
from dynaflip_ros.data import schema
from dynaflip_ros.configs.policy import READOUT_TARGET_FRAMES, DiffusionModelConfig, PolicyConfig
from dynaflip_ros.policies import checkpoint as ckpt
from dynaflip_ros.policies.base import PolicyCheckpointError, PolicyDataError
from dynaflip_ros.policies.diffusion import DiffusionPolicyRunner
from dynaflip_ros.policies.ema import WeightAverage
from dynaflip_ros.policies.embeddings import EmbeddedEpisodes, compute_embeddings, default_cache_dir
from dynaflip_ros.policies.language import MiniLMTextEncoder, text_encoder_info
from dynaflip_ros.policies.samples import (  # noqa: F401  (re-exported: the trainer's data API)
    Samples,
    anchor_rows,
    compute_stats,
    delta_indices,
    evaluate,
    num_val_episodes,
    query_indices,
    split_episodes,
    target_centre_stats,
)

log_ = logging.getLogger(__name__)
_MAX_LENGTHS_SHOWN = 12  # episode lengths quoted in an error message


def _too_short_message(train: EmbeddedEpisodes, n_val: int, model: DiffusionModelConfig) -> str:
    """Why no training sample exists: every training episode is shorter than the model needs."""
    starts, ends = train.episode_bounds()
    lengths = (ends - starts).tolist() if len(train.episode_index) else []
    shown = ", ".join(str(n) for n in lengths[:_MAX_LENGTHS_SHOWN]) + (", ..." if len(lengths) > _MAX_LENGTHS_SHOWN else "")
    need = model.drop_n_last_frames + 1
    return (
        f"no training anchors: the {len(lengths)} training episodes ({n_val} more held out for validation) "
        f"have [{shown}] frames, but the policy needs episodes of at least drop_n_last_frames+1 = {need} "
        f"frames (model.horizon {model.horizon} - model.n_action_steps {model.n_action_steps} - "
        f"model.n_obs_steps {model.n_obs_steps} + 2); record longer episodes, or lower model.horizon / "
        "raise model.n_action_steps in the policy config"
    )


def _text_encoder_for(episodes: EmbeddedEpisodes, model: DiffusionModelConfig, text_encoder):
    """(episodes with instruction embeddings, text encoder) for a language-conditioned model;
    (episodes, None) for an image-only one."""
    if not model.language_conditioning:
        return episodes, None
    text_encoder = MiniLMTextEncoder() if text_encoder is None else text_encoder
    if episodes.instruction_embedding is None or episodes.text_encoder_sha256 != text_encoder.weights_sha256:
        episodes = episodes.with_instruction_embeddings(text_encoder)
    return episodes, text_encoder


def _fresh_runner(train_set: Samples, episodes: EmbeddedEpisodes, config: PolicyConfig, encoder_manifest,
                  text_encoder, init: DiffusionPolicyRunner | None) -> DiffusionPolicyRunner:
    """A new runner: stats of `train_set` (or the init's with init_stats "keep"), weights of the
    init when given (created first anyway, so the torch RNG advances as in a run without init)."""
    tc, mc = config.train, config.model
    text_weights = train_set.text_weights() if mc.language_conditioning else None
    stats = compute_stats(train_set.episodes, train_set.targets[~train_set.act_pad], text_weights,
                          states=train_set.model_state)
    runner = DiffusionPolicyRunner.create(
        mc, episodes.embedding_dim, stats, episodes.fps, encoder_manifest, seed=tc.seed, text_encoder=text_encoder
    )
    if init is not None:
        runner.policy.load_state_dict(init.policy.state_dict(), strict=True)
        if tc.init_stats == "keep":
            runner.preprocessor, runner.postprocessor = init.preprocessor, init.postprocessor
    return runner


def _identity(config: PolicyConfig, episodes: EmbeddedEpisodes, train_ids, val_ids, text_encoder,
              init_record: dict | None) -> dict[str, Any]:
    """What a resumed run must share with the interrupted one (policies.checkpoint.check_resumable)."""
    return {
        "config": to_dict(config),
        "dataset_fingerprint": episodes.dataset_fingerprint,
        "encoder_sha256": episodes.encoder_sha256,
        "text_encoder_sha256": None if text_encoder is None else str(text_encoder.weights_sha256),
        "train_episodes": [int(i) for i in train_ids],
        "val_episodes": [int(i) for i in val_ids],
        "init_weights_sha256": None if init_record is None else init_record["weights_sha256"],
    }


def train_policy(
    episodes: EmbeddedEpisodes,
    config: PolicyConfig,
    encoder_manifest,
    log_path: str | Path | None = None,
    progress: bool = True,
    log_fn: Callable[[dict], None] | None = None,
    *,
    text_encoder=None,
    init_dir: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
) -> tuple[DiffusionPolicyRunner, dict[str, Any]]:
    """Train a DiffusionPolicyRunner on `episodes` (embeddings of the encoder in `encoder_manifest`).

    Uses config.train (steps, batch_size, lr, seed, ...) and config.model. Writes one JSON line
    per log / eval event to `log_path` (if given; appended to when resuming). text_encoder:
    `policies.language` (language-conditioned models; default the shipped MiniLM, loaded only when
    the episodes' instructions are not embedded yet). init_dir: start from that policy
    checkpoint's weights (`policies.checkpoint.load_init`). checkpoint_dir: write a resumable
    checkpoint there every train.checkpoint_every_steps steps; resume: continue from its latest
    one (PolicyCheckpointError when there is none or the run differs). Returns (runner in eval
    mode, train_info dict: data, recipe, split, step counts, final losses, val metrics, timing).
    Raises PolicyDataError (a ValueError) when the encoder sha differs from the episodes' or no
    training episode is long enough for the model's horizon (the message gives the lengths).
    """
    import torch
    from tqdm import tqdm

    tc, mc = config.train, config.model
    manifest_sha = (
        encoder_manifest["weights_sha256"] if isinstance(encoder_manifest, dict) else encoder_manifest.weights_sha256
    )
    if manifest_sha != episodes.encoder_sha256:
        raise PolicyDataError(
            f"embeddings were computed by encoder {episodes.encoder_sha256[:16]}..., not {manifest_sha[:16]}..."
        )
    if resume and checkpoint_dir is None:
        raise ValueError("resume needs checkpoint_dir")
    torch.set_num_threads(tc.num_threads)
    episodes, text_encoder = _text_encoder_for(episodes, mc, text_encoder)

    train_ids, val_ids = split_episodes(episodes.episode_index, tc.val_fraction, tc.seed)
    validation_note = None
    if len(val_ids) == 0:
        validation_note = (
            f"no validation episodes: floor(val_fraction {tc.val_fraction} * {len(train_ids)} episodes) = 0; "
            "record more episodes or raise train.val_fraction for a validation loss"
        )
        log_.warning("%s", validation_note)
    train_set = Samples(episodes.select_episodes(train_ids), mc)
    if len(train_set) == 0:
        raise PolicyDataError(_too_short_message(train_set.episodes, len(val_ids), mc))
    init, init_record = None, None
    if init_dir is not None:
        init, init_record = ckpt.load_init(
            init_dir, mc, episodes.embedding_dim, manifest_sha, text_encoder, tc.init_stats
        )
    identity = _identity(config, episodes, train_ids, val_ids, text_encoder, init_record)

    state, tensors, resumed_from = None, None, []
    if resume:
        where = ckpt.latest_checkpoint(checkpoint_dir)
        if where is None:
            raise PolicyCheckpointError(
                f"--resume: no training checkpoint in {checkpoint_dir} (the run finished, never reached "
                f"train.checkpoint_every_steps = {tc.checkpoint_every_steps}, or wrote to another --out); "
                "train without --resume"
            )
        state, tensors = ckpt.read_checkpoint(where)
        ckpt.check_resumable(state["identity"], identity, where)
        runner = DiffusionPolicyRunner.load(where, encoder_sha256=manifest_sha, seed=tc.seed, text_encoder=text_encoder)
        resumed_from = [*state["resumed_from"], int(state["step"])]
        log_.info("resuming from %s (step %d of %d)", where, state["step"], tc.steps)
    else:
        torch.manual_seed(tc.seed)
        runner = _fresh_runner(train_set, episodes, config, encoder_manifest, text_encoder, init)
    rng = np.random.default_rng(tc.seed)
    target_stats = target_centre_stats(train_set.episodes) if mc.readout_target_weight > 0 else None
    train_set.normalise(runner, target_stats)
    val_set = Samples(episodes.select_episodes(val_ids), mc) if len(val_ids) else None
    val_set = val_set.normalise(runner, target_stats) if val_set is not None and len(val_set) else None

    policy = runner.policy
    policy.train()
    optimizer = torch.optim.Adam(
        policy.get_optim_params(), lr=tc.lr, betas=tc.betas, eps=tc.eps, weight_decay=tc.weight_decay
    )
    from diffusers.optimization import get_scheduler

    scheduler = get_scheduler(
        "cosine", optimizer=optimizer, num_warmup_steps=tc.warmup_steps, num_training_steps=tc.steps
    )
    ema = WeightAverage(policy, tc.ema_max_decay, tc.ema_power) if tc.ema else None
    averaged = ema.averaged if ema is not None else contextlib.nullcontext
    if state is None:
        order, cursor, start_step = rng.permutation(len(train_set)), 0, 0
        running, history_loss, evals, time_before_s = 0.0, [], [], 0.0
    else:  # restore everything the loop depends on (checkpoint module docstring)
        optimizer.load_state_dict(ckpt.optimizer_from_flat(state["optimizer"], tensors))
        scheduler.load_state_dict(state["scheduler"])
        if ema is not None:  # the checkpoint's policy files hold the average; the raw iterate is restored here
            ema.load_state(state["ema"], tensors)
        rng = ckpt.restore_numpy_rng(state["rng"]["numpy"], tc.seed)
        ckpt.restore_rng_states(state["rng"], tensors)
        loop = state["loop"]
        order, cursor, start_step = tensors["loop.order"].numpy().astype(np.int64), int(loop["cursor"]), int(state["step"])
        running, history_loss, evals = float(loop["running"]), list(loop["history_loss"]), list(loop["evals"])
        time_before_s = float(loop["train_time_s"])

    stack = contextlib.ExitStack()
    log_file = None
    if log_path is not None:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        log_file = stack.enter_context(open(log_path, "a" if resume else "w"))

    def log(record: dict) -> None:
        if log_file is not None:
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()
        if log_fn is not None:
            log_fn(record)

    def write_checkpoint(step: int) -> None:
        opt_json, opt_tensors = ckpt.optimizer_to_flat(optimizer.state_dict())
        rng_json, rng_tensors = ckpt.rng_states()
        rng_json["numpy"] = ckpt.rng_numpy_state(rng)
        loop = {"cursor": cursor, "running": running, "history_loss": history_loss, "evals": evals,
                "train_time_s": time_before_s + time.perf_counter() - t_start}
        ema_json, ema_tensors = ema.state() if ema is not None else (None, {})
        with averaged():  # the step directory is a usable policy: the weights that would ship
            ckpt.save_checkpoint(
                checkpoint_dir, step, runner,
                {"identity": identity, "optimizer": opt_json, "scheduler": scheduler.state_dict(), "rng": rng_json,
                 "loop": loop, "resumed_from": resumed_from, "ema": ema_json},
                {**opt_tensors, **rng_tensors, **ema_tensors,
                 "loop.order": torch.from_numpy(np.asarray(order, np.int64))},
            )  # fmt: skip
        policy.train()

    t_start = time.perf_counter()
    bar = tqdm(range(start_step + 1, tc.steps + 1), desc="train-policy", unit="step", disable=not progress)
    try:
        for step in bar:
            if cursor + tc.batch_size > len(order):  # new epoch
                order, cursor = rng.permutation(len(train_set)), 0
            sel = order[cursor : cursor + tc.batch_size]
            cursor += tc.batch_size
            text_ids = train_set.draw_texts(sel, rng) if train_set.language else None
            loss, _ = policy.forward(train_set.batch(sel, text_ids))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite training loss at step {step}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), tc.grad_clip_norm)
            optimizer.step()
            scheduler.step()
            if ema is not None:
                ema.update()
            running += float(loss.detach())
            if step % tc.log_every_steps == 0 or step == tc.steps:
                n = tc.log_every_steps if step % tc.log_every_steps == 0 else step % tc.log_every_steps
                mean_loss = running / n
                running = 0.0
                history_loss.append(mean_loss)
                bar.set_postfix(loss=f"{mean_loss:.4f}")
                log(
                    {
                        "event": "train",
                        "step": step,
                        "loss": mean_loss,
                        "grad_norm": float(grad_norm),
                        "lr": scheduler.get_last_lr()[0],
                        "elapsed_s": time_before_s + time.perf_counter() - t_start,
                    }
                )
            if val_set is not None and (step % tc.eval_every_steps == 0 or step == tc.steps):
                with averaged():
                    metrics = evaluate(runner, val_set, tc.eval_max_samples, tc.seed)
                evals.append({"step": step, **metrics})
                log({"event": "eval", "step": step, **metrics, "elapsed_s": time_before_s + time.perf_counter() - t_start})
            every = tc.checkpoint_every_steps
            if checkpoint_dir is not None and every and step % every == 0 and step < tc.steps:
                write_checkpoint(step)
    finally:
        bar.close()
        stack.close()
    train_time_s = time_before_s + time.perf_counter() - t_start
    if ema is not None:
        ema.copy_to_module()
    policy.eval()
    runner.reset()

    info = {
        "steps": tc.steps,
        "total_steps": tc.steps + int((init_record or {}).get("total_steps") or 0),
        "steps_this_run": tc.steps - start_step,
        "resumed_from_steps": resumed_from,
        "batch_size": tc.batch_size,
        "seed": tc.seed,
        "weights": "ema" if ema is not None else "last_step",
        **({"ema_final_decay": ema.decay} if ema is not None else {}),
        "config": to_dict(config),
        "dataset": {
            "fingerprint": episodes.dataset_fingerprint,
            "episodes": len(train_ids) + len(val_ids),
            "frames": len(episodes.embedding),
            "context_only_frames": 0 if episodes.demonstrated is None else int((~episodes.demonstrated).sum()),
            "instructions": len(episodes.instruction_texts),
        },
        "init": init_record,
        "language_conditioning": mc.language_conditioning,
        "text_encoder": None if text_encoder is None else text_encoder_info(text_encoder),
        "train_episodes": [int(i) for i in train_ids],
        "val_episodes": [int(i) for i in val_ids],
        "train_anchors": len(train_set),
        "num_frames": len(episodes.embedding),
        "embedding_dim": episodes.embedding_dim,
        "dataset_fingerprint": episodes.dataset_fingerprint,
        "final_loss": history_loss[-1] if history_loss else math.nan,
        "final_eval": evals[-1] if evals else None,
        **({"validation_note": validation_note} if validation_note else {}),
        "train_time_s": train_time_s,
        "s_per_step": train_time_s / max(1, tc.steps),
        "num_parameters": runner.num_parameters,
        "torch_threads": tc.num_threads,
    }
    runner.train_info = info
    return runner, info


def load_encoder_backend(encoder_dir: str | Path, backend: str, num_threads: int = 2):
    """`inference.factory.load_encoder_backend(encoder_dir, backend)` with `num_threads` CPU threads
    for the onnxruntime / torch backends (EncoderBackend: embed(uint8 (B,H,W,3)) -> (B,D))."""
    from dynaflip_ros.inference.factory import load_encoder_backend as _load

    return _load(
        str(encoder_dir),
        backend=backend,
        onnxruntime_options={"intra_op_num_threads": num_threads},
        torch_options={"num_threads": num_threads},
    )


def load_text_encoder():
    """The shipped text encoder (`policies.language.MiniLMTextEncoder`; tests replace this)."""
    return MiniLMTextEncoder()


def train_policy_from_dataset(
    dataset_root: str | Path,
    encoder_dir: str | Path,
    out_dir: str | Path,
    config: PolicyConfig,
    backend: str = "onnxruntime",
    cache_dir: str | Path | None = None,
    progress: bool = True,
    encoder_backend=None,
    *,
    init_dir: str | Path | None = None,
    resume: bool = False,
    episodes: EmbeddedEpisodes | None = None,
) -> dict[str, Any]:
    """Embed the dataset with the encoder at `encoder_dir` (and, language-conditioned, its
    instructions with the text encoder; both cached), train, and save to `out_dir`.

    `encoder_backend` overrides loading from `encoder_dir` (tests); `episodes`, already embedded
    by that backend (its manifest's sha256), skips the embedding (`eval.privileged`).
    init_dir: see `train_policy`.
    Resumable checkpoints go to `out_dir/checkpoints/` and are deleted once the policy is saved,
    so `out_dir` is the deployable policy. resume (as `dynaflip train-encoder --resume`): continue
    from the latest checkpoint there (another config / dataset / init is refused); with none, a
    policy already complete in `out_dir` for the same run is left as it is (nothing to do, its
    train info returned with "already_complete": True), otherwise a fresh run. Without resume a
    fresh run deletes any checkpoint there. Writes `out_dir`/ (checkpoint, see
    policies.diffusion) and `out_dir/train_log.jsonl`. Returns the train info (also stored in
    policy.json), with the dataset root, encoder directory, `embedding_time_s` and
    `checkpoint_bytes` added.
    """
    out_dir = Path(out_dir)
    enc = encoder_backend
    if enc is None:
        enc = load_encoder_backend(encoder_dir, backend, config.train.num_threads)
    text_encoder = load_text_encoder() if config.model.language_conditioning else None
    t0 = time.perf_counter()
    if episodes is None:
        episodes = compute_embeddings(
            dataset_root,
            enc,
            batch_size=config.train.embed_batch_size,
            cache_dir=default_cache_dir() if cache_dir is None else cache_dir,
            progress=progress,
            text_encoder=text_encoder,
        )
    embedding_time_s = time.perf_counter() - t0
    if config.model.readout_target_weight > 0 and episodes.target_centre is None:
        episodes = with_target_centres(episodes, dataset_root, config.model.readout_target_frame)
    if episodes.demonstrated is None:
        episodes = with_demonstration_marks(episodes, dataset_root)
    if episodes.embedding_dim != enc.manifest.embedding_dim:
        raise PolicyDataError(f"embedding dim {episodes.embedding_dim} != manifest {enc.manifest.embedding_dim}")
    checkpoint_dir = out_dir / ckpt.CHECKPOINTS_DIR
    if resume and ckpt.latest_checkpoint(checkpoint_dir) is None:
        done = _completed_run(out_dir, config, episodes, enc.manifest.weights_sha256, text_encoder, init_dir)
        if done is not None:
            log_.warning("--resume: the policy in %s is complete for this run (%d steps); nothing to do",
                         out_dir, config.train.steps)
            done["already_complete"] = True
            done["checkpoint_bytes"] = int(sum(p.stat().st_size for p in out_dir.iterdir() if p.is_file()))
            return done
        log_.warning("--resume: no training checkpoint in %s; starting a fresh run", checkpoint_dir)
        resume = False
    if not resume:
        ckpt.remove_checkpoints(checkpoint_dir)
    runner, info = train_policy(
        episodes, config, enc.manifest, log_path=out_dir / "train_log.jsonl", progress=progress,
        text_encoder=text_encoder, init_dir=init_dir, checkpoint_dir=checkpoint_dir, resume=resume,
    )  # fmt: skip
    info["embedding_time_s"] = embedding_time_s
    info["dataset_root"] = str(Path(dataset_root).resolve())
    info["dataset"]["root"] = info["dataset_root"]
    info["encoder_dir"] = str(Path(encoder_dir).resolve()) if Path(encoder_dir).is_dir() else str(encoder_dir)
    info["encoder_backend"] = type(enc).__name__
    runner.train_info = info
    runner.save(out_dir)
    ckpt.remove_checkpoints(checkpoint_dir)
    info["checkpoint_bytes"] = int(sum(p.stat().st_size for p in out_dir.iterdir() if p.is_file()))
    return info


def with_demonstration_marks(episodes: EmbeddedEpisodes, dataset_root: str | Path) -> EmbeddedEpisodes:
    """`episodes` with demonstrated (N,) bool set from the dataset's episode records: False on
    the frames before an episode's `extra["demonstration_start_frame"]` (a missed grasp recorded
    as context, `dynaflip record --regrasp-fraction`); unchanged (None) when no episode has one."""
    from dynaflip_ros.data.dataset_io import read_episode_records

    starts = {int(r["episode_index"]): int((r.get("extra") or {}).get("demonstration_start_frame", 0))
              for r in read_episode_records(dataset_root) if isinstance(r, dict) and "episode_index" in r}
    first = np.array([starts.get(int(e), 0) for e in episodes.episode_index], np.int64)  # (N,)
    if not first.any():
        return episodes
    return dataclasses.replace(episodes, demonstrated=episodes.frame_index >= first)


def with_target_centres(episodes: EmbeddedEpisodes, dataset_root: str | Path, frame: str = "camera") -> EmbeddedEpisodes:
    """`episodes` with target_centre read from the point tracks of the dataset they were embedded
    from: per frame the centre of the instructed object's valid points (its track rows,
    `data.schema.object_rows(0)`; camera optical frame, m), with frame "fingers" minus the
    midpoint of the finger pads (`data.schema.target_offset_from_fingers`; the
    `DiffusionModelConfig.readout_target_frame`), NaN where any of them has no valid point; no image is
    decoded. Raises UserError (TripletDataError) when the recording has no valid tracks,
    PolicyDataError when its rows do not line up with `episodes` (the dataset changed since it
    was embedded), ValueError on another frame."""
    if frame not in READOUT_TARGET_FRAMES:
        raise ValueError(f"frame must be one of {READOUT_TARGET_FRAMES}, got {frame!r}")
    from dynaflip_ros.data.triplets import load_episode_frames

    frames = load_episode_frames(dataset_root, None, progress=False)
    if not (np.array_equal(frames.episode_index, episodes.episode_index)
            and np.array_equal(frames.frame_index, episodes.frame_index)):
        raise PolicyDataError(f"{dataset_root}: the point tracks do not line up with the embedded frames "
                              "(the dataset changed while reading?)")
    if frame == "fingers":
        centre = schema.target_offset_from_fingers(frames.tracks, frames.valid)  # (M, 3)
    else:
        rows = schema.object_rows(0)
        centre = schema.valid_point_centre(frames.tracks[:, rows], frames.valid[:, rows])  # (M, 3)
    return dataclasses.replace(episodes, target_centre=centre.astype(np.float32))


def _completed_run(out_dir: Path, config: PolicyConfig, episodes: EmbeddedEpisodes, encoder_sha256: str,
                   text_encoder, init_dir) -> dict[str, Any] | None:
    """The train info of an intact policy in `out_dir` trained by this same run (config, data,
    encoders, split, init, all its steps), else None."""
    try:
        runner = DiffusionPolicyRunner.load(out_dir, encoder_sha256=encoder_sha256, text_encoder=text_encoder)
    except (OSError, ValueError, RuntimeError):  # none, damaged, or other encoders: not this run's
        return None
    info = dict(runner.train_info)
    if not {"config", "dataset_fingerprint", "train_episodes", "val_episodes"} <= set(info):
        return None
    init_sha = None
    if init_dir is not None:
        init_sha = DiffusionPolicyRunner.read_metadata(init_dir)["files_sha256"].get("model.safetensors")
    train_ids, val_ids = split_episodes(episodes.episode_index, config.train.val_fraction, config.train.seed)
    current = _identity(config, episodes, train_ids, val_ids, text_encoder, None)
    current["init_weights_sha256"] = init_sha
    recorded = {
        "config": info["config"], "dataset_fingerprint": info["dataset_fingerprint"],
        "encoder_sha256": runner.encoder_sha256, "text_encoder_sha256": (runner.text_info or {}).get("weights_sha256"),
        "train_episodes": info["train_episodes"], "val_episodes": info["val_episodes"],
        "init_weights_sha256": (info.get("init") or {}).get("weights_sha256"),
    }  # fmt: skip
    try:
        ckpt.check_resumable(recorded, current, out_dir)
    except PolicyCheckpointError as e:
        log_.warning("%s", e)
        return None
    return info if info.get("steps") == config.train.steps else None


__all__ = [
    "anchor_rows",
    "compute_stats",
    "delta_indices",
    "evaluate",
    "query_indices",
    "split_episodes",
    "train_policy",
    "train_policy_from_dataset",
]
