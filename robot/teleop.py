"""Teleoperation without ROS: inputs -> an end-effector twist in the base frame, a gripper
command and episode events (start, stop, success).

`Teleop` is device-independent; devices feed it discrete actions (`apply`) and
continuous axes (`set_axes`), and a node publishes `output(now)` at its control rate:

    keys, teleop = KeyMap(), Teleop()
    with TerminalKeyboard() as keyboard:
        for key in keyboard.read_keys(timeout_s=0.05):
            if (action := keys.action(key)) is not None:
                teleop.apply(action, now)
        out = teleop.output(now)   # publish out.command while out.active, and once when out.released

Deadman: motion lasts `deadman_s` after the last motion input, then the twist is zero. A
terminal repeats a held key (after a delay: set a short one, e.g. `xset r rate 200 30`),
so holding a key moves the arm and releasing it stops it.

SpaceMouse and gamepad are read through evdev (the `teleop` extra, Linux): `EvdevReader`.
"""

from __future__ import annotations

import math
import numbers
import os
import select
import sys
import termios
import tty
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from types import TracebackType
from typing import Any, TextIO

import numpy as np

from robot.types import ArmCommand

TWIST_AXES = ("x", "y", "z", "roll", "pitch", "yaw")  # base frame; roll/pitch/yaw: rotation about x/y/z
MOTION_ACTIONS = tuple(f"{sign}{axis}" for axis in TWIST_AXES for sign in "+-")
EPISODE_ACTIONS = ("start", "stop", "success")
ACTIONS = (*MOTION_ACTIONS, "halt", "gripper_open", "gripper_close", "gripper_toggle", "faster", "slower",
           *EPISODE_ACTIONS)
DEFAULT_KEYS: dict[str, str] = {
    "w": "+x", "s": "-x", "a": "+y", "d": "-y", "r": "+z", "f": "-z",
    "u": "+roll", "o": "-roll", "i": "+pitch", "k": "-pitch", "j": "+yaw", "l": "-yaw",
    " ": "halt", "c": "gripper_close", "v": "gripper_open", "=": "faster", "+": "faster", "-": "slower",
    "b": "start", "x": "stop", "y": "success",
}
NAMED_KEYS = ("up", "down", "left", "right", "enter", "backspace", "tab", "esc")


class TeleopDeviceError(RuntimeError):
    """An input device is missing, unreadable, or its library is not installed."""


@dataclass(frozen=True)
class TeleopConfig:
    max_linear_speed: float = 0.10  # m/s at speed scale 1
    max_angular_speed: float = 0.5  # rad/s at speed scale 1
    speed_scale: float = 0.5  # at start
    speed_step: float = 1.25  # "faster" multiplies the scale by this, "slower" divides
    min_speed_scale: float = 0.1
    max_speed_scale: float = 1.0
    deadman_s: float = 0.3  # no motion input for this long: zero twist
    deadband: float = 0.1  # axis deflections below this fraction are noise (spring centring)

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if (isinstance(value, bool) or not isinstance(value, numbers.Real)
                    or not math.isfinite(value) or value < 0):
                raise ValueError(f"TeleopConfig.{item.name} must be a finite number >= 0, got {value!r}")
        if not 0 < self.min_speed_scale <= self.speed_scale <= self.max_speed_scale:
            raise ValueError("TeleopConfig needs 0 < min_speed_scale <= speed_scale <= max_speed_scale, got "
                             f"{self.min_speed_scale}, {self.speed_scale}, {self.max_speed_scale}")
        if self.speed_step <= 1.0 or self.deadman_s == 0 or not self.deadband < 1.0:
            raise ValueError("TeleopConfig needs speed_step > 1, deadman_s > 0 and deadband < 1, got "
                             f"{self.speed_step}, {self.deadman_s}, {self.deadband}")


class KeyMap:
    """Keys (single characters or NAMED_KEYS) -> actions (ACTIONS)."""

    def __init__(self, bindings: Mapping[str, str] | None = None) -> None:
        bindings = dict(DEFAULT_KEYS if bindings is None else bindings)
        for key, action in bindings.items():
            if not isinstance(key, str) or not (len(key) == 1 or key in NAMED_KEYS):
                raise ValueError(f"key {key!r} must be one character or one of {', '.join(NAMED_KEYS)}")
            if action not in ACTIONS:
                raise ValueError(f"key {key!r} is bound to unknown action {action!r}; accepted: {', '.join(ACTIONS)}")
        self.bindings = bindings

    def action(self, key: str) -> str | None:
        return self.bindings.get(key)

    def help(self) -> str:
        """One line per action with its keys, for the operator's terminal."""
        by_action: dict[str, list[str]] = {}
        for key, action in self.bindings.items():
            by_action.setdefault(action, []).append("space" if key == " " else key)
        return "\n".join(f"{'/'.join(keys):>12}  {action}" for action, keys in by_action.items())


@dataclass(frozen=True)
class TeleopOutput:
    command: ArmCommand
    active: bool  # motion input is live: publish the command (teleop has the gate's top priority)
    released: bool  # motion just ended: publish this zero twist once, so the arm stops now
    events: tuple[str, ...] = ()  # episode actions since the last output, in order
    speed_scale: float = 1.0


class Teleop:
    def __init__(self, config: TeleopConfig | None = None) -> None:
        self.config = config or TeleopConfig()
        self.speed_scale = self.config.speed_scale
        self.gripper = 0.0  # 0 open .. 1 closed; holds without input, unlike motion
        self._motion = np.zeros(6)  # unit-free, each in [-1, 1]
        self._motion_s = -math.inf
        self._from_axes = False  # a device at rest may only stop motion it started
        self._was_active = False
        self._events: list[str] = []

    def apply(self, action: str, now_s: float) -> None:
        """A discrete action (a key press or button): see ACTIONS."""
        if action in MOTION_ACTIONS:
            self._motion = np.zeros(6)
            self._motion[TWIST_AXES.index(action[1:])] = 1.0 if action[0] == "+" else -1.0
            self._motion_s, self._from_axes = now_s, False
        elif action == "halt":
            self._motion = np.zeros(6)
        elif action in ("gripper_open", "gripper_close", "gripper_toggle"):
            closed = {"gripper_open": False, "gripper_close": True}.get(action, self.gripper < 0.5)
            self.gripper = 1.0 if closed else 0.0
        elif action in ("faster", "slower"):
            factor = self.config.speed_step if action == "faster" else 1.0 / self.config.speed_step
            self.speed_scale = min(max(self.speed_scale * factor, self.config.min_speed_scale),
                                   self.config.max_speed_scale)
        elif action in EPISODE_ACTIONS:
            self._events.append(action)
        else:
            raise ValueError(f"unknown teleop action {action!r}; accepted: {', '.join(ACTIONS)}")

    def set_axes(self, axes: Sequence[float], now_s: float) -> None:
        """Continuous deflections (x, y, z, roll, pitch, yaw), each in [-1, 1]; call it on every
        device poll (a held stick sends no events), not only when something changed."""
        values = np.clip(np.asarray(axes, dtype=float).reshape(6), -1.0, 1.0)
        values[np.abs(values) < self.config.deadband] = 0.0
        if np.any(values):
            self._motion, self._motion_s, self._from_axes = values, now_s, True
        elif self._from_axes:
            self._motion = np.zeros(6)  # let go of the stick: stop now, not after the deadman

    def output(self, now_s: float) -> TeleopOutput:
        if now_s - self._motion_s > self.config.deadman_s:
            self._motion = np.zeros(6)
        active = bool(np.any(self._motion))
        released, self._was_active = self._was_active and not active, active
        events, self._events = tuple(self._events), []
        scale = self.speed_scale
        linear = _unit_clamp(self._motion[:3]) * self.config.max_linear_speed * scale
        angular = _unit_clamp(self._motion[3:]) * self.config.max_angular_speed * scale
        return TeleopOutput(ArmCommand(linear, angular, self.gripper), active, released, events, scale)


def _unit_clamp(vector: np.ndarray) -> np.ndarray:
    """Full deflection on two axes is full speed, not 1.4x of it."""
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 1.0 else vector


# ---------------------------------------------------------------- terminal keyboard

_ESCAPES = {"\x1b[A": "up", "\x1b[B": "down", "\x1b[C": "right", "\x1b[D": "left",
            "\x1bOA": "up", "\x1bOB": "down", "\x1bOC": "right", "\x1bOD": "left"}
_CONTROL = {"\r": "enter", "\n": "enter", "\x7f": "backspace", "\x08": "backspace", "\t": "tab"}


def split_keys(text: str) -> list[str]:
    """Terminal input -> keys: characters, arrows as "up"/"down"/"left"/"right", and
    enter/backspace/tab/esc; other escape sequences (function keys) are dropped."""
    keys, i = [], 0
    while i < len(text):
        if text[i] == "\x1b":
            sequence = text[i:i + 3]
            if sequence in _ESCAPES:
                keys.append(_ESCAPES[sequence])
                i += 3
                continue
            if len(text) == i + 1 or text[i + 1] not in "[O":
                keys.append("esc")
                i += 1
                continue
            i += 2  # an unknown CSI/SS3 sequence: skip to its final byte
            while i < len(text) and not ("@" <= text[i] <= "~"):
                i += 1
            i += 1
            continue
        keys.append(_CONTROL.get(text[i], text[i]))
        i += 1
    return keys


class TerminalKeyboard:
    """Keys from a terminal, without echo or Enter; the terminal is restored on close,
    on an exception, or on Ctrl-C (which still interrupts: cbreak, not raw mode)."""

    def __init__(self, stream: TextIO | int = sys.stdin) -> None:
        self._fd = stream if isinstance(stream, int) else stream.fileno()
        self._saved: list[Any] | None = None

    def open(self) -> None:
        if not os.isatty(self._fd):
            raise TeleopDeviceError("keyboard teleop needs an interactive terminal on stdin (not a pipe or a "
                                    "launch file's log); run the node in its own terminal (ros2 run)")
        if self._saved is None:
            self._saved = termios.tcgetattr(self._fd)
            tty.setcbreak(self._fd)

    def read_keys(self, timeout_s: float = 0.0) -> list[str]:
        """Keys typed since the last call; waits up to timeout_s for the first one."""
        if self._saved is None:
            raise TeleopDeviceError("TerminalKeyboard.read_keys before open()")
        ready, _, _ = select.select([self._fd], [], [], max(timeout_s, 0.0))
        if not ready:
            return []
        return split_keys(os.read(self._fd, 1024).decode("utf-8", errors="ignore"))

    def close(self) -> None:
        if self._saved is not None:
            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)
            self._saved = None

    def __enter__(self) -> TerminalKeyboard:
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


# ---------------------------------------------------------------- SpaceMouse and gamepad (evdev)

# Linux input event codes (linux/input-event-codes.h, a stable kernel ABI), so the mapping
# logic needs no evdev import.
EV_KEY, EV_REL, EV_ABS = 1, 2, 3
ABS_X, ABS_Y, ABS_Z, ABS_RX, ABS_RY, ABS_RZ = range(6)  # REL_X .. REL_RZ share these numbers
BTN_0, BTN_1 = 0x100, 0x101
BTN_SOUTH, BTN_EAST, BTN_NORTH, BTN_WEST, BTN_TL, BTN_TR = 0x130, 0x131, 0x133, 0x134, 0x136, 0x137
BTN_SELECT, BTN_START = 0x13A, 0x13B


@dataclass(frozen=True)
class EvdevMapping:
    """How one kind of device drives the twist. axes: event code -> (TWIST_AXES index,
    sign); buttons: key code -> action on press; enable_button: held for any motion."""

    name_hints: tuple[str, ...]  # a device whose name contains one of these (lowercase) is picked
    axes: dict[int, tuple[int, float]]
    buttons: dict[int, str]
    enable_button: int | None = None
    full_scale: float = 350.0  # deflection at full speed, for axes that report no range


# The operator faces the robot's +x. Hardware signs differ between models: flip them here.
SPACEMOUSE = EvdevMapping(
    name_hints=("3dconnexion", "spacemouse", "space navigator", "spacenavigator"),
    axes={ABS_X: (1, -1.0), ABS_Y: (0, -1.0), ABS_Z: (2, -1.0),
          ABS_RX: (4, -1.0), ABS_RY: (3, -1.0), ABS_RZ: (5, -1.0)},
    buttons={BTN_0: "gripper_close", BTN_1: "gripper_open"})
GAMEPAD = EvdevMapping(
    name_hints=("gamepad", "controller", "xbox", "x-box", "joystick", "dualshock", "dualsense", "8bitdo"),
    axes={ABS_Y: (0, -1.0), ABS_X: (1, -1.0), ABS_RY: (2, -1.0), ABS_RX: (5, -1.0)},
    buttons={BTN_SOUTH: "gripper_close", BTN_EAST: "gripper_open", BTN_NORTH: "success",
             BTN_START: "start", BTN_SELECT: "stop", BTN_TR: "faster", BTN_WEST: "slower"},
    enable_button=BTN_TL)  # hold LB to move: a stick at rest may not read zero


class EvdevState:
    """Event stream -> axes and actions; pure, so scripted events test it."""

    def __init__(self, mapping: EvdevMapping, ranges: Mapping[int, tuple[float, float]] | None = None) -> None:
        """ranges: (min, max) per ABS code from the device's absinfo; others use ±full_scale."""
        self.mapping = mapping
        self._ranges = dict(ranges or {})
        self._values = np.zeros(6)
        self._enabled = mapping.enable_button is None

    def handle(self, event_type: int, code: int, value: float) -> list[str]:
        """One input event; returns the actions it triggers (button presses)."""
        if event_type in (EV_ABS, EV_REL) and code in self.mapping.axes:
            index, sign = self.mapping.axes[code]
            self._values[index] = sign * self._normalise(event_type, code, value)
        elif event_type == EV_KEY:
            if code == self.mapping.enable_button:
                self._enabled = value != 0
            elif value == 1 and code in self.mapping.buttons:  # 1 press, 0 release, 2 auto-repeat
                return [self.mapping.buttons[code]]
        return []

    def axes(self) -> np.ndarray:
        return self._values.copy() if self._enabled else np.zeros(6)

    def _normalise(self, event_type: int, code: int, value: float) -> float:
        if event_type == EV_ABS and code in self._ranges:
            low, high = self._ranges[code]
            centre, half = (low + high) / 2.0, (high - low) / 2.0
            return float(np.clip((value - centre) / half, -1.0, 1.0)) if half > 0 else 0.0
        return float(np.clip(value / self.mapping.full_scale, -1.0, 1.0))


class EvdevReader:
    """A SpaceMouse (SPACEMOUSE) or gamepad (GAMEPAD) through evdev, polled without blocking:

        with EvdevReader(GAMEPAD) as pad:
            axes, actions = pad.poll()
    """

    def __init__(self, mapping: EvdevMapping, path: str | None = None) -> None:
        """path: /dev/input/eventN; None picks the first device whose name matches the mapping."""
        self.mapping, self.path = mapping, path
        self._device: Any = None
        self._state = EvdevState(mapping)

    def open(self) -> None:
        evdev = _require_evdev()
        self._device = self._find(evdev) if self.path is None else evdev.InputDevice(self.path)
        ranges = {code: (info.min, info.max) for code, info in self._device.capabilities().get(EV_ABS, [])
                  if code in self.mapping.axes}
        self._state = EvdevState(self.mapping, ranges)

    def poll(self) -> tuple[np.ndarray, list[str]]:
        """Current axes and the actions of the events since the last poll."""
        if self._device is None:
            raise TeleopDeviceError("EvdevReader.poll before open()")
        actions: list[str] = []
        try:
            for event in self._device.read():
                actions += self._state.handle(event.type, event.code, event.value)
        except BlockingIOError:  # nothing new
            pass
        except OSError as exc:  # unplugged: the caller's deadman already stops the arm
            raise TeleopDeviceError(f"{self._device.path} ({self._device.name}) stopped: {exc}") from exc
        return self._state.axes(), actions

    def close(self) -> None:
        if self._device is not None:
            self._device.close()
            self._device = None

    def __enter__(self) -> EvdevReader:
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def _find(self, evdev: Any) -> Any:
        seen = []
        for path in evdev.list_devices():
            device = evdev.InputDevice(path)
            if any(hint in device.name.lower() for hint in self.mapping.name_hints):
                return device
            seen.append(f"{path} ({device.name})")
            device.close()
        raise TeleopDeviceError(f"no input device named like {', '.join(self.mapping.name_hints)}; readable: "
                                f"{', '.join(seen) or 'none'} (reading /dev/input/event* needs the 'input' group)")


def _require_evdev() -> Any:
    try:
        import evdev
    except ImportError as exc:
        raise TeleopDeviceError("SpaceMouse and gamepad teleop need evdev (Linux): pip install -e '.[teleop]'; "
                                f"the terminal keyboard works without it ({exc})") from exc
    return evdev
