"""ROS 2 itself (rclpy's serializer from the Kilted wheels) decodes our episode bags."""

import numpy as np
import pytest
from mcap.reader import make_reader

from calibration.schema import CameraIntrinsics
from robot.episodes import EpisodeMetadata, EpisodeWriter
from robot.types import ArmCommand, RobotState

serialization = pytest.importorskip("rclpy.serialization")
from geometry_msgs.msg import PoseStamped, TwistStamped  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, JointState  # noqa: E402
from std_msgs.msg import Float64, String  # noqa: E402

ROS_TYPES = {"sensor_msgs/msg/Image": Image, "sensor_msgs/msg/CameraInfo": CameraInfo,
             "sensor_msgs/msg/JointState": JointState, "geometry_msgs/msg/PoseStamped": PoseStamped,
             "geometry_msgs/msg/TwistStamped": TwistStamped, "std_msgs/msg/Float64": Float64,
             "std_msgs/msg/String": String}


def write_episode(path, frames, camera):
    meta = EpisodeMetadata(task="sim:reach", source="expert", seed=1, calibration_id="test")
    with EpisodeWriter(path, meta, camera) as writer:
        for i, frame in enumerate(frames):
            state = RobotState(("j1", "j2"), np.array([0.1, i]), np.zeros(2), np.array([0.5, 0, 0.2]),
                               np.array([0, 0, 0, 1.0]), 0.04, stamp_ns=(i + 1) * 100_000_000)
            writer.write_step(frame, state, ArmCommand([0.1 * i, 0, 0], [0, 0, 0], 0.5))
        writer.finish(success=True)


def test_rclpy_deserializes_every_message(tmp_path):
    camera = CameraIntrinsics(width=32, height=24, fx=30.0, fy=30.0, cx=15.5, cy=11.5)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (24, 32, 3), dtype=np.uint8) for _ in range(3)]
    path = tmp_path / "episode.mcap"
    write_episode(path, frames, camera)

    decoded: dict[str, list] = {}
    with open(path, "rb") as stream:
        for schema, channel, record in make_reader(stream).iter_messages():
            assert schema.encoding == "ros2msg" and channel.message_encoding == "cdr"
            message = serialization.deserialize_message(record.data, ROS_TYPES[schema.name])
            decoded.setdefault(channel.topic, []).append(message)

    images = decoded["/camera/camera/color/image_raw"]
    assert [m.encoding for m in images] == ["rgb8"] * 3
    for message, frame in zip(images, frames):
        assert (message.height, message.width, message.step) == (24, 32, 96)
        assert bytes(message.data) == frame.tobytes()
    assert [m.header.stamp.nanosec for m in images] == [100_000_000, 200_000_000, 300_000_000]
    (info,) = decoded["/camera/camera/color/camera_info"]
    assert list(info.k) == [30.0, 0.0, 15.5, 0.0, 30.0, 11.5, 0.0, 0.0, 1.0]
    assert [round(m.twist.linear.x, 6) for m in decoded["/safety_gate/cmd_twist"]] == [0.0, 0.1, 0.2]
    assert len(decoded["/joint_states"]) == len(decoded["/ee_pose"]) == 3
