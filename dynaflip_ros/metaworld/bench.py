"""Frozen-encoder MetaWorld benchmark (`dynaflip metaworld`).

Per task (metaworld/env.py): `n_demos` successful expert demos (episode seeds from 0; cached as
npz per task, image size and count, so every encoder sees the same frames), the encoder frozen,
and per training seed a 3-layer MLP policy (hidden 256, ReLU) from [pooled embedding f(o_t) (D,),
proprio (4,)] (inputs standardised on the demos) to the 4-d action, trained by behaviour cloning
(mean squared error, Adam); then `episodes` rollouts on held-out episode seeds (100000 + k, the
same for every training seed and encoder), each rendered frame embedded and the MLP's action
clipped to [-1, 1], a success when MetaWorld's `info["success"]` turns true within MAX_STEPS.
The rollouts of one task and training seed step side by side (one batched embedding per step);
their results are appended when all have ended.
The protocol of frozen-representation evaluations on MetaWorld (R3M, Nair et al. 2022: few
demos, frozen encoder, MLP policy with proprioception; the DynaFLIP paper's MetaWorld setup:
25 demos per task, a 3-layer MLP).

With a recipe instead of an encoder (`pretrain_encoder`), the encoder is first pre-trained on
the demos of all tasks (the issue's protocol: pre-training on the benchmark's demos, never on
its test rollouts) into `<out>/encoder`.

Files in the output directory: `run.json` (encoder, protocol, demo seeds per task), written
first (a resumed run must ask for the same protocol), and `episodes.jsonl`, one line per
finished rollout {"task", "training_seed", "seed", "success", "steps"}, appended as it ends so
an interrupted run resumes without redoing finished rollouts. Deterministic for given seeds on
one machine.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dynaflip_ros.episodes.record import append_json_line
from dynaflip_ros.errors import UserError
from dynaflip_ros.eval.ood_records import read_json_lines
from dynaflip_ros.metaworld.env import (
    ACTION_DIM, MAX_STEPS, PROPRIO_DIM, RENDER, TaskDemos, make_env, proprio, record_demos,
)

RUN_FILE = "run.json"
EPISODES_FILE = "episodes.jsonl"
FORMAT = "dynaflip_ros.metaworld_run/1"
EPISODE_SEED0 = 100_000


@dataclass(frozen=True)
class MlpConfig:
    """The behaviour-cloning MLP: hidden width, optimisation steps, batch, Adam lr and weight decay."""

    hidden_dim: int = 256
    steps: int = 3000
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4


def load_or_record_demos(cache_dir: str | Path, task: str, n_demos: int, image_hw: tuple[int, int]) -> TaskDemos:
    """The task's demos from `cache_dir/<task>_<n>_<H>x<W>_<RENDER>.npz` (numpy arrays only, loaded without
    pickle), recorded and written there first when absent."""
    path = Path(cache_dir) / f"{task}_{n_demos}_{image_hw[0]}x{image_hw[1]}_{RENDER}.npz"
    if path.exists():
        z = np.load(path, allow_pickle=False)
        return TaskDemos(task=task, images=z["images"], observations=z["observations"], actions=z["actions"],
                         episode=z["episode"], seeds=[int(s) for s in z["seeds"]], attempts=int(z["attempts"]))
    demos = record_demos(task, n_demos, image_hw)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez_compressed(tmp, images=demos.images, observations=demos.observations, actions=demos.actions,
                        episode=demos.episode,
                        seeds=np.asarray(demos.seeds), attempts=np.asarray(demos.attempts))
    tmp.replace(path)
    return demos


class PooledEncoder:
    """A frozen encoder's pooled embedding f(o_t) (D,) of uint8 images (the patch tokens of an
    export with tokens are dropped): `embed(images (B, H, W, 3)) -> (B, D) float32`."""

    def __init__(self, encoder_dir: str | Path, backend: str = "torch", threads: int = 1):
        from dynaflip_ros.encoder.manifest import token_layout
        from dynaflip_ros.policies.train import load_encoder_backend

        self.backend = load_encoder_backend(encoder_dir, backend, threads)
        self.manifest = self.backend.manifest
        layout = token_layout(self.manifest)
        self.dim = int(layout.embedding_dim if layout is not None else self.manifest.embedding_dim)
        self.image_hw = tuple(int(v) for v in self.manifest.input_hw)

    def embed(self, images: np.ndarray, batch: int = 64) -> np.ndarray:
        out = [np.asarray(self.backend.embed(images[i:i + batch]))[:, :self.dim] for i in range(0, len(images), batch)]
        return np.concatenate(out).astype(np.float32)


def train_mlp(features: np.ndarray, actions: np.ndarray, cfg: MlpConfig, seed: int):
    """A torch MLP (module doc) fitted to (N, F) features -> (N, 4) actions; standardisation
    (mean, std of the features) is part of the module. Returns the module in eval mode."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    x = torch.from_numpy(np.asarray(features, np.float32))
    y = torch.from_numpy(np.asarray(actions, np.float32))
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    net = nn.Sequential(nn.Linear(x.shape[1], cfg.hidden_dim), nn.ReLU(), nn.Linear(cfg.hidden_dim, cfg.hidden_dim),
                        nn.ReLU(), nn.Linear(cfg.hidden_dim, y.shape[1]))
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    xn = (x - mean) / std
    for _ in range(cfg.steps):
        idx = torch.randint(0, len(x), (min(cfg.batch_size, len(x)),), generator=gen)
        loss = ((net(xn[idx]) - y[idx]) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    class Standardised(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net
            self.register_buffer("mean", mean)
            self.register_buffer("std", std)

        def forward(self, f):
            return self.net((f - self.mean) / self.std)

    return Standardised().eval()


def rollouts(task: str, seeds: list[int], encoder: PooledEncoder, policy, max_steps: int = MAX_STEPS
             ) -> list[tuple[bool, int]]:
    """Episodes of the MLP policy on the given episode seeds, stepped side by side (one batched
    embedding per step for the episodes still running): [(success, steps run)] in seed order."""
    import torch

    envs, obs = zip(*(make_env(task, s, encoder.image_hw) for s in seeds))
    obs = list(obs)
    result: list[tuple[bool, int] | None] = [None] * len(seeds)
    try:
        for step in range(1, max_steps + 1):
            live = [i for i, r in enumerate(result) if r is None]
            if not live:
                break
            emb = encoder.embed(np.stack([envs[i].render() for i in live]))
            f = np.concatenate([emb, np.stack([proprio(obs[i]) for i in live])], axis=1)
            with torch.no_grad():
                actions = np.clip(policy(torch.from_numpy(f)).numpy(), -1.0, 1.0).astype(np.float32)
            for i, a in zip(live, actions):
                obs[i], _, _, _, info = envs[i].step(a)
                if info["success"]:
                    result[i] = (True, step)
        return [r if r is not None else (False, max_steps) for r in result]
    finally:
        for env in envs:
            env.close()


def pretrain_encoder(demos: list[TaskDemos], recipe: str, out_dir: str | Path, steps: int, threads: int = 1,
                     seed: int = 0, progress: bool = False) -> Path:
    """An encoder of `recipe` (encoder/recipes.py) pre-trained on the demos of every task
    (metaworld/frames.py; `track_layout: recorded`, the rest the recipe's defaults at 128 x 128)
    for `steps` steps, resumable; the untrained recipes are saved at their initialisation. Returns
    out_dir. Raises ValueError for an unknown recipe or demos at another image size."""
    from dynaflip_ros.configs.encoder import EncoderConfig
    from dynaflip_ros.encoder.recipes import apply_recipe, get_recipe, save_untrained
    from dynaflip_ros.encoder.train import train_encoder
    from dynaflip_ros.metaworld.frames import demos_to_frames

    cfg = apply_recipe(EncoderConfig(), recipe)
    cfg.data = dataclasses.replace(cfg.data, track_layout="recorded")
    cfg.train = dataclasses.replace(cfg.train, steps=steps, num_threads=threads, seed=seed)
    if not get_recipe(recipe).trained:
        save_untrained(out_dir, cfg, recipe, seed=seed)
        return Path(out_dir)
    hw = tuple(cfg.model.input_hw)
    if any(d.images.shape[1:3] != hw for d in demos):
        raise ValueError(f"demos must be rendered at the encoder's input {hw}")
    train_encoder(demos_to_frames(demos), out_dir, cfg, resume=True, recipe=recipe, progress=progress)
    return Path(out_dir)


def run_metaworld(encoder_dir: str | Path, out_dir: str | Path, tasks: list[str], *, n_demos: int = 25,
                  episodes: int = 20, training_seeds: tuple[int, ...] = (0, 1, 2), mlp: MlpConfig = MlpConfig(),
                  demo_cache_dir: str | Path = "outputs/metaworld/demos", backend: str = "torch", threads: int = 1,
                  max_steps: int = MAX_STEPS, progress=print) -> dict[str, Any]:
    """Run (or resume) the benchmark of one encoder (module doc); returns {task: {training seed:
    successes}}. Raises UserError when out_dir holds a run with another protocol."""
    encoder = PooledEncoder(encoder_dir, backend, threads)
    out = Path(out_dir)
    run = {"format": FORMAT, "encoder_dir": str(encoder_dir), "encoder_sha256": encoder.manifest.weights_sha256,
           "recipe": (encoder.manifest.config.get("run") or {}).get("recipe"),
           "encoder_steps": (encoder.manifest.config.get("run") or {}).get("steps"), "tasks": list(tasks),
           "n_demos": n_demos, "episode_seeds": [EPISODE_SEED0 + k for k in range(episodes)],
           "training_seeds": list(training_seeds), "image_hw": list(encoder.image_hw), "embedding_dim": encoder.dim,
           "proprio_dim": PROPRIO_DIM, "action_dim": ACTION_DIM, "mlp": dataclasses.asdict(mlp), "max_steps": max_steps}
    path = out / RUN_FILE
    if path.exists():
        stored = {k: v for k, v in json.loads(path.read_text()).items() if k != "demo_seeds"}
        if stored != run:
            diff = sorted(k for k in run if stored.get(k) != run[k])
            raise UserError(f"{out} holds a MetaWorld run with other {', '.join(diff)}; use a new --out directory")
    done = {(d["task"], d["training_seed"], d["seed"]): d for _, d in read_json_lines(out / EPISODES_FILE)}
    demo_seeds = {}
    results: dict[str, dict[int, int]] = {}
    for task in tasks:
        demos = load_or_record_demos(demo_cache_dir, task, n_demos, encoder.image_hw)
        demo_seeds[task] = demos.seeds
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**run, "demo_seeds": demo_seeds}, indent=1) + "\n")
        features = None  # embedded once per task, and only when a rollout of it is still to run
        results[task] = {}
        for ts in training_seeds:
            todo = [s for s in run["episode_seeds"] if (task, ts, s) not in done]
            if todo:
                if features is None:
                    features = np.concatenate([encoder.embed(demos.images), demos.proprio], axis=1)
                policy = train_mlp(features, demos.actions, mlp, seed=ts)
                for seed, (ok, steps) in zip(todo, rollouts(task, todo, encoder, policy, max_steps)):
                    done[task, ts, seed] = {"task": task, "training_seed": ts, "seed": seed, "success": ok, "steps": steps}
                    append_json_line(out / EPISODES_FILE, json.dumps(done[task, ts, seed]))
            results[task][ts] = sum(done[task, ts, s]["success"] for s in run["episode_seeds"])
            progress(f"[metaworld] {task} training seed {ts}: {results[task][ts]}/{episodes}")
    return results
