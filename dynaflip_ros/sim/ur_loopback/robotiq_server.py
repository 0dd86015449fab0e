"""Robotiq 2F-85 behind the Robotiq URCap socket (TCP port 63352 on the UR controller).

Protocol (docs/hardware.md §2.3): ASCII, one command per line, `\\n` terminated.
  `SET <VAR> <int> [<VAR> <int> ...]` -> `ack`;  `GET <VAR>` -> `<VAR> <int>`.
Variables: ACT (activate 1 / reset 0), GTO (go to requested position 1 / stop 0), ATR, ARD,
POS (SET: request; GET: actual position 0..255), PRE (echo of the request), SPE, FOR (0..255),
OBJ (0 moving, 1 contact while opening, 2 contact while closing, 3 at request), STA (0 reset,
1 activating, 3 activated), FLT (0 = no fault), SID (9).

Model: the fingers' closure c (0 open .. 1 touching) maps to the position readback
3 + 227·c (a real unit reads ≈3 open and ≈230 closed, §2.3); a request r maps to the closure
(r - 3) / 227 clamped to [0, 1]. Finger speed 20 + 130·SPE/255 mm/s over the 85 mm stroke
(§2.3 driver mapping). Activation (ACT 0 -> 1) takes `activation_s` (STA 1) then STA 3. Motion
needs ACT 1, STA 3 and GTO 1. Unknown commands get `?` (and are logged by the controller).

Threads: none; the controller process's single network-loop thread calls `handle_line` between
cycles and `step_command` / `observe` once per controller cycle (2 ms e-Series, 8 ms CB3).
"""
from __future__ import annotations

STROKE_MM = 85.0
POS_OPEN = 3
POS_CLOSED = 230
ACTIVATION_S = 0.5
CONTACT_TOL = 0.02          # closure short of the target that counts as "stopped by contact"
SETTLE_VEL = 0.05           # closure/s below which the fingers count as standing still
_VARS = ("ACT", "GTO", "ATR", "ARD", "POS", "PRE", "SPE", "FOR", "OBJ", "STA", "FLT", "SID")


class RobotiqGripper:
    """State of the simulated 2F-85 and its URCap command interpreter (see module doc)."""

    def __init__(self) -> None:
        self.act = 0
        self.gto = 0
        self.atr = 0
        self.ard = 0
        self.request = 0          # POS request 0..255
        self.speed = 255
        self.force = 150
        self.sta = 0
        self.obj = 0
        self.flt = 0
        self.sid = 9
        self.cmd_closure = 0.0    # commanded closure, moves towards the target at the speed
        self.measured_closure = 0.0
        self.measured_velocity = 0.0
        self._activation_left_s = 0.0
        self._moving = False
        self._still_s = 0.0

    # ------------------------------------------------------------------ protocol
    def handle_line(self, line: str) -> tuple[str, str | None]:
        """One command line -> (reply without newline, error text or None)."""
        parts = line.strip().split()
        if not parts:
            return "?", "empty gripper command"
        verb = parts[0].upper()
        if verb == "SET" and len(parts) >= 3 and len(parts) % 2 == 1:
            pairs = []
            for k in range(1, len(parts), 2):
                var = parts[k].upper()
                try:
                    val = int(parts[k + 1])
                except ValueError:
                    return "?", f"gripper SET {var}: not an integer: {parts[k + 1]!r}"
                if var not in _VARS or var in ("PRE", "OBJ", "STA", "FLT"):
                    return "?", f"gripper SET of unknown/read-only variable {var}"
                if not 0 <= val <= 255:
                    return "?", f"gripper SET {var} {val}: out of 0..255"
                pairs.append((var, val))
            for var, val in pairs:
                self._set(var, val)
            return "ack", None
        if verb == "GET" and len(parts) == 2:
            var = parts[1].upper()
            if var not in _VARS:
                return "?", f"gripper GET of unknown variable {var}"
            return f"{var} {self._get(var)}", None
        return "?", f"malformed gripper command {line.strip()!r}"

    def _set(self, var: str, val: int) -> None:
        if var == "ACT":
            if val == 0:
                self.act, self.sta, self.gto, self.obj, self.flt = 0, 0, 0, 0, 0
                self._moving = False
            elif self.act == 0:
                self.act, self.sta = 1, 1
                self._activation_left_s = ACTIVATION_S
        elif var == "GTO":
            self.gto = 1 if val else 0
            if self.gto and self.sta == 3:
                self._moving = True
                self._still_s = 0.0
                self.obj = 0
            elif not self.gto:
                self._moving = False
                self.cmd_closure = self.measured_closure
        elif var == "POS":
            self.request = val
            if self.gto and self.sta == 3:
                self._moving = True
                self._still_s = 0.0
                self.obj = 0
        elif var == "SPE":
            self.speed = val
        elif var == "FOR":
            self.force = val
        elif var == "ATR":
            self.atr = val
        elif var == "ARD":
            self.ard = val
        elif var == "SID":
            self.sid = val

    def _get(self, var: str) -> int:
        return {
            "ACT": self.act, "GTO": self.gto, "ATR": self.atr, "ARD": self.ard,
            "POS": self.position, "PRE": self.request, "SPE": self.speed, "FOR": self.force,
            "OBJ": self.obj, "STA": self.sta, "FLT": self.flt, "SID": self.sid,
        }[var]

    # ------------------------------------------------------------------ model
    @property
    def position(self) -> int:
        """Actual position readback 0..255 (≈3 open, ≈230 closed)."""
        return int(round(POS_OPEN + (POS_CLOSED - POS_OPEN) * self.measured_closure))

    @property
    def target_closure(self) -> float:
        return min(max((self.request - POS_OPEN) / (POS_CLOSED - POS_OPEN), 0.0), 1.0)

    @property
    def speed_closure_s(self) -> float:
        """Finger closing speed in closure units per second."""
        return (20.0 + 130.0 * self.speed / 255.0) / STROKE_MM

    def step_command(self, dt_s: float) -> float:
        """Advance activation and the commanded closure by dt_s; returns the closure command."""
        if self.act and self.sta == 1:
            self._activation_left_s -= dt_s
            if self._activation_left_s <= 0:
                self.sta = 3
        if self._moving and self.sta == 3 and self.gto:
            tgt = self.target_closure
            step = self.speed_closure_s * dt_s
            d = tgt - self.cmd_closure
            self.cmd_closure += max(-step, min(step, d))
        return self.cmd_closure

    def observe(self, dt_s: float, closure: float, velocity: float) -> None:
        """Update OBJ from the measured finger closure (0..1) and closure velocity (1/s)."""
        self.measured_closure = min(max(closure, 0.0), 1.0)
        self.measured_velocity = velocity
        if not self._moving:
            return
        tgt = self.target_closure
        if abs(self.measured_closure - tgt) < 0.01 and abs(self.cmd_closure - tgt) < 1e-9:
            self.obj = 3
            self._moving = False
            return
        still = abs(velocity) < SETTLE_VEL
        self._still_s = self._still_s + dt_s if still else 0.0
        # Stopped short of the command while still commanded to move: an object.
        if self._still_s > 0.1 and abs(self.cmd_closure - self.measured_closure) > CONTACT_TOL:
            self.obj = 2 if tgt > self.measured_closure else 1
            self._moving = False
            self.cmd_closure = self.measured_closure
        else:
            self.obj = 0

    def snapshot(self) -> dict:
        return {"pos": self.position, "requested": self.request, "activated": self.sta == 3,
                "obj": self.obj, "sta": self.sta, "gto": self.gto, "speed": self.speed,
                "force": self.force, "closure": self.measured_closure}
