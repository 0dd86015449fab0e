"""Validation and conversion of arm commands: the one place a joint target, a servo period or a
gripper command becomes a float (docs/safety.md, "Input").

Every layer that accepts a command from a caller (`SafeArm`, and behind it `SimArm`,
`URRtdeArm` and the RTDE worker process as defence in depth) converts it here, so one rule
decides what a number is:

- real numbers only: Python ``int`` / ``float``, ``fractions.Fraction``, NumPy integer and
  floating scalars and arrays. Refused: ``bool`` (``dt_s=True`` is a bug, not 1 s), complex
  values (the imaginary part would be dropped silently), strings (``"0.1"`` is not parsed),
  ``None``, objects, datetimes, and masked arrays with a masked entry (the mask says "no value");
- representable as a float64: a Python int beyond ~1.8e308 raises ``OverflowError`` inside
  NumPy, which becomes a `SafetyViolation` here instead of escaping the servo loop;
- finite: NaN / inf are refused ("non_finite").

Every refusal raises `SafetyViolation` (an `ArmError`) with a machine-readable `reason`; nothing
else escapes. Range checks that depend on limits (joint limits, workspace, dt range, gripper
range) are the caller's (`SafeArm`); `check_servo_period` is shared because the arms need it too.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from dynaflip_ros.configs.safety import SERVO_PERIOD_MAX_S, SERVO_PERIOD_MIN_S
from dynaflip_ros.robot.arm import N_JOINTS, ArmError

# NumPy dtype kinds that hold real numbers: signed / unsigned integers, floating point.
_REAL_KINDS = frozenset("iuf")


class SafetyViolation(ArmError):
    """A command was refused by the safety layer; nothing reached the arm.

    Attributes:
        reason: short machine-readable cause, one of "invalid", "non_finite", "joint_limit",
            "workspace", "gripper", "halted", "clock".
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"[{reason}] {message}")
        self.reason = reason


def _real_scalar(x: object) -> float:
    """float(x) for a real-number scalar; raises TypeError / OverflowError otherwise."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (numbers.Real, np.integer, np.floating)):
        raise TypeError(f"{type(x).__name__} is not a real number")
    return float(x)  # OverflowError for Python ints beyond the float64 range


def real_scalar(x: object, what: str, reason: str = "invalid") -> float:
    """Convert one real number (see the module docstring) to a float; NaN / inf pass through.

    Raises SafetyViolation(reason) naming `what` when x is not a real number or does not fit
    in a float64.
    """
    if isinstance(x, np.ndarray) and x.shape == () and x.dtype.kind in _REAL_KINDS:
        x = x[()]
    try:
        return _real_scalar(x)
    except (TypeError, OverflowError) as e:
        raise SafetyViolation(reason, f"{what} must be a real number, got {x!r:.80} ({e})") from e


def joint_vector(q: object, what: str = "joint target", non_finite_reason: str = "non_finite") -> np.ndarray:
    """Convert a joint vector to a fresh (6,) float64 array, rad; finite.

    Accepts sequences and arrays of real numbers (module docstring). Raises
    SafetyViolation("invalid") for anything else (wrong shape, strings, complex, bool, masked
    entries, ints beyond float64) and SafetyViolation(non_finite_reason) for NaN / inf
    ("invalid" for a measured state: a broken reading, not a refused command).
    """
    if np.ma.isMaskedArray(q):
        if np.ma.getmaskarray(q).any():
            raise SafetyViolation("invalid", f"{what} has masked entries (no value): {q!r:.120}")
        q = np.ma.getdata(q)
    try:
        arr = np.asarray(q)
    except (TypeError, ValueError, OverflowError) as e:
        raise SafetyViolation("invalid", f"{what} is not an array of numbers: {e}") from e
    if arr.shape != (N_JOINTS,):
        raise SafetyViolation("invalid", f"{what} must have shape (6,), got {arr.shape}")
    if arr.dtype.kind in _REAL_KINDS:
        out = arr.astype(np.float64, copy=True)
    elif arr.dtype.kind == "O":
        try:
            out = np.array([_real_scalar(v) for v in arr], dtype=np.float64)
        except (TypeError, OverflowError) as e:
            raise SafetyViolation("invalid", f"{what} must hold real numbers: {e}") from e
    else:
        raise SafetyViolation("invalid", f"{what} must hold real numbers, got dtype {arr.dtype}")
    if not np.all(np.isfinite(out)):
        raise SafetyViolation(non_finite_reason, f"{what} contains NaN/inf: {out}")
    return out


def check_servo_period(dt_s: object, min_s: float = SERVO_PERIOD_MIN_S, max_s: float = SERVO_PERIOD_MAX_S) -> float:
    """Convert a servo period (servoJ ``t``) to a float in [min_s, max_s] seconds, > 0.

    The default range is the widest any layer accepts (`configs.safety.SERVO_PERIOD_MIN_S` ..
    `SERVO_PERIOD_MAX_S`); SafeArm narrows it to its config's.

    Raises SafetyViolation("invalid") when dt_s is not a real number (bools included), not
    finite, <= 0, or outside [min_s, max_s].
    """
    dt = real_scalar(dt_s, "dt_s")
    if not math.isfinite(dt) or dt <= 0.0 or not min_s <= dt <= max_s:
        raise SafetyViolation(
            "invalid", f"dt_s must be a finite servo period in [{min_s:g}, {max_s:g}] s, got {dt_s!r:.40}"
        )
    return dt
