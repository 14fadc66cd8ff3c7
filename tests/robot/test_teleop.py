"""Teleoperation: key mapping, deadman, speed scaling, gripper and episode keys with
scripted key sequences and times; the terminal reader on a pseudo-terminal; SpaceMouse
and gamepad event handling with scripted evdev events."""

from __future__ import annotations

import os
import sys
import termios

import numpy as np
import pytest

from robot.teleop import (
    ABS_RY,
    ABS_X,
    ABS_Y,
    ABS_Z,
    ACTIONS,
    BTN_0,
    BTN_NORTH,
    BTN_SOUTH,
    BTN_TL,
    EV_ABS,
    EV_KEY,
    EV_REL,
    GAMEPAD,
    SPACEMOUSE,
    EvdevReader,
    EvdevState,
    KeyMap,
    Teleop,
    TeleopConfig,
    TeleopDeviceError,
    TerminalKeyboard,
    split_keys,
)

CONFIG = TeleopConfig(max_linear_speed=0.1, max_angular_speed=0.5, speed_scale=0.5, deadman_s=0.3)


def run_keys(teleop: Teleop, keys: str, start_s: float = 0.0, period_s: float = 1 / 30) -> float:
    """Type `keys` as a terminal's auto-repeat would deliver them; returns the time of the last."""
    keymap = KeyMap()
    now = start_s
    for index, key in enumerate(keys):
        now = start_s + index * period_s
        teleop.apply(keymap.action(key), now)
    return now


# ---------------------------------------------------------------- mapping and deadman


def test_each_motion_key_drives_one_base_frame_axis_at_the_scaled_speed():
    expected = {"w": ([1, 0, 0], [0, 0, 0]), "s": ([-1, 0, 0], [0, 0, 0]), "a": ([0, 1, 0], [0, 0, 0]),
                "d": ([0, -1, 0], [0, 0, 0]), "r": ([0, 0, 1], [0, 0, 0]), "f": ([0, 0, -1], [0, 0, 0]),
                "u": ([0, 0, 0], [1, 0, 0]), "o": ([0, 0, 0], [-1, 0, 0]), "i": ([0, 0, 0], [0, 1, 0]),
                "k": ([0, 0, 0], [0, -1, 0]), "j": ([0, 0, 0], [0, 0, 1]), "l": ([0, 0, 0], [0, 0, -1])}
    for key, (linear, angular) in expected.items():
        teleop = Teleop(CONFIG)
        teleop.apply(KeyMap().action(key), 0.0)
        out = teleop.output(0.05)
        assert out.active and not out.released
        np.testing.assert_allclose(out.command.linear, np.array(linear) * 0.1 * 0.5)
        np.testing.assert_allclose(out.command.angular, np.array(angular) * 0.5 * 0.5)


def test_holding_a_key_moves_and_the_deadman_stops_it_after_the_last_repeat():
    teleop = Teleop(CONFIG)
    last = run_keys(teleop, "w" * 30)  # one second of auto-repeat at 30 Hz
    assert teleop.output(last + 0.29).active
    stopped = teleop.output(last + 0.31)
    assert not stopped.active and stopped.released and not np.any(stopped.command.linear)
    after = teleop.output(last + 0.4)
    assert not after.active and not after.released  # the stop is published once


def test_a_new_motion_key_replaces_the_previous_one():
    teleop = Teleop(CONFIG)
    run_keys(teleop, "wwwa")
    np.testing.assert_allclose(teleop.output(0.11).command.linear, [0.0, 0.05, 0.0])


def test_halt_stops_at_once():
    teleop = Teleop(CONFIG)
    run_keys(teleop, "ww")
    assert teleop.output(0.04).active
    teleop.apply(KeyMap().action(" "), 0.05)
    out = teleop.output(0.06)  # well inside the deadman
    assert not out.active and out.released


def test_gripper_keys_hold_without_repeats():
    teleop = Teleop(CONFIG)
    keys = KeyMap()
    teleop.apply(keys.action("c"), 0.0)
    assert teleop.output(5.0).command.gripper == 1.0  # long after any deadman
    teleop.apply(keys.action("v"), 5.0)
    assert teleop.output(5.1).command.gripper == 0.0
    teleop.apply("gripper_toggle", 5.2)
    assert teleop.output(5.3).command.gripper == 1.0


def test_speed_keys_scale_within_bounds():
    teleop = Teleop(CONFIG)
    run_keys(teleop, "=")
    assert teleop.speed_scale == pytest.approx(0.625)
    run_keys(teleop, "+" * 10)
    assert teleop.speed_scale == CONFIG.max_speed_scale
    run_keys(teleop, "-" * 30)
    assert teleop.speed_scale == CONFIG.min_speed_scale
    teleop.apply("+x", 0.0)
    np.testing.assert_allclose(teleop.output(0.0).command.linear, [0.1 * CONFIG.min_speed_scale, 0, 0])


def test_episode_keys_are_reported_once_in_order():
    teleop = Teleop(CONFIG)
    run_keys(teleop, "bwyx")
    out = teleop.output(0.2)
    assert out.events == ("start", "success", "stop")
    assert teleop.output(0.3).events == ()


def test_axes_have_a_deadband_a_unit_norm_and_stop_when_let_go():
    teleop = Teleop(CONFIG)
    teleop.set_axes([0.05, 0, 0, 0, 0, 0], 0.0)
    assert not teleop.output(0.0).active
    teleop.set_axes([1, 1, 0, 0, 0, 2], 0.1)
    out = teleop.output(0.1)
    assert np.linalg.norm(out.command.linear) == pytest.approx(0.05)  # full speed, not 1.4x
    np.testing.assert_allclose(out.command.angular, [0, 0, 0.25])
    teleop.set_axes(np.zeros(6), 0.15)
    assert teleop.output(0.15).released


def test_a_device_at_rest_does_not_cancel_keyboard_motion():
    teleop = Teleop(CONFIG)
    teleop.apply("+z", 0.0)
    teleop.set_axes(np.zeros(6), 0.05)
    assert teleop.output(0.1).active


def test_keymap_and_config_errors_name_what_was_wrong():
    with pytest.raises(ValueError, match="unknown action 'fly'; accepted: .*success"):
        KeyMap({"w": "fly"})
    with pytest.raises(ValueError, match="must be one character or one of up"):
        KeyMap({"ww": "+x"})
    with pytest.raises(ValueError, match="unknown teleop action 'jump'"):
        Teleop().apply("jump", 0.0)
    with pytest.raises(ValueError, match=r"TeleopConfig\.deadman_s must be a finite number >= 0"):
        TeleopConfig(deadman_s=float("nan"))
    with pytest.raises(ValueError, match="min_speed_scale <= speed_scale"):
        TeleopConfig(speed_scale=2.0)


def test_default_keys_cover_every_action_but_toggle_and_help_lists_them():
    bound = set(KeyMap().bindings.values())
    assert bound == set(ACTIONS) - {"gripper_toggle"}
    assert "space  halt" in KeyMap().help()


# ---------------------------------------------------------------- terminal


def test_split_keys_decodes_arrows_and_control_keys():
    assert split_keys("w\x1b[A\x1bOD\r\x7f\x1b[15~x\x1b") == ["w", "up", "left", "enter", "backspace", "x", "esc"]


def test_terminal_keyboard_reads_keys_without_enter_and_restores_the_terminal():
    controller, terminal = os.openpty()
    try:
        before = termios.tcgetattr(terminal)
        with TerminalKeyboard(terminal) as keyboard:
            assert not termios.tcgetattr(terminal)[3] & (termios.ECHO | termios.ICANON)
            assert keyboard.read_keys(timeout_s=0.0) == []
            os.write(controller, b"wa\x1b[B")
            assert keyboard.read_keys(timeout_s=1.0) == ["w", "a", "down"]
        assert termios.tcgetattr(terminal) == before
    finally:
        os.close(controller)
        os.close(terminal)


def test_terminal_keyboard_refuses_a_pipe():
    read_end, write_end = os.pipe()
    try:
        with pytest.raises(TeleopDeviceError, match="needs an interactive terminal"):
            TerminalKeyboard(read_end).open()
    finally:
        os.close(read_end)
        os.close(write_end)


# ---------------------------------------------------------------- SpaceMouse and gamepad


def test_spacemouse_events_become_axes_and_button_actions():
    state = EvdevState(SPACEMOUSE)
    state.handle(EV_REL, ABS_Y, -350)  # pushed away from the operator, at full scale
    state.handle(EV_REL, ABS_Z, 175)
    np.testing.assert_allclose(state.axes(), [1.0, 0, -0.5, 0, 0, 0])
    assert state.handle(EV_KEY, BTN_0, 1) == ["gripper_close"]
    assert state.handle(EV_KEY, BTN_0, 0) == []  # release


def test_gamepad_needs_the_enable_button_and_uses_the_axis_ranges():
    state = EvdevState(GAMEPAD, ranges={ABS_X: (-32768, 32767), ABS_Y: (-32768, 32767), ABS_RY: (0, 255)})
    state.handle(EV_ABS, ABS_Y, -32768)  # stick fully forward
    state.handle(EV_ABS, ABS_RY, 255)
    assert not np.any(state.axes())  # enable button not held
    state.handle(EV_KEY, BTN_TL, 1)
    np.testing.assert_allclose(state.axes(), [1.0, 0, -1.0, 0, 0, 0], atol=1e-4)
    state.handle(EV_KEY, BTN_TL, 0)
    assert not np.any(state.axes())
    assert state.handle(EV_KEY, BTN_SOUTH, 1) == ["gripper_close"]
    assert state.handle(EV_KEY, BTN_NORTH, 2) == []  # auto-repeat is not a new press
    assert state.handle(EV_KEY, BTN_NORTH, 1) == ["success"]


def test_gamepad_drives_teleop_through_polls():
    teleop, state = Teleop(CONFIG), EvdevState(GAMEPAD, ranges={ABS_X: (-1, 1), ABS_Y: (-1, 1)})
    state.handle(EV_KEY, BTN_TL, 1)
    state.handle(EV_ABS, ABS_X, -1)  # left
    for tick in range(5):  # no new events while the stick is held: the poll re-asserts it
        teleop.set_axes(state.axes(), tick * 0.1)
    np.testing.assert_allclose(teleop.output(0.45).command.linear, [0, 0.05, 0])


def test_evdev_reader_reports_a_missing_device_or_library(monkeypatch):
    evdev = pytest.importorskip("evdev")
    monkeypatch.setattr(evdev, "list_devices", lambda: [])  # whatever this machine has plugged in
    with pytest.raises(TeleopDeviceError, match="no input device named like .*gamepad"):
        EvdevReader(GAMEPAD).open()
    monkeypatch.setitem(sys.modules, "evdev", None)  # as if not installed
    with pytest.raises(TeleopDeviceError, match=r"need evdev \(Linux\): pip install -e '\.\[teleop\]'"):
        EvdevReader(SPACEMOUSE).open()
