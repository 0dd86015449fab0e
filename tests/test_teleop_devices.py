"""Teleop devices: keyboard from a pseudo-terminal, gamepad mapping (synthetic values and an SDL
virtual joystick through pygame), SpaceMouse availability errors, freedrive, replay files."""
import ctypes
import glob
import json
import os
import pty
import termios

import numpy as np
import pytest

from dynaflip_ros.teleop.devices import (
    CombinedDevice,
    DeviceError,
    FreedriveDevice,
    GamepadDevice,
    GamepadMapping,
    KeyboardDevice,
    ReplayDevice,
    ReplayStep,
    SpaceMouseDevice,
    TeleopCommand,
    TeleopEvent,
    apply_deadzone,
    load_replay,
    make_device,
    map_gamepad,
    parse_keys,
    rotate_twist_about_z,
    write_replay,
)


class FakeClock:
    def __init__(self, t=0.0):
        self.t = t

    def __call__(self):
        return self.t


# ------------------------------------------------------------------------------------ keyboard
def test_parse_keys_tokens():
    assert parse_keys(b"wQ \x1b[A\x1b[D\x04\r\x1b[1;5C\x1bz\x01") == [
        "w", "Q", "SPACE", "UP", "LEFT", "CTRL-D", "ENTER", "?", "ESC", "z", "?"]
    assert parse_keys(b"") == []


@pytest.fixture()
def pty_pair():
    master, slave = pty.openpty()
    yield master, slave
    os.close(master)
    os.close(slave)


def test_keyboard_from_a_pty(pty_pair):
    master, slave = pty_pair
    before = termios.tcgetattr(slave)
    assert before[3] & termios.ICANON and before[3] & termios.ECHO
    clock = FakeClock(100.0)
    kb = KeyboardDevice(fd=slave, linear_speed_m_s=0.05, angular_speed_rad_s=0.3, hold_timeout_s=0.5, clock=clock)
    with kb:
        raw = termios.tcgetattr(slave)
        assert not raw[3] & termios.ICANON and not raw[3] & termios.ECHO  # cbreak: unbuffered, no echo
        assert raw[3] & termios.ISIG  # Ctrl-C still interrupts
        os.write(master, b"wdj")
        cmd = kb.read()
        np.testing.assert_allclose(cmd.twist, [0.05, -0.05, 0, 0, 0, 0.3])
        assert cmd.gripper is None and cmd.events == ()
        clock.t += 0.3
        np.testing.assert_allclose(kb.read().twist, [0.05, -0.05, 0, 0, 0, 0.3])  # still held
        os.write(master, b"s")  # opposite key overrides +x, refreshes its timer
        clock.t += 0.3
        cmd = kb.read()
        np.testing.assert_allclose(cmd.twist, [-0.05, 0, 0, 0, 0, 0])  # d and j timed out (0.6 s)
        os.write(master, b"c\x1b[A+bnxzQ")
        cmd = kb.read()
        assert cmd.gripper == 1.0
        assert cmd.events == (TeleopEvent.START, TeleopEvent.STOP, TeleopEvent.DISCARD,
                              TeleopEvent.RERECORD, TeleopEvent.QUIT)
        np.testing.assert_allclose(cmd.twist[0], 0.05 * 1.5)  # up arrow = +x, speed x1.5
        os.write(master, b" g")  # stop motion, toggle gripper -> open
        cmd = kb.read()
        assert np.all(cmd.twist == 0) and cmd.gripper == 0.0
        os.write(master, b"\x04")
        assert kb.read().events == (TeleopEvent.QUIT,)
    after = termios.tcgetattr(slave)
    assert after == before  # terminal restored


def test_keyboard_restores_the_terminal_when_the_session_crashes(pty_pair):
    master, slave = pty_pair
    before = termios.tcgetattr(slave)
    with pytest.raises(RuntimeError, match="boom"), KeyboardDevice(fd=slave):
        assert termios.tcgetattr(slave) != before
        raise RuntimeError("boom")
    assert termios.tcgetattr(slave) == before


def test_keyboard_needs_a_terminal(tmp_path):
    r, w = os.pipe()
    try:
        with pytest.raises(DeviceError, match="interactive terminal"):
            KeyboardDevice(fd=r).open()
    finally:
        os.close(r)
        os.close(w)


# ------------------------------------------------------------------------------------- gamepad
def test_deadzone_and_mapping_on_synthetic_values():
    assert apply_deadzone(0.1, 0.15) == 0.0
    assert apply_deadzone(-1.0, 0.15) == -1.0
    assert apply_deadzone(0.575, 0.15) == pytest.approx(0.5)
    m = GamepadMapping(deadzone=0.1, linear_speed_m_s=0.2, angular_speed_rad_s=1.0)
    axes = [0.05, -1.0, -1.0, 0.55, 1.0, -1.0]  # LX in deadzone, LY full up, RX half right, RY full down
    buttons = [1, 0, 0, 0, 0, 0, 0, 1, 0]  # A (close gripper), Start
    tw, grip, down = map_gamepad(axes, buttons, [(1, -1)], m)
    np.testing.assert_allclose(tw, [0.2, 0.0, -0.2, 1.0, -1.0, -0.5])
    assert grip == 1.0 and down == {TeleopEvent.START}
    tw, grip, down = map_gamepad([0.0] * 2, [0, 1], [], m)  # fewer axes/buttons than mapped: ignored
    assert np.all(tw == 0) and grip == 0.0 and down == set()
    custom = GamepadMapping(axes=((2, 0, 1.0),), hat_axes=(), event_buttons=(("quit", 0),))
    tw, _, down = map_gamepad([1.0], [1], [], custom)
    assert tw[2] == pytest.approx(custom.linear_speed_m_s) and down == {TeleopEvent.QUIT}
    with pytest.raises(ValueError):
        GamepadMapping(deadzone=0.95)
    with pytest.raises(ValueError):
        GamepadMapping(event_buttons=(("jump", 1),))


def _sdl():
    pygame = pytest.importorskip("pygame")
    libs = glob.glob(os.path.join(os.path.dirname(pygame.__file__), "..", "pygame.libs", "libSDL2-2*"))
    if not libs:
        pytest.skip("pygame's bundled SDL2 library not found (needed for an SDL virtual joystick)")
    return ctypes.CDLL(libs[0])


def test_gamepad_through_pygame_with_an_sdl_virtual_joystick(monkeypatch):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    sdl = _sdl()
    import pygame

    pygame.display.init()
    pygame.joystick.init()
    try:
        if not hasattr(sdl, "SDL_JoystickAttachVirtual"):
            pytest.skip("SDL < 2.0.14: no virtual joysticks")
        idx = sdl.SDL_JoystickAttachVirtual(1, 6, 11, 1)  # SDL_JOYSTICK_TYPE_GAMECONTROLLER, 6 axes, 11 buttons, 1 hat
        assert idx >= 0
        sdl.SDL_JoystickOpen.restype = ctypes.c_void_p
        js = ctypes.c_void_p(sdl.SDL_JoystickOpen(idx))
        dev = GamepadDevice(GamepadMapping(joystick_index=idx, deadzone=0.1), clock=FakeClock(1.0))
        dev.open()
        try:
            assert sdl.SDL_JoystickSetVirtualAxis(js, 1, ctypes.c_int16(-32768)) == 0  # LY full up
            assert sdl.SDL_JoystickSetVirtualAxis(js, 3, ctypes.c_int16(16384)) == 0  # RX half right
            assert sdl.SDL_JoystickSetVirtualButton(js, 7, ctypes.c_uint8(1)) == 0  # Start
            assert sdl.SDL_JoystickSetVirtualButton(js, 0, ctypes.c_uint8(1)) == 0  # A
            cmd = dev.read()
            assert cmd.twist[0] == pytest.approx(0.1, abs=1e-3)  # +x at full speed
            assert cmd.twist[5] == pytest.approx(-0.5 * (0.5 - 0.1) / 0.9, abs=1e-2)
            assert cmd.gripper == 1.0 and cmd.events == (TeleopEvent.START,)
            assert dev.read().events == ()  # a held button fires once
            sdl.SDL_JoystickSetVirtualButton(js, 7, ctypes.c_uint8(0))
            dev.read()
            sdl.SDL_JoystickSetVirtualButton(js, 7, ctypes.c_uint8(1))
            assert dev.read().events == (TeleopEvent.START,)
            assert dev.describe()["joystick"]
        finally:
            dev.close()
            sdl.SDL_JoystickClose(js)
            sdl.SDL_JoystickDetachVirtual(idx)
    finally:
        pygame.quit()


def test_gamepad_without_a_joystick_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    pytest.importorskip("pygame")
    dev = GamepadDevice(GamepadMapping(joystick_index=7))
    with pytest.raises(DeviceError, match="no gamepad at joystick index 7"):
        dev.open()
    dev.close()


# ---------------------------------------------------------------------------------- spacemouse
def test_spacemouse_missing_is_a_clear_error():
    with pytest.raises(DeviceError) as ei:
        SpaceMouseDevice().open()
    msg = str(ei.value)
    # names what is missing here: the package, the hidapi library, or the device itself
    assert any(s in msg for s in ("pip install pyspacemouse", "libhidapi", "no SpaceMouse connected")), msg


def test_rotate_twist_about_z():
    tw = rotate_twist_about_z(np.array([1.0, 0, 0, 0, 0.5, 0]), np.pi / 2)
    np.testing.assert_allclose(tw, [0, 1, 0, -0.5, 0, 0], atol=1e-12)


# ----------------------------------------------------------------------------------- freedrive
def test_freedrive_on_the_sim_arm_is_refused_and_on_a_ur_toggles_teach_mode():
    class SimLikeArm:
        pass

    with pytest.raises(DeviceError, match="no freedrive|has none"):
        FreedriveDevice(SimLikeArm()).open()

    class URLike:
        def __init__(self):
            self.calls = []

        def set_freedrive(self, enabled):
            self.calls.append(enabled)

    arm = URLike()
    dev = make_device("freedrive", arm=arm, keyboard_events=False)
    assert dev.moves_arm_itself
    with dev:
        assert np.all(dev.read().twist == 0)
    assert arm.calls == [True, False]


# -------------------------------------------------------------------------------------- replay
def test_replay_file_round_trip_and_timing(tmp_path):
    path = write_replay(tmp_path / "r.jsonl", [
        ReplayStep(0.0, events=("start",)),
        ReplayStep(0.1, twist=(0.01, 0, 0, 0, 0, 0), gripper=1.0),
        ReplayStep(0.5, twist=(0,) * 6, events=("stop", "quit")),
    ])
    clock = FakeClock(10.0)
    dev = make_device(f"replay:{path}", clock=clock)
    assert isinstance(dev, ReplayDevice) and len(dev.steps) == 3
    dev.open()
    assert dev.read().events == (TeleopEvent.START,)
    clock.t = 10.05
    c = dev.read()
    assert c.events == () and np.all(c.twist == 0)
    clock.t = 10.2
    c = dev.read()
    assert c.twist[0] == 0.01 and c.gripper == 1.0
    clock.t = 10.3
    c = dev.read()
    assert c.twist[0] == 0.01 and c.gripper is None  # twist holds, gripper applied once
    clock.t = 11.0
    assert dev.read().events == (TeleopEvent.STOP, TeleopEvent.QUIT, TeleopEvent.QUIT)  # + end-of-replay quit
    assert dev.read().events == ()


@pytest.mark.parametrize("bad,match", [
    ('{"t_s": 0, "twist": [0, 0, 0]}', "bad replay step"),
    ('{"t_s": 0, "events": ["fly"]}', "bad replay step"),
    ('{"t_s": 0, "gripper": 2}', "bad replay step"),
    ('{"twist": [0,0,0,0,0,0]}', "bad replay step"),
    ('{"t_s": 1}\n{"t_s": 0.5}', "non-decreasing"),
    ("not json", "bad replay step"),
])
def test_replay_rejects_bad_files(tmp_path, bad, match):
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps({"format": "dynaflip-teleop-replay-v1"}) + "\n" + bad + "\n")
    with pytest.raises(ValueError, match=match):
        load_replay(p)
    p.write_text('{"format": "something-else"}\n')
    with pytest.raises(ValueError, match="first line"):
        load_replay(p)


def test_combined_device_merges(tmp_path):
    a = ReplayDevice([ReplayStep(0.0, twist=(0.1, 0, 0, 0, 0, 0), gripper=1.0, events=("start",))],
                     clock=FakeClock(), quit_at_end=False)
    b = ReplayDevice([ReplayStep(0.0, twist=(0, 0.2, 0, 0, 0, 0), events=("stop",))], clock=FakeClock(),
                     quit_at_end=False)
    with CombinedDevice([a, b]) as dev:
        c = dev.read()
    np.testing.assert_allclose(c.twist, [0.1, 0.2, 0, 0, 0, 0])
    assert c.gripper == 1.0 and c.events == (TeleopEvent.START, TeleopEvent.STOP)


def test_command_validation():
    with pytest.raises(ValueError):
        TeleopCommand(np.zeros(5))
    with pytest.raises(ValueError):
        TeleopCommand(np.zeros(6), gripper=1.5)
    with pytest.raises(ValueError):
        make_device("joystick2000")
