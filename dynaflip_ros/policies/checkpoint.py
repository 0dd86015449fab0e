"""Resumable training checkpoints and `--init` of the diffusion policy (`dynaflip train-policy`).

Resume (`--resume`): every `train.checkpoint_every_steps` steps the trainer writes
`<out>/checkpoints/step_<NNNNNNNN>/`: the policy checkpoint as `DiffusionPolicyRunner.save`
writes it (model + normalisation stats + policy.json), `trainer_state.safetensors` (optimiser
tensors, torch RNG state, the epoch's sample order) and `trainer_state.json` (step, optimiser
hyper-parameters, LR-scheduler state, numpy and Python RNG states, loop counters, losses so far,
and the identity of the run: config, dataset fingerprint, encoder / text encoder sha256, init).
Never a pickle. Atomic: the directory is written under a temporary name, fsynced and renamed,
then `<out>/checkpoints/latest.json` is replaced (write + fsync + rename); older step directories
are removed only after that, so a crash at any point leaves the previous complete checkpoint
reachable. Resuming restores all of it, so the final weights equal those of an uninterrupted run
with the same seed (CPU, same torch build and thread count).

Init (`--init DIR`): start from the weights of an existing policy checkpoint. Refused
(PolicyCheckpointError) when the architecture or the embedding widths differ; trained on another
image / text encoder of the same width is allowed with a warning and recorded. Normalisation
stats: `train.init_stats` ("recompute", LeRobot's fine-tuning default, or "keep").
"""
from __future__ import annotations

import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from dynaflip_ros.configs.io import to_dict
from dynaflip_ros.configs.policy import DiffusionModelConfig, PolicyConfig
from dynaflip_ros.data.dataset_io import fsync_file
from dynaflip_ros.encoder.manifest import sha256_file
from dynaflip_ros.policies.base import PolicyCheckpointError
from dynaflip_ros.policies.diffusion import POLICY_JSON, DiffusionPolicyRunner

log = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
LATEST_JSON = "latest.json"
STATE_JSON = "trainer_state.json"
STATE_TENSORS = "trainer_state.safetensors"
RESUME_FORMAT = 1
# Config fields that may differ between an interrupted run and its resumption (logging,
# validation, threads); any other difference is refused (the model section is restored from the
# checkpoint, so it must match entirely).
RESUME_FREE_FIELDS = {
    "train": {"log_every_steps", "eval_every_steps", "eval_max_samples", "checkpoint_every_steps",
              "embed_batch_size", "num_threads"},
    "model": set(),
}
# Model fields an --init checkpoint must share: the weight shapes and what the weights mean.
ARCHITECTURE_FIELDS = (
    "n_obs_steps", "horizon", "down_dims", "kernel_size", "n_groups", "diffusion_step_embed_dim",
    "use_film_scale_modulation", "language_conditioning", "num_train_timesteps", "beta_schedule",
    "beta_start", "beta_end", "prediction_type", "action_frame", "tcp_offset_m",
)  # fmt: skip
NORMALIZATION_FIELDS = ("embedding_normalization", "state_normalization", "action_normalization")


# ---- resume ---------------------------------------------------------------------------------
def save_checkpoint(root: str | Path, step: int, runner: DiffusionPolicyRunner, state: dict[str, Any],
                    tensors: dict[str, Any]) -> Path:
    """Write `root/step_<step>/` atomically (see module docstring) and point latest.json at it.

    state: JSON-serialisable trainer state; tensors: name -> torch tensor. Returns the directory."""
    from safetensors.torch import save_file

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{int(step):08d}"
    tmp = root / f".tmp_{name}_{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    runner.save(tmp)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / STATE_TENSORS))
    (tmp / STATE_JSON).write_text(json.dumps({"format": RESUME_FORMAT, "step": int(step), **state}) + "\n")
    for path in tmp.iterdir():
        fsync_file(path)
    fsync_file(tmp)
    final = root / name
    if final.exists():  # a step directory left by a run that crashed before updating latest.json
        shutil.rmtree(final)
    os.rename(tmp, final)
    fsync_file(root)
    pointer = root / f".{LATEST_JSON}.tmp"
    pointer.write_text(json.dumps({"step": int(step), "dir": name}) + "\n")
    fsync_file(pointer)
    os.replace(pointer, root / LATEST_JSON)
    fsync_file(root)
    for old in root.iterdir():  # earlier checkpoints and leftovers of crashed writes
        if old.is_dir() and old.name != name and (old.name.startswith("step_") or old.name.startswith(".tmp_")):
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(root: str | Path) -> Path | None:
    """The directory latest.json points at, or None when there is no checkpoint.
    Raises PolicyCheckpointError when latest.json is unreadable or points at nothing."""
    pointer = Path(root) / LATEST_JSON
    if not pointer.is_file():
        return None
    try:
        name = json.loads(pointer.read_text())["dir"]
    except (ValueError, KeyError, TypeError) as e:
        raise PolicyCheckpointError(f"{pointer}: unreadable ({e}); delete {root} and train from scratch") from e
    path = Path(root) / str(name)
    if not (path / STATE_JSON).is_file():
        raise PolicyCheckpointError(f"{pointer} points at {path}, which is incomplete or missing")
    return path


def read_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(trainer_state.json as a dict, trainer_state.safetensors as name -> torch tensor).
    Raises PolicyCheckpointError when either is damaged or of another format."""
    from safetensors.torch import load_file

    path = Path(path)
    try:
        state = json.loads((path / STATE_JSON).read_text())
        tensors = load_file(str(path / STATE_TENSORS))
    except Exception as e:  # noqa: BLE001 - OSError, ValueError, safetensors' SafetensorError
        raise PolicyCheckpointError(f"{path}: damaged training checkpoint ({e})") from e
    if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
        raise PolicyCheckpointError(f"{path}: training checkpoint of another format ({state.get('format')!r})")
    return state, tensors


def optimizer_to_flat(state_dict: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """torch optimiser state_dict -> (JSON part, tensors "optim.<param>.<name>")."""
    import torch

    tensors, scalars = {}, {}
    for idx, entries in state_dict["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = value.detach().cpu()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in state_dict["param_groups"]]
    return {"param_groups": groups, "scalars": scalars}, tensors


def optimizer_from_flat(part: dict[str, Any], tensors: dict[str, Any]) -> dict[str, Any]:
    """Inverse of `optimizer_to_flat`."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    for idx, entries in part["scalars"].items():
        state.setdefault(int(idx), {}).update(entries)
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in part["param_groups"]]
    return {"state": state, "param_groups": groups}


def rng_states() -> tuple[dict[str, Any], dict[str, Any]]:
    """(JSON part: Python `random` state, tensors: torch CPU RNG state)."""
    import torch

    version, internal, gauss = random.getstate()
    return {"python": [version, list(internal), gauss]}, {"rng.torch": torch.get_rng_state()}


def restore_rng_states(part: dict[str, Any], tensors: dict[str, Any]) -> None:
    import torch

    version, internal, gauss = part["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(tensors["rng.torch"])


def check_resumable(recorded: dict[str, Any], current: dict[str, Any], where: Path) -> None:
    """Refuse (PolicyCheckpointError) to resume a run whose identity differs: config outside
    RESUME_FREE_FIELDS, dataset fingerprint, encoder / text encoder sha256, split, init. A config
    field the recorded run predates counts as its default (the behaviour that run had)."""
    defaults = to_dict(PolicyConfig())
    problems = []
    for section in ("model", "train"):
        a, b = recorded["config"].get(section, {}), current["config"].get(section, {})
        a = {**{k: v for k, v in defaults[section].items() if k in b}, **a}
        for key in sorted(set(a) | set(b)):
            if key not in RESUME_FREE_FIELDS[section] and a.get(key) != b.get(key):
                problems.append(f"{section}.{key} {a.get(key)!r} (checkpoint) vs {b.get(key)!r} (now)")
    for key in ("dataset_fingerprint", "encoder_sha256", "text_encoder_sha256", "train_episodes", "val_episodes",
                "init_weights_sha256"):
        if recorded.get(key) != current.get(key):
            problems.append(f"{key} {str(recorded.get(key))[:40]!r} (checkpoint) vs {str(current.get(key))[:40]!r} (now)")
    if problems:
        raise PolicyCheckpointError(
            f"cannot resume from {where}: the run differs from the interrupted one: " + "; ".join(problems)
            + ". Resume with the same dataset, encoder, --config, --steps, --batch-size, --seed and --init, "
            "or train without --resume into another --out"
        )


def remove_checkpoints(root: str | Path) -> None:
    """Delete the resumable checkpoints (after the final policy was saved)."""
    root = Path(root)
    if root.is_dir():
        shutil.rmtree(root)


# ---- init -----------------------------------------------------------------------------------
def load_init(
    init_dir: str | Path,
    model: DiffusionModelConfig,
    embedding_dim: int,
    encoder_sha256: str,
    text_encoder,
    init_stats: str,
) -> tuple[DiffusionPolicyRunner, dict[str, Any]]:
    """The policy checkpoint at `init_dir` (files verified) and what policy.json records of it.

    Raises FileNotFoundError (no checkpoint) and PolicyCheckpointError for a checkpoint ensemble
    (start from one member) and when its architecture
    (ARCHITECTURE_FIELDS), image embedding width or instruction width differs from this run's,
    or with init_stats "keep" its normalisation modes differ."""
    from dynaflip_ros.policies.checkpoint_ensemble import is_ensemble

    init_dir = Path(init_dir)
    if is_ensemble(init_dir):
        raise PolicyCheckpointError(f"--init {init_dir} is a checkpoint ensemble (ensemble.json): start from one "
                                    f"of its members, e.g. --init {init_dir / 'member_0'}")
    meta = DiffusionPolicyRunner.read_metadata(init_dir)
    theirs = DiffusionPolicyRunner.model_config_of(meta, str(init_dir / POLICY_JSON))
    fields = ARCHITECTURE_FIELDS + (NORMALIZATION_FIELDS if init_stats == "keep" else ())
    diffs = [f"model.{f} {getattr(theirs, f)!r} (init) vs {getattr(model, f)!r} (now)"
             for f in fields if getattr(theirs, f) != getattr(model, f)]
    if int(meta["embedding_dim"]) != int(embedding_dim):
        diffs.append(f"image embedding dim {meta['embedding_dim']} (init) vs {embedding_dim} (this encoder)")
    text = meta.get("text_encoder") if theirs.language_conditioning else None
    if text is not None and text_encoder is not None and int(text["dim"]) != int(text_encoder.dim):
        diffs.append(f"instruction embedding dim {text['dim']} (init) vs {text_encoder.dim} (this text encoder)")
    if diffs:
        raise PolicyCheckpointError(
            f"--init {init_dir}: cannot start from this policy, its architecture differs: " + "; ".join(diffs)
            + ". Use a config whose model section matches the init (its policy.json 'model'), or train from scratch"
        )
    runner = DiffusionPolicyRunner.load(init_dir, encoder_sha256=None, text_encoder=text_encoder)
    same_encoder = meta["encoder"]["weights_sha256"] == encoder_sha256
    if not same_encoder:
        log.warning("--init %s was trained on embeddings of encoder %s..., this run uses %s...", init_dir,
                    meta["encoder"]["weights_sha256"][:12], encoder_sha256[:12])
    text_sha = text["weights_sha256"] if text else None
    if text is not None and text_encoder is not None and text_sha != text_encoder.weights_sha256:
        log.warning("--init %s was trained with another text encoder (%s...)", init_dir, str(text_sha)[:12])
    train = meta.get("train") or {}
    record = {
        "dir": str(init_dir.resolve()),
        "weights_sha256": meta["files_sha256"].get("model.safetensors"),
        "policy_json_sha256": sha256_file(init_dir / POLICY_JSON),
        "encoder_sha256": meta["encoder"]["weights_sha256"],
        "same_encoder": same_encoder,
        "text_encoder_sha256": text_sha,
        "steps": train.get("steps"),
        "total_steps": train.get("total_steps", train.get("steps")),
        "stats": init_stats,
    }
    return runner, record


def rng_numpy_state(rng: np.random.Generator) -> dict[str, Any]:
    return rng.bit_generator.state


def restore_numpy_rng(state: dict[str, Any], seed: int) -> np.random.Generator:
    rng = np.random.default_rng(seed)
    rng.bit_generator.state = state
    return rng
