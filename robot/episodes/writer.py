"""Write one episode as a ROS 2 MCAP bag (profile "ros2", CDR messages, ros2msg schemas).

Crash safety: every step is closed as its own zstd chunk and flushed to the OS, so a
process that dies mid-episode leaves a file readable up to its last complete step. The
"episode" metadata is written before the first step; "episode_end" only by `finish`, so
a file without it reads as incomplete.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import numpy as np
from mcap.well_known import MessageEncoding, Profile, SchemaEncoding
from mcap.writer import LIBRARY_IDENTIFIER, CompressionType, Writer

from calibration.schema import CameraIntrinsics
from robot.episodes import messages as msgs
from robot.episodes.metadata import RESERVED_KEYS, EpisodeMetadata, check_string_dict
from robot.types import ArmCommand, RobotState

# Chunks close on our explicit per-step flush, never on size, so one step is one chunk
# and a crash can never leave half a step readable.
_NEVER_SPLIT = 1 << 40


class EpisodeWriter:
    """Context manager; leaving the block without `finish` keeps the file, as incomplete."""

    def __init__(self, path: str | Path, metadata: EpisodeMetadata, camera: CameraIntrinsics) -> None:
        self.path = Path(path)
        if self.path.suffix != ".mcap":
            # ros2 bag picks its storage plugin by extension; DatasetIndex scans *.mcap.
            raise ValueError(f"{self.path}: episode files must end in .mcap")
        self.metadata = metadata
        self.camera = camera
        self.num_frames = 0
        self._first_stamp: int | None = None
        self._last_stamp: int | None = None
        self._joint_names: tuple[str, ...] | None = None
        self._file = _open_new(self.path)
        self._closed = False
        try:
            self._mcap = Writer(self._file, chunk_size=_NEVER_SPLIT, compression=CompressionType.ZSTD)
            self._mcap.start(profile=Profile.ROS2, library=f"drr robot.episodes; {LIBRARY_IDENTIFIER}")
            self._channels = {topic: self._register(topic, typename) for topic, typename in msgs.TOPICS.items()}
            self._extra_types: dict[str, str] = {}  # write_message's topics
            created = datetime.now(timezone.utc).isoformat(timespec="seconds")
            self._mcap.add_metadata("episode", metadata.to_record(created))
            self._file.flush()
        except BaseException:
            self._file.close()
            raise

    def _register(self, topic: str, typename: str) -> int:
        schema_id = self._mcap.register_schema(typename, SchemaEncoding.ROS2,
                                               msgs.message_definition(typename))
        return self._mcap.register_channel(topic, MessageEncoding.CDR, schema_id)

    def _publish(self, topic: str, message: Any, stamp: int) -> None:
        self._mcap.add_message(self._channels[topic], log_time=stamp, publish_time=stamp,
                               data=msgs.serialize(message))

    def _event(self, event: str, stamp: int, **fields: Any) -> None:
        text = json.dumps({"event": event, "episode_id": self.metadata.episode_id, **fields})
        self._publish(msgs.EVENT_TOPIC, msgs.string_msg(text), stamp)

    def write_step(self, image: np.ndarray, state: RobotState, command: ArmCommand,
                   requested: ArmCommand | None = None, stamp_ns: int | None = None) -> None:
        """One control step: the frame and state seen at `stamp_ns` and the command sent then.

        `command` is what the safety gate let through; `requested` what the command
        source asked for. All messages of the step carry the same stamp.
        """
        self._check_open()
        stamp = int(state.stamp_ns if stamp_ns is None else stamp_ns)
        self._check_step(image, state, stamp)
        frame = self.metadata.base_frame
        if self._first_stamp is None:
            self._event("start", stamp, task=self.metadata.task, source=self.metadata.source)
            self._publish(msgs.CAMERA_INFO_TOPIC, msgs.camera_info_msg(self.camera, stamp), stamp)
            self._first_stamp = stamp
        self._publish(msgs.IMAGE_TOPIC, msgs.image_msg(image, stamp, self.camera.frame_id), stamp)
        self._publish(msgs.JOINT_STATES_TOPIC, msgs.joint_state_msg(state, stamp), stamp)
        self._publish(msgs.EE_POSE_TOPIC, msgs.pose_msg(state, stamp, frame), stamp)
        self._publish(msgs.GATED_TWIST_TOPIC, msgs.twist_msg(command, stamp, frame), stamp)
        if requested is not None:
            self._publish(msgs.REQUESTED_TWIST_TOPIC, msgs.twist_msg(requested, stamp, frame), stamp)
        self._publish(msgs.GRIPPER_TOPIC, msgs.float64_msg(command.gripper), stamp)
        self._mcap.flush()  # closes this step's chunk and flushes the file object
        self._last_stamp = stamp
        self.num_frames += 1

    def write_message(self, topic: str, typename: str, definition: bytes, data: bytes, stamp_ns: int) -> None:
        """One already CDR-serialised message of a topic outside the step's (a Reward, an episode
        event), registered on first use with `definition` as its ros2msg schema. It reaches the
        disk in the next step's chunk, or at finish."""
        self._check_open()
        if topic in msgs.TOPICS:
            raise ValueError(f"{self.path}: {topic} is written by write_step, not write_message")
        channel = self._channels.get(topic)
        if channel is None:
            schema_id = self._mcap.register_schema(typename, SchemaEncoding.ROS2, definition)
            channel = self._channels[topic] = self._mcap.register_channel(topic, MessageEncoding.CDR, schema_id)
            self._extra_types[topic] = typename
        elif self._extra_types[topic] != typename:
            raise ValueError(f"{self.path}: {topic} carries {self._extra_types[topic]}, not {typename}")
        self._mcap.add_message(channel, log_time=int(stamp_ns), publish_time=int(stamp_ns), data=bytes(data))

    def _check_step(self, image: np.ndarray, state: RobotState, stamp: int) -> None:
        expected = (self.camera.height, self.camera.width, 3)
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.shape != expected:
            got = (f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray)
                   else type(image).__name__)
            raise ValueError(f"{self.path}: image must be uint8 RGB of shape {expected} (camera "
                             f"height, width, 3), got {got}")
        names = tuple(state.joint_names)
        if msgs.GRIPPER_JOINT in names:
            raise ValueError(f"{self.path}: joint name {msgs.GRIPPER_JOINT!r} is reserved for the "
                             "gripper width (RobotState.gripper_width)")
        for field_name in ("joint_positions", "joint_velocities"):
            if np.shape(getattr(state, field_name)) != (len(names),):
                raise ValueError(f"{self.path}: RobotState.{field_name} has shape "
                                 f"{np.shape(getattr(state, field_name))}, expected ({len(names)},) "
                                 "to match joint_names")
        if self._joint_names is not None and names != self._joint_names:
            raise ValueError(f"{self.path}: joint names changed mid-episode from {self._joint_names} "
                             f"to {names}")
        self._joint_names = names
        if self._last_stamp is not None and stamp <= self._last_stamp:
            raise ValueError(f"{self.path}: step stamp {stamp} ns is not after the previous step's "
                             f"{self._last_stamp} ns (is RobotState.stamp_ns set?)")

    def finish(self, success: bool, extra: dict[str, str] | None = None) -> Path:
        """Write the end event and the "episode_end" metadata, then the summary; returns the path."""
        self._check_open()
        extra = check_string_dict(extra, "finish(extra=...)")
        stamp = self._last_stamp if self._last_stamp is not None else 0
        start = self._first_stamp if self._first_stamp is not None else stamp
        end_record = {
            "success": "true" if success else "false",
            "num_frames": str(self.num_frames),
            "duration_s": repr((stamp - start) / 1e9),  # first to last frame stamp
            "start_stamp_ns": str(start),
            "end_stamp_ns": str(stamp),
        }
        # Readers merge both records into one dict: an extra may not shadow a fixed key.
        shadowed = sorted(set(extra) & (set(end_record) | set(RESERVED_KEYS)))
        if shadowed:
            raise ValueError(f"{self.path}: finish(extra=...) keys {shadowed} clash with fixed "
                             "episode / episode_end keys")
        end_record.update(extra)
        self._event("end", stamp, success=bool(success), num_frames=self.num_frames)
        self._mcap.flush()  # the end event lands before episode_end, as it was sent
        self._mcap.add_metadata("episode_end", end_record)
        self._close(durable=True)
        return self.path

    def abort(self, reason: str) -> None:
        """Close without "episode_end": the episode reads as incomplete, the file stays."""
        if self._closed:
            return
        try:
            self._event("abort", self._last_stamp or 0, reason=reason)
            self._close(durable=False)
        finally:
            self._closed = True
            self._file.close()

    def _close(self, durable: bool) -> None:
        self._mcap.finish()
        self._file.flush()
        if durable:
            os.fsync(self._file.fileno())  # once per episode: a finished episode survives power loss
        self._file.close()
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self.path}: episode writer is already closed")

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._closed:
            return
        reason = "closed without finish()" if exc_type is None else f"{exc_type.__name__}: {exc}"
        try:
            self.abort(reason)
        except Exception:
            # The original exception matters more than a failed footer; the data is on disk.
            if exc_type is None:
                raise


def _open_new(path: Path) -> BinaryIO:
    """Create the file exclusively: an existing episode is never overwritten."""
    directory = path.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(f"episode output directory {directory} cannot be created: "
                      f"{exc.strerror or exc}") from None
    try:
        return open(path, "xb")
    except FileExistsError:
        raise FileExistsError(f"{path}: episode file already exists; refusing to overwrite it") from None
    except OSError as exc:
        raise OSError(f"episode output directory {directory} is not writable "
                      f"({exc.strerror or exc})") from None
