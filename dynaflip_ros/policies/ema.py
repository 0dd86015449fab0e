"""Exponential moving average (EMA) of the policy weights during behaviour cloning.

Diffusion Policy (Chi et al., RSS 2023, §IV-C) evaluates an EMA of the weights, not the last
optimiser iterate: with a high learning rate the iterate jitters from step to step, and a
closed-loop rollout amplifies that jitter into imprecise grasps. The averaging itself is
diffusers' `EMAModel` (https://huggingface.co/docs/diffusers/main/en/api/training_utils) with
warm-up: after optimiser step k the average moves with decay min(max_decay, 1 - (1 + k)^-power)
(power 0.75 reaches 0.999 at k = 10 000, 0.9999 at ~200 000). Only parameters are averaged; the
UNet has no running-statistics buffers (GroupNorm).

`WeightAverage` is owned by the training loop (single thread). Its state travels in the
resumable checkpoint as tensors (`state()`: the average and the raw iterate, one tensor per
parameter in `parameters()` order) and the optimisation step count, never as a pickle.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

EMA_TENSOR_PREFIX = "ema."


class WeightAverage:
    """EMA of `module`'s parameters (diffusers EMAModel, warm-up schedule; see module docstring).

    max_decay in (0, 1); power > 0. Raises ValueError when a restored state does not fit the
    module (count or shapes of the parameters differ)."""

    def __init__(self, module, max_decay: float, power: float) -> None:
        from diffusers.training_utils import EMAModel

        if not 0.0 < max_decay < 1.0 or not power > 0.0:
            raise ValueError(f"EMA needs 0 < max_decay < 1 and power > 0, got {max_decay}, {power}")
        self._module = module
        self._ema = EMAModel(module.parameters(), decay=max_decay, use_ema_warmup=True, power=power, inv_gamma=1.0)

    @property
    def step_count(self) -> int:
        """Optimiser steps averaged so far."""
        return int(self._ema.optimization_step)

    @property
    def decay(self) -> float:
        """Decay the next update will use."""
        return float(self._ema.get_decay(self._ema.optimization_step + 1))

    def update(self) -> None:
        """Fold the module's current parameters into the average (call after optimizer.step())."""
        self._ema.step(self._module.parameters())

    def copy_to_module(self) -> None:
        """Overwrite the module's parameters with the average (the final, saved weights)."""
        self._ema.copy_to(self._module.parameters())

    @contextlib.contextmanager
    def averaged(self) -> Iterator[None]:
        """Within the block the module holds the averaged weights; its own are put back after."""
        self._ema.store(self._module.parameters())
        self._ema.copy_to(self._module.parameters())
        try:
            yield
        finally:
            self._ema.restore(self._module.parameters())

    def state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(JSON part, tensors) for a resumable checkpoint: the average (`ema.avg.<i>`) and the
        module's own current weights (`ema.raw.<i>`), so the checkpoint's policy files may hold
        the average while training resumes from the raw iterate."""
        tensors = {f"{EMA_TENSOR_PREFIX}avg.{i}": p.detach().clone() for i, p in enumerate(self._ema.shadow_params)}
        tensors.update(
            {f"{EMA_TENSOR_PREFIX}raw.{i}": p.detach().clone() for i, p in enumerate(self._module.parameters())}
        )
        return {"optimization_step": self.step_count, "num_parameters": len(self._ema.shadow_params)}, tensors

    def load_state(self, info: dict[str, Any], tensors: dict[str, Any]) -> None:
        """Restore what `state()` returned: the average and the module's raw weights.

        Raises ValueError when it does not fit the module (count or shapes differ)."""
        import torch

        shadow, params = self._ema.shadow_params, list(self._module.parameters())
        n = int(info["num_parameters"])
        if n != len(shadow):
            raise ValueError(f"EMA state holds {n} parameters, the policy has {len(shadow)}")
        with torch.no_grad():
            for kind, targets in (("avg", shadow), ("raw", params)):
                for i, dst in enumerate(targets):
                    src = tensors[f"{EMA_TENSOR_PREFIX}{kind}.{i}"]
                    if tuple(src.shape) != tuple(dst.shape):
                        raise ValueError(f"EMA {kind} tensor {i} has shape {tuple(src.shape)}, the parameter {tuple(dst.shape)}")
                    dst.copy_(src)
        self._ema.optimization_step = int(info["optimization_step"])
