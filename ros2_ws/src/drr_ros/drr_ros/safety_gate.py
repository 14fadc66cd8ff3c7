"""safety_gate: every arm command passes robot.safety.SafetyGate on its way to the arm.

Sources teleop > reset > policy each publish a twist and (optionally) a gripper value; the
freshest highest-priority source has control. At `control_rate` the gate publishes the limited
twist (zero when e-stopped, or when no fresh command or no fresh end-effector pose arrived within
`watchdog_timeout_s`); the twist goes to the arm (the mirror's sim_arm_node subscribes to it;
on a real arm remap ~/twist_out to MoveIt Servo's twist input).

Subscribes (~ is <namespace>/safety_gate):
  ~/teleop/twist, ~/reset/twist, ~/policy/twist     geometry_msgs/TwistStamped, base frame (reliable)
  ~/teleop/gripper, ~/reset/gripper, ~/policy/gripper  std_msgs/Float64, 0 open .. 1 closed (reliable)
  ~/estop        std_msgs/Bool: true engages the e-stop; false is ignored (only the service clears)
  ee_pose        geometry_msgs/PoseStamped, the arm's end effector in the base frame (sensor QoS)
Publishes:
  ~/twist_out    geometry_msgs/TwistStamped at control_rate, stamped with the compute time
  ~/gripper_out  std_msgs/Float64 at control_rate, silent until a source has had control (so
                 starting the gate never moves the gripper)
  ~/status       drr_interfaces/SafetyStatus, transient local, on change and every second
  /diagnostics   rate, compute latency, e-stop, watchdog, rejected commands
Services:
  ~/estop        std_srvs/SetBool: true engages, false clears (the only way to clear it)
Parameters: calibration (YAML: workspace box, base frame), control_rate, and robot.safety.SafetyLimits
  by name: max_linear_speed, max_angular_speed, max_linear_accel, max_angular_accel,
  watchdog_timeout_s, lookahead_s.

Commands are timed on arrival by the node's clock (sim time with use_sim_time), not by their
stamps, so a source with a skewed clock cannot keep itself fresh.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from functools import partial

from drr_interfaces.msg import SafetyStatus
from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.node import Node
from std_msgs.msg import Bool, Float64
from std_srvs.srv import SetBool

from calibration import default_calibration_path
from drr_ros import messages
from drr_ros.wiring import (
    COMMAND_QOS,
    ERROR,
    LATCHED_QOS,
    OK,
    SENSOR_QOS,
    WARN,
    ConfigError,
    Diagnostics,
    Param,
    calibration_of,
    declare,
    main_of,
)
from robot.safety import SafetyGate, SafetyLimits
from robot.types import ArmCommand

_DEFAULTS = {f.name: f.default for f in dataclasses.fields(SafetyLimits) if f.name != "workspace"}
PARAMS = (
    Param("calibration", str(default_calibration_path()), "cell calibration YAML: workspace box and base frame"),
    Param("control_rate", 10.0, "Hz at which the gate publishes to the arm", gt=0.0, le=1000.0),
    Param("max_linear_speed", _DEFAULTS["max_linear_speed"], "m/s, norm of the linear velocity", gt=0.0, le=2.0),
    Param("max_angular_speed", _DEFAULTS["max_angular_speed"], "rad/s, norm", gt=0.0, le=6.0),
    Param("max_linear_accel", _DEFAULTS["max_linear_accel"], "m/s^2, norm of the change", gt=0.0, le=50.0),
    Param("max_angular_accel", _DEFAULTS["max_angular_accel"], "rad/s^2", gt=0.0, le=200.0),
    Param("watchdog_timeout_s", _DEFAULTS["watchdog_timeout_s"],
          "s without a fresh command or end-effector pose before the output is zero", gt=0.0, le=5.0),
    # Two periods at 10 Hz: the arm's own tick may run one output up to two of its periods.
    Param("lookahead_s", 0.2, "s the arm may execute one output (workspace-box horizon), at least one "
          "control period", gt=0.0, le=2.0),
)


class SafetyGateNode(Node):
    NAME = "safety_gate"

    def __init__(self) -> None:
        super().__init__(self.NAME)
        p = declare(self, PARAMS)
        calibration = calibration_of(p.calibration)
        limits = {name: getattr(p, name) for name in _DEFAULTS}
        try:
            limits = SafetyLimits.from_dict(calibration.workspace, limits)
            limits.check_control_period(1.0 / p.control_rate)
        except ValueError as error:
            raise ConfigError(f"parameters lookahead_s = {p.lookahead_s!r}, control_rate = {p.control_rate!r} "
                              f"are invalid: {error}") from None
        self.gate = SafetyGate(limits)
        self.base_frame = calibration.base_frame
        self._grippers: dict[str, float] = {}  # latest per source; a source without one holds the gripper
        self._had_control = False
        self._ignored_frames = 0
        self._status_msg: SafetyStatus | None = None
        self._origin_ns: int | None = None

        for source in self.gate.sources:
            self.create_subscription(TwistStamped, f"~/{source}/twist", partial(self._on_twist, source), COMMAND_QOS)
            self.create_subscription(Float64, f"~/{source}/gripper", partial(self._on_gripper, source), COMMAND_QOS)
        self.create_subscription(PoseStamped, "ee_pose", self._on_pose, SENSOR_QOS)
        self.create_subscription(Bool, "~/estop", self._on_estop_topic, COMMAND_QOS)
        self.create_service(SetBool, "~/estop", self._on_estop_service)
        self._twist_out = self.create_publisher(TwistStamped, "~/twist_out", COMMAND_QOS)
        self._gripper_out = self.create_publisher(Float64, "~/gripper_out", COMMAND_QOS)
        self._status_out = self.create_publisher(SafetyStatus, "~/status", LATCHED_QOS)
        self.diagnostics = Diagnostics(self, p.control_rate, self._health)
        self.create_timer(1.0 / p.control_rate, self._tick)
        self.create_timer(1.0, lambda: self._publish_status(force=True))
        self._publish_status(force=True)
        self.get_logger().info(f"gating {', '.join(self.gate.sources)} (highest priority first) at "
                               f"{p.control_rate:g} Hz in {calibration.workspace} of {self.base_frame}")

    def _seconds(self, nanoseconds: int) -> float:
        """Gate time: seconds since the clock's first reading (epoch seconds as a float would
        resolve only ~0.2 us, and the accel limit multiplies time differences)."""
        if self._origin_ns is None and nanoseconds > 0:
            self._origin_ns = nanoseconds
        return (nanoseconds - (self._origin_ns or 0)) * 1e-9

    def _now(self) -> float:
        return self._seconds(self.get_clock().now().nanoseconds)

    def _tick(self) -> None:
        start = time.perf_counter()
        now = self.get_clock().now()
        out = self.gate.compute(self._seconds(now.nanoseconds))
        self._twist_out.publish(messages.twist_msg(out, now.to_msg(), self.base_frame))
        self._had_control = self._had_control or bool(self.gate.status.active_source)
        if self._had_control:
            self._gripper_out.publish(messages.gripper_msg(out.gripper))
        self._publish_status()
        self.diagnostics.tick(time.perf_counter() - start)

    def _on_twist(self, source: str, msg: TwistStamped) -> None:
        if not self._in_base_frame(msg.header.frame_id, f"{source} twist"):
            return
        gripper = self._grippers.get(source, self.gate.status.last_output.gripper)
        if not self.gate.submit(messages.command_of(msg, gripper), self._now(), source):
            self.get_logger().warning(f"rejected a non-finite {source} twist", throttle_duration_sec=1.0)

    def _on_gripper(self, source: str, msg: Float64) -> None:
        if math.isfinite(msg.data):
            self._grippers[source] = msg.data
        else:  # the gate rejects and counts it, like a non-finite twist
            self.gate.submit(ArmCommand.zero(msg.data), self._now(), source)
            self.get_logger().warning(f"rejected a non-finite {source} gripper value", throttle_duration_sec=1.0)

    def _on_pose(self, msg: PoseStamped) -> None:
        if self._in_base_frame(msg.header.frame_id, "end-effector pose"):
            self.gate.update_state(messages.pose_of(msg)[0], self._now())

    def _in_base_frame(self, frame_id: str, what: str) -> bool:
        if frame_id in ("", self.base_frame):
            return True
        self._ignored_frames += 1
        self.get_logger().error(f"ignoring {what} in frame {frame_id!r}: the gate works in {self.base_frame!r}",
                                throttle_duration_sec=1.0)
        return False

    def _on_estop_topic(self, msg: Bool) -> None:
        if msg.data:
            self._engage("~/estop topic")
        else:
            self.get_logger().warning("the ~/estop topic only engages the e-stop; clear it with the ~/estop service",
                                   throttle_duration_sec=5.0)

    def _on_estop_service(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        if request.data:
            self._engage("~/estop service")
            response.message = f"e-stop latched ({self.gate.status.estop_reason})"
        else:
            was = self.gate.status.estop_latched
            self.gate.clear_estop()
            self._publish_status()
            response.message = "e-stop cleared: the arm moves again on a new command" if was else \
                "e-stop was not latched"
            if was:
                self.get_logger().warning("e-stop cleared")
        response.success = True
        return response

    def _engage(self, reason: str) -> None:
        if not self.gate.status.estop_latched:
            self.get_logger().error(f"e-stop latched by the {reason}")
        self.gate.engage_estop(reason)
        self._publish_status()

    def _publish_status(self, force: bool = False) -> None:
        status = self.gate.status
        msg = SafetyStatus(estop_latched=status.estop_latched, active_source=status.active_source or "none",
                           watchdog_tripped=status.watchdog_tripped, workspace_clipped=status.clipped_workspace,
                           speed_limited=status.clipped_speed, accel_limited=status.clipped_accel,
                           commands_rejected=status.rejected_nonfinite,
                           message=status.estop_reason or status.watchdog_reason)
        if force or msg != self._status_msg:  # headers still empty: compares the content
            self._status_msg = copy.deepcopy(msg)
            msg.header.stamp, msg.header.frame_id = self.get_clock().now().to_msg(), self.base_frame
            self._status_out.publish(msg)

    def _health(self) -> tuple[bytes, str, dict]:
        status = self.gate.status
        values = {"estop_latched": status.estop_latched, "active_source": status.active_source or "none",
                  "watchdog_tripped": status.watchdog_tripped, "commands_rejected": status.rejected_nonfinite,
                  "ignored_wrong_frame": self._ignored_frames}
        if status.estop_latched:
            return ERROR, f"e-stop latched: {status.estop_reason}", values
        if "robot state" in status.watchdog_reason:
            return WARN, f"output zero: {status.watchdog_reason} (no ee_pose from the arm?)", values
        if status.watchdog_tripped:
            return OK, "idle: no source in control", values
        return OK, f"{status.active_source} in control", values


main = main_of(SafetyGateNode)

if __name__ == "__main__":
    main()
