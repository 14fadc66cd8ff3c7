"""teleop_node: an operator drives the arm through the safety gate's teleop input (robot.teleop).

Keyboard in the terminal the node runs in (`ros2 run drr_ros teleop_node`; when stdin is not a
terminal, e.g. under a launch file, it says so and keeps running for the devices), and a
SpaceMouse or gamepad through evdev when one is plugged in (looked for again every few seconds).
Motion lasts `deadman_s` after the last motion input (a held key repeats), then stops: the
twist is published while motion is live and once more, zero, when it ends; nothing otherwise,
so the policy keeps control while the operator does nothing. A gripper key publishes the
gripper value with one twist (the gate takes a source's gripper with its twist).
Episode keys (default b start, x stop, y success; gamepad Start, Select, Y) call the episode
node's services; the keys are listed in the log at start-up.

Publishes:   safety_gate/teleop/twist    geometry_msgs/TwistStamped, base frame (reliable)
             safety_gate/teleop/gripper  std_msgs/Float64, 0 open .. 1 closed (reliable)
             /diagnostics                loop rate, devices, speed scale
Calls:       episode_node/start, episode_node/stop, episode_node/mark_success   std_srvs/Trigger
Parameters:  device (keyboard | spacemouse | gamepad | auto: the keyboard plus whichever device is
             found), device_path (/dev/input/eventN; empty: the first device named like one),
             control_rate, calibration (base frame), episode_node, and robot.teleop.TeleopConfig
             by name: max_linear_speed, max_angular_speed, speed_scale, deadman_s, deadband.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
import time
from collections import deque

from geometry_msgs.msg import TwistStamped
from rclpy.node import Node
from std_msgs.msg import Float64
from std_srvs.srv import Trigger

from calibration import default_calibration_path
from drr_ros import messages
from drr_ros.wiring import (
    COMMAND_QOS,
    OK,
    WARN,
    ConfigError,
    Diagnostics,
    Param,
    calibration_of,
    declare,
    invalid,
    main_of,
)
from robot.teleop import (
    GAMEPAD,
    SPACEMOUSE,
    EvdevReader,
    KeyMap,
    Teleop,
    TeleopConfig,
    TeleopDeviceError,
    TerminalKeyboard,
)

DEVICES = {"keyboard": (), "spacemouse": ("spacemouse",), "gamepad": ("gamepad",), "auto": ("spacemouse", "gamepad")}
MAPPINGS = {"spacemouse": SPACEMOUSE, "gamepad": GAMEPAD}
RETRY_S = 3.0  # look for a SpaceMouse or gamepad again this often while none is open
SERVICES = {"start": "start", "stop": "stop", "success": "mark_success"}
_DEFAULTS = TeleopConfig()
PARAMS = (
    Param("device", "auto", "input device besides the terminal keyboard", choices=tuple(DEVICES)),
    Param("device_path", "", "/dev/input/eventN of the device; empty: the first one named like it"),
    Param("control_rate", 20.0, "Hz at which input is read and twists are published", gt=0.0, le=1000.0),
    Param("calibration", str(default_calibration_path()), "cell calibration YAML: the base frame"),
    Param("episode_node", "episode_node", "the episode node whose services the episode keys call"),
    Param("max_linear_speed", _DEFAULTS.max_linear_speed, "m/s at speed scale 1", gt=0.0, le=2.0),
    Param("max_angular_speed", _DEFAULTS.max_angular_speed, "rad/s at speed scale 1", gt=0.0, le=6.0),
    Param("speed_scale", _DEFAULTS.speed_scale, "speed scale at start (faster/slower keys change it)",
          gt=0.0, le=1.0),
    Param("deadman_s", _DEFAULTS.deadman_s, "s after the last motion input before the twist is zero",
          gt=0.0, le=5.0),
    Param("deadband", _DEFAULTS.deadband, "axis deflections below this fraction are ignored", ge=0.0, le=0.9),
)


class TeleopNode(Node):
    NAME = "teleop_node"

    def __init__(self) -> None:
        super().__init__(self.NAME)
        p = declare(self, PARAMS)
        self.base_frame = calibration_of(p.calibration).base_frame
        config = {f.name: getattr(p, f.name) for f in dataclasses.fields(TeleopConfig) if hasattr(p, f.name)}
        try:
            self.teleop = Teleop(dataclasses.replace(_DEFAULTS, **config))
        except ValueError as error:
            raise ConfigError(f"teleop parameters are invalid: {error}") from None
        self.keys = KeyMap()
        self._mappings = DEVICES[p.device]
        if self._mappings and importlib.util.find_spec("evdev") is None:
            if p.device != "auto":
                raise invalid("device", p.device, "SpaceMouse and gamepad need evdev (pip install -e '.[teleop]')")
            self._mappings = ()
            self.get_logger().info("evdev is not installed: keyboard only")
        self.p = p
        self._device: EvdevReader | None = None
        self._device_name = "none"
        self._next_search = 0.0
        self._keyboard = self._open_keyboard()
        self._sent_gripper = self.teleop.gripper  # nothing is published before the operator acts
        self._speed_scale = self.teleop.speed_scale
        self._published = 0
        self._episode_keys: deque[str] = deque()  # called one at a time, in the order pressed
        self._calling = False

        self._twist_out = self.create_publisher(TwistStamped, "safety_gate/teleop/twist", COMMAND_QOS)
        self._gripper_out = self.create_publisher(Float64, "safety_gate/teleop/gripper", COMMAND_QOS)
        self._episode = {event: self.create_client(Trigger, f"{p.episode_node}/{service}")
                         for event, service in SERVICES.items()}
        self.diagnostics = Diagnostics(self, p.control_rate, self._health)
        self.create_timer(1.0 / p.control_rate, self._tick)
        self.get_logger().info(f"teleop at {p.control_rate:g} Hz in {self.base_frame}, keys:\n{self.keys.help()}")

    def _open_keyboard(self) -> TerminalKeyboard | None:
        keyboard = TerminalKeyboard(sys.stdin)
        try:
            keyboard.open()
        except (TeleopDeviceError, OSError, ValueError) as error:  # no terminal, or stdin closed
            self.get_logger().warning(f"no keyboard teleop: {error}; SpaceMouse/gamepad still work")
            return None
        return keyboard

    def destroy_node(self) -> None:
        if self._keyboard is not None:
            self._keyboard.close()  # the operator's terminal back as it was
        if self._device is not None:
            self._device.close()
        super().destroy_node()

    def _tick(self) -> None:
        start = time.perf_counter()
        now = time.monotonic()  # the operator's time, not sim time
        self._read_keyboard(now)
        self._read_device(now)
        out = self.teleop.output(now)
        gripper_changed = out.command.gripper != self._sent_gripper
        if out.active or out.released or gripper_changed:
            stamp = self.get_clock().now().to_msg()
            self._gripper_out.publish(messages.gripper_msg(out.command.gripper))
            self._twist_out.publish(messages.twist_msg(out.command, stamp, self.base_frame))
            self._sent_gripper = out.command.gripper
            self._published += 1
        if out.speed_scale != self._speed_scale:
            self._speed_scale = out.speed_scale
            self.get_logger().info(f"speed scale {out.speed_scale:.2f}")
        self._episode_keys.extend(out.events)
        self._call_episode()
        self.diagnostics.tick(time.perf_counter() - start)

    def _read_keyboard(self, now: float) -> None:
        if self._keyboard is None:
            return
        try:
            keys = self._keyboard.read_keys(timeout_s=0.0)
        except OSError as error:  # the terminal went away
            self.get_logger().error(f"keyboard lost ({error}): SpaceMouse/gamepad only from now on")
            self._keyboard = None
            return
        for key in keys:
            if (action := self.keys.action(key)) is not None:
                self.teleop.apply(action, now)

    def _read_device(self, now: float) -> None:
        if self._device is None and self._mappings and now >= self._next_search:
            self._next_search = now + RETRY_S
            self._device = self._find_device()
        if self._device is None:
            return
        try:
            axes, actions = self._device.poll()
        except TeleopDeviceError as error:
            self.get_logger().error(f"{error}; looking for it again")
            self._device.close()
            self._device, self._device_name = None, "none"
            return
        self.teleop.set_axes(axes, now)
        for action in actions:
            self.teleop.apply(action, now)

    def _find_device(self) -> EvdevReader | None:
        errors = []
        for name in self._mappings:
            reader = EvdevReader(MAPPINGS[name], self.p.device_path or None)
            try:
                reader.open()
            except (TeleopDeviceError, OSError) as error:
                errors.append(str(error))
                continue
            self._device_name = name
            self.get_logger().info(f"teleop device: {name} {self.p.device_path}")
            return reader
        # Once per search; a device plugged in later is found at the next one.
        self.get_logger().info(f"no SpaceMouse/gamepad: {'; '.join(errors)}", throttle_duration_sec=60.0)
        return None

    def _call_episode(self) -> None:
        while self._episode_keys and not self._calling:
            event = self._episode_keys.popleft()
            client = self._episode[event]
            if not client.service_is_ready():
                self.get_logger().warning(f"'{event}' key: no {client.srv_name} service (is the episode_node running?)")
                continue
            self._calling = True
            client.call_async(Trigger.Request()).add_done_callback(
                lambda done, event=event: self._on_episode_answer(event, done))

    def _on_episode_answer(self, event: str, future) -> None:
        self._calling = False
        self._log_answer(event, future)
        self._call_episode()

    def _log_answer(self, event: str, future) -> None:
        try:
            result = future.result()
        except Exception as error:  # noqa: BLE001 - the operator hears about it either way
            self.get_logger().error(f"'{event}' key: {type(error).__name__}: {error}")
            return
        if result.success:  # one severity per logging call site: rclpy refuses to change it
            self.get_logger().info(f"'{event}': {result.message}")
        else:
            self.get_logger().warning(f"'{event}' refused: {result.message}")

    def _health(self) -> tuple[bytes, str, dict]:
        values = {"keyboard": self._keyboard is not None, "device": self._device_name,
                  "speed_scale": f"{self._speed_scale:.2f}", "twists_published": self._published}
        if self._keyboard is None and self._device is None:
            return WARN, "no input: stdin is not a terminal and no SpaceMouse/gamepad is open", values
        return OK, "ready", values


main = main_of(TeleopNode)

if __name__ == "__main__":
    main()
