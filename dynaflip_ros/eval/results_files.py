"""The result files of the encoder comparison (issue 13) and their reading (`dynaflip results`).

Layout of a results directory (default `results/`, committed; `scripts/bench_encoders.sh`
writes it):

    results/our_task/<recipe>/session.json      the recipe's OOD session (`dynaflip eval-ood`; models
                             /episodes.jsonl    named <recipe>_s<training seed>, eval/ood_records.py)
                             /encoder.json      manifest of the encoder the policies ran on
                             /encoder_pre.json  manifest of its pre-training stage (trained recipes)
                             /policy_s<k>.json  policy.json of training seed k
                             /probe.json        `dynaflip probe` of the frozen embedding on the demos
                             /shift.json        `dynaflip embedding-shift` of the encoder (eval/embedding_shift.py)
                             /nominal_extension/session.json + episodes.jsonl
                                                a second session of the same models on nominal scenes only,
                                                on episode seeds the first one did not use (more pairs where
                                                the policies succeed at all; optional, listed as missing)
                             /complete          written last: every run of the recipe finished

    results/metaworld/<recipe>/run.json         a `dynaflip metaworld` run of the recipe's encoder
                              /episodes.jsonl   (metaworld/bench.py), one line per rollout

Each recipe's model names are <recipe>_s<training seed>. `load_recipe_run` reads one recipe
directory of our task (the summaries and tables are eval/results.py); nothing here computes a
statistic.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dynaflip_ros.eval.embedding_shift import ShiftReport
from dynaflip_ros.eval.ood_records import NOMINAL, OodEpisode, OodSession, SessionFileError, read_episodes, read_session

OUR_TASK = "our_task"
METAWORLD = "metaworld"
COMPLETE_FILE = "complete"
EXTENSION_DIR = "nominal_extension"
_MODEL_NAME = re.compile(r"^(?P<recipe>.+)_s(?P<seed>\d+)$")


class ResultsError(SessionFileError):
    """A result file that cannot be read or does not fit the layout (one line, exit 2)."""


@dataclass
class RecipeRun:
    """The result files of one recipe on our task (module doc). models_by_seed: training seed ->
    the session's model name."""

    recipe: str
    session: OodSession
    episodes: list[OodEpisode]
    encoder: dict[str, Any]
    encoder_pre: dict[str, Any] | None
    policies: dict[int, dict[str, Any]]
    complete: str | None
    models_by_seed: dict[int, str] = field(default_factory=dict)
    probe: dict[str, Any] | None = None
    shift: ShiftReport | None = None
    extension: OodSession | None = None
    extension_episodes: list[OodEpisode] = field(default_factory=list)


def parse_model_name(name: str) -> tuple[str, int]:
    """"<recipe>_s<seed>" -> (recipe, seed). Raises ResultsError for another shape."""
    m = _MODEL_NAME.match(name)
    if not m:
        raise ResultsError(f"model name {name!r} is not <recipe>_s<training seed>")
    return m["recipe"], int(m["seed"])


def read_json(path: Path) -> dict[str, Any]:
    """The JSON document at path. Raises FileNotFoundError, ResultsError when it is not JSON."""
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ResultsError(f"{path}: not JSON ({e})") from None


def load_recipe_run(recipe_dir: str | Path) -> RecipeRun:
    """The files of one recipe directory. Raises FileNotFoundError without session.json /
    encoder.json, ResultsError for a malformed file, a model of another recipe or a nominal
    extension that does not extend the session (`check_extension`)."""
    d = Path(recipe_dir)
    recipe = d.name
    session = read_session(d)
    models_by_seed = {}
    for model in session.models:
        r, seed = parse_model_name(model)
        if r != recipe:
            raise ResultsError(f"{d}: model {model!r} belongs to recipe {r!r}, not {recipe!r}")
        models_by_seed[seed] = model
    policies = {}
    for seed in models_by_seed:
        p = d / f"policy_s{seed}.json"
        if p.exists():
            policies[seed] = read_json(p)
    pre, probe, shift = d / "encoder_pre.json", d / "probe.json", d / "shift.json"
    done = d / COMPLETE_FILE
    extension = None
    if (d / EXTENSION_DIR / "session.json").exists():
        extension = read_session(d / EXTENSION_DIR)
        check_extension(session, extension, d / EXTENSION_DIR)
    return RecipeRun(recipe=recipe, session=session, episodes=read_episodes(d), encoder=read_json(d / "encoder.json"),
                     encoder_pre=read_json(pre) if pre.exists() else None, policies=policies,
                     complete=done.read_text().strip() if done.exists() else None,
                     models_by_seed=dict(sorted(models_by_seed.items())),
                     probe=read_json(probe) if probe.exists() else None,
                     shift=_read_shift(shift) if shift.exists() else None, extension=extension,
                     extension_episodes=read_episodes(d / EXTENSION_DIR) if extension else [])


def check_extension(session: OodSession, extension: OodSession, where: Path) -> None:
    """Raise ResultsError unless `extension` can be pooled with `session` on nominal scenes: nominal
    only, the same models (names and weights sha256), mode and options, and episode seeds the
    session did not use."""
    problems = []
    if extension.conditions != [NOMINAL]:
        problems.append(f"conditions {extension.conditions}, not [{NOMINAL!r}]")
    ids = {n: (m.encoder_sha256, m.policy_sha256) for n, m in session.models.items()}
    if {n: (m.encoder_sha256, m.policy_sha256) for n, m in extension.models.items()} != ids:
        problems.append(f"models {sorted(extension.models)} (weights sha256) are not the session's {sorted(ids)}")
    if (extension.mode, extension.options) != (session.mode, session.options):
        problems.append(f"mode / options {extension.mode} {extension.options} differ from the session's "
                        f"{session.mode} {session.options}")
    if shared := sorted(set(extension.seeds) & set(session.seeds)):
        problems.append(f"episode seeds {shared} are the session's too")
    if problems:
        raise ResultsError(f"{where}: not an extension of the recipe's session: " + "; ".join(problems))


def _read_shift(path: Path) -> ShiftReport:
    try:
        return ShiftReport.from_dict(read_json(path))
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise ResultsError(f"{path}: not an embedding-shift report ({type(e).__name__}: {e})") from None
