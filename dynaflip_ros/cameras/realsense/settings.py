"""Fixed RealSense sensor settings (experiment conditions): targets, write, read-back.

On connect the colour sensor's auto exposure and auto white balance are switched off,
exposure (RGB sensor: 100 us units), white balance (K), gain and power-line frequency are
written, optionally the depth exposure (us), then every value is read back
(docs/hardware.md §3.7). A refused or differing value is a "problem" string; the camera raises
CameraError on problems (`strict_settings`) or logs them; a recording cannot be configured, so
its recorded values are only compared. Pure functions on librealsense sensors, no state, no
threads; call them before the sensors stream (the camera's connect()).
Source: librealsense `rs2_option`, https://intelrealsense.github.io/librealsense/doxygen/rs__option_8h.html
"""
from __future__ import annotations

from dynaflip_ros.cameras.realsense.device import stream_sensors
from dynaflip_ros.cameras.realsense.librealsense import enum_name, import_rs
from dynaflip_ros.configs.realsense import RealSenseConfig


def _option(rs, name: str):
    return getattr(rs.option, name)


def fixed_setting_targets(config: RealSenseConfig) -> dict[str, list[tuple[str, float]]]:
    """{"color": [(option name, value)], "depth": [...]} in the order they must be written
    (auto modes off before the manual values; docs/hardware.md §3.7 units: RGB exposure in 100 us)."""
    color = [("enable_auto_exposure", 0.0), ("enable_auto_white_balance", 0.0),
             ("exposure", float(config.exposure_units)), ("white_balance", float(config.white_balance_k)),
             ("gain", float(config.gain)), ("power_line_frequency", float(config.power_line_frequency_value))]
    depth: list[tuple[str, float]] = []
    if config.enable_depth and config.depth_exposure_us > 0:
        depth = [("enable_auto_exposure", 0.0), ("exposure", float(config.depth_exposure_us))]
    return {"color": color, "depth": depth}


def apply_fixed_settings(sensor, targets: list[tuple[str, float]], write: bool, what: str) -> tuple[dict[str, float], list[str]]:
    """Write (if `write`) each (option, value) of `targets` to the librealsense `sensor` and read
    it back. Returns ({option: read-back value}, [problem descriptions]): unsupported option,
    read-only option (when writing), value out of the option's range, refused set, or a read-back
    that differs from the target by more than half the option's step."""
    rs = import_rs()
    readback: dict[str, float] = {}
    problems: list[str] = []
    for name, value in targets:
        opt = _option(rs, name)
        if not sensor.supports(opt):
            problems.append(f"{what} sensor does not support option {name}")
            continue
        rng = sensor.get_option_range(opt)
        if write:
            if sensor.is_option_read_only(opt):
                problems.append(f"{what} option {name} is read-only (wanted {value:g})")
            elif not rng.min - 1e-9 <= value <= rng.max + 1e-9:
                problems.append(f"{what} option {name} = {value:g} is outside the device range "
                                f"[{rng.min:g}, {rng.max:g}]")
            else:
                try:
                    sensor.set_option(opt, float(value))
                except RuntimeError as e:
                    problems.append(f"{what} refused {name} = {value:g}: {e}")
        got = float(sensor.get_option(opt))
        readback[name] = got
        tol = max(0.5 * float(rng.step or 0.0), 1e-6 * max(1.0, abs(value)))
        if abs(got - value) > tol:
            problems.append(f"{what} option {name} reads back {got:g}, expected {value:g}")
    return readback, problems


def all_options(rs, sensor) -> dict[str, float]:
    """{option name: value} of every option of `sensor` readable now (provenance)."""
    out: dict[str, float] = {}
    for opt in sensor.get_supported_options():
        try:
            out[enum_name(opt)] = float(sensor.get_option(opt))
        except RuntimeError:  # some options are readable only while streaming
            continue
    return out


def configure_fixed_settings(rs, dev, config: RealSenseConfig, write: bool
                             ) -> tuple[dict[str, dict[str, float]], list[str], float]:
    """Write (live: `write`) and read back the fixed colour / depth settings of `dev`.

    Returns ({"color": {option: read-back}, "depth": {...}}, problems, colour exposure unit in us).
    The colour exposure is written in the RGB sensor's 100 us units (docs/hardware.md §3.7); when the
    colour stream comes from the depth sensor (D405) that sensor's exposure is in us, so
    exposure_us is written as is, and a different depth_exposure_us is reported as a problem.
    """
    color, depth = stream_sensors(rs, dev)
    targets = fixed_setting_targets(config)
    shared = rs.stream.depth in {p.stream_type() for p in color.get_stream_profiles()}  # D405
    unit_us = 1.0 if shared else 100.0
    if shared:
        targets["color"] = [(n, float(config.exposure_us)) if n == "exposure" else (n, v) for n, v in targets["color"]]
        targets["depth"] = []
    readback, problems = apply_fixed_settings(color, targets["color"], write, "colour")
    out = {"color": readback, "depth": {}}
    if shared and config.depth_exposure_us and config.depth_exposure_us != config.exposure_us:
        problems.append(f"colour and depth share one imager (D405): depth_exposure_us {config.depth_exposure_us:g} "
                        f"cannot differ from exposure_us {config.exposure_us:g}")
    if targets["depth"]:
        if depth is None:
            problems.append("no depth sensor for depth_exposure_us")
        else:
            rb, p = apply_fixed_settings(depth, targets["depth"], write, "depth")
            out["depth"] = rb
            problems += p
    return out, problems, unit_us
