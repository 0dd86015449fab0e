"""A policy made of several checkpoints of one recipe (training seeds): each chunk is the mean of
the members' chunks.

Deep ensembles (Lakshminarayanan et al., "Simple and Scalable Predictive Uncertainty Estimation
using Deep Ensembles", NeurIPS 2017): networks trained from different random seeds on the same
data make partly independent errors, and their average is better than the typical member.
Here each member is a `DiffusionPolicyRunner` on the same frozen encoder; at every prediction
each member denoises ceil(K / M) chunks from its own noises (`samples_per_chunk` K in total over
M members, rounded up to a multiple of M) and the ensemble executes the mean of the members'
means, i.e. of all the chunks. The
chunks are averaged as executed actions (absolute joint targets in rad, gripper 0..1).

On disk an ensemble is a directory holding `ensemble.json` and one policy checkpoint directory
per member (`DiffusionPolicyRunner.save`), written by `write_ensemble` (`dynaflip
ensemble-policy`). ensemble.json: {"format": ENSEMBLE_FORMAT, "members": [subdirectory names],
"members_policy_json_sha256": {name: sha256 of that member's policy.json}}; a member's policy.json
holds the sha256 of every file of the member, so the chain covers all weights. The ensemble's
`weights_sha256` is the sha256 of ensemble.json. `load_policy` loads either kind of directory,
so every deployment path (`dynaflip eval`, the policy node, recording with a learner) takes both.

Members must agree on what makes their chunks comparable: encoder weights, text encoder, fps,
embedding width, observation window, chunk length, language conditioning; `write_ensemble` and
`load` refuse otherwise (PolicyCheckpointError). Not thread-safe, like the runner it wraps: its
owner calls it from one thread.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from dynaflip_ros.configs.policy import check_samples_per_chunk
from dynaflip_ros.encoder.manifest import sha256_file
from dynaflip_ros.policies.base import ActionChunk, PolicyCheckpointError, PolicyObservation
from dynaflip_ros.policies.diffusion import POLICY_JSON, DiffusionPolicyRunner

ENSEMBLE_JSON = "ensemble.json"
TRAIN_LOG = "train_log.jsonl"  # `dynaflip train-policy`'s log, kept with each member
ENSEMBLE_FORMAT = "dynaflip_ros.policy_ensemble/1"
# what members must share (policy.json keys and model config fields)
_SHARED_META = ("fps", "embedding_dim")
_SHARED_MODEL = ("n_obs_steps", "n_action_steps", "language_conditioning")


def is_ensemble(directory: str | Path) -> bool:
    """Whether `directory` holds a checkpoint ensemble (an ensemble.json)."""
    return (Path(directory) / ENSEMBLE_JSON).is_file()


def _signature(directory: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """What a member's chunks depend on besides its weights (from its policy.json `meta`)."""
    model = DiffusionPolicyRunner.model_config_of(meta, str(directory / POLICY_JSON))
    text = meta.get("text_encoder") or {}
    return {"encoder_sha256": meta["encoder"]["weights_sha256"], "text_encoder_sha256": text.get("weights_sha256"),
            **{k: meta[k] for k in _SHARED_META}, **{k: getattr(model, k) for k in _SHARED_MODEL}}


def _read_compatible(dirs: list[Path]) -> list[dict[str, Any]]:
    """Each member's policy.json, read once; raises PolicyCheckpointError when two members differ
    in what makes their chunks comparable (and the errors of `read_metadata`)."""
    metas = [DiffusionPolicyRunner.read_metadata(d) for d in dirs]
    first = _signature(dirs[0], metas[0])
    for d, meta in zip(dirs[1:], metas[1:]):
        other = _signature(d, meta)
        diff = sorted(k for k in first if first[k] != other[k])
        if diff:
            raise PolicyCheckpointError(f"ensemble members {dirs[0]} and {d} differ in {diff}: "
                                        "members must be the same recipe on the same encoder")
    return metas


def write_ensemble(members: list[str | Path], out: str | Path) -> Path:
    """Copy the policy checkpoints `members` (>= 2) into `out`/member_<i> and write ensemble.json.
    Returns `out`. Raises ValueError for fewer than two members or `out` among them,
    FileNotFoundError / PolicyCheckpointError for a missing, damaged or incompatible member.
    An existing `out` is replaced only once everything is checked and copied."""
    dirs = [Path(m) for m in members]
    out = Path(out)
    if len(dirs) < 2:
        raise ValueError(f"an ensemble needs at least 2 members, got {len(dirs)}")
    if any(d.resolve() == out.resolve() for d in dirs):
        raise ValueError(f"--out {out} is one of the members")
    metas = _read_compatible(dirs)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        names, shas = [], {}
        for i, (d, meta) in enumerate(zip(dirs, metas)):
            name = f"member_{i}"
            recorded = meta["files_sha256"]
            (tmp / name).mkdir()
            for f in [*recorded, POLICY_JSON] + ([TRAIN_LOG] if (d / TRAIN_LOG).is_file() else []):
                shutil.copy2(d / f, tmp / name / f)  # the checkpoint and its training log
                if f in recorded and sha256_file(tmp / name / f) != recorded[f]:
                    raise PolicyCheckpointError(f"{d / f}: sha256 differs from {d / POLICY_JSON} (damaged member)")
            names.append(name)
            shas[name] = sha256_file(tmp / name / POLICY_JSON)
        doc = {"format": ENSEMBLE_FORMAT, "members": names, "members_policy_json_sha256": shas,
               "sources": [str(d) for d in dirs]}
        (tmp / ENSEMBLE_JSON).write_text(json.dumps(doc, indent=1) + "\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


class CheckpointEnsemble:
    """M `DiffusionPolicyRunner` members behind the runner's interface (module docstring)."""

    def __init__(self, members: list[DiffusionPolicyRunner], samples_per_chunk: int | None = None,
                 weights_sha256: str | None = None) -> None:
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        self.members = list(members)
        self.weights_sha256 = weights_sha256
        self.samples_per_chunk = len(members) if samples_per_chunk is None else samples_per_chunk

    @property
    def samples_per_chunk(self) -> int:
        """Chunks averaged per prediction over all members."""
        return sum(m.samples_per_chunk for m in self.members)

    @samples_per_chunk.setter
    def samples_per_chunk(self, k: int) -> None:
        """k in total: ceil(k / M) per member. Raises ValueError unless k is an int in 1..64."""
        per_member = -(-check_samples_per_chunk(k) // len(self.members))
        for member in self.members:
            member.samples_per_chunk = per_member

    # ---- the runner's read-only facts: member 0's, shared by construction ----------------------
    def __getattr__(self, name: str):
        if name in ("encoder_sha256", "encoder_manifest", "model_config", "fps", "dt_s", "embedding_dim",
                    "language_conditioned", "text_info", "embed_instruction"):
            return getattr(self.members[0], name)
        raise AttributeError(name)

    @property
    def num_parameters(self) -> int:
        return sum(m.num_parameters for m in self.members)

    @property
    def ik_unconverged(self) -> int:
        return sum(m.ik_unconverged for m in self.members)

    @property
    def stale_history_resets(self) -> int:
        return sum(m.stale_history_resets for m in self.members)

    # ---- Policy protocol -------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> None:
        """Reset every member (member i re-seeded with seed + i, so their noises differ)."""
        for i, m in enumerate(self.members):
            m.reset(seed=None if seed is None else seed + i)

    def observe(self, obs: PolicyObservation) -> None:
        for m in self.members:
            m.observe(obs)

    def predict_action_chunk(self, obs: PolicyObservation) -> ActionChunk:
        """Mean of the members' chunks, (n_action_steps, 7); raises what a member raises."""
        chunks = [m.predict_action_chunk(obs) for m in self.members]
        actions = np.mean([c.actions for c in chunks], axis=0).astype(np.float32)
        return ActionChunk(actions=actions, t0_s=chunks[0].t0_s, dt_s=chunks[0].dt_s)

    # ---- persistence -----------------------------------------------------------------------------
    @classmethod
    def load(cls, directory: str | Path, *, encoder_sha256: str | None, seed: int | None = None,
             samples_per_chunk: int | None = None, text_encoder=None) -> CheckpointEnsemble:
        """Load an ensemble directory (module docstring). Raises FileNotFoundError for a missing
        file, PolicyCheckpointError for a damaged ensemble.json, a member whose policy.json
        differs from the recorded sha256 or incompatible members, and whatever
        `DiffusionPolicyRunner.load` raises for a member (EncoderMismatchError first of all)."""
        directory = Path(directory)
        path = directory / ENSEMBLE_JSON
        try:
            doc = json.loads(path.read_text())
            names, shas = list(doc["members"]), dict(doc["members_policy_json_sha256"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise PolicyCheckpointError(f"{path}: not an ensemble record ({e})") from e
        if doc.get("format") != ENSEMBLE_FORMAT or len(names) < 2 or set(names) != set(shas):
            raise PolicyCheckpointError(f"{path}: format {doc.get('format')!r} with members {names}, "
                                        f"expected {ENSEMBLE_FORMAT!r} with >= 2 members")
        for n in names:  # plain subdirectory names only
            if not isinstance(n, str) or n in ("", ".", "..") or Path(n).name != n:
                raise PolicyCheckpointError(f"{path}: bad member name {n!r}")
        dirs = [directory / n for n in names]
        for d in dirs:
            if not (d / POLICY_JSON).is_file():
                raise FileNotFoundError(f"{d / POLICY_JSON} missing from the ensemble")
            if sha256_file(d / POLICY_JSON) != shas[d.name]:
                raise PolicyCheckpointError(f"{d / POLICY_JSON}: sha256 differs from {ENSEMBLE_JSON}")
        metas = _read_compatible(dirs)
        if text_encoder is None and metas[0].get("text_encoder"):
            from dynaflip_ros.policies.language import MiniLMTextEncoder

            text_encoder = MiniLMTextEncoder()  # one text model for every member
        members = [DiffusionPolicyRunner.load(d, encoder_sha256=encoder_sha256, text_encoder=text_encoder,
                                              seed=None if seed is None else seed + i) for i, d in enumerate(dirs)]
        return cls(members, samples_per_chunk, weights_sha256=sha256_file(path))


def load_policy(directory: str | Path, *, encoder_sha256: str | None, seed: int | None = None,
                samples_per_chunk: int = 1, text_encoder=None):
    """A `CheckpointEnsemble` for an ensemble directory, else a `DiffusionPolicyRunner`
    (`DiffusionPolicyRunner.load`; the same errors). samples_per_chunk: chunks averaged per
    prediction in total (an ensemble of M: ceil(K / M) per member); ValueError outside 1..64."""
    if is_ensemble(directory):
        return CheckpointEnsemble.load(directory, encoder_sha256=encoder_sha256, seed=seed,
                                       samples_per_chunk=samples_per_chunk, text_encoder=text_encoder)
    return DiffusionPolicyRunner.load(directory, encoder_sha256=encoder_sha256, seed=seed,
                                      samples_per_chunk=samples_per_chunk, text_encoder=text_encoder)


def load_deployed_policy(directory: str | Path, *, encoder_sha256: str, samples_per_chunk: int, num_threads: int,
                         temporal_ensemble_coeff: float | None = None, real_time_chunking: bool = False):
    """`load_policy` for a live graph: torch at `num_threads` intra-op threads, two throw-away
    chunks (`policies.base.warm_up`), and with `temporal_ensemble_coeff` wrapped in a
    `policies.ensemble.TemporallyEnsembledPolicy` (query it at every observation), with
    `real_time_chunking` in a `policies.rtc.RealTimeChunkingPolicy`. Returns (policy, warm-up
    seconds); the loaders' errors propagate (EncoderMismatchError, FileNotFoundError, ValueError)."""
    import torch

    from dynaflip_ros.policies.base import warm_up

    torch.set_num_threads(num_threads)
    policy = load_policy(directory, encoder_sha256=encoder_sha256, samples_per_chunk=samples_per_chunk)
    warm_s = warm_up(policy)
    if temporal_ensemble_coeff is not None:
        from dynaflip_ros.policies.ensemble import TemporallyEnsembledPolicy

        policy = TemporallyEnsembledPolicy(policy, temporal_ensemble_coeff)
    elif real_time_chunking:
        from dynaflip_ros.policies.rtc import RealTimeChunkingPolicy

        policy = RealTimeChunkingPolicy(policy)
    return policy, warm_s
