"""DynaFLIP encoder pre-training loop (docs/method.md §1; DynaFLIP paper §2).

`train_encoder(dataset_root, out_dir, cfg)`: loads every frame of a recorded LeRobotDataset v3
into memory (`data.triplets`), embeds every distinct clip sentence (all paraphrases) once with
the frozen text encoder (`encoder.text`), fits the flow normaliser on the valid points of the
train clips (or starts from an artifact, `init`), then optimises
L = L_align + lambda_tcn L_tcn + lambda_act L_actor (`encoder.losses`) with AdamW, linear warm-up +
cosine decay and grad-norm clipping. Every `log_every` steps the loss terms go to stdout and to
`out_dir/train_log.jsonl` ({"event": "train", ...}); every `eval_every` steps and at the end the
held-out retrieval (`encoder.retrieval`) too ({"event": "retrieval", ...}, and the manifest's
run info). Every `save_every` steps a resumable checkpoint (`encoder.checkpoint`, `resume`) and
an intermediate artifact are written; at the end the artifact (`model.save_encoder`:
image_encoder.safetensors, heads.safetensors, manifest.json) and the final checkpoint (so that
resuming a complete run is a no-op).
Deterministic for a given seed on one machine (torch seed + numpy Generator for sampling,
paraphrases and augmentation), resumed or not.

Data parallel (docs/method.md §1 "Training at scale"): the loop runs through Hugging Face
Accelerate (https://huggingface.co/docs/accelerate), so the same command started by `torchrun
--nproc_per_node N` (or `accelerate launch`) trains on N processes: gloo on CPU, NCCL on GPUs,
DistributedDataParallel averaging the gradients. Every process samples its own batch of
`batch_size` clips (rank 0 with the single-process Generator, rank r with seed [seed, r]), so the
global batch is N x batch_size while the InfoNCE negatives stay those of the process's own batch
(no cross-process gather). Rank 0 alone logs, evaluates and writes artifacts and checkpoints; the
checkpoint holds every process's sampling state and the world size, so a run resumes on the same
number of processes. `mixed_precision` ("bf16" / "fp16") runs the forward pass under autocast
(fp16 with a gradient scaler), GPU only. One process without mixed precision is the plain loop
(the same weights as before Accelerate was added).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dynaflip_ros.configs.encoder import EncoderConfig, EncoderTrainConfig
from dynaflip_ros.encoder.manifest import EncoderManifest
from dynaflip_ros.encoder.model import IMAGE_MEAN, IMAGE_STD, MANIFEST_FILE, TRAIN_LOG_FILE


def images_to_tensor(images: np.ndarray):
    """uint8 (..., H, W, 3) RGB -> float32 torch (..., 3, H, W), (x/255 - mean) / std with the
    encoder's mean = std = 0.5 (the same normalisation as `encoder.preprocess.preprocess`)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)  # (..., H, W, 3)
    mean = torch.tensor(IMAGE_MEAN)
    std = torch.tensor(IMAGE_STD)
    x = (x - mean) / std
    return x.movedim(-1, -3).contiguous()  # (..., 3, H, W)


def lr_multiplier(step: int, cfg: EncoderTrainConfig) -> float:
    """Linear warm-up over warmup_steps, then cosine decay from 1 to min_lr_ratio at `steps`."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(cfg.steps - cfg.warmup_steps, 1)
    progress = min(max(step - cfg.warmup_steps, 0) / span, 1.0)
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _param_groups(model, cfg: EncoderTrainConfig) -> list[dict]:
    """AdamW groups: trunk at lr * backbone_lr_scale; no weight decay on biases, norms, logit_scale."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_trunk = name.startswith("image_encoder.trunk.")
        no_decay = p.ndim <= 1
        groups.setdefault((is_trunk, no_decay), []).append(p)
    out = []
    for (is_trunk, no_decay), params in sorted(groups.items()):
        lr = cfg.lr * (cfg.backbone_lr_scale if is_trunk else 1.0)
        out.append({"params": params, "lr": lr, "base_lr": lr, "weight_decay": 0.0 if no_decay else cfg.weight_decay})
    return out


@dataclass
class TrainResult:
    """manifest of the artifact; log: the logged records (train and retrieval events);
    seconds_per_step: median wall time of a training step after the first (s); data: the sampler
    summary; retrieval: the last held-out retrieval (None without held-out episodes; rank 0's in a
    data-parallel run); is_main: False on the other processes of a data-parallel run."""

    manifest: EncoderManifest
    out_dir: Path
    log: list[dict[str, Any]] = field(default_factory=list)
    seconds_per_step: float = float("nan")
    data: dict[str, Any] = field(default_factory=dict)
    retrieval: dict[str, Any] | None = None
    is_main: bool = True


def _say_step(record: dict[str, Any]) -> str:
    nan = float("nan")  # the alignment figures are absent without an alignment term
    return (
        f"[train-encoder] step {record['step']:>6d} loss {record['loss']:.4f} align {record['loss_align']:.4f} "
        f"tcn {record['loss_tcn']:.4f} actor {record['loss_actor']:.4f} | acc align {record.get('align_acc', nan):.2f} "
        f"tcn {record['tcn_acc']:.2f} | E+ {record.get('energy_pos', nan):.3f} E- {record.get('energy_neg', nan):.3f} "
        f"tau {record.get('temperature', nan):.4f} lr {record['lr']:.2e} {record['step_time_s']:.2f} s/step"
    )


def train_encoder(
    dataset_root,  # str | Path | EpisodeFrames
    out_dir: str | Path,
    cfg: EncoderConfig,
    *,
    text_embedder=None,
    device: str = "cpu",
    progress: bool = True,
    verbose: bool = True,
    init: str | Path | None = None,
    resume: bool = False,
    recipe: str = "dynaflip",
    mixed_precision: str = "no",
) -> TrainResult:
    """Pre-train the DynaFLIP encoder on the dataset at `dataset_root` (or on frames already in
    memory: a `data.triplets.EpisodeFrames` at cfg.model.input_hw); write the artifact to `out_dir`.

    text_embedder: object with `embed(list[str]) -> float32 (n, cfg.model.text_dim)` (default:
    `encoder.text.TextEmbedder` with its cache at out_dir/text_embeddings.safetensors).
    device: torch device string ("cpu", "cuda"). progress: tqdm bars; verbose: print the data
    summary and one line per logged step to stdout. init: an encoder artifact directory to start
    from (`encoder.checkpoint.init_from_artifact`; the ImageNet init is skipped). resume:
    recipe: the `encoder.recipes` name `cfg` was built with (recorded in the manifest's run info).
    resume: continue from the checkpoint in `out_dir/checkpoints` (same config, dataset and init, else
    EncoderCheckpointError; a complete run: nothing left to do, the artifact is rewritten); with
    no checkpoint there, a fresh run (said on stdout). Without `resume` a fresh run deletes any
    checkpoint there. mixed_precision: "no", "bf16" or "fp16" (module doc; CUDA only).
    Under torchrun / accelerate launch every process calls this; rank 0's TrainResult has
    is_main True. Returns TrainResult. Raises FileNotFoundError / TripletDataError from the data
    loader, EncoderInitError, EncoderCheckpointError, FloatingPointError when a loss becomes
    NaN/inf, ValueError for mixed precision on CPU.
    """
    import torch
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    from dynaflip_ros.data.triplets import EpisodeFrames, TripletSampler, augment_images, load_episode_frames
    from dynaflip_ros.encoder import checkpoint as ckpt
    from dynaflip_ros.encoder.losses import dynaflip_loss
    from dynaflip_ros.encoder.model import DynaFlipModel, count_parameters, save_encoder
    from dynaflip_ros.encoder.retrieval import heldout_retrieval

    tc = cfg.train
    if mixed_precision != "no" and not str(device).startswith("cuda"):
        raise ValueError(f"mixed precision {mixed_precision!r} needs a CUDA device, got {device!r}")
    accelerator = Accelerator(cpu=not str(device).startswith("cuda"), mixed_precision=mixed_precision,
                              device_placement=False,
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    rank, world, is_main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    if world > 1:
        device = str(accelerator.device)
    torch.set_num_threads(tc.num_threads)
    torch.manual_seed(tc.seed)
    rng = np.random.default_rng(tc.seed if rank == 0 else [tc.seed, rank])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / TRAIN_LOG_FILE

    def say(msg: str) -> None:
        if verbose and is_main:
            print(msg, flush=True)

    if resume and not ckpt.has_checkpoint(out):
        say(f"[train-encoder] --resume: no checkpoint in {out / ckpt.CHECKPOINT_DIR}; starting a fresh run")
        resume = False
    frames = dataset_root if isinstance(dataset_root, EpisodeFrames) else \
        load_episode_frames(dataset_root, cfg.model.input_hw, progress=progress and is_main)
    sampler = TripletSampler(frames, cfg.data)
    summary = sampler.summary()
    say(f"[train-encoder] data: {json.dumps(summary)}")

    if text_embedder is None:
        from dynaflip_ros.encoder.text import TextEmbedder

        text_embedder = TextEmbedder(cache_path=out / "text_embeddings.safetensors")
    with accelerator.main_process_first():  # rank 0 fills the text-embedding cache file first
        text_np = np.asarray(text_embedder.embed(sampler.texts), np.float32)  # (U, text_dim)
    if text_np.shape != (len(sampler.texts), cfg.model.text_dim):
        raise ValueError(f"text embedder returned {text_np.shape}, expected ({len(sampler.texts)}, {cfg.model.text_dim})")
    text_emb = torch.from_numpy(text_np).to(device)

    model = DynaFlipModel(cfg, imagenet_init=cfg.model.pretrained and init is None)
    init_info = ckpt.init_from_artifact(model, init, cfg) if init is not None else None
    if init_info is None or not init_info["heads"]:
        flows, valid = sampler.all_clip_flows(seed=tc.seed)
        model.flow_normalizer.fit(torch.from_numpy(flows), torch.from_numpy(valid))
    if cfg.model.channels_last:
        model.image_encoder.to(memory_format=torch.channels_last)
    model.to(device)
    model.train()
    n_params = {"image_encoder": count_parameters(model.image_encoder), "total": count_parameters(model)}
    say(f"[train-encoder] parameters: {n_params}; device {device}; {tc.steps} steps of batch {tc.batch_size}"
        + (f" per process x {world} processes" if world > 1 else "") + (f"; {mixed_precision}" if mixed_precision != "no" else "")
        + (f"; init from {init_info['dir']} (heads: {init_info['heads']})" if init_info else ""))
    opt = torch.optim.AdamW(_param_groups(model, tc), lr=tc.lr, weight_decay=tc.weight_decay)

    heldout = sampler.heldout_batch(tc.retrieval_clips)
    if heldout is not None:
        ho_images = images_to_tensor(heldout.images).to(device)  # (C, 2, 3, H, W)
        ho_flow = torch.from_numpy(heldout.flow).to(device)
        ho_valid = torch.from_numpy(heldout.flow_valid).to(device)
        ho_groups = {int(g): text_emb[torch.from_numpy(sampler.group_text_ids(int(g)))] for g in np.unique(heldout.language_ids)}

    fingerprint = ckpt.run_fingerprint(cfg, summary, init_info["weights_sha256"] if init_info else None, world)
    start, log = 0, []
    if resume:
        state = ckpt.load_checkpoint(out, model, opt, rng, fingerprint, rank=rank)
        start, log = state.step, state.log
        say(f"[train-encoder] resumed from {out / ckpt.CHECKPOINT_DIR} at step {start}")
    elif is_main:
        ckpt.remove_checkpoint(out)
    if is_main:
        log_path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in log))
    core = model  # the module itself: artifacts, checkpoints and retrieval
    model, opt = accelerator.prepare(model, opt)  # DDP across processes; autocast with mixed precision

    def append(record: dict[str, Any]) -> None:
        log.append(record)
        if is_main:
            with open(log_path, "a") as f:
                f.write(json.dumps(record, sort_keys=True) + "\n")

    def checkpoint(step_done: int) -> None:
        states = None
        if world > 1:  # every process's sampling state, in rank order (a collective: all ranks call it)
            states = [None] * world
            torch.distributed.all_gather_object(states, rng.bit_generator.state)
        if is_main:
            ckpt.save_checkpoint(out, step_done, core, opt, rng, log, fingerprint, states)

    run_info: dict[str, Any] = {
        "recipe": recipe,
        "dataset": frames.root if isinstance(dataset_root, EpisodeFrames) else str(Path(dataset_root).resolve()),
        "steps": tc.steps,
        "data": summary,
        "texts": list(sampler.texts),
        "language_groups": [list(k) for k in sampler.group_keys],
        "parameters": n_params,
        "torch": torch.__version__,
        "init": init_info,
        "resumed_from_step": start if resume else None,
        "retrieval": None,
    }
    retrieval = next((r for r in reversed(log) if r.get("event") == "retrieval"), None)
    step_times: list[float] = []
    t_start = time.monotonic()
    from tqdm import tqdm

    bar = tqdm(range(start, tc.steps), desc="train-encoder", unit="step", disable=not (progress and is_main),
               initial=start, total=tc.steps)
    for step in bar:
        t0 = time.monotonic()
        mult = lr_multiplier(step, tc)
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * mult
        batch = sampler.sample(tc.batch_size, rng)
        images = augment_images(batch.images, cfg.data, rng) if cfg.data.augment else batch.images
        x = images_to_tensor(images).to(device)  # (B, V, 3, H, W)
        text_ids = torch.from_numpy(batch.text_ids).to(device)
        flow_valid = torch.from_numpy(batch.flow_valid).to(device)
        outputs = model(x, text_emb[text_ids], torch.from_numpy(batch.flow).to(device), flow_valid)
        terms = dynaflip_loss(
            outputs.z_image, outputs.z_language, outputs.z_flow, outputs.logit_scale,
            outputs.image_features[:, list(batch.tcn_views)], torch.from_numpy(batch.episode_ids).to(device),
            outputs.flow_pred, outputs.flow_target, cfg.loss, text_ids,
            torch.from_numpy(batch.language_ids).to(device), flow_valid,
            dynamics=None if outputs.next_pred is None else (
                outputs.next_pred, outputs.image_features[:, 1], outputs.image_features[:, :2].flatten(0, 1)),
        )
        if not torch.isfinite(terms.total):
            raise FloatingPointError(f"step {step}: non-finite loss {terms.stats}")
        opt.zero_grad(set_to_none=True)
        accelerator.backward(terms.total)
        grad_norm = float(accelerator.clip_grad_norm_(model.parameters(), tc.grad_clip_norm))
        opt.step()
        dt = time.monotonic() - t0
        if step > start:
            step_times.append(dt)
        bar.set_postfix(loss=f"{terms.stats['loss']:.3f}", align=f"{terms.stats['loss_align']:.3f}")

        last = step == tc.steps - 1
        if step % tc.log_every == 0 or last:
            append({"event": "train", "step": step, "lr": tc.lr * mult, "grad_norm": grad_norm, "step_time_s": dt,
                    "elapsed_s": time.monotonic() - t_start, **terms.stats})
            say(_say_step(log[-1]))
        if is_main and heldout is not None and ((tc.eval_every and (step + 1) % tc.eval_every == 0) or last):
            retrieval = {"step": step, **heldout_retrieval(core, ho_images, ho_flow, ho_valid, heldout.language_ids, ho_groups)}
            append({"event": "retrieval", **retrieval})
            say(f"[train-encoder] held-out retrieval at step {step}: transition->language top-1 "
                f"{retrieval['transition_to_language_top1']:.3f} (chance {retrieval['chance_language']:.3f}), "
                f"transition->flow top-1 {retrieval['transition_to_flow_top1']:.3f} (chance {retrieval['chance_flow']:.3f}), "
                f"{retrieval['clips']} clips")
        if tc.save_every and (step + 1) % tc.save_every == 0 and not last:
            if is_main:
                save_encoder(out, core, cfg, {**run_info, "retrieval": retrieval, "step": step + 1, "complete": False})
            checkpoint(step + 1)
    bar.close()
    if not step_times:  # resumed a complete run (or one step): the logged step times
        step_times = [r["step_time_s"] for r in log if r.get("event") == "train" and r["step"] > 0]
    sec_per_step = float(np.median(step_times)) if step_times else float("nan")
    final = next((r for r in reversed(log) if r.get("event") == "train"), {})
    run_info.update(step=tc.steps, complete=True, seconds_per_step=sec_per_step, retrieval=retrieval,
                    wall_time_s=time.monotonic() - t_start, final=final, processes=world,
                    mixed_precision=mixed_precision)
    if is_main:
        save_encoder(out, core, cfg, run_info)
    checkpoint(tc.steps)
    accelerator.wait_for_everyone()  # the artifact is on disk for every process
    manifest = EncoderManifest.from_json(out / MANIFEST_FILE)
    say(f"[train-encoder] saved {out} (sha256 {manifest.weights_sha256[:12]}..., {sec_per_step:.2f} s/step)")
    return TrainResult(manifest=manifest, out_dir=out, log=log, seconds_per_step=sec_per_step, data=summary,
                       retrieval=retrieval, is_main=is_main)
