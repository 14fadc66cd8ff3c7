"""ROS 2 message types, topics and CDR bytes for episode files, without a ROS install.

rosbags' typestore for ROS 2 Kilted (the distro of the stack's ROS wheels) gives both
the CDR serializer and the concatenated message definitions ("ros2msg" schemas) that
ros2 bag, Foxglove and mcap-ros2-support need to decode the file on their own.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from rosbags.typesys import Stores, get_typestore

from calibration.schema import CameraIntrinsics
from robot.types import ArmCommand, RobotState

ROS_DISTRO = "kilted"

# realsense2_camera topic names, so the real driver's bags read the same way.
IMAGE_TOPIC = "/camera/camera/color/image_raw"
CAMERA_INFO_TOPIC = "/camera/camera/color/camera_info"
JOINT_STATES_TOPIC = "/joint_states"
EE_POSE_TOPIC = "/ee_pose"
GATED_TWIST_TOPIC = "/safety_gate/cmd_twist"
REQUESTED_TWIST_TOPIC = "/policy/cmd_twist"
GRIPPER_TOPIC = "/gripper/command"
EVENT_TOPIC = "/episode/event"

TOPICS: dict[str, str] = {
    IMAGE_TOPIC: "sensor_msgs/msg/Image",
    CAMERA_INFO_TOPIC: "sensor_msgs/msg/CameraInfo",
    JOINT_STATES_TOPIC: "sensor_msgs/msg/JointState",
    EE_POSE_TOPIC: "geometry_msgs/msg/PoseStamped",
    GATED_TWIST_TOPIC: "geometry_msgs/msg/TwistStamped",
    REQUESTED_TWIST_TOPIC: "geometry_msgs/msg/TwistStamped",
    GRIPPER_TOPIC: "std_msgs/msg/Float64",
    EVENT_TOPIC: "std_msgs/msg/String",
}
# The gripper opening rides along in /joint_states as one more joint (metres between
# the fingers), so one message holds the whole measured state of the arm.
GRIPPER_JOINT = "gripper_width"


@lru_cache(maxsize=1)
def typestore() -> Any:
    return get_typestore(Stores.ROS2_KILTED)


def message_definition(typename: str) -> bytes:
    text, _ = typestore().generate_msgdef(typename, ros_version=2)
    return text.encode()


def serialize(message: Any) -> bytes:
    return bytes(typestore().serialize_cdr(message, message.__msgtype__))


def deserialize(data: bytes, typename: str) -> Any:
    return typestore().deserialize_cdr(data, typename)


def _types() -> dict[str, Any]:
    return typestore().types


def header(stamp_ns: int, frame_id: str) -> Any:
    types = _types()
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    return types["std_msgs/msg/Header"](
        stamp=types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec), frame_id=frame_id)


def stamp_ns(message: Any) -> int:
    return int(message.header.stamp.sec) * 1_000_000_000 + int(message.header.stamp.nanosec)


def image_msg(image: np.ndarray, stamp: int, frame_id: str) -> Any:
    height, width = image.shape[:2]
    return _types()["sensor_msgs/msg/Image"](
        header=header(stamp, frame_id), height=height, width=width, encoding="rgb8",
        is_bigendian=0, step=3 * width, data=np.ascontiguousarray(image).reshape(-1))


def camera_info_msg(camera: CameraIntrinsics, stamp: int) -> Any:
    types = _types()
    k = camera.matrix
    p = np.hstack([k, np.zeros((3, 1))])  # monocular: P = [K | 0]
    roi = types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                    do_rectify=False)
    return types["sensor_msgs/msg/CameraInfo"](
        header=header(stamp, camera.frame_id), height=camera.height, width=camera.width,
        distortion_model=camera.distortion_model, d=np.asarray(camera.distortion, dtype=np.float64),
        k=k.reshape(-1), r=np.eye(3).reshape(-1), p=p.reshape(-1), binning_x=0, binning_y=0, roi=roi)


def joint_state_msg(state: RobotState, stamp: int) -> Any:
    velocity = np.append(np.asarray(state.joint_velocities, dtype=np.float64), np.nan)
    return _types()["sensor_msgs/msg/JointState"](
        header=header(stamp, ""), name=[*state.joint_names, GRIPPER_JOINT],
        position=np.append(np.asarray(state.joint_positions, dtype=np.float64), state.gripper_width),
        velocity=velocity,  # the gripper's velocity is not measured: NaN
        effort=np.zeros(0, dtype=np.float64))


def pose_msg(state: RobotState, stamp: int, frame_id: str) -> Any:
    types = _types()
    x, y, z = (float(v) for v in state.ee_position)
    qx, qy, qz, qw = (float(v) for v in state.ee_orientation_xyzw)
    pose = types["geometry_msgs/msg/Pose"](
        position=types["geometry_msgs/msg/Point"](x=x, y=y, z=z),
        orientation=types["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw))
    return types["geometry_msgs/msg/PoseStamped"](header=header(stamp, frame_id), pose=pose)


def twist_msg(command: ArmCommand, stamp: int, frame_id: str) -> Any:
    types = _types()
    vector = types["geometry_msgs/msg/Vector3"]
    twist = types["geometry_msgs/msg/Twist"](linear=vector(*(float(v) for v in command.linear)),
                                             angular=vector(*(float(v) for v in command.angular)))
    return types["geometry_msgs/msg/TwistStamped"](header=header(stamp, frame_id), twist=twist)


def float64_msg(value: float) -> Any:
    return _types()["std_msgs/msg/Float64"](data=float(value))


def string_msg(text: str) -> Any:
    return _types()["std_msgs/msg/String"](data=text)
