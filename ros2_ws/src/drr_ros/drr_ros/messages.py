"""Conversions between robot.types (ArmCommand, RobotState, numpy images) and ROS 2 messages.

An arm command travels as two topics: geometry_msgs/TwistStamped (end-effector velocity in the
base frame, what MoveIt Servo takes) and std_msgs/Float64 (gripper closure, 0 open .. 1 closed).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseStamped, TwistStamped
from rcl_interfaces.srv import SetParametersAtomically
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64

from robot.episode_follower import EpisodeFollower, EpisodeTransition
from robot.types import ArmCommand, RobotState


def stamp(ns: int) -> Time:
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def stamp_ns(time: Time) -> int:
    return time.sec * 1_000_000_000 + time.nanosec


def twist_msg(command: ArmCommand, time: Time, frame_id: str) -> TwistStamped:
    msg = TwistStamped()
    msg.header.stamp, msg.header.frame_id = time, frame_id
    msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z = (float(v) for v in command.linear)
    msg.twist.angular.x, msg.twist.angular.y, msg.twist.angular.z = (float(v) for v in command.angular)
    return msg


def command_of(msg: TwistStamped, gripper: float) -> ArmCommand:
    """The twist as an ArmCommand with a gripper value from its own topic (non-finite values pass
    through: rejecting them is the safety gate's job, which counts them)."""
    linear, angular = msg.twist.linear, msg.twist.angular
    return ArmCommand([linear.x, linear.y, linear.z], [angular.x, angular.y, angular.z], gripper)


def gripper_msg(value: float) -> Float64:
    return Float64(data=float(value))


def joint_state_msg(state: RobotState, time: Time, finger_joints: Sequence[str] = ()) -> JointState:
    """The arm's joints; the gripper width, if finger joints are named, split evenly between them."""
    fingers = [state.gripper_width / len(finger_joints)] * len(finger_joints)
    msg = JointState(name=[*state.joint_names, *finger_joints],
                     position=[float(v) for v in state.joint_positions] + fingers,
                     velocity=[float(v) for v in state.joint_velocities] + [0.0] * len(fingers))
    msg.header.stamp = time
    return msg


def pose_msg(state: RobotState, time: Time, frame_id: str) -> PoseStamped:
    msg = PoseStamped()
    msg.header.stamp, msg.header.frame_id = time, frame_id
    msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = (float(v) for v in state.ee_position)
    o = msg.pose.orientation
    o.x, o.y, o.z, o.w = (float(v) for v in state.ee_orientation_xyzw)
    return msg


def pose_of(msg: PoseStamped) -> tuple[np.ndarray, np.ndarray]:
    """(position (3,), orientation (x, y, z, w)) of a pose message."""
    p, o = msg.pose.position, msg.pose.orientation
    return np.array([p.x, p.y, p.z]), np.array([o.x, o.y, o.z, o.w])


def image_msg(rgb: np.ndarray, time: Time, frame_id: str) -> Image:
    """An rgb8 image from a uint8 (height, width, 3) array."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected a uint8 (height, width, 3) image, got {rgb.dtype} {rgb.shape}")
    height, width, _ = rgb.shape
    msg = Image(height=height, width=width, encoding="rgb8", is_bigendian=0, step=3 * width)
    msg.header.stamp, msg.header.frame_id = time, frame_id
    msg.data = np.ascontiguousarray(rgb).tobytes()
    return msg


def image_of(msg: Image) -> np.ndarray:
    """The uint8 (height, width, 3) array of an rgb8 image message."""
    if msg.encoding != "rgb8":
        raise ValueError(f"expected an rgb8 image, got {msg.encoding!r}")
    rows = np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(msg.height, msg.step)
    return rows[:, :3 * msg.width].reshape(msg.height, msg.width, 3)


def follow_event(follower: EpisodeFollower, msg, logger) -> EpisodeTransition | None:
    """Feed a drr_interfaces/EpisodeEvent to the follower; an event of another interface version is
    logged (throttled) and ignored: None."""
    try:
        return follower.on_event(msg.event, msg.state, success=msg.success, episode_id=msg.episode_id,
                                 task=msg.task)
    except ValueError as error:
        logger.error(f"ignored an episode event: {error}", throttle_duration_sec=1.0)
        return None


def parameters_request(**values) -> SetParametersAtomically.Request:
    """A request to a node's ~/set_parameters_atomically that sets these parameters together (what
    `ros2 param set` does one at a time); the type of each follows its Python value."""
    return SetParametersAtomically.Request(
        parameters=[Parameter(name, value=value).to_parameter_msg() for name, value in values.items()])
