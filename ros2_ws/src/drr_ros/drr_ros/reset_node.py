"""reset_node: resets the cell between episodes.

A `~/reset` call drives the end effector home through the safety gate at reset priority (so the
gate's limits, e-stop and workspace box apply), closed loop on the arm's end-effector pose
(robot.homing.homing_twist at control_rate), then
- on the mirror: calls sim_arm_node's ~/randomize (a new scene, the arm at its start pose);
- on a real cell (confirm_with_operator): waits for an operator's `~/confirm` call, who has put
  the objects back.
The call answers once the gate has given control back: a source keeps control until its last
command is watchdog_timeout_s old, so answering right after homing would leave the next episode's
policy ignored for up to that long (the arm idle for its first frames). It answers success=false
with the reason when the e-stop is latched (read from the gate's SafetyStatus), when homing, the
randomize service, the operator or the gate's release time out, or when the e-stop is engaged
during the reset. A second ~/reset while one runs is refused.

Subscribes:  ee_pose (geometry_msgs/PoseStamped, sensor QoS), safety_gate/status (drr_interfaces/SafetyStatus)
Publishes:   safety_gate/reset/twist (geometry_msgs/TwistStamped, base frame), /diagnostics
Services:    ~/reset, ~/confirm (std_srvs/Trigger); calls sim_arm_node/randomize (std_srvs/Trigger)
Parameters:  home_position, home_orientation_xyzw (default: the mirror's home), the robot.homing.HomingConfig
  fields (position_tolerance, orientation_tolerance, max_linear_speed, max_angular_speed, gain),
  control_rate, timeout_s (homing, node clock), confirm_with_operator, confirm_timeout_s,
  randomize_timeout_s, release_timeout_s and status_timeout_s (wall clock).
"""

from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np
from drr_interfaces.msg import SafetyStatus
from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.duration import Duration
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from std_srvs.srv import Trigger

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
    declare,
    main_of,
)
from robot.homing import HomingConfig, homing_twist
from robot.types import ArmCommand

_DEFAULTS = {f.name: f.default for f in dataclasses.fields(HomingConfig)}
POSE_STALE_S = 0.5  # an older end-effector pose is not steered on (the gate stops the arm meanwhile)
PARAMS = (
    # The mirror's home TCP pose (sim/assets/panda.xml keyframe arm_home, gripper pointing down).
    Param("home_position", [0.5, 0.0, 0.25], "m, end-effector home in the base frame", length=3),
    Param("home_orientation_xyzw", [0.70710678, 0.70710678, 0.0, 0.0], "home orientation quaternion (x, y, z, w)",
          length=4),
    Param("position_tolerance", _DEFAULTS["position_tolerance"], "m from home counted as home", gt=0.0, le=0.1),
    Param("orientation_tolerance", _DEFAULTS["orientation_tolerance"], "rad from home counted as home",
          gt=0.0, le=1.0),
    Param("max_linear_speed", _DEFAULTS["max_linear_speed"], "m/s while homing (the gate limits too)",
          gt=0.0, le=2.0),
    Param("max_angular_speed", _DEFAULTS["max_angular_speed"], "rad/s while homing", gt=0.0, le=6.0),
    Param("gain", _DEFAULTS["gain"], "1/s, speed per metre or radian from home", gt=0.0, le=100.0),
    Param("control_rate", 10.0, "Hz of homing twists", gt=0.0, le=1000.0),
    Param("timeout_s", 30.0, "s (node clock) to get home before the reset fails", gt=0.0, le=600.0),
    Param("confirm_with_operator", False, "real cell: wait for ~/confirm instead of randomizing the mirror"),
    Param("confirm_timeout_s", 120.0, "s to wait for the operator's ~/confirm", gt=0.0, le=3600.0),
    Param("randomize_timeout_s", 5.0, "s to wait for sim_arm_node/randomize", gt=0.0, le=600.0),
    Param("release_timeout_s", 5.0, "s to wait for the gate to stop giving the reset source control",
          gt=0.0, le=600.0),
    Param("status_timeout_s", 5.0, "s a ~/reset waits for the gate's first SafetyStatus (discovery after launch)",
          gt=0.0, le=600.0),
)


class ResetNode(Node):
    NAME = "reset_node"

    def __init__(self) -> None:
        super().__init__(self.NAME)
        p = declare(self, PARAMS)
        if np.linalg.norm(p.home_orientation_xyzw) < 0.5:
            raise ConfigError(f"parameter home_orientation_xyzw = {p.home_orientation_xyzw!r} is invalid: "
                              "expected a unit quaternion (x, y, z, w)")
        self.p = p
        self.config = HomingConfig(**{name: getattr(p, name) for name in _DEFAULTS})
        self.home = (np.array(p.home_position), np.array(p.home_orientation_xyzw))
        self._pose: tuple[np.ndarray, np.ndarray, int, str] | None = None  # position, orientation, arrival ns, frame
        self._status: SafetyStatus | None = None
        self._status_seen = threading.Event()
        self._busy = threading.Lock()
        self._confirmed = threading.Event()
        self._awaiting_confirm = False
        self._last = ("", "no reset yet")  # for /diagnostics

        # Everything may run beside a blocking ~/reset (the executor is multi-threaded).
        group = ReentrantCallbackGroup()
        self.create_subscription(PoseStamped, "ee_pose", self._on_pose, SENSOR_QOS, callback_group=group)
        self.create_subscription(SafetyStatus, "safety_gate/status", self._on_status, LATCHED_QOS,
                                 callback_group=group)
        self._twist_out = self.create_publisher(TwistStamped, "safety_gate/reset/twist", COMMAND_QOS)
        self._randomize = self.create_client(Trigger, "sim_arm_node/randomize", callback_group=group)
        self.create_service(Trigger, "~/reset", self._on_reset, callback_group=group)
        self.create_service(Trigger, "~/confirm", self._on_confirm, callback_group=group)
        self.diagnostics = Diagnostics(self, None, self._health)  # rate: homing steps per second

    def _on_pose(self, msg: PoseStamped) -> None:
        position, orientation = messages.pose_of(msg)
        if np.all(np.isfinite(position)) and np.linalg.norm(orientation) > 0.5:  # else: no pose, not steered on
            self._pose = (position, orientation, self.get_clock().now().nanoseconds, msg.header.frame_id)

    def _on_status(self, msg: SafetyStatus) -> None:
        self._status = msg
        self._status_seen.set()

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if not self._busy.acquire(blocking=False):
            response.success, response.message = False, "refused: a reset is already running"
            return response
        try:
            response.success, response.message = self._reset()
        finally:
            self._busy.release()
        self._last = ("ok" if response.success else "failed", response.message)
        if response.success:  # (rclpy ties a call site to one severity)
            self.get_logger().info(f"reset done: {response.message}")
        else:
            self.get_logger().error(f"reset failed: {response.message}")
        return response

    def _reset(self) -> tuple[bool, str]:
        refusal = self._estop_refusal()
        if refusal:
            return False, f"refused: {refusal}"
        ok, homed = self._home()
        if not ok:
            return False, homed
        ok, after = self._wait_for_operator() if self.p.confirm_with_operator else self._randomize_scene()
        if not ok:
            return False, f"{homed}; {after}"
        ok, released = self._wait_for_release()
        return ok, f"{homed}; {after}; {released}"

    def _estop_refusal(self) -> str:
        # Right after launch the gate's latched status may not have been discovered yet.
        if not self._status_seen.wait(self.p.status_timeout_s):
            return (f"no SafetyStatus on safety_gate/status within {self.p.status_timeout_s:g} s "
                    "(is the safety_gate running?)")
        if self._status.estop_latched:
            reason = f" ({self._status.message})" if self._status.message else ""
            return f"the e-stop is latched{reason}; clear it with the safety_gate's ~/estop service"
        return ""

    def _home(self) -> tuple[bool, str]:
        clock = self.get_clock()
        period = Duration(nanoseconds=round(1e9 / self.p.control_rate))
        start = next_tick = clock.now()
        deadline = start + Duration(nanoseconds=round(self.p.timeout_s * 1e9))
        while True:
            now = clock.now()
            if self._status is not None and self._status.estop_latched:
                return False, "aborted: the e-stop was engaged while homing"
            pose = self._pose
            fresh = pose is not None and (now.nanoseconds - pose[2]) * 1e-9 < POSE_STALE_S
            if fresh:
                step = homing_twist(pose[0], pose[1], *self.home, self.config)
                self._publish(ArmCommand(step.linear, step.angular), now, pose[3])
                self.diagnostics.tick((clock.now() - now).nanoseconds * 1e-9)
                if step.arrived:
                    seconds = (now - start).nanoseconds * 1e-9
                    return True, (f"home within {step.position_error * 1e3:.1f} mm and "
                                  f"{step.orientation_error:.3f} rad after {seconds:.1f} s")
            if now >= deadline:
                self._publish(ArmCommand.zero(), now, pose[3] if pose else "")
                where = (f"{step.position_error * 1e3:.0f} mm and {step.orientation_error:.2f} rad from home"
                         if fresh else "no fresh end-effector pose on ee_pose")
                source = self._status.active_source if self._status else "unknown"
                return False, (f"homing timed out after {self.p.timeout_s:g} s: {where} "
                               f"(source in control at the gate: {source})")
            next_tick += period
            clock.sleep_until(next_tick)

    def _publish(self, command: ArmCommand, now, frame_id: str) -> None:
        """In the pose's frame, the base frame: the gate checks it."""
        self._twist_out.publish(messages.twist_msg(command, now.to_msg(), frame_id))

    def _randomize_scene(self) -> tuple[bool, str]:
        timeout = self.p.randomize_timeout_s
        if not self._randomize.wait_for_service(timeout_sec=timeout):
            return False, f"no {self._randomize.srv_name} service within {timeout:g} s"
        future = self._randomize.call_async(Trigger.Request())
        end = time.monotonic() + timeout
        while not future.done() and time.monotonic() < end:
            time.sleep(0.01)
        if not future.done():
            future.cancel()
            return False, f"{self._randomize.srv_name} did not answer within {timeout:g} s"
        result = future.result()
        return result.success, result.message

    def _wait_for_release(self) -> tuple[bool, str]:
        """Until the gate's status shows another source (or none) in control."""
        start = time.monotonic()
        while self._status.active_source == "reset":  # a status arrived: _estop_refusal checked
            if self._status.estop_latched:
                return False, "aborted: the e-stop was engaged while the gate released the reset source"
            if time.monotonic() - start > self.p.release_timeout_s:
                return False, (f"the gate still gave the reset source control after {self.p.release_timeout_s:g} s "
                               "(does another node publish on safety_gate/reset/twist?)")
            time.sleep(0.01)
        return True, f"control released after {time.monotonic() - start:.2f} s"

    def _wait_for_operator(self) -> tuple[bool, str]:
        self._confirmed.clear()
        self._awaiting_confirm = True
        self.get_logger().warning("arm home: reset the objects, then call ~/confirm")
        try:
            if self._confirmed.wait(self.p.confirm_timeout_s):
                return True, "operator confirmed"
            return False, f"no operator confirmation on ~/confirm within {self.p.confirm_timeout_s:g} s"
        finally:
            self._awaiting_confirm = False

    def _on_confirm(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if self._awaiting_confirm:
            self._confirmed.set()
            response.success, response.message = True, "confirmed"
        else:
            response.success, response.message = False, "no reset is waiting for confirmation"
        return response

    def _health(self) -> tuple[bytes, str, dict]:
        values = {"busy": self._busy.locked(), "awaiting_confirm": self._awaiting_confirm,
                  "last_reset": self._last[0] or "none", "last_message": self._last[1]}
        if self._status is not None and self._status.estop_latched:
            return WARN, "e-stop latched: resets are refused", values
        if self._last[0] == "failed":
            return ERROR, f"last reset failed: {self._last[1]}", values
        return OK, "ready", values


main = main_of(ResetNode, lambda: MultiThreadedExecutor(num_threads=3))

if __name__ == "__main__":
    main()
