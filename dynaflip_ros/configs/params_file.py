"""ROS 2 parameter files (`<node>: ros__parameters: {...}`) read and written with PyYAML only.

No rclpy, launch or launch_ros is needed here, so the launch files, the rclpy-only bring-up
(`ros/bringup.py`), the launch-argument resolution (`ros/launch_args.py`) and the ROS-free
recorder (`teleop/record.py`) share one reading of a params file:

  sections   `/**` (every node), `<node>` and `/<node>` apply in that order (later wins), as rcl
             applies them;
  keys       nested maps and dotted keys are equivalent (`ur_rtde: {ur_type: cb3}` ==
             `ur_rtde.ur_type: cb3`); `node_parameters` returns the dotted (flat) form;
  configs    `effective_config` builds a config dataclass from its defaults <- params-file
             values <- overrides, validated by `configs.io.from_dict`.

Written files quote every string (`write_overrides_file`), because rcl's YAML parser types plain
scalars itself. Pure functions, no shared state; `write_overrides_file` writes one file.

Sources: ROS 2 docs, "Passing ROS arguments to nodes via the command-line" (parameter files,
wildcards), https://docs.ros.org/en/jazzy/How-To-Guides/Node-arguments.html ; launch_ros
`Node(parameters=[file, {...}])` (later entries override earlier ones).
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
import typing
from pathlib import Path
from typing import Any, Callable

import yaml

from dynaflip_ros.configs.io import ConfigError, from_dict, to_dict
from dynaflip_ros.errors import UserError


class LaunchArgumentError(ValueError, UserError):
    """A launch argument (or the params-file value it falls back to) is missing or invalid."""


def read_params_file(path: str | Path) -> dict[str, Any]:
    """Parse a ROS 2 params file. Raises LaunchArgumentError if it is missing or not a mapping."""
    p = Path(path)
    if not p.is_file():
        raise LaunchArgumentError(f"params file {p} does not exist")
    try:
        doc = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise LaunchArgumentError(f"params file {p} is not valid YAML: {e}") from e
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise LaunchArgumentError(f"params file {p}: expected a mapping of node sections, got {type(doc).__name__}")
    return doc


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, name + "."))
        else:
            out[name] = v
    return out


def node_parameters(doc: dict[str, Any], node_name: str) -> dict[str, Any]:
    """Dotted parameter name -> value that `doc` gives node `node_name` (sections `/**`, then
    `node_name`, then `/node_name`; later wins). Raises LaunchArgumentError on a section without
    a `ros__parameters` mapping."""
    out: dict[str, Any] = {}
    for key in ("/**", node_name, "/" + node_name):
        if key not in doc:
            continue
        section = doc[key]
        params = section.get("ros__parameters") if isinstance(section, dict) else None
        if not isinstance(params, dict):
            raise LaunchArgumentError(f"params file section {key!r} has no 'ros__parameters' mapping")
        out.update(_flatten(params))
    return out


def sub_parameters(params: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The entries of flat `params` below `prefix.` (prefix stripped)."""
    n = len(prefix) + 1
    return {k[n:]: v for k, v in params.items() if k.startswith(prefix + ".")}


def leaf_fields(cls: type, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """Dotted field name -> (type hint, default value) of every non-dataclass field of the
    dataclass `cls` (nested dataclasses become dotted names: `safety.speed_scale`)."""
    hints = typing.get_type_hints(cls)
    default = cls()
    out: dict[str, tuple[Any, Any]] = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        value = getattr(default, f.name)
        if dataclasses.is_dataclass(hint):
            out.update(leaf_fields(hint, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = (hint, to_dict(value) if dataclasses.is_dataclass(value) else value)
    return out


def from_parameter_value(name: str, value: Any, hint: Any, default: Any) -> Any:
    """ROS parameter value -> the shape and scalar type of the dataclass field: a flat array
    back into equal-length tuples (`joint_limits_rad`, row-major), ints into floats. Raises
    ConfigError when a flat array does not divide into the field's tuples."""
    if isinstance(value, (list, tuple)) and isinstance(default, (tuple, list)) and default:
        if all(isinstance(v, (tuple, list)) for v in default):
            width = len(default[0])
            if any(len(v) != width for v in default) or len(value) % width:
                raise ConfigError(f"parameter {name}: expected a flat list of {width}-tuples "
                                  f"(row-major), got {len(value)} values")
            value = [list(value[i:i + width]) for i in range(0, len(value), width)]
    # A YAML `10` for a float field arrives as an int: coerce (also inside tuples).
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, list) and typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if args and all(a is float for a in args if a is not Ellipsis):
            return [float(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
    return value


def nest_parameters(cls: type, params: dict[str, Any], where: str, ignore: Callable[[str], bool] = lambda n: False
                    ) -> dict[str, Any]:
    """Flat dotted parameters (as a node holds them) -> the nested dict `configs.io.from_dict`
    reads for the dataclass `cls`, values in the fields' shapes (`from_parameter_value`).
    Raises ConfigError naming every parameter `cls` has no field for (except those `ignore`s)."""
    leaves = leaf_fields(cls)
    unknown = sorted(n for n in params if n not in leaves and not ignore(n))
    if unknown:
        raise ConfigError(f"{where}: unknown parameters {unknown} for {cls.__name__}; valid: {sorted(leaves)}")
    out: dict[str, Any] = {}
    for name, (hint, default) in leaves.items():
        if name not in params:
            continue
        d = out
        *parents, leaf = name.split(".")
        for p in parents:
            d = d.setdefault(p, {})
        d[leaf] = from_parameter_value(name, params[name], hint, default)
    return out


def node_config(cls: type, doc: dict[str, Any], node_name: str):
    """The config dataclass `cls` of node `node_name` as a params file `doc` sets it, read as the
    node reads its parameters (defaults <- the file; `nest_parameters`), without ROS. Raises
    ConfigError on unknown or invalid values, LaunchArgumentError on a malformed section."""
    where = f"params file section {node_name!r}"
    return from_dict(cls, nest_parameters(cls, node_parameters(doc, node_name), where), where)


def effective_config(cls: type, file_values: dict[str, Any], overrides: dict[str, Any], where: str):
    """Build `cls` from its defaults <- params-file values <- overrides (validated).
    Raises LaunchArgumentError with `configs.io.from_dict`'s message on an invalid value."""
    merged = dict(file_values)
    merged.update(overrides)
    try:
        return from_dict(cls, merged, where)
    except ConfigError as e:
        raise LaunchArgumentError(str(e)) from e


class _Quoted(str):
    """A string value that is written double-quoted (see `write_overrides_file`)."""


class _OverridesDumper(yaml.SafeDumper):
    pass


_OverridesDumper.add_representer(
    _Quoted, lambda dumper, data: dumper.represent_scalar("tag:yaml.org,2002:str", str(data), style='"'))


def write_overrides_file(overrides: dict[str, dict[str, Any]], path: str | Path | None = None) -> Path:
    """Write {node name: {dotted parameter: value}} as a ROS 2 params file and return its path
    (a fresh temporary file when `path` is None; the launch files pass it after params_file).

    String values are written double-quoted: rcl's YAML parser types a plain scalar itself
    (`012345678901` becomes a double: strtol base 0 stops at the 8, strtod accepts it), while
    PyYAML writes that string unquoted because it is not a YAML 1.1 number. launch_ros builds
    the file for a Node's parameters dict with PyYAML, so a serial number or an address passed
    that way could change type; a quoted scalar is always a string for rcl.
    """
    doc = {node: {"ros__parameters": {k: _Quoted(v) if isinstance(v, str) else v for k, v in params.items()}}
           for node, params in overrides.items() if params}
    if path is None:
        fd, name = tempfile.mkstemp(prefix="dynaflip_launch_overrides_", suffix=".yaml")
        os.close(fd)
        path = name
    path = Path(path)
    path.write_text(yaml.dump(doc, Dumper=_OverridesDumper, sort_keys=True, default_flow_style=False))
    return path


__all__ = [
    "LaunchArgumentError",
    "effective_config",
    "node_parameters",
    "read_params_file",
    "sub_parameters",
    "write_overrides_file",
]
