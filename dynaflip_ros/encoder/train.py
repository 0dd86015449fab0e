"""DynaFLIP encoder pre-training loop (docs/method.md §1; DynaFLIP paper §2).

`train_encoder(dataset_root, out_dir, cfg)`: loads every frame of a recorded LeRobotDataset v3
into memory (`data.triplets`), embeds the distinct transition sentences once with the frozen
text encoder (`encoder.text`), fits the flow normaliser on the clips, then optimises
L = L_align + lambda_tcn L_tcn + lambda_act L_actor (`encoder.losses`) with AdamW, linear warm-up +
cosine decay and grad-norm clipping. Every `log_every` steps the loss terms go to stdout and to
`out_dir/train_log.jsonl`; every `save_every` steps and at the end the artifact is written with
`model.save_encoder` (image_encoder.safetensors, heads.safetensors, manifest.json).
Deterministic for a given seed on one machine (torch seed + numpy Generator for sampling and
augmentation).
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
from dynaflip_ros.encoder.model import IMAGE_MEAN, IMAGE_STD, TRAIN_LOG_FILE


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
    """manifest of the final artifact; log: the logged records; seconds_per_step: median wall
    time of a training step after the first (s); data: the sampler summary."""

    manifest: EncoderManifest
    out_dir: Path
    log: list[dict[str, Any]] = field(default_factory=list)
    seconds_per_step: float = float("nan")
    data: dict[str, Any] = field(default_factory=dict)


def train_encoder(
    dataset_root: str | Path,
    out_dir: str | Path,
    cfg: EncoderConfig,
    *,
    text_embedder=None,
    device: str = "cpu",
    progress: bool = True,
    verbose: bool = True,
) -> TrainResult:
    """Pre-train the DynaFLIP encoder on the dataset at `dataset_root`; write the artifact to `out_dir`.

    text_embedder: object with `embed(list[str]) -> float32 (n, cfg.model.text_dim)` (default:
    `encoder.text.TextEmbedder` with its cache at out_dir/text_embeddings.safetensors).
    device: torch device string ("cpu", "cuda"). progress: tqdm bars; verbose: print the data
    summary and one line per logged step to stdout. Returns TrainResult. Raises FileNotFoundError / ValueError from the data loader,
    FloatingPointError when a loss becomes NaN/inf.
    """
    import torch

    from dynaflip_ros.data.triplets import TripletSampler, augment_images, load_episode_frames
    from dynaflip_ros.encoder.losses import dynaflip_loss
    from dynaflip_ros.encoder.model import DynaFlipModel, count_parameters, save_encoder

    tc = cfg.train
    torch.set_num_threads(tc.num_threads)
    torch.manual_seed(tc.seed)
    rng = np.random.default_rng(tc.seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / TRAIN_LOG_FILE
    log_path.write_text("")

    def say(msg: str) -> None:
        if verbose:
            print(msg, flush=True)

    frames = load_episode_frames(dataset_root, cfg.model.input_hw, progress=progress)
    sampler = TripletSampler(frames, cfg.data)
    summary = sampler.summary()
    say(f"[train-encoder] data: {json.dumps(summary)}")

    if text_embedder is None:
        from dynaflip_ros.encoder.text import TextEmbedder

        text_embedder = TextEmbedder(cache_path=out / "text_embeddings.safetensors")
    text_np = np.asarray(text_embedder.embed(frames.texts), np.float32)  # (U, text_dim)
    if text_np.shape != (len(frames.texts), cfg.model.text_dim):
        raise ValueError(f"text embedder returned {text_np.shape}, expected ({len(frames.texts)}, {cfg.model.text_dim})")
    text_emb = torch.from_numpy(text_np).to(device)

    model = DynaFlipModel(cfg, imagenet_init=cfg.model.pretrained)
    model.flow_normalizer.fit(torch.from_numpy(sampler.all_clip_flows(seed=tc.seed)))
    if cfg.model.channels_last:
        model.image_encoder.to(memory_format=torch.channels_last)
    model.to(device)
    model.train()
    n_params = {"image_encoder": count_parameters(model.image_encoder), "total": count_parameters(model)}
    say(f"[train-encoder] parameters: {n_params}; device {device}; {tc.steps} steps of batch {tc.batch_size}")

    opt = torch.optim.AdamW(_param_groups(model, tc), lr=tc.lr, weight_decay=tc.weight_decay)
    run_info: dict[str, Any] = {
        "dataset": str(Path(dataset_root).resolve()),
        "steps": tc.steps,
        "data": summary,
        "texts": list(frames.texts),
        "parameters": n_params,
        "torch": torch.__version__,
    }
    log: list[dict[str, Any]] = []
    step_times: list[float] = []
    t_start = time.monotonic()
    from tqdm import tqdm

    bar = tqdm(range(tc.steps), desc="train-encoder", unit="step", disable=not progress)
    for step in bar:
        t0 = time.monotonic()
        mult = lr_multiplier(step, tc)
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * mult
        batch = sampler.sample(tc.batch_size, rng)
        images = augment_images(batch.images, cfg.data, rng) if cfg.data.augment else batch.images
        x = images_to_tensor(images).to(device)  # (B, V, 3, H, W)
        text_ids = torch.from_numpy(batch.text_ids).to(device)
        outputs = model(x, text_emb[text_ids], torch.from_numpy(batch.flow).to(device))
        terms = dynaflip_loss(
            outputs.z_image, outputs.z_language, outputs.z_flow, model.logit_scale,
            outputs.image_features[:, list(batch.tcn_views)], torch.from_numpy(batch.episode_ids).to(device),
            outputs.flow_pred, outputs.flow_target, cfg.loss, text_ids,
        )
        if not torch.isfinite(terms.total):
            raise FloatingPointError(f"step {step}: non-finite loss {terms.stats}")
        opt.zero_grad(set_to_none=True)
        terms.total.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip_norm))
        opt.step()
        dt = time.monotonic() - t0
        if step > 0:
            step_times.append(dt)
        bar.set_postfix(loss=f"{terms.stats['loss']:.3f}", align=f"{terms.stats['loss_align']:.3f}")

        last = step == tc.steps - 1
        if step % tc.log_every == 0 or last:
            record = {"step": step, "lr": tc.lr * mult, "grad_norm": grad_norm, "step_time_s": dt,
                      "elapsed_s": time.monotonic() - t_start, **terms.stats}
            log.append(record)
            with open(log_path, "a") as f:
                f.write(json.dumps(record, sort_keys=True) + "\n")
            say(
                f"[train-encoder] step {step:>6d} loss {record['loss']:.4f} align {record['loss_align']:.4f} "
                f"tcn {record['loss_tcn']:.4f} actor {record['loss_actor']:.4f} | acc align {record['align_acc']:.2f} "
                f"tcn {record['tcn_acc']:.2f} | E+ {record['energy_pos']:.3f} E- {record['energy_neg']:.3f} "
                f"tau {record['temperature']:.4f} lr {record['lr']:.2e} {dt:.2f} s/step"
            )
        if (tc.save_every and (step + 1) % tc.save_every == 0 and not last):
            save_encoder(out, model, cfg, {**run_info, "step": step + 1, "complete": False})
    bar.close()
    sec_per_step = float(np.median(step_times)) if step_times else float("nan")
    run_info.update(step=tc.steps, complete=True, seconds_per_step=sec_per_step,
                    wall_time_s=time.monotonic() - t_start, final=log[-1] if log else {})
    manifest = save_encoder(out, model, cfg, run_info)
    say(f"[train-encoder] saved {out} (sha256 {manifest.weights_sha256[:12]}..., {sec_per_step:.2f} s/step)")
    return TrainResult(manifest=manifest, out_dir=out, log=log, seconds_per_step=sec_per_step, data=summary)
