"""Where a `dynaflip train-encoder` run starts from: a resumable checkpoint (`--resume`) or an
existing encoder artifact (`--init DIR`) (docs/method.md §1 "Training").

Checkpoint, `<out>/checkpoints/`, written every `train.save_every` steps and at the end (no
pickle anywhere; docs/architecture.md "Artifacts"):
- `step_XXXXXXXX.model.safetensors`: every tensor of `DynaFlipModel.state_dict()` (parameters
  and buffers: BatchNorm statistics, flow normaliser, logit_scale);
- `step_XXXXXXXX.optim.safetensors`: the AdamW state per parameter index ("state.<i>.<key>")
  and the torch RNG states ("rng.torch", "rng.cuda.<i>");
- `latest.json`: format, step (optimisation steps done), both file names with their sha256,
  the numpy Generator state (sampling + augmentation), the train log so far and the run's
  fingerprint (resolved config without the fields that cannot change the result, the data
  summary, the --init weights). Written last, atomically (temp file, fsync, rename), so it
  always names a complete pair; the files of older steps are deleted afterwards.

Resuming restores all of it, so the run continues exactly where the checkpoint was taken and
ends with the same weights as an uninterrupted run of the same seed (same machine and thread
count; tests/test_encoder_resume.py).

--init: the image encoder (and, when the directory has heads.safetensors, every training head
with the flow normaliser and logit_scale) of another artifact replace the initial weights; its
architecture must equal this run's (EncoderInitError names every differing field).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dynaflip_ros.configs.encoder import EncoderConfig, EncoderModelConfig
from dynaflip_ros.configs.io import to_dict
from dynaflip_ros.data.dataset_io import fsync_file
from dynaflip_ros.errors import UserError

CHECKPOINT_DIR = "checkpoints"  # the same name as `dynaflip train-policy`
LATEST_FILE = "latest.json"
CHECKPOINT_FORMAT = "dynaflip-encoder-checkpoint-v1"
# Train fields that do not change the weights a run ends with: may differ when resuming.
RESUME_FREE_TRAIN_FIELDS = ("num_threads", "log_every", "eval_every", "retrieval_clips", "save_every")
# Model fields that do not change the weights' shapes: may differ from an --init artifact.
INIT_FREE_MODEL_FIELDS = ("pretrained", "bn_mode", "channels_last")


class EncoderCheckpointError(ValueError, UserError):
    """A checkpoint cannot be resumed (missing, damaged, or from another config / dataset)."""


class EncoderInitError(ValueError, UserError):
    """An --init artifact does not fit this run (another architecture, or damaged weights)."""


def _fsync_replace(tmp: Path, path: Path) -> None:
    fsync_file(tmp)
    os.replace(tmp, path)


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> str:
    """Write a safetensors file atomically; returns its sha256."""
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}, str(tmp), metadata={"format": "pt"})
    _fsync_replace(tmp, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_fingerprint(cfg: EncoderConfig, data_summary: dict, init_sha256: str | None, world_size: int = 1) -> dict:
    """What must be equal for a checkpoint to be resumed: config (without
    RESUME_FREE_TRAIN_FIELDS), the sampler summary (dataset and split), the --init weights and,
    for a data-parallel run, the number of processes (each samples its own batches)."""
    config = to_dict(cfg)
    for name in RESUME_FREE_TRAIN_FIELDS:
        config["train"].pop(name, None)
    if not config["model"].get("backbone_weights"):  # a field added later: "" is how every older run was
        config["model"].pop("backbone_weights", None)
    out = {"config": config, "data": data_summary, "init_weights_sha256": init_sha256}
    if world_size > 1:
        out["world_size"] = int(world_size)
    return json.loads(json.dumps(out))


def has_checkpoint(out_dir: str | Path) -> bool:
    return (Path(out_dir) / CHECKPOINT_DIR / LATEST_FILE).is_file()




def remove_checkpoint(out_dir: str | Path) -> None:
    """Delete `<out>/checkpoints/` (a fresh run)."""
    d = Path(out_dir) / CHECKPOINT_DIR
    if d.is_dir():
        for p in d.iterdir():
            p.unlink()
        d.rmdir()


def save_checkpoint(
    out_dir: str | Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
    np_rng: np.random.Generator, log: list[dict[str, Any]], fingerprint: dict,
    rank_rng_states: list[dict] | None = None,
) -> Path:
    """Write the checkpoint after `step` optimisation steps (module docstring); returns latest.json.
    rank_rng_states: in a data-parallel run, every process's numpy Generator state in rank order
    (rank 0's is np_rng's), so that each process resumes its own sampling."""
    d = Path(out_dir) / CHECKPOINT_DIR
    d.mkdir(parents=True, exist_ok=True)
    opt_sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for idx, st in opt_sd["state"].items():
        for key, v in st.items():
            if torch.is_tensor(v):
                tensors[f"state.{idx}.{key}"] = v
            else:
                scalars[f"{idx}.{key}"] = v
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    stem = f"step_{step:08d}"
    model_file, optim_file = f"{stem}.model.safetensors", f"{stem}.optim.safetensors"
    record = {
        "format": CHECKPOINT_FORMAT,
        "step": int(step),
        "model_file": model_file,
        "model_sha256": _save_tensors(model.state_dict(), d / model_file),
        "optim_file": optim_file,
        "optim_sha256": _save_tensors(tensors, d / optim_file),
        "optim_scalars": scalars,
        "optim_group_sizes": [len(g["params"]) for g in opt_sd["param_groups"]],
        "numpy_rng": np_rng.bit_generator.state,
        "numpy_rng_ranks": rank_rng_states,
        "log": log,
        "fingerprint": fingerprint,
    }
    latest = d / LATEST_FILE
    tmp = d / (LATEST_FILE + ".tmp")
    tmp.write_text(json.dumps(record, sort_keys=True))
    _fsync_replace(tmp, latest)
    fsync_file(d)
    for p in d.iterdir():
        if p.name not in (LATEST_FILE, model_file, optim_file):
            p.unlink()
    return latest


@dataclass
class ResumedState:
    """step: optimisation steps already done; log: the train log records so far."""

    step: int
    log: list[dict[str, Any]]


def _diff(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += _diff(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
        return out
    return [] if a == b else [f"{path}: {a!r} (checkpoint) != {b!r} (now)"]


def load_checkpoint(
    out_dir: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
    np_rng: np.random.Generator, fingerprint: dict, rank: int = 0,
) -> ResumedState:
    """Restore model, optimiser, torch and numpy RNG states from `<out>/checkpoints/`; `rank`: this
    process's rank in a data-parallel run (its own numpy state; the fingerprint holds the world size).

    The model and optimiser must be built exactly as for the original run. Raises
    EncoderCheckpointError when there is no checkpoint, a file is missing or damaged, or the
    run's fingerprint differs (the message lists the differences).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    d = Path(out_dir) / CHECKPOINT_DIR
    latest = d / LATEST_FILE
    if not latest.is_file():
        raise EncoderCheckpointError(f"--resume: no training checkpoint in {d}")
    try:
        rec = json.loads(latest.read_text())
        if rec.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"format {rec.get('format')!r} != {CHECKPOINT_FORMAT!r}")
        tensors = {}
        for kind in ("model", "optim"):
            path = d / rec[f"{kind}_file"]
            if hashlib.sha256(path.read_bytes()).hexdigest() != rec[f"{kind}_sha256"]:
                raise ValueError(f"{path.name}: sha256 differs from {LATEST_FILE}")
            tensors[kind] = load_file(str(path), device="cpu")
    except (OSError, KeyError, ValueError, SafetensorError) as e:
        raise EncoderCheckpointError(f"{d}: damaged checkpoint ({e}); run without --resume to start over") from e
    diffs = _diff(rec["fingerprint"], fingerprint)
    if diffs:
        raise EncoderCheckpointError(
            f"--resume: the checkpoint in {d} is from another run: " + "; ".join(diffs[:8])
            + (f" (+{len(diffs) - 8} more)" if len(diffs) > 8 else "")
        )
    model.load_state_dict(tensors["model"], strict=True)
    opt_sd = optimizer.state_dict()
    sizes = [len(g["params"]) for g in opt_sd["param_groups"]]
    if sizes != rec["optim_group_sizes"]:
        raise EncoderCheckpointError(f"{d}: optimiser groups {rec['optim_group_sizes']} != {sizes} of this model")
    state: dict[int, dict[str, Any]] = {}
    for name, t in tensors["optim"].items():
        if name.startswith("state."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = t
    for name, v in rec["optim_scalars"].items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = v
    opt_sd["state"] = state
    optimizer.load_state_dict(opt_sd)
    torch.set_rng_state(tensors["optim"]["rng.torch"])
    cuda = [tensors["optim"][f"rng.cuda.{i}"] for i in range(torch.cuda.device_count()) if f"rng.cuda.{i}" in tensors["optim"]]
    if cuda:
        torch.cuda.set_rng_state_all(cuda)
    ranks = rec.get("numpy_rng_ranks")
    np_rng.bit_generator.state = ranks[rank] if ranks else rec["numpy_rng"]
    return ResumedState(step=int(rec["step"]), log=list(rec["log"]))


def init_from_artifact(model: torch.nn.Module, init_dir: str | Path, cfg: EncoderConfig) -> dict[str, Any]:
    """Load an encoder artifact's weights into `model` (a DynaFlipModel built from `cfg`).

    The image encoder always; with heads.safetensors also every head, the flow normaliser and
    logit_scale (returned "heads": True). Raises FileNotFoundError (no artifact),
    EncoderArtifactError (damaged files), EncoderInitError (the architecture differs: every
    model field except INIT_FREE_MODEL_FIELDS, and data.flow_window / num_points / track_layout / points_per_object when heads
    are loaded). Returns {"dir", "weights_sha256", "heads"}.
    """
    from dynaflip_ros.encoder.model import HEADS_FILE, _load_safetensors, _read_manifest_and_config, load_image_encoder

    init_dir = Path(init_dir)
    if not init_dir.is_dir():
        raise FileNotFoundError(f"--init {init_dir}: not a directory")
    manifest, icfg = _read_manifest_and_config(init_dir)
    heads_path = init_dir / HEADS_FILE
    diffs = [f"model.{f.name} {getattr(icfg.model, f.name)!r} != {getattr(cfg.model, f.name)!r}"
             for f in dataclasses.fields(EncoderModelConfig)
             if f.name not in INIT_FREE_MODEL_FIELDS and getattr(icfg.model, f.name) != getattr(cfg.model, f.name)]
    if heads_path.is_file():
        diffs += [f"data.{n} {getattr(icfg.data, n)!r} != {getattr(cfg.data, n)!r}"
                  for n in ("flow_window", "num_points", "track_layout", "points_per_object") if getattr(icfg.data, n) != getattr(cfg.data, n)]
    if diffs:
        raise EncoderInitError(f"--init {init_dir}: its architecture differs from this run's (artifact != run): " + "; ".join(diffs))
    encoder, _ = load_image_encoder(init_dir)
    try:
        model.image_encoder.load_state_dict(encoder.state_dict(), strict=True)
        if heads_path.is_file():
            missing, unexpected = model.load_state_dict(_load_safetensors(heads_path), strict=False)
            missing = [k for k in missing if not k.startswith("image_encoder.")]
            if missing or unexpected:
                raise RuntimeError(f"missing {missing}, unexpected {unexpected}")
    except RuntimeError as e:
        raise EncoderInitError(f"--init {init_dir}: weights do not fit this run's model: {e}") from e
    return {"dir": str(init_dir.resolve()), "weights_sha256": manifest.weights_sha256, "heads": heads_path.is_file()}
