"""What every drr_ros node shares: validated parameters, QoS profiles, /diagnostics and `main()`.

Parameters are declared with a description and the accepted values in the descriptor, then
checked here. A bad value ends the node with one log line naming the parameter, the value and what
is accepted, and exit status 2, never a traceback. They are read-only (read once at start-up)
except those marked `runtime`: `ros2 param set` (or SetParameters) may change these while the node
runs, checked the same way, and the node (`on_change`) takes the new value or says why not.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

from calibration import CalibrationError, CellCalibration, load_calibration

# Sensor streams (images, joint states, poses): best effort, keep last; a late sample is worth nothing.
SENSOR_QOS = qos_profile_sensor_data
# Commands, rewards, events: every message arrives.
COMMAND_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
# Latched state (safety status, calibration): a subscriber that joins late gets the last message.
LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
# /clock as rclpy's and rclcpp's time sources subscribe to it.
CLOCK_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST)

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR


class ConfigError(Exception):
    """A parameter (or the file it names) is unusable; `run` logs it and exits with status 2."""


def invalid(name: str, value: Any, accepted: str) -> ConfigError:
    return ConfigError(f"parameter {name} = {value!r} is invalid: {accepted}")


def calibration_of(path: str) -> CellCalibration:
    """The cell calibration a node's `calibration` parameter names; ConfigError if unusable."""
    try:
        return load_calibration(path)
    except CalibrationError as error:
        raise invalid("calibration", path, str(error)) from None


def crop_of(value: str):
    """The model-input crop a node's `crop` parameter names (robot.cameras.crop); ConfigError if unusable."""
    from robot.cameras.crop import parse_crop

    try:
        return parse_crop(value)
    except ValueError as error:
        raise invalid("crop", value, str(error)) from None


@dataclass(frozen=True)
class Param:
    """A parameter: its default fixes its type; bounds are inclusive (ge, le) or strict (gt)."""

    name: str
    default: bool | int | float | str | list[float]
    description: str
    gt: float | None = None
    ge: float | None = None
    le: float | None = None
    choices: tuple[str, ...] = ()
    length: int | None = None  # lists: exact number of elements
    nonblank: bool = False  # strings: refuse an empty or all-space value
    runtime: bool = False  # may be set while the node runs (see on_change)

    def accepted(self) -> str:
        if isinstance(self.default, bool):
            return "true or false"
        if isinstance(self.default, str):
            return f"one of {', '.join(self.choices)}" if self.choices else \
                "a non-blank string" if self.nonblank else "a string"
        kind = "an integer" if isinstance(self.default, int) else "a number"
        if isinstance(self.default, list):
            kind = f"a list of {self.length} finite numbers" if self.length else "a list of finite numbers"
        bounds = [f"> {self.gt:g}" if self.gt is not None else "", f">= {self.ge:g}" if self.ge is not None else "",
                  f"<= {self.le:g}" if self.le is not None else ""]
        return " ".join([kind, " and ".join(b for b in bounds if b)]).strip()

    def check(self, value: Any) -> Any:
        """The value with ints promoted to float where a float is expected; ConfigError if not accepted."""
        bad = invalid(self.name, value, f"expected {self.accepted()} ({self.description})")
        if isinstance(self.default, bool) or isinstance(self.default, str):
            if type(value) is not type(self.default) or (self.choices and value not in self.choices) \
                    or (self.nonblank and not value.strip()):
                raise bad
            return value
        if isinstance(self.default, list):
            if not isinstance(value, (list, tuple)) or (self.length and len(value) != self.length):
                raise bad
            return [self._number(v, float, bad) for v in value]
        return self._number(value, type(self.default), bad)

    def _number(self, value: Any, kind: type, bad: ConfigError) -> int | float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and isinstance(value, float)):
            raise bad
        value = kind(value)
        if not math.isfinite(value) or (self.gt is not None and not value > self.gt) \
                or (self.ge is not None and not value >= self.ge) or (self.le is not None and not value <= self.le):
            raise bad
        return value


def declare(node: Node, params: Iterable[Param]) -> SimpleNamespace:
    """Declare and check every parameter; the values as attributes."""
    values = {}
    for param in params:
        # dynamic_typing: the check above decides, so `-p speed:=1` is 1.0 rather than a type error.
        descriptor = ParameterDescriptor(name=param.name, description=param.description,
                                         additional_constraints=param.accepted(), read_only=not param.runtime,
                                         dynamic_typing=True)
        values[param.name] = param.check(node.declare_parameter(param.name, param.default, descriptor).value)
    return SimpleNamespace(**values)


def on_change(node: Node, params: Iterable[Param], apply: Callable[[dict[str, Any]], str | None]) -> None:
    """Let the node's `runtime` parameters change while it runs: the new values of one request are
    checked as at start-up, then `apply` gets them all ({name: value}) and takes them, or returns why
    not (the caller gets the reason; every value stays as it was)."""
    runtime = {param.name: param for param in params if param.runtime}

    def callback(changes: list) -> SetParametersResult:
        try:
            values = {c.name: runtime[c.name].check(c.value) for c in changes if c.name in runtime}
        except ConfigError as error:
            return SetParametersResult(successful=False, reason=str(error))
        refusal = apply(values) if values else None  # others (use_sim_time, read-only ones): rclpy's rules
        return SetParametersResult(successful=refusal is None, reason=refusal or "")

    node.add_on_set_parameters_callback(callback)


class Diagnostics:
    """One DiagnosticStatus on /diagnostics every period: the loop's measured rate and latency
    (call `tick` once per loop with its latency), warning below 80% of the expected rate (if any),
    and the node's health (level, message, values)."""

    def __init__(self, node: Node, expected_rate_hz: float | None,
                 health: Callable[[], tuple[bytes, str, dict[str, Any]]], period_s: float = 1.0) -> None:
        self._node, self._expected, self._health = node, expected_rate_hz, health
        self._publisher = node.create_publisher(DiagnosticArray, "/diagnostics", COMMAND_QOS)
        self._since, self._count, self._latencies = time.monotonic(), 0, []
        node.create_timer(period_s, self.publish)

    def tick(self, latency_s: float) -> None:
        self._count += 1
        self._latencies.append(latency_s)

    def publish(self) -> None:
        now = time.monotonic()
        rate = self._count / max(now - self._since, 1e-9)
        level, message, values = self._health()
        if self._expected is not None and rate < 0.8 * self._expected:
            level = max(level, WARN)
            message = "; ".join(m for m in (message, f"loop at {rate:.1f} Hz of {self._expected:g}") if m)
        latencies = self._latencies or [0.0]
        values = {"rate_hz": f"{rate:.2f}", "expected_rate_hz": f"{self._expected or 0:g}",
                  "latency_ms_mean": f"{1e3 * sum(latencies) / len(latencies):.2f}",
                  "latency_ms_max": f"{1e3 * max(latencies):.2f}", **values}
        status = DiagnosticStatus(level=level, name=self._node.get_fully_qualified_name(), message=message,
                                  hardware_id=self._node.get_name(),
                                  values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self._node.get_clock().now().to_msg()
        self._publisher.publish(array)
        self._since, self._count, self._latencies = now, 0, []


def run(node_class: Callable[[], Node], executor: Callable[[], Executor] = SingleThreadedExecutor,
        args: Sequence[str] | None = None) -> int:
    """Create the node and spin it until Ctrl-C or SIGTERM (exit 0); a ConfigError exits 2."""
    rclpy.init(args=args)
    node = None
    try:
        node = node_class()
        spinner = executor()
        spinner.add_node(node)
        spinner.spin()
    except ConfigError as error:
        name = getattr(node_class, "NAME", getattr(node_class, "__name__", "drr_ros"))
        rclpy.logging.get_logger(name).fatal(str(error))
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass  # rclpy's signal handlers turn SIGINT and SIGTERM into these
    except Exception:
        if rclpy.ok():
            raise
        # A signal shut the context down while the executor was between its checks (it then
        # fails on the invalid context rather than raising ExternalShutdownException): a shutdown.
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


def main_of(node_class: Callable[[], Node],
            executor: Callable[[], Executor] = SingleThreadedExecutor) -> Callable[[], None]:
    """A console-script entry point for a node class."""
    def main() -> None:
        sys.exit(run(node_class, executor))
    return main
