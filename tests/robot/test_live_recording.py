"""Recording from live streams without ROS: StepAssembler (frames + state + next command -> steps),
LiveRecorder (bounded queue -> EpisodeWriter on a thread) and EpisodeWriter.write_message."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory

from calibration.schema import CameraIntrinsics
from robot.episodes import DatasetIndex, EpisodeMetadata, EpisodeWriter, read_episode
from robot.episodes import messages as msgs
from robot.episodes.live import LiveRecorder, LiveStep, StepAssembler, ros2msg_definition
from robot.types import ArmCommand, RobotState

MS = 1_000_000
CAMERA = CameraIntrinsics(width=8, height=6, fx=8.0, fy=8.0, cx=3.5, cy=2.5)
JOINTS = ("j1", "j2", "finger_left", "finger_right")


def feed_state(assembler: StepAssembler, stamp: int, value: float = 0.0) -> None:
    assembler.add_joints(stamp, JOINTS, [value, 2 * value, 0.01, 0.015], [0.1, 0.2, 0.0, 0.0])
    assembler.add_pose(stamp, [0.5, 0.0, value], [0.0, 0.0, 0.0, 1.0])


def image(i: int) -> np.ndarray:
    return np.full((CAMERA.height, CAMERA.width, 3), i, dtype=np.uint8)


def command(i: int) -> ArmCommand:
    return ArmCommand([0.01 * i, 0.0, 0.0], [0.0, 0.0, 0.0], 0.5)


# ---------------------------------------------------------------- StepAssembler


def test_decimation_keeps_the_record_rate_on_average_and_every_frame_at_that_rate():
    def kept(frame_period_ms: float, jitter_ms: float = 0.0) -> list[int]:
        assembler, rng = StepAssembler(record_period_s=0.1), np.random.default_rng(0)
        stamps = [round((k * frame_period_ms + rng.uniform(-jitter_ms, jitter_ms)) * MS) + 10**12 for k in range(90)]
        return [s for s in stamps if assembler.add_frame(s, None, 0.0)]

    assert len(kept(100.0 / 3)) == 30  # 30 Hz -> 10 Hz, 3 s
    assert len(kept(100.0, jitter_ms=15.0)) == 90  # a 10 Hz camera with jitter: all of it
    fifteen_hz = kept(1000.0 / 15)  # 6 s: 60 kept at 10 Hz on average, spaced 67 or 133 ms
    assert len(fifteen_hz) == 60 and set(np.round(np.diff(fifteen_hz) / MS)) <= {67.0, 133.0}
    every = StepAssembler(record_period_s=0.0)
    assert all(every.add_frame(k * MS, None, 0.0) for k in range(1, 50))


def test_a_frame_takes_the_nearest_state_and_the_command_received_after_it():
    assembler = StepAssembler(max_state_offset_s=0.02, command_wait_s=0.2, finger_joints=JOINTS[2:])
    for k in range(5):
        feed_state(assembler, 1000 * MS + 10 * k * MS, value=k)  # 1000, 1010, ..., 1040 ms
    assembler.add_command(command(9), received_s=0.0)
    assembler.add_frame(1021 * MS, image(1), received_s=1.0)
    assert assembler.steps(now_s=1.01) == []  # its command has not come yet
    assembler.add_command(command(1), received_s=1.05)
    (step,) = assembler.steps(now_s=1.06)
    assert step.stamp_ns == step.state.stamp_ns == 1021 * MS
    assert step.state.joint_names == ("j1", "j2") and step.state.joint_positions.tolist() == [2.0, 4.0]
    assert step.state.gripper_width == pytest.approx(0.025) and step.state.ee_position[2] == 2.0
    assert step.command.linear[0] == pytest.approx(0.01) and step.command.gripper == 0.5
    # An executor may serve the command's subscription before the frame's: the receive times decide.
    assembler.add_command(command(3), received_s=2.05)
    assembler.add_command(command(2), received_s=2.02)
    assembler.add_frame(1031 * MS, image(2), received_s=2.0)
    (step,) = assembler.steps(now_s=2.06)
    assert step.command.linear[0] == pytest.approx(0.02) and assembler.counts["late"] == 0


def test_a_frame_waits_for_its_state_then_gives_up_and_counts_why():
    assembler = StepAssembler(max_state_offset_s=0.02, command_wait_s=0.2)
    feed_state(assembler, 1000 * MS)
    assembler.add_frame(1100 * MS, image(1), received_s=0.0)  # 100 ms after the only state
    assembler.add_command(command(1), received_s=0.1)
    assert assembler.steps(now_s=0.15) == []  # a state at or after its stamp may still come
    assert assembler.steps(now_s=0.25) == [] and assembler.counts["no_state"] == 1
    assembler.add_frame(1010 * MS + 1, image(2), received_s=1.0)  # out of order: before the last frame
    assert assembler.counts["out_of_order"] == 1
    assembler.add_frame(1110 * MS, image(3), received_s=1.0)
    feed_state(assembler, 1110 * MS)  # the state may come after its frame
    assert assembler.steps(now_s=1.1) == []  # no command after it yet
    (late,) = assembler.steps(now_s=1.25)  # the gate went quiet: the last command
    assert late.command.linear[0] == pytest.approx(0.01) and assembler.counts["late"] == 2
    assembler.add_frame(1210 * MS, image(4), received_s=2.0)
    feed_state(assembler, 1210 * MS)
    assert [s.stamp_ns for s in assembler.flush()] == [1210 * MS]
    assert assembler.counts["frames"] == 2 and assembler.counts["flushed"] == 1


def test_joint_states_without_fingers_or_velocities_still_make_a_state():
    assembler = StepAssembler()
    assembler.add_joints(5 * MS, ("a", msgs.GRIPPER_JOINT), [0.3, 0.07])  # no velocities, width already merged
    assembler.add_pose(5 * MS, [0, 0, 0], [0, 0, 0, 1])
    assembler.add_frame(5 * MS, image(0), 0.0)
    (step,) = assembler.flush()
    assert step.state.joint_names == ("a",) and np.isnan(step.state.joint_velocities).all()
    assert step.state.gripper_width == pytest.approx(0.07)
    assert step.command.gripper == 0.0 and not np.any(step.command.linear)  # no command ever: zero


# ---------------------------------------------------------------- LiveRecorder -> files


def metadata(episode_id: str) -> EpisodeMetadata:
    return EpisodeMetadata(task="sim:reach", source="teleop", seed=None, calibration_id="test", episode_id=episode_id)


def live_step(i: int) -> LiveStep:
    stamp = (i + 1) * 100 * MS
    state = RobotState(("j1",), np.array([0.1 * i]), np.zeros(1), np.array([0.5, 0.0, 0.2]),
                       np.array([0.0, 0.0, 0.0, 1.0]), 0.04, stamp_ns=stamp)
    return LiveStep(stamp, image(i), state, command(i))


def decoded(path, topics=None) -> list:
    """mcap-ros2-support's own decoder, from the schemas in the file."""
    with open(path, "rb") as stream:
        reader = make_reader(stream, decoder_factories=[DecoderFactory()])
        return [(channel.topic, message.log_time, ros_msg)
                for _, channel, message, ros_msg in reader.iter_decoded_messages(topics=topics)]


def test_episodes_stream_to_files_that_the_foundation_and_mcap_ros2_read(tmp_path):
    event_def = ros2msg_definition("std_msgs/msg/String")
    recorder = LiveRecorder(tmp_path, lambda size: CAMERA.scaled(size[1], size[0]) if size else CAMERA)
    assert not recorder.step(live_step(0))  # no episode: ignored
    recorder.begin(metadata("aaaa1111"), 1)
    assert recorder.message("/events", "std_msgs/msg/String", event_def, msgs.serialize(msgs.string_msg("S")), 5)
    for i in range(4):
        assert recorder.step(live_step(i))
    recorder.end(True, {"end_reason": "operator_stop"})
    recorder.begin(metadata("bbbb2222"), 2)
    recorder.end(False)  # no frame: an empty file still says the episode happened
    recorder.begin(metadata("cccc3333"), 3)
    recorder.step(live_step(0))
    recorder.begin(metadata("dddd4444"), 4)  # cccc never ended: left incomplete
    recorder.close()

    files = sorted(tmp_path.glob("*.mcap"))
    assert [f.name.split("_")[2] for f in files] == ["0001", "0002", "0003"]
    episode = read_episode(files[0], image_size=None)
    assert episode.complete and episode.success and episode.metadata["end_reason"] == "operator_stop"
    assert episode.stamps_ns.tolist() == [100 * MS, 200 * MS, 300 * MS, 400 * MS]
    np.testing.assert_allclose(episode.actions[:, 0], [0.0, 0.01, 0.02, 0.03], atol=1e-7)
    assert episode.frames[2].max() == 2 and episode.gripper_widths.tolist() == [0.04] * 4
    everything = decoded(files[0])
    assert sum(topic == msgs.IMAGE_TOPIC for topic, _, _ in everything) == 4
    assert [(time, m.data) for _, time, m in decoded(files[0], ["/events"])] == [(5, "S")]
    index = {e.episode_id: e for e in DatasetIndex.scan(tmp_path).entries}
    assert index["bbbb2222"].complete and index["bbbb2222"].num_frames == 0 and index["bbbb2222"].success is False
    assert not index["cccc3333"].complete and index["cccc3333"].num_frames == 1
    assert "a new episode began" in " ".join(index["cccc3333"].problems)
    assert recorder.stats["episodes_finished"] == 2 and recorder.stats["episodes_aborted"] == 1


def test_a_full_queue_drops_and_counts_instead_of_growing(tmp_path):
    opened = threading.Event()
    release = threading.Event()

    def slow_camera(size):  # holds the writer thread at the first step, as a stalled disk would
        opened.set()
        release.wait(10)
        return CAMERA

    recorder = LiveRecorder(tmp_path, slow_camera, max_queued=3)
    recorder.begin(metadata("eeee5555"), 1)
    recorder.step(live_step(0))
    assert opened.wait(10)
    accepted = [recorder.step(live_step(i)) for i in range(1, 8)]
    assert accepted == [True] * 3 + [False] * 4 and recorder.stats["steps_dropped"] == 4
    release.set()
    recorder.end(True)
    recorder.close()
    episode = read_episode(next(tmp_path.glob("*.mcap")), image_size=None)
    assert episode.complete and len(episode) == 4 and recorder.stats["steps_written"] == 4


def test_a_file_that_cannot_be_opened_is_reported_and_the_next_episode_records(tmp_path):
    reports, calls = [], []

    def camera(size):
        calls.append(size)
        if len(calls) == 1:
            raise OSError("disk full")
        return CAMERA

    recorder = LiveRecorder(tmp_path, camera, report=lambda level, text: reports.append((level, text)))
    recorder.begin(metadata("ffff6666"), 1)
    recorder.step(live_step(0))
    recorder.step(live_step(1))  # dropped with its episode, without a second attempt
    recorder.end(True)
    recorder.begin(metadata("gggg7777"), 2)
    recorder.step(live_step(0))
    recorder.end(True)
    recorder.close()
    assert recorder.stats["errors"] == 1 and "cannot record episode ffff6666: OSError: disk full" in reports[0][1]
    assert len(calls) == 2 and recorder.stats["steps_dropped"] == 2
    assert [level for level, _ in reports] == ["error", "info"]
    assert len(list(tmp_path.glob("*.mcap"))) == 1


def test_write_message_registers_a_topic_once_with_its_type(tmp_path):
    definition = ros2msg_definition("std_msgs/msg/Float64")
    with EpisodeWriter(tmp_path / "e.mcap", metadata("hhhh8888"), CAMERA) as writer:
        writer.write_message("/x", "std_msgs/msg/Float64", definition, msgs.serialize(msgs.float64_msg(1.5)), 7)
        with pytest.raises(ValueError, match="/x carries std_msgs/msg/Float64, not std_msgs/msg/String"):
            writer.write_message("/x", "std_msgs/msg/String", b"", b"", 8)
        with pytest.raises(ValueError, match="written by write_step"):
            writer.write_message(msgs.GRIPPER_TOPIC, "std_msgs/msg/Float64", definition, b"", 9)
        writer.finish(True)
    assert [(topic, m.data) for topic, _, m in decoded(tmp_path / "e.mcap", ["/x"])] == [("/x", 1.5)]


def test_ros2msg_definition_of_a_custom_type_includes_its_dependencies():
    text = ros2msg_definition("my_pkg/msg/Thing", "uint8 A=1\nstd_msgs/Header header\nfloat32 value\n").decode()
    assert text.startswith("uint8 A=1\nstd_msgs/Header header\nfloat32 value\n")
    assert "MSG: std_msgs/Header" in text and "MSG: builtin_interfaces/Time" in text
    with pytest.raises(ValueError, match="pass its .msg text"):
        ros2msg_definition("my_pkg/msg/Unknown")
