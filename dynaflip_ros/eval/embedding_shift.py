"""How far a perturbation moves a frozen encoder's output, compared with how far a different
scene moves it: the encoder's side of an OOD session, measured without a policy
(`dynaflip embedding-shift`).

For episode seeds s = 1..S and each condition c, the scene of seed s is reset under c exactly as
`dynaflip eval-ood` resets it (`SimRunner.reset(seed, perturbation)`, so the same seed gives the
same layout, instruction and draw of the perturbation), and its first camera frame is embedded
by the encoder. With e_c[s] the output of that frame:

- relative shift r_c[s] = ||e_c[s] - e_nominal[s]||_2 / m, where m is the mean distance
  ||e_nominal[s] - e_nominal[s']|| over pairs of different nominal scenes. r < 1: the
  perturbation moves the output less than going to another nominal scene (other objects, other
  places) does. Reported as the mean over seeds with a Student-t 95 % interval.
- scene retrieval top-1: the share of seeds whose perturbed output is nearer (L2) to its own
  nominal output than to every other seed's (chance 1/S), with a Wilson 95 % interval.

Both are computed for two views of the output: "output", everything the policy reads (f(o_t),
plus the patch tokens for a token encoder), and "embedding", f(o_t) alone.

What this does not say: whether a policy still succeeds. Distractors, a novel object and a
moved object change the scene, so a large shift there can be right; on the nuisance families
(lighting, texture, camera pose) a small shift is what a policy trained in nominal scenes needs
to transfer, not a guarantee that it does.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from dynaflip_ros.episodes.record import t_interval, wilson_interval

VIEWS = ("output", "embedding")


@dataclass(frozen=True)
class ShiftStats:
    """One condition and view. relative_shift: per seed r_c[s] (module doc), in seed order;
    mean / ci_low / ci_high: their mean and Student-t 95 % interval; retrieved / n: seeds whose
    perturbed output's nearest nominal output is their own; retrieval_ci: its Wilson 95 %."""

    relative_shift: list[float]
    mean: float
    ci_low: float | None
    ci_high: float | None
    retrieved: int
    n: int
    retrieval_ci: tuple[float, float]


def shift_stats(nominal: np.ndarray, perturbed: np.ndarray) -> ShiftStats:
    """Relative shift and scene retrieval (module doc) of perturbed outputs (S, D) against the
    nominal outputs (S, D) of the same seeds, row s = seed s. Raises ValueError for shapes that
    differ, fewer than 2 seeds, or nominal outputs that are all identical (m = 0)."""
    nominal, perturbed = np.asarray(nominal, np.float64), np.asarray(perturbed, np.float64)
    if nominal.shape != perturbed.shape or nominal.ndim != 2:
        raise ValueError(f"need two (S, D) arrays of one shape, got {nominal.shape} and {perturbed.shape}")
    s = nominal.shape[0]
    if s < 2:
        raise ValueError(f"need at least 2 seeds, got {s}")
    between = np.linalg.norm(nominal[:, None] - nominal[None], axis=-1)  # (S, S)
    scale = between[~np.eye(s, dtype=bool)].mean()
    if not scale > 0:
        raise ValueError("every nominal output is the same: the relative shift is undefined")
    to_nominal = np.linalg.norm(perturbed[:, None] - nominal[None], axis=-1)  # (S perturbed, S nominal)
    rel = (np.diag(to_nominal) / scale).tolist()
    retrieved = int((to_nominal.argmin(axis=1) == np.arange(s)).sum())
    mean, low, high = t_interval(rel)
    return ShiftStats(relative_shift=rel, mean=float(mean), ci_low=low, ci_high=high, retrieved=retrieved, n=s,
                      retrieval_ci=wilson_interval(retrieved, s))


@dataclass
class ShiftReport:
    """`dynaflip embedding-shift` of one encoder. stats[view][condition] (views: VIEWS; "embedding"
    only when the output holds patch tokens besides f(o_t)); encoder: its directory and weights
    sha256; seeds: episode seeds, conditions: canonical condition specs (nominal excluded: it is
    the reference)."""

    encoder: dict[str, str]
    seeds: list[int]
    conditions: list[str]
    stats: dict[str, dict[str, ShiftStats]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ShiftReport":
        """Raises KeyError / TypeError for a dict that is not a ShiftReport's."""
        stats = {v: {c: ShiftStats(**{**s, "retrieval_ci": tuple(s["retrieval_ci"])}) for c, s in per.items()}
                 for v, per in d["stats"].items()}
        return cls(encoder=dict(d["encoder"]), seeds=[int(x) for x in d["seeds"]],
                   conditions=list(d["conditions"]), stats=stats)


def start_frames(env, seeds: Sequence[int], condition: str) -> np.ndarray:
    """The first camera frame (S, H, W, 3) uint8 of each seed's scene under `condition` (a
    condition spec, e.g. "lighting:0.1"; "nominal"), reset as `dynaflip eval-ood` resets it.
    Raises ValueError for an unknown condition."""
    from dynaflip_ros.sim.perturbations import parse_condition
    from dynaflip_ros.sim.rollout import SimRunner

    pert = parse_condition(condition)
    runner = SimRunner(env)
    frames = []
    for seed in seeds:
        runner.reset(seed=int(seed), perturbation=pert)
        frames.append(env.camera.read().rgb.copy())
    return np.stack(frames)


def embedding_shift(encoder, env, seeds: Sequence[int], conditions: Sequence[str], embedding_dim: int | None = None,
                    batch_size: int = 16, progress: Callable[[str], None] = lambda _: None) -> ShiftReport:
    """The ShiftReport of `encoder` (an EncoderBackend: embed(uint8 (B,H,W,3)) -> (B,D)) in `env`
    (a PickIntoSinkEnv) on `seeds` under `conditions` (nominal is added as the reference when
    absent and not reported). embedding_dim: the length of f(o_t) at the start of the output when
    the output also holds patch tokens (adds the "embedding" view); None: the output is f(o_t).
    Raises ValueError for fewer than 2 seeds or an unknown condition."""
    from dynaflip_ros.eval.ood import with_nominal
    from dynaflip_ros.eval.ood_records import NOMINAL
    from dynaflip_ros.sim.perturbations import parse_condition

    if len(seeds) < 2:
        raise ValueError(f"need at least 2 seeds, got {len(seeds)}")
    conds = [p.name for p in with_nominal([parse_condition(c) for c in conditions])]

    def embed(frames: np.ndarray) -> np.ndarray:
        return np.concatenate([encoder.embed(frames[i:i + batch_size]) for i in range(0, len(frames), batch_size)])

    outputs = {}
    for c in conds:
        outputs[c] = embed(start_frames(env, seeds, c))
        progress(f"[embedding-shift] {c}: {len(seeds)} frames embedded")
    views = {"output": lambda e: e}
    if embedding_dim is not None and embedding_dim < next(iter(outputs.values())).shape[1]:
        views["embedding"] = lambda e: e[:, :embedding_dim]
    reported = [c for c in conds if c != NOMINAL]
    manifest = encoder.manifest
    return ShiftReport(
        encoder={"weights_sha256": manifest.weights_sha256}, seeds=[int(s) for s in seeds], conditions=reported,
        stats={v: {c: shift_stats(f(outputs[NOMINAL]), f(outputs[c])) for c in reported} for v, f in views.items()})
