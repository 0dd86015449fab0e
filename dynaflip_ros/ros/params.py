"""ROS 2 parameters <-> config dataclasses (the dataclasses stay the single source of truth).

`load_node_config(node, cls)` declares every field of `cls` as a parameter of `node` (nested
dataclasses become dotted names: `safety.speed_scale`; a tuple of equal-length tuples such as
`joint_limits_rad` becomes one flat array, row-major), reads the values that the params file
(`--ros-args --params-file config/pick_into_sink.yaml`) and `-p name:=value` overrides set,
and builds `cls` with `configs.io.from_dict` (strict: a parameter the dataclass does not have
raises ConfigError, so a typo in the params file fails loudly instead of being ignored).

Nodes must be created with `automatically_declare_parameters_from_overrides=True`
(`node_kwargs()`), otherwise rclpy silently drops overrides of undeclared names.
Source: ROS 2 docs, "Parameters" and "Using parameters in a class (Python)".
"""
from __future__ import annotations

from typing import Any, TypeVar

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node

from dynaflip_ros.configs.io import from_dict
from dynaflip_ros.configs.params_file import leaf_fields, nest_parameters

T = TypeVar("T")

# Parameters every rclpy node has; they are not part of any config dataclass.
ROS_BUILTIN_PARAMETERS = frozenset({"use_sim_time", "start_type_description_service"})


def node_kwargs() -> dict[str, Any]:
    """Keyword arguments for `rclpy.node.Node(...)` that `load_node_config` relies on."""
    return {"automatically_declare_parameters_from_overrides": True}


def _to_parameter_value(value: Any) -> Any:
    """Python default -> a value ROS can hold (lists of lists flattened); None if unrepresentable."""
    if isinstance(value, (tuple, list)):
        flat: list = []
        for v in value:
            if isinstance(v, (tuple, list)):
                flat.extend(v)
            else:
                flat.append(v)
        if not flat:
            return None
        kinds = {type(v) for v in flat}
        if kinds <= {int} or kinds <= {bool} or kinds <= {str}:
            return flat
        if kinds <= {int, float}:
            return [float(v) for v in flat]
        return None
    if isinstance(value, (bool, int, float, str)):
        return value
    return None


def declare_config_parameters(node: Node, cls: type) -> None:
    """Declare every field of dataclass `cls` not yet declared (override or default value).

    Fields whose default ROS cannot hold (None, empty tuples) are declared only when overridden.
    """
    for name, (_hint, default) in leaf_fields(cls).items():
        if node.has_parameter(name):
            continue
        value = _to_parameter_value(default)
        if value is None:
            continue
        node.declare_parameter(name, value, ParameterDescriptor(description=f"{cls.__name__}.{name}"))


def parameters_to_dict(node: Node, cls: type) -> dict[str, Any]:
    """Nested dict of the node's parameters that belong to `cls` (validated names).

    Raises ConfigError naming every parameter that `cls` has no field for.
    """
    params = {name: p.value for name, p in node.get_parameters_by_prefix("").items()}
    return nest_parameters(cls, params, f"node '{node.get_name()}'",
                           ignore=lambda n: n in ROS_BUILTIN_PARAMETERS or n.startswith("qos_overrides."))


def load_node_config(node: Node, cls: type[T]) -> T:
    """Declare, read and validate the parameters of `node` as dataclass `cls`.

    Raises ConfigError on unknown parameter names, a value of the wrong shape, or a value the
    dataclass rejects (its `__post_init__` message is kept).
    """
    declare_config_parameters(node, cls)
    return from_dict(cls, parameters_to_dict(node, cls), where=f"node '{node.get_name()}' parameters")
