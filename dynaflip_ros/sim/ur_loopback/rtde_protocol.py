"""RTDE wire protocol (port 30004), controller side: framing, the variable type table, and
encoding/decoding of data packages.

Source: docs/ur_rtde_protocol.md §2 (framing §2.1, package types §2.2, types §2.3, controller-side
sequence §2.4) and §3.1 (what the ur_rtde 1.6.5 client sends and tolerates).

Package = 3-byte header (uint16 total size incl. header, big-endian; uint8 type) + payload.
Numbers are big-endian; doubles IEEE-754 binary64.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

# Package types (docs/ur_rtde_protocol.md §2.2).
RTDE_REQUEST_PROTOCOL_VERSION = 86   # 'V'
RTDE_GET_URCONTROL_VERSION = 118     # 'v'
RTDE_TEXT_MESSAGE = 77               # 'M'
RTDE_DATA_PACKAGE = 85               # 'U'
RTDE_CONTROL_PACKAGE_SETUP_OUTPUTS = 79  # 'O'
RTDE_CONTROL_PACKAGE_SETUP_INPUTS = 73   # 'I'
RTDE_CONTROL_PACKAGE_START = 83      # 'S'
RTDE_CONTROL_PACKAGE_PAUSE = 80      # 'P'
RTDE_READ_PROPERTIES = 82            # 'R' (protocol v3, not used by ur_rtde)

HEADER = struct.Struct(">HB")
HEADER_SIZE = HEADER.size
MAX_PACKAGE_SIZE = 0xFFFF
MAX_SETUP_NAMES_BYTES = 2048   # docs/ur_rtde_protocol.md §2.3 (UR-manual)

# struct codes per RTDE type (docs/ur_rtde_protocol.md §2.3); the count is the number of scalars.
TYPE_CODES: dict[str, tuple[str, int]] = {
    "BOOL": ("B", 1),
    "UINT8": ("B", 1),
    "UINT32": ("I", 1),
    "INT32": ("i", 1),
    "UINT64": ("Q", 1),
    "DOUBLE": ("d", 1),
    "VECTOR3D": ("d", 3),
    "VECTOR6D": ("d", 6),
    "VECTOR6INT32": ("i", 6),
    "VECTOR6UINT32": ("I", 6),
}

N_REGISTERS = 48   # int/double registers 0..47 (docs/ur_rtde_protocol.md §2.3)

_OUT_DOUBLE = ["timestamp", "actual_execution_time", "speed_scaling", "target_speed_fraction", "actual_momentum", "actual_main_voltage", "actual_robot_voltage", "actual_robot_current", "standard_analog_input0", "standard_analog_input1", "standard_analog_output0", "standard_analog_output1", "payload", "tool_analog_input0", "tool_analog_input1", "tool_output_current", "tool_temperature", "tcp_force_scalar"]
_OUT_V6D = ["target_q", "target_qd", "target_qdd", "target_current", "target_moment", "actual_q", "actual_qd", "actual_qdd", "actual_current", "actual_current_as_torque", "actual_moment", "joint_control_output", "actual_TCP_pose", "actual_TCP_speed", "actual_TCP_force", "target_TCP_pose", "target_TCP_speed", "joint_temperatures", "actual_joint_voltage", "ft_raw_wrench", "payload_inertia"]
_OUT_V3D = ["actual_tool_accelerometer", "payload_cog", "elbow_position", "elbow_velocity"]
_OUT_INT32 = ["robot_mode", "safety_mode", "tool_mode", "tool_output_voltage"]
_OUT_UINT32 = ["runtime_state", "robot_status_bits", "safety_status_bits", "output_bit_registers0_to_31", "output_bit_registers32_to_63"]
_OUT_UINT64 = ["actual_digital_input_bits", "actual_digital_output_bits"]

OUTPUT_TYPES: dict[str, str] = {}
for _n in _OUT_DOUBLE:
    OUTPUT_TYPES[_n] = "DOUBLE"
for _n in _OUT_V6D:
    OUTPUT_TYPES[_n] = "VECTOR6D"
for _n in _OUT_V3D:
    OUTPUT_TYPES[_n] = "VECTOR3D"
for _n in _OUT_INT32:
    OUTPUT_TYPES[_n] = "INT32"
for _n in _OUT_UINT32:
    OUTPUT_TYPES[_n] = "UINT32"
for _n in _OUT_UINT64:
    OUTPUT_TYPES[_n] = "UINT64"
OUTPUT_TYPES["joint_mode"] = "VECTOR6INT32"
for _i in range(N_REGISTERS):
    OUTPUT_TYPES[f"output_int_register_{_i}"] = "INT32"
    OUTPUT_TYPES[f"output_double_register_{_i}"] = "DOUBLE"
    # The controller also lets clients read the input registers back (UR-guide).
    OUTPUT_TYPES[f"input_int_register_{_i}"] = "INT32"
    OUTPUT_TYPES[f"input_double_register_{_i}"] = "DOUBLE"
for _i in range(64, 128):
    OUTPUT_TYPES[f"output_bit_register_{_i}"] = "BOOL"

INPUT_TYPES: dict[str, str] = {
    "speed_slider_mask": "UINT32",
    "speed_slider_fraction": "DOUBLE",
    "standard_digital_output_mask": "UINT8",
    "standard_digital_output": "UINT8",
    "configurable_digital_output_mask": "UINT8",
    "configurable_digital_output": "UINT8",
    "tool_digital_output_mask": "UINT8",
    "tool_digital_output": "UINT8",
    "standard_analog_output_mask": "UINT8",
    "standard_analog_output_type": "UINT8",
    "standard_analog_output_0": "DOUBLE",
    "standard_analog_output_1": "DOUBLE",
    "input_bit_registers0_to_31": "UINT32",
    "input_bit_registers32_to_63": "UINT32",
    "external_force_torque": "VECTOR6D",
}
for _i in range(N_REGISTERS):
    INPUT_TYPES[f"input_int_register_{_i}"] = "INT32"
    INPUT_TYPES[f"input_double_register_{_i}"] = "DOUBLE"
for _i in range(64, 128):
    INPUT_TYPES[f"input_bit_register_{_i}"] = "BOOL"


def _type_format(rtde_type: str) -> str:
    """struct format of one variable of `rtde_type` (no byte-order prefix), e.g. "6d"."""
    code, count = TYPE_CODES[rtde_type]
    return (str(count) if count > 1 else "") + code


class ProtocolError(ValueError):
    """A malformed package (bad size, truncated payload)."""


def pack_package(ptype: int, payload: bytes = b"") -> bytes:
    """Frame one package: header (uint16 size incl. header, uint8 type) + payload.

    Raises ProtocolError when the package exceeds 65535 bytes (docs/ur_rtde_protocol.md §2.1)."""
    size = HEADER_SIZE + len(payload)
    if size > MAX_PACKAGE_SIZE:
        raise ProtocolError(f"RTDE package of {size} bytes exceeds {MAX_PACKAGE_SIZE}")
    return HEADER.pack(size, ptype) + payload


def split_packages(buf: bytearray) -> list[tuple[int, bytes]]:
    """Remove every complete package from `buf` (in place) and return [(type, payload)].

    Raises ProtocolError on a header whose size is < 3 (the stream cannot be resynchronised)."""
    out: list[tuple[int, bytes]] = []
    pos = 0
    n = len(buf)
    while n - pos >= HEADER_SIZE:
        size, ptype = HEADER.unpack_from(buf, pos)
        if size < HEADER_SIZE:
            raise ProtocolError(f"RTDE header with size {size} < {HEADER_SIZE}")
        if n - pos < size:
            break
        out.append((ptype, bytes(buf[pos + HEADER_SIZE:pos + size])))
        pos += size
    if pos:
        del buf[:pos]
    return out


def parse_names(payload: bytes) -> list[str]:
    """ASCII comma-separated names; ur_rtde adds a trailing comma (docs/ur_rtde_protocol.md §3.1)."""
    text = payload.decode("ascii", errors="replace")
    return [s.strip() for s in text.split(",") if s.strip()]


@dataclass
class Recipe:
    """One output or input recipe: names, their RTDE types and the compiled struct.

    `valid` is False when any name is NOT_FOUND or IN_USE (the recipe is then not streamed /
    not applied, docs/ur_rtde_protocol.md §2.3)."""

    recipe_id: int
    names: list[str]
    types: list[str]
    valid: bool = True
    frequency_hz: float = 0.0
    struct: struct.Struct | None = None
    counts: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.valid:
            self.counts = [TYPE_CODES[t][1] for t in self.types]
            self.struct = struct.Struct(">" + "".join(_type_format(t) for t in self.types))

    @property
    def size(self) -> int:
        """Packed size of the values (without the recipe id byte), bytes."""
        return self.struct.size if self.struct is not None else 0

    def encode(self, values: list) -> bytes:
        """values: one entry per name (scalar or sequence of `counts[i]` numbers) -> bytes."""
        flat: list = []
        for v, c in zip(values, self.counts):
            if c == 1:
                flat.append(v)
            else:
                flat.extend(v)
        return self.struct.pack(*flat)

    def decode(self, data: bytes) -> tuple[dict[str, object], bool]:
        """Decode values by name. Returns (values, exact_length). A wrong length (ur_rtde 1.6.5
        quirks, docs/ur_rtde_protocol.md §3.8) decodes the leading fields that fit completely."""
        exact = len(data) == self.size
        if exact:
            flat = self.struct.unpack(data)
            out: dict[str, object] = {}
            k = 0
            for name, c in zip(self.names, self.counts):
                out[name] = flat[k] if c == 1 else tuple(flat[k:k + c])
                k += c
            return out, True
        out = {}
        off = 0
        for name, t in zip(self.names, self.types):
            c = TYPE_CODES[t][1]
            st = struct.Struct(">" + _type_format(t))
            if off + st.size > len(data):
                break
            vals = st.unpack_from(data, off)
            out[name] = vals[0] if c == 1 else tuple(vals)
            off += st.size
        return out, False


def output_setup_reply(recipe_id: int, names: list[str]) -> tuple[Recipe, bytes]:
    """Build the output recipe and the `O` reply payload (v2: uint8 id + type names).

    Unknown names give `NOT_FOUND` in their slot and an invalid recipe (docs/ur_rtde_protocol.md §2.3)."""
    types = [OUTPUT_TYPES.get(n, "NOT_FOUND") for n in names]
    valid = bool(names) and "NOT_FOUND" not in types
    rec = Recipe(recipe_id if valid else 0, names, types, valid=valid)
    return rec, bytes([rec.recipe_id]) + ",".join(types).encode("ascii")


def input_setup_types(names: list[str], in_use: set[str]) -> list[str]:
    """Type names of an input recipe; NOT_FOUND for unknown names, IN_USE for names owned by
    another client (docs/ur_rtde_protocol.md §2.3)."""
    out = []
    for n in names:
        t = INPUT_TYPES.get(n)
        if t is None:
            out.append("NOT_FOUND")
        elif n in in_use:
            out.append("IN_USE")
        else:
            out.append(t)
    return out


def text_message(message: str, source: str = "loopback", level: int = 3) -> bytes:
    """A v2 `M` package (uint8 length + message, uint8 length + source, uint8 level)."""
    m = message.encode("utf-8")[:255]
    s = source.encode("utf-8")[:255]
    return pack_package(RTDE_TEXT_MESSAGE, bytes([len(m)]) + m + bytes([len(s)]) + s + bytes([level]))
