"""Perturbed expert execution for recovery data (DART: Laskey et al., "DART: Noise Injection for
Robust Imitation Learning", CoRL 2017).

A policy cloned from a perfect, open-loop expert only ever sees states on the expert's path; its
first small error puts it where no demonstration was, and the errors compound (Ross & Bagnell
2010). DART records the expert while its COMMANDS are perturbed and labels every frame with the
expert's clean target: the recorded states then spread around the path and the labels lead back
to it, which is the correction the policy has to learn.

`JointActionNoise` is that perturbation for the scripted expert: a per-joint Ornstein-Uhlenbeck
process (stationary standard deviation `std_rad`, correlation time `tau_s`), added to the six
joint targets at the 10 Hz control steps of the phases in `phases` (by default the approach
and the descent to the grasp, where a policy's error decides the grasp). In every other phase the
perturbation decays with the same time constant, so the arm is back on the expert's path by the
time the fingers close (after the 0.6 s grasp dwell, e^-2 of it remains at tau_s 0.3 s). The
gripper command is never perturbed. Seeded per episode from its own stream, so the scene and the
noise of a seed never share draws. Owned by the recording loop (single thread).
"""
from __future__ import annotations

import math

import numpy as np

NOISE_STREAM = 0xDA27  # mixed into the episode seed: numpy.random.default_rng([seed, NOISE_STREAM])
DEFAULT_PHASES = ("approach", "descend")


class JointActionNoise:
    """OU perturbation of the expert's joint targets (module docstring).

    Args:
        std_rad: stationary standard deviation per joint, rad (> 0).
        tau_s: correlation / decay time constant, s (> 0).
        dt_s: control period, s (> 0).
        phases: expert phase names (`sim.expert.PHASES`) in which the noise is driven.
    Raises ValueError on non-positive values or an unknown phase name.
    """

    def __init__(self, std_rad: float, tau_s: float, dt_s: float, phases: tuple[str, ...] = DEFAULT_PHASES) -> None:
        from dynaflip_ros.sim.expert import PHASE_INDEX

        if not (std_rad > 0 and tau_s > 0 and dt_s > 0):
            raise ValueError(f"std_rad, tau_s and dt_s must be > 0, got {std_rad}, {tau_s}, {dt_s}")
        unknown = set(phases) - set(PHASE_INDEX)
        if unknown:
            raise ValueError(f"unknown expert phases {sorted(unknown)}; known: {list(PHASE_INDEX)}")
        self.std_rad = float(std_rad)
        self.decay = math.exp(-float(dt_s) / float(tau_s))
        self._drive = self.std_rad * math.sqrt(1.0 - self.decay**2)
        self.phase_ids = frozenset(PHASE_INDEX[p] for p in phases)
        self._rng = np.random.default_rng(0)
        self._n = np.zeros(6)

    def reset(self, seed: int) -> None:
        """Start an episode: zero perturbation, the random stream of `seed`."""
        self._rng = np.random.default_rng([int(seed), NOISE_STREAM])
        self._n = np.zeros(6)

    def perturb(self, action: np.ndarray, phase: int) -> np.ndarray:
        """The command to execute for the expert's `action` (7,) [q rad, gripper] in `phase`:
        joints + the process's next value, the gripper unchanged. Returns a new (7,) array."""
        self._n = self.decay * self._n
        if int(phase) in self.phase_ids:
            self._n = self._n + self._drive * self._rng.standard_normal(6)
        out = np.array(action, dtype=np.float64, copy=True)
        out[:6] += self._n
        return out

    @property
    def current_rad(self) -> np.ndarray:
        """(6,) the perturbation last applied, rad."""
        return self._n.copy()
