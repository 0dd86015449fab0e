"""Load config dataclasses from YAML (and ROS parameter dicts) with strict key checking.

The dataclasses in `dynaflip_ros.configs` are the single source of truth for every parameter;
YAML files and ROS parameters are loaded into them and validated in `__post_init__`.
"""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from dynaflip_ros.errors import UserError

T = TypeVar("T")


class ConfigError(ValueError, UserError):
    """A config file or dict has unknown keys, a wrong type, or an invalid value."""


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass `cls` from a (possibly nested) dict; unknown keys raise ConfigError.

    Lists become tuples where the field is annotated as a tuple; nested dataclass fields are
    built recursively.
    """
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where or cls.__name__}: unknown keys {unknown}; valid: {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        hint = hints.get(key)
        origin = typing.get_origin(hint)
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = from_dict(hint, value, f"{where}.{key}" if where else key)
        elif (origin is tuple or hint is tuple) and isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where or cls.__name__}: {e}") from e


def load_yaml(cls: type[T], path: str | Path, section: str | None = None) -> T:
    """Load `cls` from a YAML file (optionally one top-level section of it). Raises ConfigError
    on a YAML syntax error or invalid values, OSError when the file cannot be read."""
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(raw).__name__}")
    if section is not None:
        raw = raw.get(section, {})
    return from_dict(cls, raw, f"{path}:{section}" if section else str(path))


def to_dict(obj: Any) -> dict[str, Any]:
    """Dataclass -> plain dict (tuples as lists), fit for YAML/JSON and ROS parameters."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        return v

    return conv(obj)
