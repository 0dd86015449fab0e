"""Hardware launch arguments of the real-cell launch files -> node parameter overrides (ROS-free).

`launch/real_cell.launch.py`, `launch/record_teleop.launch.py` (`teleop_overrides`: the
recorder's flat robot_ip / ur_type / camera_serial / device / out; both inside an
OpaqueFunction) and `dynaflip launch` (`graph_overrides`: its flags) resolve their arguments
here, so each mapping is one tested function instead of a web of launch substitutions
(launch / launch_ros cannot be installed on the development machines, docs/environment.md;
this module needs only PyYAML and the config dataclasses):

  robot_ip      -> <arm node>.ur_rtde.robot_ip        "" = keep the params file's value
  ur_type       -> <arm node>.ur_rtde.ur_type         "" = keep the params file's value
  gripper       -> <arm node>.ur_rtde.gripper         "" = keep the params file's value
  servo_rate_hz -> <arm node>.servo_rate_hz           "auto" = the controller rate of the
                   effective ur_type (125 Hz CB3, 500 Hz e-Series; docs/hardware.md,
                   configs/robot.py CONTROLLER_RATE_HZ); a number = that rate (<= the controller's)
  camera_serial -> <camera node>.realsense.serial     "" = keep the params file's value
                   ("" there too = the only connected RealSense)
  ur_type also  -> <arm node>.safety.robot_model      cb3 -> ur3_cb3, e-series -> ur3e (the
                   kinematics of SafeArm's workspace check must be the arm's), whenever
                   ur_type is given or the params file sets no robot_model; a params-file
                   robot_model that does not match the params-file ur_type is an error
  and the backends: <arm node>.backend = "ur_rtde", <camera node>.backend = "realsense".

"Effective" = launch argument, else the params file, else the dataclass default. The effective
arm and camera settings are validated with their dataclasses (`configs.robot.URRtdeConfig`,
`configs.realsense.RealSenseConfig`), so a bad argument or params-file value fails when the
launch starts, with the dataclass' message, before any process touches the hardware. An empty
effective robot_ip is an error: the arm could not be reached.

ROS 2 params files (`<node>: ros__parameters: {...}`) are read as rcl reads them, by
`configs/params_file.py` (re-exported here: LaunchArgumentError, read_params_file,
node_parameters, sub_parameters, effective_config, write_overrides_file): sections
`/**` (every node), `<node>` and `/<node>` apply in that order (later wins); nested maps and
dotted keys (`ur_rtde: {ur_type: cb3}` == `ur_rtde.ur_type: cb3`) are equivalent.
Source: ROS 2 docs, "Passing ROS arguments to nodes via the command-line" (parameter files,
wildcards) and launch_ros `Node(parameters=[file, {...}])` (later entries override earlier ones).
"""
from __future__ import annotations

import math
from typing import Any

from dynaflip_ros.configs.params_file import (  # re-exported: the params-file reading lives in configs
    LaunchArgumentError,
    effective_config,
    node_parameters,
    read_params_file,
    sub_parameters,
    write_overrides_file,
)
from dynaflip_ros.configs.robot import CONTROLLER_RATE_HZ, URRtdeConfig

# UR controller generation -> `configs.safety.ROBOT_MODELS` key (SafeArm's kinematic model).
UR_TYPE_ROBOT_MODEL: dict[str, str] = {"cb3": "ur3_cb3", "e-series": "ur3e"}
ARM_BACKEND = "ur_rtde"
CAMERA_BACKEND = "realsense"
AUTO = "auto"


def parse_servo_rate_hz(value: str, controller_rate_hz: float) -> float:
    """`servo_rate_hz` argument -> Hz: "auto"/"" = the controller rate, else a number in
    (0, controller rate]. Raises LaunchArgumentError otherwise."""
    text = str(value).strip()
    if text in ("", AUTO):
        return float(controller_rate_hz)
    try:
        rate = float(text)
    except ValueError as e:
        raise LaunchArgumentError(f"servo_rate_hz must be 'auto' or a number in Hz, got {value!r}") from e
    if not math.isfinite(rate) or not 0.0 < rate <= controller_rate_hz:
        raise LaunchArgumentError(
            f"servo_rate_hz must be in (0, {controller_rate_hz:g}] Hz (the controller rate), got {value!r}")
    return rate


def arm_overrides(file_params: dict[str, Any], *, robot_ip: str = "", ur_type: str = "", gripper: str = "",
                  servo_rate_hz: str | None = AUTO, node_name: str = "ur3_driver",
                  ur_rtde_prefix: str = "ur_rtde", servo_rate_param: str | None = "servo_rate_hz",
                  backend_param: str | None = "backend",
                  safety_prefix: str | None = "safety") -> tuple[dict[str, Any], URRtdeConfig]:
    """Parameter overrides of the node that owns the arm, and the effective URRtdeConfig.

    Args:
        file_params: that node's flat parameters from the params file (`node_parameters`).
        robot_ip, ur_type, gripper: launch arguments ("" = keep the params file's value).
        servo_rate_hz: launch argument ("auto" = the effective ur_type's controller rate);
            ignored when servo_rate_param is None (the node has no such parameter).
        node_name: for messages. ur_rtde_prefix / safety_prefix: where URRtdeConfig / SafetyConfig
            are nested in the node's config (safety_prefix None: the node has no SafetyConfig).
            servo_rate_param / backend_param: the node's parameter names (None: absent).
    Returns ({dotted parameter: value}, effective URRtdeConfig).
    Raises LaunchArgumentError on an invalid value or an empty effective robot_ip.
    """
    given = {k: v.strip() for k, v in (("robot_ip", robot_ip), ("ur_type", ur_type), ("gripper", gripper))
             if v is not None and v.strip()}
    cfg = effective_config(URRtdeConfig, sub_parameters(file_params, ur_rtde_prefix), given,
                     f"{node_name}.{ur_rtde_prefix} (launch arguments over the params file)")
    if not cfg.robot_ip:
        raise LaunchArgumentError(
            f"no UR controller address: pass robot_ip:=<address> or set {node_name}.{ur_rtde_prefix}.robot_ip "
            "in the params file")
    overrides: dict[str, Any] = {f"{ur_rtde_prefix}.{k}": v for k, v in given.items()}
    if safety_prefix is not None:
        model = UR_TYPE_ROBOT_MODEL[cfg.ur_type]
        file_model = file_params.get(f"{safety_prefix}.robot_model")
        if "ur_type" in given or file_model is None:
            overrides[f"{safety_prefix}.robot_model"] = model
        elif file_model is not None and file_model != model:
            raise LaunchArgumentError(
                f"{node_name}: {ur_rtde_prefix}.ur_type {cfg.ur_type!r} needs {safety_prefix}.robot_model {model!r}, "
                f"the params file has {file_model!r} (pass ur_type:=... to set both)")
    if backend_param is not None:
        overrides[backend_param] = ARM_BACKEND
    if servo_rate_param is not None:
        overrides[servo_rate_param] = parse_servo_rate_hz(
            AUTO if servo_rate_hz is None else servo_rate_hz, CONTROLLER_RATE_HZ[cfg.ur_type])
    return overrides, cfg


def camera_overrides(file_params: dict[str, Any], *, camera_serial: str = "", node_name: str = "camera",
                     realsense_prefix: str = "realsense", backend_param: str | None = "backend"):
    """Parameter overrides of the camera node, and the effective RealSenseConfig.

    camera_serial: launch argument ("" = keep the params file's value). RealSense serial numbers
    are digit strings with possible leading zeros: the override stays a str (the launch file
    passes it with ParameterValue(value_type=str), never as a YAML number).
    Returns ({dotted parameter: value}, effective RealSenseConfig). Raises LaunchArgumentError.
    """
    from dynaflip_ros.configs.realsense import RealSenseConfig  # lazily: arm-only users need not have it

    given = {"serial": camera_serial.strip()} if camera_serial and camera_serial.strip() else {}
    file_values = sub_parameters(file_params, realsense_prefix)
    if isinstance(file_values.get("serial"), int):
        raise LaunchArgumentError(
            f"{node_name}.{realsense_prefix}.serial is a YAML number in the params file; quote it "
            f"(serial: \"{file_values['serial']}\") so leading zeros survive")
    cfg = effective_config(RealSenseConfig, file_values, given,
                     f"{node_name}.{realsense_prefix} (launch arguments over the params file)")
    overrides: dict[str, Any] = {f"{realsense_prefix}.{k}": v for k, v in given.items()}
    if backend_param is not None:
        overrides[backend_param] = CAMERA_BACKEND
    return overrides, cfg


def real_cell_overrides(params_doc: dict[str, Any], *, robot_ip: str = "", ur_type: str = "", gripper: str = "",
                        servo_rate_hz: str = AUTO, camera_serial: str = "") -> dict[str, dict[str, Any]]:
    """{node name: parameter overrides} of launch/real_cell.launch.py's hardware nodes
    (`ur3_driver`, `camera`) from its launch arguments over `params_doc` (`read_params_file`).
    Raises LaunchArgumentError."""
    arm, _ = arm_overrides(node_parameters(params_doc, "ur3_driver"), robot_ip=robot_ip, ur_type=ur_type,
                           gripper=gripper, servo_rate_hz=servo_rate_hz)
    cam, _ = camera_overrides(node_parameters(params_doc, "camera"), camera_serial=camera_serial)
    return {"ur3_driver": arm, "camera": cam}


def graph_overrides(params_doc: dict[str, Any], *, use_sim: bool, results_path: str, encoder: str = "",
                    backend: str = "", policy: str = "", episodes: int | None = None, seed: int | None = None,
                    object_name: str | None = None, instruction: str | None = None,
                    episode_timeout_s: float | None = None, startup_timeout_s: float | None = None,
                    robot_ip: str = "", ur_type: str = "", gripper: str = "",
                    camera_serial: str = "", combined_inference: bool = False) -> dict[str, dict[str, Any]]:
    """{node name: parameter overrides} of `dynaflip launch <graph>` over `params_doc`.

    encoder / backend / policy ("" = the params file's): `encoder.model_dir`, `encoder.backend`,
    `policy.model_dir`. instruction (None = the params file's): `policy.instruction` (the real
    cell's task sentence, latched on /dynaflip/instruction) and, in simulation, the episode
    manager's (sent with every reset; needs object_name there, the object it names).
    use_sim: the episode manager gets `results_path` and every episode setting given (None =
    the params file's; episode_timeout_s / startup_timeout_s in s). Real cell: the hardware
    arguments through `real_cell_overrides` (validated; "" = the params file's).
    combined_inference: the CPU-frugal layout (no encoder process): the policy node gets
    `encoder_in_process` and the encoder settings (the params file's `encoder` section, then
    encoder / backend) as `encoder.*`. Nodes without overrides are left out. Raises LaunchArgumentError (also for a blank instruction, or one
    without object_name in simulation).
    """
    enc = {k: v for k, v in (("model_dir", encoder), ("backend", backend)) if v}
    pol: dict[str, Any] = {"model_dir": policy} if policy else {}
    if combined_inference:  # no encoder process: the policy node runs it with the encoder section's settings
        pol["encoder_in_process"] = True
        encoder_section = node_parameters(params_doc, "encoder")
        pol.update({f"encoder.{k}": v for k, v in {**encoder_section, **enc}.items()})
        enc = {}
    if instruction is not None:
        instruction = instruction.strip()
        if not instruction:
            raise LaunchArgumentError("instruction must not be blank")
        pol["instruction"] = instruction
        if use_sim and not (object_name or node_parameters(params_doc, "episode_manager").get("object_name")):
            raise LaunchArgumentError(
                "an instruction in simulation needs the object it names (--object / episode_manager.object_name): "
                "the sim cell uses the instruction as given; without one every episode draws its own")
    out: dict[str, dict[str, Any]] = {"encoder": enc, "policy": pol}
    if use_sim:
        em: dict[str, Any] = {"results_path": results_path}
        for key, value in (("episodes", episodes), ("seed", seed), ("object_name", object_name),
                           ("instruction", instruction), ("episode_timeout_s", episode_timeout_s),
                           ("startup_timeout_s", startup_timeout_s)):
            if value is not None:
                em[key] = value
        out["episode_manager"] = em
    else:
        out.update(real_cell_overrides(params_doc, robot_ip=robot_ip, ur_type=ur_type, gripper=gripper,
                                       camera_serial=camera_serial))
    return {k: v for k, v in out.items() if v}


# Teleop devices that can run under `ros2 launch` (launched processes get no terminal on stdin,
# so the keyboard device cannot read keys there: use `ros2 run` / `dynaflip record` for it).
LAUNCHABLE_TELEOP_DEVICES: tuple[str, ...] = ("gamepad", "spacemouse", "freedrive")


def teleop_overrides(params_doc: dict[str, Any], *, use_sim: bool = False, robot_ip: str = "", ur_type: str = "",
                     camera_serial: str = "", device: str = "", out: str = "",
                     node_name: str = "teleop_recorder") -> dict[str, Any]:
    """Parameter overrides of launch/record_teleop.launch.py's `teleop_recorder` node
    (`teleop.config.TeleopConfig`: flat robot_ip / ur_type / camera_serial / device / out / sim)
    from its launch arguments over `params_doc` ("" = keep the params file's value).

    The effective node config is built with `teleop.config.teleop_config` from the node's
    params-file section, dotted keys (`safety.speed_scale`) unflattened into the nested
    SafetyConfig, so its own checks run (device name, ur_type, robot_ip required on the real
    cell, safety limits); then on the real cell the arm and camera settings are checked
    with URRtdeConfig / RealSenseConfig. Raises LaunchArgumentError: missing `out`, a keyboard
    device (no terminal under ros2 launch), or any invalid value.
    """
    from dynaflip_ros.configs.io import ConfigError
    from dynaflip_ros.configs.realsense import RealSenseConfig
    from dynaflip_ros.teleop.config import _unflatten, teleop_config

    given: dict[str, Any] = {k: v.strip() for k, v in (("robot_ip", robot_ip), ("ur_type", ur_type),
                                                       ("camera_serial", camera_serial), ("device", device),
                                                       ("out", out)) if v is not None and v.strip()}
    given["sim"] = bool(use_sim)
    file_params = node_parameters(params_doc, node_name)
    if isinstance(file_params.get("camera_serial"), int):
        raise LaunchArgumentError(f"{node_name}.camera_serial is a YAML number in the params file; quote it")
    try:  # dotted params-file keys (safety.speed_scale) -> nested sections of TeleopConfig
        cfg = teleop_config(_unflatten(file_params), given, f"{node_name} (launch arguments over the params file)")
    except ConfigError as e:
        raise LaunchArgumentError(str(e)) from e
    if not cfg.out:
        raise LaunchArgumentError("no dataset directory: pass out:=<dir> (e.g. outputs/demos_real)")
    if cfg.device == "keyboard":
        raise LaunchArgumentError(
            "device 'keyboard' needs a terminal, which ros2 launch does not give its processes; use "
            f"one of {LAUNCHABLE_TELEOP_DEVICES}, or `ros2 run dynaflip_ros teleop_recorder_node --ros-args "
            "-p device:=keyboard ...` / `dynaflip record --teleop keyboard`")
    if not cfg.sim:
        effective_config(URRtdeConfig, {}, {"robot_ip": cfg.robot_ip, "ur_type": cfg.ur_type}, f"{node_name} arm")
        effective_config(RealSenseConfig, {}, {"serial": cfg.camera_serial, "enable_depth": False}, f"{node_name} camera")
    return given


def describe(overrides: dict[str, dict[str, Any]]) -> str:
    """One log line per node: `node: name=value, ...` (for the launch log)."""
    return "\n".join(f"{node}: " + ", ".join(f"{k}={v!r}" for k, v in sorted(params.items()))
                     for node, params in overrides.items())


__all__ = [
    "ARM_BACKEND",
    "AUTO",
    "CAMERA_BACKEND",
    "LAUNCHABLE_TELEOP_DEVICES",
    "UR_TYPE_ROBOT_MODEL",
    "LaunchArgumentError",
    "arm_overrides",
    "camera_overrides",
    "describe",
    "effective_config",
    "graph_overrides",
    "node_parameters",
    "parse_servo_rate_hz",
    "read_params_file",
    "real_cell_overrides",
    "sub_parameters",
    "teleop_overrides",
    "write_overrides_file",
]


def ood_session_overrides(params_doc: dict[str, Any], *, out: str, conditions: str = "", seeds: str = "",
                          model: str = "", episode_timeout_s: str = "", node_name: str = "ood_session") -> dict[str, Any]:
    """Parameter overrides of the `ood_session` node (launch/ood_session.launch.py, `dynaflip
    eval-ood --real`) from its launch arguments over `params_doc` ("" = keep the params file's
    value): out -> session_dir (required), conditions (checked with `sim.perturbations`), seeds
    ("A-B" or "A,B,C"), model, episode_timeout_s. The effective `OodSessionNodeConfig` is built,
    so its checks run. Raises LaunchArgumentError on a missing out or any invalid value."""
    from dynaflip_ros.configs.ros import OodSessionNodeConfig
    from dynaflip_ros.sim.perturbations import parse_conditions

    given: dict[str, Any] = {}
    if not out.strip():
        raise LaunchArgumentError("no session directory: pass out:=<dir> (e.g. outputs/ood/real_session)")
    given["session_dir"] = out.strip()
    if conditions.strip():
        try:
            parse_conditions(conditions)
        except ValueError as e:
            raise LaunchArgumentError(f"conditions: {e}") from None
        given["conditions"] = conditions.strip()
    if seeds.strip():
        from dynaflip_ros.configs.validate import parse_seed_list

        try:
            given["seeds"] = parse_seed_list(seeds)
        except ValueError as e:
            raise LaunchArgumentError(str(e)) from None
    if model.strip():
        given["model"] = model.strip()
    if episode_timeout_s.strip():
        try:
            given["episode_timeout_s"] = float(episode_timeout_s)
        except ValueError:
            raise LaunchArgumentError(f"episode_timeout_s {episode_timeout_s!r} is not a number") from None
    effective_config(OodSessionNodeConfig, node_parameters(params_doc, node_name), given, node_name)
    return given

