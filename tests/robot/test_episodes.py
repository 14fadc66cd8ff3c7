"""Episode files: ROS 2 MCAP round trip, third-party readers, crash safety, dataset index."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from mcap.reader import make_reader

from calibration.schema import CameraIntrinsics
from robot.episodes import (
    CENTER_SQUARE,
    SOURCES,
    TOPICS,
    DatasetIndex,
    EpisodeMetadata,
    EpisodeReadError,
    EpisodeWriter,
    contact_sheet,
    episode_path,
    iter_episodes,
    read_episode,
)
from robot.episodes.dataset import split_draw
from robot.types import ArmCommand, RobotState

H, W = 48, 64
JOINTS = tuple(f"panda_joint{i}" for i in range(1, 8))
STEP_NS = 100_000_000


def camera(height: int = H, width: int = W) -> CameraIntrinsics:
    return CameraIntrinsics(width=width, height=height, fx=50.0, fy=51.0, cx=31.5, cy=23.5,
                            distortion=(0.1, -0.05, 0.001, 0.002, 0.01), frame_id="cam_optical")


def image(i: int, height: int = H, width: int = W) -> np.ndarray:
    """A smooth gradient with a moving square: compressible like a render, distinct per step."""
    y, x = np.mgrid[0:height, 0:width]
    frame = np.stack([x * 255 // width, y * 255 // height, np.full_like(x, (40 * i) % 256)], -1)
    frame[(i * 3) % (height - 8):(i * 3) % (height - 8) + 8, 10:18] = (255, 0, 0)
    return frame.astype(np.uint8)


def state(i: int) -> RobotState:
    q = np.linspace(-1, 1, 7) + 0.01 * i
    quat = np.array([0.0, np.sin(0.05 * i), 0.0, np.cos(0.05 * i)])
    return RobotState(JOINTS, q, np.full(7, 0.1 * i), np.array([0.4 + 0.01 * i, 0.0, 0.3]), quat,
                      gripper_width=0.08 - 0.001 * i, stamp_ns=(i + 1) * STEP_NS)


def command(i: int) -> ArmCommand:
    return ArmCommand([0.01 * i, -0.02, 0.03], [0.0, 0.1, -0.1 * i], gripper=min(1.0, 0.2 * i))


def metadata(task: str = "sim:reach", source: str = "expert", seed: int | None = 3,
             episode_id: str = "", **extra: str) -> EpisodeMetadata:
    return EpisodeMetadata(task=task, source=source, seed=seed, calibration_id="mirror-default",
                           policy="scripted-expert", episode_id=episode_id, extra=dict(extra))


def write_episode(path: Path, steps: int = 5, success: bool | None = True, meta: EpisodeMetadata | None = None,
                  cam: CameraIntrinsics | None = None) -> Path:
    cam = cam or camera()
    with EpisodeWriter(path, meta or metadata(), cam) as writer:
        for i in range(steps):
            requested = command(i + 1) if i % 2 == 0 else None
            writer.write_step(image(i, cam.height, cam.width), state(i), command(i), requested)
        if success is not None:
            writer.finish(success, extra={"note": "test"})
    return path


# --- round trip -------------------------------------------------------------------------

def test_round_trip_full_size(tmp_path):
    path = write_episode(tmp_path / "ep.mcap", steps=5, meta=metadata(operator="ana"))
    ep = read_episode(path, image_size=None)
    assert ep.complete and ep.success is True and ep.problems == []
    assert ep.frames.dtype == np.uint8 and ep.frames.shape == (5, H, W, 3)
    for i in range(5):
        assert np.array_equal(ep.frames[i], image(i))
    assert ep.stamps_ns.tolist() == [(i + 1) * STEP_NS for i in range(5)]
    assert ep.metadata["task"] == "sim:reach" and ep.metadata["source"] == "expert"
    assert ep.metadata["seed"] == "3" and ep.metadata["operator"] == "ana"
    assert ep.metadata["num_frames"] == "5" and ep.metadata["note"] == "test"
    assert ep.metadata["format_version"] == "1" and len(ep.metadata["episode_id"]) == 32
    assert ep.joint_names == JOINTS
    np.testing.assert_array_equal(ep.joint_positions, [state(i).joint_positions for i in range(5)])
    np.testing.assert_array_equal(ep.joint_velocities, [state(i).joint_velocities for i in range(5)])
    np.testing.assert_array_equal(ep.gripper_widths, [state(i).gripper_width for i in range(5)])
    np.testing.assert_array_equal(ep.ee_positions, [state(i).ee_position for i in range(5)])
    np.testing.assert_array_equal(ep.ee_orientations_xyzw, [state(i).ee_orientation_xyzw for i in range(5)])
    expected = np.array([[*command(i).linear, *command(i).angular, command(i).gripper] for i in range(5)],
                        dtype=np.float32)
    assert ep.actions.dtype == np.float32
    np.testing.assert_array_equal(ep.actions, expected)
    np.testing.assert_array_equal(ep.requested_twists[0],
                                  np.float32([*command(1).linear, *command(1).angular]))
    assert np.isnan(ep.requested_twists[1]).all()
    info = ep.camera_info
    assert info["frame_id"] == "cam_optical" and (info["width"], info["height"]) == (W, H)
    np.testing.assert_array_equal(np.reshape(info["k"], (3, 3)), camera().matrix)
    assert info["d"] == list(camera().distortion) and info["distortion_model"] == "plumb_bob"


def test_resize_and_crop(tmp_path):
    path = write_episode(tmp_path / "ep.mcap", steps=3)
    small = read_episode(path)
    assert small.frames.shape == (3, 64, 64, 3)
    crop = (4, 8, 32, 40)
    ep = read_episode(path, image_size=(16, 20), crop=crop)
    top, left, h, w = crop
    want = cv2.resize(image(2)[top:top + h, left:left + w], (20, 16), interpolation=cv2.INTER_AREA)
    assert np.array_equal(ep.frames[2], want)
    assert read_episode(path, image_size=None, crop=crop).frames.shape == (3, 32, 40, 3)
    with pytest.raises(ValueError, match="crop"):
        read_episode(path, crop=(40, 0, 32, 32))


def test_full_resolution_frame(tmp_path):
    cam = CameraIntrinsics(width=640, height=480, fx=615.0, fy=615.0, cx=320.0, cy=240.0)
    path = write_episode(tmp_path / "vga.mcap", steps=2, cam=cam)
    ep = read_episode(path, image_size=None)
    assert np.array_equal(ep.frames[1], image(1, 480, 640))
    # A smooth image compresses far below its 921,600 raw bytes.
    assert path.stat().st_size < 2 * 921_600 / 4


# --- third-party readers ----------------------------------------------------------------

@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # mcap_ros2.reader warns on import
def test_mcap_ros2_reader_decodes_every_message(tmp_path):
    from mcap_ros2.reader import read_ros2_messages

    path = write_episode(tmp_path / "ep.mcap", steps=4)
    seen: dict[str, int] = {}
    for message in read_ros2_messages(str(path)):
        topic = message.channel.topic
        assert message.schema.name == TOPICS[topic]
        assert message.schema.encoding == "ros2msg" and message.channel.message_encoding == "cdr"
        assert message.log_time_ns == message.publish_time_ns
        seen[topic] = seen.get(topic, 0) + 1
        ros = message.ros_msg
        if topic == "/camera/camera/color/image_raw":
            index = seen[topic] - 1
            assert ros.encoding == "rgb8" and ros.header.frame_id == "cam_optical"
            assert bytes(ros.data) == image(index).tobytes()
            assert ros.header.stamp.sec * 10**9 + ros.header.stamp.nanosec == message.log_time_ns
        elif topic == "/joint_states":
            assert list(ros.name) == [*JOINTS, "gripper_width"]
        elif topic == "/episode/event":
            assert json.loads(ros.data)["event"] in ("start", "end")
    assert seen == {"/camera/camera/color/image_raw": 4, "/camera/camera/color/camera_info": 1,
                    "/joint_states": 4, "/ee_pose": 4, "/safety_gate/cmd_twist": 4,
                    "/policy/cmd_twist": 2, "/gripper/command": 4, "/episode/event": 2}
    with open(path, "rb") as stream:
        reader = make_reader(stream)
        assert reader.get_header().profile == "ros2"
        names = {m.name for m in reader.iter_metadata()}
        assert names == {"episode", "episode_end"}


def test_rosbags_deserializes_every_message(tmp_path):
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    path = write_episode(tmp_path / "ep.mcap", steps=3)
    store = get_typestore(Stores.ROS2_JAZZY)  # another distro reads the same bytes
    count = 0
    with Reader(path) as reader:
        assert {c.topic: c.msgtype for c in reader.connections} == TOPICS
        for connection, _stamp, raw in reader.messages():
            message = store.deserialize_cdr(raw, connection.msgtype)
            count += 1
            if connection.topic == "/ee_pose":
                assert message.header.frame_id == "base_link"
    assert count == 3 * 5 + 2 + 1 + 2  # steps x topics, 2 requested, camera_info, 2 events


# --- crash safety -----------------------------------------------------------------------

def test_steps_reach_disk_before_finish(tmp_path):
    path = tmp_path / "live.mcap"
    with EpisodeWriter(path, metadata(), camera()) as writer:
        for i in range(3):
            writer.write_step(image(i), state(i), command(i))
        live = read_episode(path, image_size=None)  # what a crash right now would leave
        assert len(live) == 3 and not live.complete and live.success is None
        assert "file ends mid-record after 3 frames (no episode_end)" in live.problems
        writer.finish(True)
    assert read_episode(path).complete


def _layout(path: Path) -> tuple[list[int], int]:
    """End offsets of the chunks (one per step, then the end event's) and of episode_end."""
    with open(path, "rb") as stream:
        summary = make_reader(stream).get_summary()
    ends = sorted(c.chunk_start_offset + c.chunk_length for c in summary.chunk_indexes)
    end_record = next(m for m in summary.metadata_indexes if m.name == "episode_end")
    return ends, end_record.offset + end_record.length


def test_truncated_copies_read_up_to_last_complete_step(tmp_path):
    path = write_episode(tmp_path / "full.mcap", steps=6)
    data = path.read_bytes()
    ends, end_record = _layout(path)
    assert len(ends) == 7  # one chunk per step, one for the end event
    cuts = [ends[0] - 1, ends[0] + 1, (ends[2] + ends[3]) // 2, ends[4] + 3, ends[6] + 1,
            end_record + 1, len(data) - 5]
    for cut in cuts:
        cut_path = tmp_path / "cut" / f"cut_{cut}.mcap"
        cut_path.parent.mkdir(exist_ok=True)
        cut_path.write_bytes(data[:cut])
        ep = read_episode(cut_path, image_size=None)
        steps = sum(end <= cut for end in ends[:6])
        assert len(ep) == steps and not ep.complete, cut
        for i in range(steps):
            assert np.array_equal(ep.frames[i], image(i))
        no_end = " (no episode_end)" if cut < end_record else ""
        assert f"file ends mid-record after {steps} frames{no_end}" in ep.problems, (cut, ep.problems)
        assert ep.success is (None if no_end else True)
        (entry,) = DatasetIndex.scan(cut_path.parent).entries
        assert not entry.complete and entry.num_frames == steps and entry.problems == ep.problems
        cut_path.unlink()


def test_corrupt_chunk_stops_reading_there(tmp_path):
    path = write_episode(tmp_path / "ep.mcap", steps=5)
    ends, _ = _layout(path)
    data = bytearray(path.read_bytes())
    data[ends[2] - 20] ^= 0xFF  # inside the third step's compressed chunk
    path.write_bytes(bytes(data))
    ep = read_episode(path)
    assert len(ep) == 2 and not ep.complete
    assert ep.problems[0].startswith("unreadable record") and "after 2 frames" in ep.problems[0]


def test_cut_before_any_content_is_an_error(tmp_path):
    path = write_episode(tmp_path / "full.mcap", steps=1)
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(path.read_bytes()[:20])  # magic and part of the header
    with pytest.raises(EpisodeReadError, match="cut.mcap"):
        read_episode(cut)


def test_exception_in_writer_context_leaves_readable_incomplete_file(tmp_path):
    path = tmp_path / "crash.mcap"
    with pytest.raises(RuntimeError, match="arm fault"), EpisodeWriter(path, metadata(), camera()) as writer:
        for i in range(3):
            writer.write_step(image(i), state(i), command(i))
        raise RuntimeError("arm fault")
    ep = read_episode(path)
    assert len(ep) == 3 and not ep.complete and ep.success is None
    assert ep.problems == ["no episode_end (recording aborted: RuntimeError: arm fault)"]
    assert "num_frames" not in ep.metadata and ep.metadata["task"] == "sim:reach"


def test_leaving_context_without_finish_is_incomplete(tmp_path):
    path = write_episode(tmp_path / "ep.mcap", steps=2, success=None)
    ep = read_episode(path)
    assert len(ep) == 2 and not ep.complete
    assert ep.problems == ["no episode_end (recording aborted: closed without finish())"]


def test_garbage_and_empty_files_raise(tmp_path):
    garbage = tmp_path / "garbage.mcap"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(EpisodeReadError, match="garbage.mcap.*not an MCAP file"):
        read_episode(garbage)
    empty = tmp_path / "empty.mcap"
    empty.write_bytes(b"")
    with pytest.raises(EpisodeReadError, match="empty.mcap"):
        read_episode(empty)
    with pytest.raises(EpisodeReadError, match="missing.mcap"):
        read_episode(tmp_path / "missing.mcap")


# --- writer validation ------------------------------------------------------------------

def test_write_step_validates_image_and_stamps(tmp_path):
    path = tmp_path / "ep.mcap"
    with EpisodeWriter(path, metadata(), camera()) as writer:
        with pytest.raises(ValueError, match=r"\(48, 64, 3\).*got uint8 \(64, 48, 3\)"):
            writer.write_step(image(0, W, H), state(0), command(0))
        with pytest.raises(ValueError, match="got float32"):
            writer.write_step(image(0).astype(np.float32), state(0), command(0))
        writer.write_step(image(0), state(0), command(0))
        with pytest.raises(ValueError, match="not after the previous step"):
            writer.write_step(image(1), state(0), command(0))
        writer.write_step(image(1), state(1), command(1), stamp_ns=5 * STEP_NS)
        with pytest.raises(ValueError, match="clash"):
            writer.finish(False, extra={"num_frames": "9"})
        writer.finish(False)
        with pytest.raises(RuntimeError, match="closed"):
            writer.write_step(image(2), state(2), command(2))
    ep = read_episode(path)
    assert ep.complete and ep.success is False and ep.stamps_ns.tolist() == [STEP_NS, 5 * STEP_NS]


def test_episode_files_end_in_mcap(tmp_path):
    with pytest.raises(ValueError, match=r"ep.bag: episode files must end in .mcap"):
        EpisodeWriter(tmp_path / "ep.bag", metadata(), camera())
    assert not (tmp_path / "ep.bag").exists()


def test_existing_path_is_never_overwritten(tmp_path):
    path = write_episode(tmp_path / "ep.mcap", steps=1)
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="ep.mcap"):
        EpisodeWriter(path, metadata(), camera())
    assert path.read_bytes() == before


def test_unwritable_directory_is_named(tmp_path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")
    with pytest.raises(OSError, match="not_a_dir"):
        EpisodeWriter(blocker / "sub" / "ep.mcap", metadata(), camera())
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(OSError, match="locked is not writable"):
            EpisodeWriter(locked / "ep.mcap", metadata(), camera())


def test_metadata_validation_and_file_names(tmp_path):
    with pytest.raises(ValueError, match="expert, suboptimal, random, zero, teleop, policy"):
        metadata(source="demo")
    with pytest.raises(ValueError, match="str to str"):
        EpisodeMetadata("t", "expert", 0, "c", extra={"n": 3})
    with pytest.raises(ValueError, match="clash"):
        metadata(task="t", robot="ur5")
    with pytest.raises(ValueError, match="seed"):
        EpisodeMetadata("t", "expert", True, "c")
    with pytest.raises(ValueError, match="calibration_id"):
        EpisodeMetadata("t", "expert", 0, " ")
    meta = metadata(task="sim:pick cube", episode_id="abcdef0123456789")
    assert episode_path(tmp_path, meta, 7) == tmp_path / "sim-pick-cube_expert_0007_s3_abcdef01.mcap"
    assert episode_path(tmp_path, metadata(seed=None, episode_id="ff"), 0).name == \
        "sim-reach_expert_0000_noseed_ff.mcap"
    assert EpisodeMetadata.from_record(meta.to_record("2026-01-01T00:00:00+00:00")) == meta
    assert set(SOURCES) == {"expert", "suboptimal", "random", "zero", "teleop", "policy"}


# --- dataset index ----------------------------------------------------------------------

def _dataset(root: Path, plan: list[tuple[str, str, bool]], start: int = 0) -> None:
    for index, (task, source, success) in enumerate(plan, start):
        meta = metadata(task=task, source=source, seed=index, episode_id=f"{index:08x}aa")
        write_episode(episode_path(root / task.replace(":", "_"), meta, index), steps=3, success=success,
                      meta=meta)


PLAN = [("sim:reach", "expert", True), ("sim:reach", "expert", True), ("sim:reach", "random", False),
        ("sim:push", "expert", True), ("sim:push", "expert", False), ("sim:push", "random", False)]


def test_dataset_index_summary_and_select(tmp_path):
    _dataset(tmp_path, PLAN)
    write_episode(tmp_path / "aborted.mcap", steps=2, success=None, meta=metadata(source="teleop"))
    (tmp_path / "junk.mcap").write_bytes(b"\x00" * 100)
    index = DatasetIndex.scan(tmp_path)
    assert len(index.entries) == 8
    summary = index.summary()
    json.dumps(summary)
    assert (summary["episodes"], summary["complete"], summary["frames"]) == (8, 6, 6 * 3 + 2)
    assert summary["per_task"]["sim:reach"]["success_rate"] == pytest.approx(2 / 3)
    assert summary["per_task"]["sim:push"]["successes"] == 1
    assert summary["per_source"]["expert"] == {"episodes": 4, "complete": 4, "frames": 12,
                                               "successes": 3, "success_rate": 0.75}
    assert summary["per_source"]["teleop"]["success_rate"] is None
    assert len(summary["incomplete"]) == 2
    assert any("junk.mcap" in line and "not an MCAP file" in line for line in summary["incomplete"])
    assert any("aborted.mcap" in line and "closed without finish()" in line for line in summary["incomplete"])
    assert len(index.select(task="sim:reach")) == 3
    assert len(index.select(source="expert")) == 4
    assert len(index.select(source="teleop")) == 0 and len(index.select(source="teleop", complete_only=False)) == 1
    reach = index.select(task="sim:reach", source="random")[0]
    assert (reach.seed, reach.success, reach.num_frames, reach.episode_id) == (2, False, 3, "00000002aa")


def test_split_is_deterministic_and_stable_under_additions(tmp_path):
    _dataset(tmp_path, PLAN * 3)
    train, test = DatasetIndex.scan(tmp_path).split(test_fraction=0.3)
    assert len(train) + len(test) == 18 and test and train
    again = DatasetIndex.scan(tmp_path).split(test_fraction=0.3)
    assert [e.episode_id for e in again[1]] == [e.episode_id for e in test]
    _dataset(tmp_path, PLAN * 2, start=100)
    bigger_train, bigger_test = DatasetIndex.scan(tmp_path).split(test_fraction=0.3)
    # Episodes drawn to a side stay there; only a lent episode (its group had none drawn
    # into test) may go back to train once an added episode of its group is drawn into test.
    drawn_test = {e.episode_id for e in test if split_draw(e) < 0.3}
    drawn_train = {e.episode_id for e in train if split_draw(e) >= 0.3}
    assert drawn_test <= {e.episode_id for e in bigger_test}
    assert drawn_train <= {e.episode_id for e in bigger_train}
    other_salt = DatasetIndex.scan(tmp_path).split(test_fraction=0.3, salt="other")[1]
    assert {e.episode_id for e in other_salt} != {e.episode_id for e in bigger_test}


def test_split_holds_out_and_trains_on_every_group_of_two_or_more(tmp_path):
    _dataset(tmp_path, PLAN * 2)
    index = DatasetIndex.scan(tmp_path)
    for fraction in (0.01, 0.2, 0.99):
        train, test = index.split(test_fraction=fraction)
        groups = {(e.task, e.source) for e in index.select()}
        assert {(e.task, e.source) for e in test} == groups == {(e.task, e.source) for e in train}
    assert not index.split(test_fraction=0.0)[1] and not index.split(test_fraction=1.0)[0]


def test_iter_episodes_yields_model_sized_arrays(tmp_path):
    _dataset(tmp_path, PLAN[:3])
    train, _ = DatasetIndex.scan(tmp_path).split(test_fraction=0.0)
    episodes = list(iter_episodes(train, image_size=(16, 16), crop=(0, 8, 48, 48)))
    assert len(episodes) == 3
    for entry, episode in zip(train, episodes):
        assert episode.path == entry.path and len(episode) == entry.num_frames
        assert episode.frames.shape[1:] == (16, 16, 3) and episode.frames.dtype == np.uint8
        assert episode.actions.shape == (len(episode), 7)


def test_center_square_crop(tmp_path):
    _dataset(tmp_path, PLAN[:1])
    (entry,) = DatasetIndex.scan(tmp_path).entries
    full = read_episode(entry.path, image_size=None).frames
    side = min(H, W)
    left = (W - side) // 2
    centred = read_episode(entry.path, image_size=None, crop=CENTER_SQUARE).frames
    np.testing.assert_array_equal(centred, full[:, :, left:left + side])
    with pytest.raises(ValueError, match="or 'center'"):
        read_episode(entry.path, crop="middle")


def test_scan_reads_finished_files_from_their_summary(tmp_path, monkeypatch):
    _dataset(tmp_path, PLAN[:2])
    from robot.episodes import dataset

    def no_stream_pass(*args, **kwargs):
        raise AssertionError("a finished file should not need a stream pass")

    monkeypatch.setattr(dataset, "stream_pass", no_stream_pass)
    entries = DatasetIndex.scan(tmp_path).entries
    assert [e.num_frames for e in entries] == [3, 3] and all(e.complete for e in entries)


def test_scan_errors_name_the_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        DatasetIndex.scan(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty: no"):
        DatasetIndex.scan(tmp_path / "empty")


def test_contact_sheet(tmp_path):
    _dataset(tmp_path / "data", PLAN[:3])
    shutil.copy(tmp_path / "data" / "sim_reach" / min(os.listdir(tmp_path / "data" / "sim_reach")),
                tmp_path / "data" / "copy.mcap")
    index = DatasetIndex.scan(tmp_path / "data")
    out = contact_sheet(index.entries, tmp_path / "sheets" / "sheet.png", frames_per_episode=4, tile=32)
    sheet = cv2.imread(str(out))
    assert sheet.shape == (4 * (32 + 18), 4 * 43, 3)
    square = contact_sheet(index.entries, tmp_path / "square.png", frames_per_episode=4, tile=32,
                           aspect=1.0)
    assert cv2.imread(str(square)).shape == (4 * (32 + 18), 4 * 32, 3)
    capped = contact_sheet(index.entries, tmp_path / "capped.png", max_episodes=2)
    assert cv2.imread(str(capped)).shape == (2 * (96 + 18), 6 * 128, 3)
