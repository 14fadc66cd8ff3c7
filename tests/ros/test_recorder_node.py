"""recorder_node in its own process over Fast DDS, recording synthetic live topics that a process of this file
publishes (`python test_recorder_node.py streams NAMESPACE`, scripted over stdin): the files read back with the
foundation's reader and dataset index and with mcap-ros2-support's own decoder; a SIGKILL mid-episode leaves
the earlier episode intact and the current one readable."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy")

from drr_interfaces.msg import EpisodeEvent, Reward  # noqa: E402
from drr_ros.messages import image_msg, parameters_request, stamp  # noqa: E402
from drr_ros.wiring import COMMAND_QOS, SENSOR_QOS  # noqa: E402
from geometry_msgs.msg import PoseStamped, TwistStamped  # noqa: E402
from mcap.reader import make_reader  # noqa: E402
from mcap_ros2.decoder import DecoderFactory  # noqa: E402
from rcl_interfaces.srv import SetParametersAtomically  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, JointState  # noqa: E402
from std_msgs.msg import Float64  # noqa: E402

from robot.episodes import DatasetIndex, EpisodeReadError, read_episode  # noqa: E402
from robot.episodes import messages as msgs  # noqa: E402

H, W = 24, 32
PERIOD_NS = 100_000_000  # 10 Hz, the recorder's control rate
JOINTS = ["joint1", "joint2", "finger_left", "finger_right"]


class Streams:
    """The peer process: `episode ID INDEX FRAMES` publishes a whole episode (STARTED, SUCCESS_MARKED,
    ENDED), `run ID INDEX` starts one and streams steps until killed; it prints a JSON line per episode
    with the stamps of the frames it published."""

    def __init__(self, namespace: str) -> None:
        self.process = subprocess.Popen(["nice", sys.executable, __file__, "streams", namespace],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True)
        self.lines: list[dict] = []
        threading.Thread(target=lambda: self.lines.extend(json.loads(line) for line in self.process.stdout),
                         daemon=True).start()

    def send(self, command: str) -> None:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.fixture
def streams(nodes):
    running = Streams(nodes.namespace)
    yield running
    running.stop()


def decoded(path: Path) -> dict[str, list]:
    """Every message by topic as (log time, message), decoded by mcap-ros2-support from the file's schemas."""
    by_topic: dict[str, list] = {}
    with open(path, "rb") as stream:
        for _, channel, message, ros_msg in make_reader(stream, decoder_factories=[DecoderFactory()]) \
                .iter_decoded_messages(log_time_order=False):
            by_topic.setdefault(channel.topic, []).append((message.log_time, ros_msg))
    return by_topic


def partial_frames(path: Path) -> int:
    try:
        return len(read_episode(path, image_size=None))
    except EpisodeReadError:
        return 0


def test_recorder_writes_readable_episodes_and_survives_sigkill(nodes, probe, streams, tmp_path):
    out = tmp_path / "episodes"
    recorder = nodes.start("recorder_node", out_dir=str(out), source="policy", policy="test-policy")
    probe.wait_for(lambda: streams.lines and streams.lines[0] == {"ready": True}, 30,
                   "the streams peer to match the recorder's subscriptions")
    streams.send("episode aaaabbbbccccdddd 1 8")
    probe.wait_for(lambda: len(streams.lines) == 2, 20, "the first episode to be published")
    published = streams.lines[1]["stamps"]
    first = probe.wait_for(lambda: [e for e in DatasetIndex.scan(out).entries if e.complete], 10,
                           "the first episode's file to be finished")[0]

    # The metadata may change while it runs (another policy): for the episodes that start after.
    for values, reason in (({"source": "robot"}, "parameter source = 'robot' is invalid: expected one of"),
                           ({"source": "expert", "policy": "scripted"}, "")):
        answer = probe.call(SetParametersAtomically, "recorder_node/set_parameters_atomically",
                            parameters_request(**values)).result
        assert answer.successful == (not reason) and reason in answer.reason, answer.reason

    streams.send("run eeeeffff00001111 2")
    probe.wait_for(lambda: len(list(out.glob("*.mcap"))) == 2 and partial_frames(
        next(p for p in out.glob("*.mcap") if p != first.path)) >= 3, 20, "3 frames of the second episode on disk")
    recorder.send_signal(signal.SIGKILL)
    recorder.wait()

    # The foundation's reader: the finished episode whole, in order, with its metadata.
    episode = read_episode(first.path, image_size=None)
    assert episode.complete and episode.success and episode.problems == []
    assert episode.stamps_ns.tolist() == published
    assert [int(frame[0, 0, 0]) for frame in episode.frames] == list(range(8))
    # Each frame takes the command received after it (exactly so in tests/robot/test_live_recording.py; here
    # the transport may reorder the two topics on a loaded machine, so by at most one step).
    steps = np.round(episode.actions[:, 0] / 0.01)
    assert np.all(np.abs(steps - np.arange(8)) <= 1) and np.all(np.diff(steps) >= 0), steps
    np.testing.assert_allclose(episode.actions[:, 6], 0.5)  # gripper
    np.testing.assert_allclose(episode.joint_positions[:, 0], 0.1 * np.arange(8))
    np.testing.assert_allclose(episode.gripper_widths, 0.04)  # the two fingers' positions summed
    assert episode.joint_names == ("joint1", "joint2") and episode.ee_positions[3, 2] == pytest.approx(0.3)
    meta = episode.metadata
    assert (meta["task"], meta["source"], meta["policy"], meta["episode_id"], meta["episode_index"]) == \
        ("sim:reach", "policy", "test-policy", "aaaabbbbccccdddd", "1")
    assert (meta["end_event"], meta["end_reason"], meta["num_frames"]) == ("ENDED", "operator_stop", "8")
    assert episode.camera_info["width"] == W and episode.camera_info["k"][0] == 20.0

    # mcap-ros2-support's decoder, from the schemas in the file alone.
    topics = decoded(first.path)
    counts = {topic: len(messages) for topic, messages in topics.items()}
    assert counts == {msgs.CAMERA_INFO_TOPIC: 1, msgs.IMAGE_TOPIC: 8, msgs.JOINT_STATES_TOPIC: 8, msgs.EE_POSE_TOPIC: 8,
                      msgs.GATED_TWIST_TOPIC: 8, msgs.GRIPPER_TOPIC: 8, msgs.EVENT_TOPIC: 2,
                      "/episode/events": 3, "/reward_node/reward": 8}
    assert [t for t, _ in topics[msgs.IMAGE_TOPIC]] == published
    assert [msgs_stamp(m) for _, m in topics[msgs.IMAGE_TOPIC]] == published
    assert [m.event for _, m in topics["/episode/events"]] == [EpisodeEvent.STARTED, EpisodeEvent.SUCCESS_MARKED,
                                                               EpisodeEvent.ENDED]
    assert sorted(t for t, _ in topics["/reward_node/reward"]) == published
    assert [m.frame_index for _, m in topics["/reward_node/reward"]] == list(range(8))

    # After the SIGKILL: the first episode intact, the second listed as incomplete and readable.
    index = {entry.episode_id: entry for entry in DatasetIndex.scan(out).entries}
    assert set(index) == {"aaaabbbbccccdddd", "eeeeffff00001111"}
    assert index["aaaabbbbccccdddd"].complete and index["aaaabbbbccccdddd"].num_frames == 8
    cut = read_episode(index["eeeeffff00001111"].path, image_size=None)
    assert not cut.complete and cut.success is None and len(cut) >= 3
    assert (cut.metadata["source"], cut.metadata["policy"]) == ("expert", "scripted")
    assert set(cut.stamps_ns.tolist()) <= set(range(published[-1], published[-1] + 10**4 * PERIOD_NS, PERIOD_NS))
    assert cut.frames.shape[1:] == (H, W, 3)
    assert "Traceback" not in nodes.log("recorder_node")


def msgs_stamp(message) -> int:
    return message.header.stamp.sec * 1_000_000_000 + message.header.stamp.nanosec


# ---------------------------------------------------------------- the synthetic robot, run as a process


def _streams(namespace: str) -> None:
    import rclpy

    rclpy.init()
    node = rclpy.create_node("fake_robot", namespace=namespace)
    pub = {"image": node.create_publisher(Image, "camera/camera/color/image_raw", SENSOR_QOS),
           "info": node.create_publisher(CameraInfo, "camera/camera/color/camera_info", SENSOR_QOS),
           "joints": node.create_publisher(JointState, "joint_states", SENSOR_QOS),
           "pose": node.create_publisher(PoseStamped, "ee_pose", SENSOR_QOS),
           "twist": node.create_publisher(TwistStamped, "safety_gate/twist_out", COMMAND_QOS),
           "gripper": node.create_publisher(Float64, "safety_gate/gripper_out", COMMAND_QOS),
           "reward": node.create_publisher(Reward, "reward_node/reward", COMMAND_QOS),
           "event": node.create_publisher(EpisodeEvent, "episode/events", COMMAND_QOS)}
    end = time.monotonic() + 20
    while not all(p.get_subscription_count() for p in pub.values()):
        if time.monotonic() > end:
            sys.exit("streams: the recorder's subscriptions did not appear")
        time.sleep(0.05)
    pub["gripper"].publish(Float64(data=0.5))  # the gate repeats its gripper every tick once a source had control
    print(json.dumps({"ready": True}), flush=True)
    clock = {"ns": time.time_ns() // PERIOD_NS * PERIOD_NS}

    def event(code: int, episode_id: str, index: int, reason: str, success: bool = False) -> None:
        msg = EpisodeEvent(event=code, state="running", episode_index=index, episode_id=episode_id, task="sim:reach",
                           reason=reason, success=success)
        msg.header.stamp = stamp(time.time_ns())
        pub["event"].publish(msg)
        time.sleep(0.3)  # events and frames travel on separate topics: let each land before the next

    def step(k: int) -> int:
        clock["ns"] += PERIOD_NS
        t = stamp(clock["ns"])
        joints = JointState(name=JOINTS, position=[0.1 * k, 0.0, 0.02, 0.02], velocity=[0.0] * 4)
        joints.header.stamp = t
        pose = PoseStamped()
        pose.header.stamp, pose.header.frame_id = t, "base_link"
        pose.pose.position.x, pose.pose.position.z, pose.pose.orientation.w = 0.5, 0.1 * k, 1.0
        info = CameraInfo(width=W, height=H, k=[20.0, 0.0, 15.5, 0.0, 20.0, 11.5, 0.0, 0.0, 1.0],
                          distortion_model="plumb_bob", d=[0.0] * 5)
        info.header.stamp, info.header.frame_id = t, "camera_color_optical_frame"
        pub["joints"].publish(joints)
        pub["pose"].publish(pose)
        pub["info"].publish(info)
        pub["image"].publish(image_msg(np.full((H, W, 3), k % 256, dtype=np.uint8), t, "camera_color_optical_frame"))
        time.sleep(0.03)  # the gate's next command comes after the frame
        twist = TwistStamped()
        twist.header.stamp, twist.header.frame_id = stamp(time.time_ns()), "base_link"
        twist.twist.linear.x = 0.01 * k
        pub["gripper"].publish(Float64(data=0.5))
        pub["twist"].publish(twist)
        reward = Reward(total=float(k), kind="entropy", frame_index=k)
        reward.header.stamp = t
        pub["reward"].publish(reward)
        time.sleep(0.07)
        return clock["ns"]

    for line in sys.stdin:
        what, episode_id, index, *rest = line.split()
        event(EpisodeEvent.STARTED, episode_id, int(index), "start")
        if what == "episode":
            stamps = [step(k) for k in range(int(rest[0]))]
            event(EpisodeEvent.SUCCESS_MARKED, episode_id, int(index), "success", True)
            event(EpisodeEvent.ENDED, episode_id, int(index), "operator_stop", True)
            print(json.dumps({"stamps": stamps}), flush=True)
        else:
            for k in range(10_000):
                step(k)


if __name__ == "__main__":
    role, *args = sys.argv[1:]
    {"streams": _streams}[role](*args)
