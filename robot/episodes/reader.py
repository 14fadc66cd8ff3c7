"""Read an episode file back into aligned numpy arrays.

Records are read in stream order (no summary section needed), so a file cut short by
a crash yields every step up to its last complete chunk and is reported incomplete.
Per-frame arrays take the state and command messages of the same step as each image
(same stamp); a step missing one of them is dropped and counted as a problem.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from mcap.exceptions import EndOfFile, InvalidMagic
from mcap.records import Channel, Message, Metadata, Schema
from mcap.stream_reader import StreamReader

from robot.episodes import messages as msgs

_STEP_TOPICS = (msgs.JOINT_STATES_TOPIC, msgs.EE_POSE_TOPIC, msgs.GATED_TWIST_TOPIC,
                msgs.REQUESTED_TWIST_TOPIC, msgs.GRIPPER_TOPIC)
_REQUIRED = (msgs.JOINT_STATES_TOPIC, msgs.EE_POSE_TOPIC, msgs.GATED_TWIST_TOPIC, msgs.GRIPPER_TOPIC)


CENTER_SQUARE = "center"  # crop: the largest centred square, so square model inputs keep the aspect


class EpisodeReadError(Exception):
    """Not an MCAP file, or not one readable record in it."""


@dataclass
class Episode:
    path: Path
    metadata: dict[str, str]  # the "episode" record, updated with the "episode_end" record
    success: bool | None  # None without episode_end
    complete: bool
    problems: list[str]
    frames: np.ndarray  # (N, h, w, 3) uint8 RGB
    stamps_ns: np.ndarray  # (N,) int64
    joint_names: tuple[str, ...]  # arm joints; the gripper is in gripper_widths
    joint_positions: np.ndarray  # (N, J)
    joint_velocities: np.ndarray  # (N, J)
    gripper_widths: np.ndarray  # (N,) m
    ee_positions: np.ndarray  # (N, 3) base frame
    ee_orientations_xyzw: np.ndarray  # (N, 4)
    actions: np.ndarray  # (N, 7) float32: gated [linear(3), angular(3), gripper]
    requested_twists: np.ndarray  # (N, 6) float32, NaN where no requested command was logged
    camera_info: dict[str, Any] = field(default_factory=dict)  # of the recorded (full) image

    def __len__(self) -> int:
        return len(self.stamps_ns)


@dataclass
class StreamPass:
    """What one stream pass over a file found, whatever the messages' handler did."""

    records: dict[str, dict[str, str]] = field(default_factory=dict)  # metadata by name
    events: list[dict[str, Any]] = field(default_factory=list)
    images: int = 0
    error: str | None = None  # why the pass stopped before the footer


def stream_pass(path: Path, on_message: Callable[[str, str, Message], None] | None = None) -> StreamPass:
    """Walk the records of `path` in file order; decoding is up to `on_message`."""
    if not path.is_file():
        raise EpisodeReadError(f"{path}: episode file not found")
    size = path.stat().st_size
    found = StreamPass()
    schemas: dict[int, str] = {}
    channels: dict[int, tuple[str, str]] = {}
    content = 0
    with open(path, "rb") as stream:
        # No record can be longer than the file: a garbage length then fails fast
        # instead of asking for gigabytes.
        reader = StreamReader(stream, validate_crcs=True, record_size_limit=max(size, 1))
        records = reader.records
        while True:
            try:
                record = next(records)
            except StopIteration:
                break
            except InvalidMagic:
                raise EpisodeReadError(f"{path}: not an MCAP file (bad magic bytes)") from None
            except Exception as exc:  # noqa: BLE001 - sorted out below
                # Out of bytes: the writer was cut short. Otherwise a length, CRC or
                # compressed block is corrupt.
                at_end = isinstance(exc, EndOfFile) or stream.tell() >= size
                found.error = "truncated" if at_end else f"unreadable record ({type(exc).__name__}: {exc})"
                break
            if isinstance(record, Schema):
                schemas[record.id] = record.name
            elif isinstance(record, Channel):
                channels[record.id] = (record.topic, schemas.get(record.schema_id, ""))
            elif isinstance(record, Metadata):
                found.records[record.name] = dict(record.metadata)
                content += 1
            elif isinstance(record, Message) and record.channel_id in channels:
                content += 1
                topic, typename = channels[record.channel_id]
                if topic == msgs.IMAGE_TOPIC:
                    found.images += 1
                elif topic == msgs.EVENT_TOPIC:
                    found.events.append(_event(record.data, typename))
                if on_message is not None:
                    on_message(topic, typename, record)
    if content == 0:
        raise EpisodeReadError(f"{path}: no readable messages or metadata in {size} bytes"
                               + (f" ({found.error})" if found.error else ""))
    return found


def _event(data: bytes, typename: str) -> dict[str, Any]:
    try:
        return json.loads(msgs.deserialize(data, typename).data)
    except Exception:  # noqa: BLE001 - an unreadable event is only a missing reason
        return {"event": "unreadable"}


def episode_status(found: StreamPass, num_frames: int) -> tuple[bool | None, bool, list[str]]:
    """(success, complete, problems) from what a pass found and how many frames it kept."""
    start, end = found.records.get("episode"), found.records.get("episode_end")
    problems = [] if start is not None else ["no 'episode' metadata record"]
    no_end = "" if end is not None else " (no episode_end)"
    if found.error == "truncated":
        problems.append(f"file ends mid-record after {num_frames} frames{no_end}")
    elif found.error:
        problems.append(f"{found.error} after {num_frames} frames{no_end}")
    elif end is None:
        aborts = [e.get("reason", "") for e in found.events if e.get("event") == "abort"]
        reason = f"recording aborted: {aborts[-1]}" if aborts else "recording stopped without finish()"
        problems.append(f"no episode_end ({reason})")
    if end is not None and end.get("num_frames") not in (None, str(num_frames)):
        problems.append(f"episode_end says {end['num_frames']} frames, file holds {num_frames}")
    success = None if end is None else end.get("success") == "true"
    complete = end is not None and found.error is None and end.get("num_frames") == str(num_frames)
    return success, complete, problems


class _Steps:
    """Collects the messages of each step, keyed by the image that opens it."""

    def __init__(self, image_size: tuple[int, int] | None, crop: tuple[int, int, int, int] | str | None):
        self.image_size, self.crop = image_size, crop
        self.steps: list[dict[str, Any]] = []
        self.camera_info: dict[str, Any] = {}
        self.unmatched = 0
        self.decode_errors: dict[str, str] = {}

    def __call__(self, topic: str, typename: str, record: Message) -> None:
        if topic not in (msgs.IMAGE_TOPIC, msgs.CAMERA_INFO_TOPIC, *_STEP_TOPICS):
            return
        try:
            message = msgs.deserialize(record.data, typename)
            frame = _pixels(message) if topic == msgs.IMAGE_TOPIC else None
        except Exception as exc:  # noqa: BLE001 - one bad message costs its step, not the episode
            self.decode_errors.setdefault(topic, f"{type(exc).__name__}: {exc}")
            return
        if frame is not None:
            self.steps.append({"stamp": record.log_time, topic: self._resize(frame)})
        elif topic == msgs.CAMERA_INFO_TOPIC:
            self.camera_info = self.camera_info or _camera_info(message)
        elif self.steps and self.steps[-1]["stamp"] == record.log_time:
            self.steps[-1][topic] = message
        else:
            self.unmatched += 1

    def _resize(self, frame: np.ndarray) -> np.ndarray:
        height, width = frame.shape[:2]
        if self.crop == CENTER_SQUARE:
            side = min(height, width)
            top, left = (height - side) // 2, (width - side) // 2
            frame = frame[top:top + side, left:left + side]
        elif self.crop is not None:
            top, left, crop_h, crop_w = self.crop
            if min(top, left) < 0 or crop_h <= 0 or crop_w <= 0 or top + crop_h > height \
                    or left + crop_w > width:
                raise ValueError(f"crop (top, left, height, width)={self.crop} does not fit in the "
                                 f"{height}x{width} image")
            frame = frame[top:top + crop_h, left:left + crop_w]
        if self.image_size is not None and tuple(self.image_size) != frame.shape[:2]:
            out_h, out_w = self.image_size
            return cv2.resize(np.ascontiguousarray(frame), (out_w, out_h), interpolation=cv2.INTER_AREA)
        return np.array(frame)  # own the pixels, not a view of the decompressed chunk


def _pixels(image: Any) -> np.ndarray:
    """(H, W, 3) RGB view of a sensor_msgs/Image, row padding (step) removed."""
    height, width = int(image.height), int(image.width)
    if image.encoding not in ("rgb8", "bgr8"):
        raise ValueError(f"image encoding {image.encoding!r} is not rgb8 or bgr8")
    rows = np.asarray(image.data, dtype=np.uint8).reshape(height, int(image.step))
    frame = rows[:, : 3 * width].reshape(height, width, 3)
    return frame[..., ::-1] if image.encoding == "bgr8" else frame


def _camera_info(info: Any) -> dict[str, Any]:
    return {"frame_id": info.header.frame_id, "stamp_ns": msgs.stamp_ns(info),
            "width": int(info.width), "height": int(info.height),
            "distortion_model": info.distortion_model, "d": [float(v) for v in info.d],
            "k": [float(v) for v in info.k], "r": [float(v) for v in info.r],
            "p": [float(v) for v in info.p]}


def read_episode(path: str | Path, image_size: tuple[int, int] | None = (64, 64),
                 crop: tuple[int, int, int, int] | str | None = None) -> Episode:
    """Decode one episode. crop = (top, left, height, width) in source pixels, or "center" for
    the largest centred square, applied before resizing to image_size = (h, w) with
    INTER_AREA; image_size None keeps the (cropped) size."""
    path = Path(path)
    if image_size is not None and (len(image_size) != 2 or min(image_size) <= 0):
        raise ValueError(f"image_size must be (height, width) > 0 or None, got {image_size!r}")
    if crop is not None and crop != CENTER_SQUARE and len(crop) != 4:
        raise ValueError(f"crop must be (top, left, height, width) or {CENTER_SQUARE!r}, got {crop!r}")
    collected = _Steps(image_size, crop)
    found = stream_pass(path, collected)
    steps = [s for s in collected.steps if all(topic in s for topic in _REQUIRED)]
    episode = _assemble(path, found, steps, collected)
    dropped = len(collected.steps) - len(steps)
    if dropped:
        episode.problems.append(f"{dropped} frames dropped: their step lacks one of {', '.join(_REQUIRED)}")
    if collected.unmatched:
        episode.problems.append(f"{collected.unmatched} state/command messages match no frame stamp")
    episode.problems += [f"cannot decode {topic}: {error}" for topic, error in collected.decode_errors.items()]
    return episode


def _assemble(path: Path, found: StreamPass, steps: list[dict[str, Any]], collected: _Steps) -> Episode:
    success, complete, problems = episode_status(found, len(steps))
    metadata = {**found.records.get("episode", {}), **found.records.get("episode_end", {})}
    names: tuple[str, ...] = ()
    positions, velocities, widths, poses, actions, requested = [], [], [], [], [], []
    for step in steps:
        joints = step[msgs.JOINT_STATES_TOPIC]
        joint_names = list(joints.name)
        gripper = joint_names.index(msgs.GRIPPER_JOINT) if msgs.GRIPPER_JOINT in joint_names else None
        arm = [i for i in range(len(joint_names)) if i != gripper]
        names = names or tuple(joint_names[i] for i in arm)
        velocity = np.asarray(joints.velocity, dtype=np.float64)
        positions.append(np.asarray(joints.position, dtype=np.float64)[arm])
        velocities.append(velocity[arm] if len(velocity) else np.full(len(arm), np.nan))
        widths.append(np.nan if gripper is None else float(joints.position[gripper]))
        pose = step[msgs.EE_POSE_TOPIC].pose
        poses.append([pose.position.x, pose.position.y, pose.position.z, pose.orientation.x,
                      pose.orientation.y, pose.orientation.z, pose.orientation.w])
        actions.append([*_twist(step[msgs.GATED_TWIST_TOPIC]), step[msgs.GRIPPER_TOPIC].data])
        wanted = step.get(msgs.REQUESTED_TWIST_TOPIC)
        requested.append(_twist(wanted) if wanted is not None else [np.nan] * 6)
    count, joint_count = len(steps), len(names)
    pose_array = _rows(poses, 7, np.float64)
    frames = (np.stack([s[msgs.IMAGE_TOPIC] for s in steps]) if steps
              else np.zeros((0, *(collected.image_size or (0, 0)), 3), dtype=np.uint8))
    return Episode(
        path=path, metadata=metadata, success=success, complete=complete, problems=problems,
        frames=frames, stamps_ns=np.asarray([s["stamp"] for s in steps], dtype=np.int64).reshape(count),
        joint_names=names,
        joint_positions=_rows(positions, joint_count, np.float64),
        joint_velocities=_rows(velocities, joint_count, np.float64),
        gripper_widths=np.asarray(widths, dtype=np.float64),
        ee_positions=pose_array[:, :3], ee_orientations_xyzw=pose_array[:, 3:],
        actions=_rows(actions, 7, np.float32),
        requested_twists=_rows(requested, 6, np.float32),
        camera_info=collected.camera_info)


def _rows(values: list, width: int, dtype: type) -> np.ndarray:
    """(len(values), width) even when there are no values."""
    return np.asarray(values, dtype=dtype).reshape(len(values), width)


def _twist(message: Any) -> list[float]:
    linear, angular = message.twist.linear, message.twist.angular
    return [linear.x, linear.y, linear.z, angular.x, angular.y, angular.z]
