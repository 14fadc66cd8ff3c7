"""recorder_node: one MCAP file per episode, in the foundation's episode format, from live topics.

An EpisodeEvent STARTED opens an episode (the file itself at its first frame, with that frame's
size and the latest CameraInfo); ENDED finishes it with the episode's success flag in the
"episode_end" metadata, ABORTED (an e-stop) finishes it unsuccessful; the end reason goes along
(end_event, end_reason). Each step is a camera frame (kept at most once per control period with
`decimate`) with the joint state and end-effector pose nearest its stamp and the safety gate's
next command (robot.episodes.live.StepAssembler), so robot.episodes.read_episode, the dataset
index, rosbags and mcap-ros2-support read the files like the mirror's (sim/record.py). The
Reward, EpisodeEvent and SafetyStatus messages of the episode are recorded too, as they came
(/reward_node/reward, /episode/events, /safety_gate/status: the status in force when the episode
starts, then each change, so the learner can tell the steps teleop had control of). Files are
written by a thread behind a bounded queue (robot.episodes.live.LiveRecorder): a slow disk drops
steps, counted on /diagnostics, and never holds an episode in memory; a killed recorder leaves
earlier files intact and the current one readable up to its last written step. It follows events
from the moment it runs: an episode under way when it starts is not recorded.

Subscribes:  camera/camera/color/image_raw, camera/camera/color/camera_info  (sensor QoS)
             joint_states, ee_pose                                         (sensor QoS)
             safety_gate/twist_out, safety_gate/gripper_out                (reliable)
             reward_node/reward (drr_interfaces/Reward, reliable; parameter reward_topic, "" for none)
             safety_gate/status (drr_interfaces/SafetyStatus, transient local; parameter status_topic)
             episode/events (drr_interfaces/EpisodeEvent, reliable)
Publishes:   /diagnostics   steps written and dropped, queue, frames without state, files, errors
Parameters:  out_dir, source (metadata: teleop | policy | expert | ...) and policy (both may change
             while it runs, for the episodes that start after), robot, calibration
             (calibration id, base frame, camera when no CameraInfo comes), control_rate, decimate,
             max_state_offset_s, finger_joints (comma-separated: their positions sum to the gripper
             opening), queue_size, reward_topic, status_topic, max_episode_s.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from drr_interfaces.msg import EpisodeEvent, Reward, SafetyStatus
from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.node import Node
from rclpy.serialization import serialize_message
from rclpy.subscription import MessageInfo
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64

from calibration import default_calibration_path
from calibration.schema import CameraIntrinsics
from drr_ros import messages
from drr_ros.wiring import (
    COMMAND_QOS,
    ERROR,
    LATCHED_QOS,
    OK,
    SENSOR_QOS,
    WARN,
    Diagnostics,
    Param,
    calibration_of,
    declare,
    invalid,
    main_of,
    on_change,
)
from robot.episodes import EVENT_CODES, SOURCES, EpisodeMetadata
from robot.episodes.live import LiveRecorder, StepAssembler, ros2msg_definition

_EVENT = {code: name for name, code in EVENT_CODES.items()}
IMAGE, CAMERA_INFO = "camera/camera/color/image_raw", "camera/camera/color/camera_info"
EVENTS = "episode/events"
PARAMS = (
    Param("out_dir", "~/drr_episodes", "folder the episode files go to"),
    Param("source", "teleop", "who acts in the episodes (metadata; may change: from the next episode)",
          choices=SOURCES, runtime=True),
    Param("policy", "", "the policy's name or checkpoint (metadata; may change: from the next episode)",
          runtime=True),
    Param("robot", "panda-mirror", "the robot (metadata)"),
    Param("calibration", str(default_calibration_path()), "cell calibration YAML: id, base frame, camera"),
    Param("control_rate", 10.0, "Hz of the cell's control loop (metadata; the decimated frame rate)",
          gt=0.0, le=1000.0),
    Param("decimate", True, "keep at most one camera frame per control period"),
    Param("max_state_offset_s", 0.1, "s between a frame and the nearest joint state / pose it may take",
          gt=0.0, le=5.0),
    Param("finger_joints", "finger_left,finger_right", "joint_states names whose positions sum to the gripper "
          "opening (comma-separated; empty: none)"),
    Param("queue_size", 30, "steps waiting for the disk before new ones are dropped", ge=1, le=10000),
    Param("reward_topic", "reward_node/reward", "drr_interfaces/Reward topic to record; empty: none"),
    Param("status_topic", "safety_gate/status", "drr_interfaces/SafetyStatus topic to record (who had control of "
          "the arm: teleop interventions); empty: none"),
    Param("max_episode_s", 900.0, "s after which an episode with no ENDED is closed (incomplete)",
          gt=0.0, le=86400.0),
)


class RecorderNode(Node):
    NAME = "recorder_node"

    def __init__(self) -> None:
        super().__init__(self.NAME)
        p = declare(self, PARAMS)
        self.calibration = calibration_of(p.calibration)
        out_dir = Path(p.out_dir).expanduser()
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise invalid("out_dir", p.out_dir, f"a folder that can be created ({error.strerror})") from None
        self.p = p
        fingers = [name.strip() for name in p.finger_joints.split(",") if name.strip()]
        self.assembler = StepAssembler(1.0 / p.control_rate if p.decimate else 0.0, p.max_state_offset_s,
                                       command_wait_s=2.5 / p.control_rate, finger_joints=fingers)
        self.recorder = LiveRecorder(out_dir, self._camera, max_queued=p.queue_size, report=self._report)
        self._definitions = {EVENTS: ros2msg_definition("drr_interfaces/msg/EpisodeEvent", _msg_text(EpisodeEvent)),
                             p.status_topic: ros2msg_definition("drr_interfaces/msg/SafetyStatus",
                                                                _msg_text(SafetyStatus)),
                             p.reward_topic: ros2msg_definition("drr_interfaces/msg/Reward", _msg_text(Reward))}
        self._camera_info: CameraInfo | None = None
        self._status: SafetyStatus | None = None  # the latest: in force when an episode starts
        self._gripper = 0.0  # the gate's gripper_out stays silent until a source had control: open
        self._began_s = 0.0
        self._seen = {"dropped": 0, "errors": 0}

        self.create_subscription(Image, IMAGE, self._on_image, SENSOR_QOS)
        self.create_subscription(CameraInfo, CAMERA_INFO, self._on_camera_info, SENSOR_QOS)
        self.create_subscription(JointState, "joint_states", self._on_joints, SENSOR_QOS)
        self.create_subscription(PoseStamped, "ee_pose", self._on_pose, SENSOR_QOS)
        self.create_subscription(TwistStamped, "safety_gate/twist_out", self._on_twist, COMMAND_QOS)
        self.create_subscription(Float64, "safety_gate/gripper_out", self._on_gripper, COMMAND_QOS)
        # Volatile: events from before the recorder ran belong to episodes it did not see.
        self.create_subscription(EpisodeEvent, EVENTS, self._on_event, COMMAND_QOS)
        if p.reward_topic:
            self.create_subscription(Reward, p.reward_topic, self._on_reward, COMMAND_QOS)
        if p.status_topic:
            self.create_subscription(SafetyStatus, p.status_topic, self._on_status, LATCHED_QOS)
        self.diagnostics = Diagnostics(self, p.control_rate, self._health)
        self.create_timer(1.0 / p.control_rate, self._tick)
        on_change(self, PARAMS, self._on_parameters)
        self.get_logger().info(f"recording {p.source} episodes to {out_dir} at "
                               f"{p.control_rate:g} Hz{'' if p.decimate else ' (every frame)'}")

    def destroy_node(self) -> None:
        self.recorder.close()  # an episode still open stays on disk, incomplete
        super().destroy_node()

    # ------------------------------------------------------------ streams

    def _on_image(self, msg: Image, info: MessageInfo) -> None:
        if not self.recorder.recording:
            return
        if msg.encoding not in ("rgb8", "bgr8"):
            self.get_logger().error(f"cannot record {msg.encoding} images: rgb8 or bgr8", throttle_duration_sec=5.0)
            return
        try:
            rows = np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(msg.height, msg.step)
            image = rows[:, :3 * msg.width].reshape(msg.height, msg.width, 3)
        except ValueError:
            self.get_logger().error(f"dropped a malformed image: {len(msg.data)} bytes for {msg.width}x{msg.height} "
                                    f"with step {msg.step}", throttle_duration_sec=5.0)
            return
        self.assembler.add_frame(messages.stamp_ns(msg.header.stamp), image[..., ::-1].copy()
                                 if msg.encoding == "bgr8" else image, _received_s(info))

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._camera_info = msg

    def _on_joints(self, msg: JointState) -> None:
        self.assembler.add_joints(messages.stamp_ns(msg.header.stamp), msg.name, msg.position, msg.velocity)

    def _on_pose(self, msg: PoseStamped) -> None:
        self.assembler.add_pose(messages.stamp_ns(msg.header.stamp), *messages.pose_of(msg))

    def _on_gripper(self, msg: Float64) -> None:
        self._gripper = msg.data

    def _on_twist(self, msg: TwistStamped, info: MessageInfo) -> None:
        self.assembler.add_command(messages.command_of(msg, self._gripper), _received_s(info))
        self._write(self.assembler.steps(time.time()))

    def _on_reward(self, msg: Reward) -> None:
        self._record_message(self.p.reward_topic, "drr_interfaces/msg/Reward", msg)

    def _on_status(self, msg: SafetyStatus) -> None:
        self._status = msg
        self._record_message(self.p.status_topic, "drr_interfaces/msg/SafetyStatus", msg)

    def _tick(self) -> None:
        start = time.perf_counter()
        self._write(self.assembler.steps(time.time()))
        if self.recorder.recording and time.monotonic() - self._began_s > self.p.max_episode_s:
            self.get_logger().error(f"no ENDED within max_episode_s = {self.p.max_episode_s:g} s: "
                                    "closing the episode (is the episode_node running?)")
            self._write(self.assembler.flush())
            self.recorder.abort(f"no ENDED within {self.p.max_episode_s:g} s")
        self.diagnostics.tick(time.perf_counter() - start)

    def _write(self, steps) -> None:
        if self.recorder.recording:
            for step in steps:
                self.recorder.step(step)

    # ------------------------------------------------------------ episodes

    def _on_parameters(self, values: dict) -> None:
        """New metadata (source, policy) for the episodes that start from now on; an episode under way
        keeps what it started with."""
        vars(self.p).update(values)
        self.get_logger().info(f"episodes from the next one: {', '.join(f'{k} {v!r}' for k, v in values.items())}")

    def _on_event(self, msg: EpisodeEvent) -> None:
        event = _EVENT.get(msg.event, "")
        if event == "STARTED":
            if self.recorder.recording:
                self._write(self.assembler.flush())
                self.recorder.abort(f"episode {msg.episode_id} started before this one ended")
            self._begin(msg)
        if not self.recorder.recording or msg.episode_id != self.recorder.episode_id:
            return
        self._record_message(EVENTS, "drr_interfaces/msg/EpisodeEvent", msg)
        if event in ("ENDED", "ABORTED"):
            self._write(self.assembler.flush())
            self.recorder.end(success=msg.success and event == "ENDED",
                              extra={"end_event": event, "end_reason": msg.reason})

    def _begin(self, msg: EpisodeEvent) -> None:
        try:
            metadata = EpisodeMetadata(task=msg.task, source=self.p.source, seed=None,
                                       calibration_id=self.calibration.calibration_id, policy=self.p.policy,
                                       control_rate_hz=self.p.control_rate, robot=self.p.robot,
                                       base_frame=self.calibration.base_frame, episode_id=msg.episode_id,
                                       extra={"episode_index": str(msg.episode_index)})
        except ValueError as error:
            self.get_logger().error(f"not recording episode {msg.episode_id!r}: {error}")
            return
        self.assembler.restart()
        self.recorder.begin(metadata, msg.episode_index)
        self._began_s = time.monotonic()
        if self._status is not None:
            self._record_message(self.p.status_topic, "drr_interfaces/msg/SafetyStatus", self._status)
        self.get_logger().info(f"recording episode {msg.episode_index} {msg.episode_id} ({msg.task})")

    def _record_message(self, topic: str, typename: str, msg) -> None:
        stamp = messages.stamp_ns(msg.header.stamp) or self.get_clock().now().nanoseconds
        self.recorder.message(f"/{topic}", typename, self._definitions[topic], serialize_message(msg), stamp)

    def _camera(self, image_size: tuple[int, int] | None) -> CameraIntrinsics:
        """Writer thread: the intrinsics of the frames, from the latest CameraInfo that fits them."""
        info = self._camera_info
        if info is not None and (image_size is None or image_size == (info.height, info.width)):
            return CameraIntrinsics(width=info.width, height=info.height, fx=info.k[0], fy=info.k[4], cx=info.k[2],
                                    cy=info.k[5], distortion_model=info.distortion_model or "plumb_bob",
                                    distortion=tuple(float(v) for v in info.d),
                                    frame_id=info.header.frame_id or self.calibration.camera.frame_id)
        camera = self.calibration.camera
        if image_size is not None and image_size != (camera.height, camera.width):
            self.get_logger().warning(f"no CameraInfo for {image_size[1]}x{image_size[0]} frames: the calibration's "
                                   "intrinsics scaled to them")
            return camera.scaled(image_size[1], image_size[0])
        return camera

    def _report(self, level: str, text: str) -> None:
        if level == "info":  # one severity per logging call site: rclpy refuses to change it
            self.get_logger().info(text)
        elif level == "warn":
            self.get_logger().warning(text)
        else:
            self.get_logger().error(text)

    def _health(self) -> tuple[bytes, str, dict]:
        stats, counts = self.recorder.stats, self.assembler.counts
        dropped = stats["steps_dropped"] + stats["messages_dropped"]
        values = {"recording": self.recorder.episode_id or "no", "queued": self.recorder.queued, **stats,
                  **{f"frames_{name}": value for name, value in counts.items()}}
        new_drops, new_errors = dropped - self._seen["dropped"], stats["errors"] - self._seen["errors"]
        self._seen = {"dropped": dropped, "errors": stats["errors"]}
        if new_errors:
            return ERROR, f"writing failed: {stats['last_error']}", values
        if new_drops:
            return WARN, f"{new_drops} steps/messages dropped: the disk is not keeping up", values
        return OK, f"recording {self.recorder.episode_id}" if self.recorder.recording else "waiting for STARTED", values


def _received_s(info: MessageInfo) -> float:
    """When the middleware received the message (system clock): the order frames and commands arrived in,
    whichever order the executor serves its subscriptions in."""
    return info["received_timestamp"] * 1e-9 or time.time()


def _msg_text(msg_class) -> str:
    """The .msg definition of an interface package's message, from its install's share/ folder
    (colcon's install/<pkg>/ or /opt/ros/<distro>/: lib/pythonX/site-packages/<pkg> -> share/<pkg>)."""
    package = msg_class.__module__.split(".")[0]
    prefix = Path(sys.modules[package].__file__).resolve().parents[4]
    path = prefix / "share" / package / "msg" / f"{msg_class.__name__}.msg"
    try:
        return path.read_text()
    except OSError:
        from ament_index_python.packages import get_package_share_directory

        return (Path(get_package_share_directory(package)) / "msg" / f"{msg_class.__name__}.msg").read_text()


main = main_of(RecorderNode)

if __name__ == "__main__":
    main()
