"""Value checks shared by the config dataclasses' `__post_init__` (one helper per kind of check).

Every helper raises `configs.io.ConfigError` (a ValueError) with one message form:

    "<owner>.<name> must be <kind> in <interval> <unit>, got <value!r>"

where `owner.` is left out when `owner` is "" (e.g. SafetyConfig's messages name the field
alone) and the interval is written as given, so `require_range("", "speed_scale", v, 0, 1,
lo_open=True, kind="")` says "speed_scale must be in (0, 1], got 2.0". Numbers are plain `int` /
`float` (numpy float64 counts, bool does not) unless `strict_type=False`, which only compares.
Pure functions, no state; safe from any thread.
"""
from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

from dynaflip_ros.configs.io import ConfigError


def where(owner: str, name: str) -> str:
    """"owner.name", or "name" alone when owner is ""."""
    return f"{owner}.{name}" if owner else name


def is_finite_number(value: object) -> bool:
    """True for a finite int / float that is not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))


def _interval(lo: float, hi: float, lo_open: bool, hi_open: bool) -> str:
    return f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"


def require_range(owner: str, name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False,
                  hi_open: bool = False, unit: str = "", kind: str = "a number",
                  strict_type: bool = True) -> Any:
    """Check lo <= value <= hi (`lo_open` / `hi_open` make that end strict); returns `value`.

    strict_type: also require a finite int / float that is not a bool (a NaN never passes a
        comparison, so without it only non-numbers comparing fine slip through).
    Raises:
        ConfigError: "<owner>.<name> must be <kind> in [lo, hi] <unit>, got <value!r>".
    """
    ok = not strict_type or is_finite_number(value)
    if ok:
        ok = (lo < value if lo_open else lo <= value) and (value < hi if hi_open else value <= hi)
    if not ok:
        words = " ".join(w for w in ("must be", kind, "in", _interval(lo, hi, lo_open, hi_open)) if w)
        raise ConfigError(f"{where(owner, name)} {words}{' ' + unit if unit else ''}, got {value!r}")
    return value


def require_positive(owner: str, name: str, value: Any, upper: float = math.inf) -> Any:
    """Check 0 < value <= upper for an int / float that is not a bool; returns `value`.

    Raises:
        ConfigError: "<owner>.<name> must be a number in (0, upper], got <value!r>".
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= upper:
        raise ConfigError(f"{where(owner, name)} must be a number in (0, {upper}], got {value!r}")
    return value


def require_finite(owner: str, name: str, value: Any, *, lo: float = -math.inf, lo_open: bool = False) -> Any:
    """Check a finite int / float (not a bool), optionally >= lo (> lo with `lo_open`).

    Raises:
        ConfigError: "<owner>.<name> must be finite[ and >= lo], got <value!r>".
    """
    ok = is_finite_number(value) and (lo < value if lo_open else lo <= value)
    if not ok:
        bound = "" if lo == -math.inf else f" and {'>' if lo_open else '>='} {lo}"
        raise ConfigError(f"{where(owner, name)} must be finite{bound}, got {value!r}")
    return value


def require_int(owner: str, name: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    """Check an int (not a bool), optionally in [lo, hi] or >= lo; returns `value`.

    Raises:
        ConfigError: "<owner>.<name> must be an int[ in [lo, hi] | >= lo], got <value!r>".
    """
    bound = "" if lo is None else (f" >= {lo}" if hi is None else f" in [{lo}, {hi}]")
    ok = isinstance(value, int) and not isinstance(value, bool)
    if ok and lo is not None:
        ok = lo <= value and (hi is None or value <= hi)
    if not ok:
        raise ConfigError(f"{where(owner, name)} must be an int{bound}, got {value!r}")
    return value


def require_choice(owner: str, name: str, value: Any, choices: Collection[Any]) -> Any:
    """Check `value in choices`; returns `value`.

    A bool where the choices are strings gets its own message: YAML 1.1 (PyYAML) reads an
    unquoted off / on / yes / no as a boolean (https://yaml.org/type/bool.html).
    Raises:
        ConfigError: "<owner>.<name> must be one of <choices>, got <value!r>", or for a bool:
            "... got the boolean False: YAML reads an unquoted off/on/yes/no as a boolean; quote
            it: <name>: "off"".
    """
    if isinstance(value, bool) and value not in choices and any(isinstance(c, str) for c in choices):
        words = ("on", "yes", "true") if value else ("off", "no", "false")
        word = next((c for c in choices if c in words), words[0])  # the choice the user most likely meant
        raise ConfigError(
            f"{where(owner, name)} must be one of {choices}, got the boolean {value}: YAML reads an unquoted "
            f'off/on/yes/no as a boolean; quote it: {name}: "{word}"'
        )
    if value not in choices:
        raise ConfigError(f"{where(owner, name)} must be one of {choices}, got {value!r}")
    return value


def require_range_pair(owner: str, name: str, value: Any) -> tuple[float, float]:
    """Check a finite (low, high) pair with low <= high; returns it as a tuple of floats.

    Raises:
        ConfigError: "<owner>.<name> must be a finite (low, high) pair with low <= high, got <value!r>".
    """
    try:
        ok = len(value) == 2 and all(is_finite_number(v) for v in value) and value[0] <= value[1]
    except TypeError:
        ok = False
    if not ok:
        raise ConfigError(f"{where(owner, name)} must be a finite (low, high) pair with low <= high, got {value!r}")
    return float(value[0]), float(value[1])


def require_non_empty(owner: str, name: str, value: Any) -> Any:
    """Check a truthy value (a non-empty string / sequence); returns `value`.

    Raises:
        ConfigError: "<owner>.<name> must not be empty".
    """
    if not value:
        raise ConfigError(f"{where(owner, name)} must not be empty")
    return value


def parse_seed_list(text: str) -> list[int]:
    """Episode seeds written "A-B" (inclusive) or "A,B,C" (the --seeds flag, the seeds:= launch
    argument). Raises ValueError for anything else, no seed, a negative or a repeated seed."""
    try:
        a, sep, b = text.strip().partition("-")
        out = list(range(int(a), int(b) + 1)) if sep and a.strip() else [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"seeds {text!r}: expected 'A-B' or 'A,B,C' (integers)") from None
    if not out or min(out) < 0 or len(set(out)) != len(out):
        raise ValueError(f"seeds {text!r}: need one or more distinct seeds >= 0")
    return out

