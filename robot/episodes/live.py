"""Recording episodes from live streams (what recorder_node runs), without ROS.

`StepAssembler` turns the streams a robot publishes (camera frames, joint states, end-effector
poses, the safety gate's commands) into the steps `EpisodeWriter.write_step` takes: frames are
kept at most once per record period (by their stamps); each takes the joint state and pose
nearest its stamp, and the first gate command received after it, i.e. the command the arm
executed in response to what the frame shows (sim/record.py pairs them the same way). A step's
gripper is the gate's gripper value when its twist was received.

`LiveRecorder` writes episodes on a background thread behind a bounded queue, so a slow disk
never blocks the caller (a ROS executor): steps and messages beyond the queue's bound are
dropped and counted, never buffered; episode begin and end always get through. Memory stays
bounded by the queue (an episode streams to disk step by step), and a killed process leaves
what EpisodeWriter guarantees: finished episodes intact, the current one readable up to its last
written step.
"""

from __future__ import annotations

import math
import queue
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from calibration.schema import CameraIntrinsics
from robot.episodes.messages import GRIPPER_JOINT
from robot.episodes.metadata import EpisodeMetadata, episode_path
from robot.episodes.writer import EpisodeWriter
from robot.types import ArmCommand, RobotState


def ros2msg_definition(typename: str, msg_text: str | None = None) -> bytes:
    """The "ros2msg" schema of a message type (its definition followed by those of every type it
    uses), as ros2 bag writes it. msg_text: the type's .msg file, for types the ROS 2 Kilted
    typestore does not know (our drr_interfaces); std/sensor/geometry types need none."""
    store = get_typestore(Stores.ROS2_KILTED)  # a fresh store: registering does not leak elsewhere
    if msg_text is not None:
        store.register(get_types_from_msg(msg_text, typename))
    elif typename not in store.types:
        raise ValueError(f"{typename} is not a ROS 2 Kilted message type: pass its .msg text")
    text, _ = store.generate_msgdef(typename, ros_version=2)
    return text.encode()


# ---------------------------------------------------------------- streams -> steps


@dataclass(frozen=True)
class LiveStep:
    stamp_ns: int  # the frame's stamp; every message of the step carries it
    image: np.ndarray
    state: RobotState
    command: ArmCommand  # what the safety gate sent after the frame


@dataclass(frozen=True)
class _Joints:
    names: tuple[str, ...]
    positions: np.ndarray
    velocities: np.ndarray
    gripper_width: float


class StepAssembler:
    """Frames wait until they can be completed: a command received after them (by the middleware's
    receive time, so an executor that serves its subscriptions out of arrival order pairs them
    all the same) and a joint state and pose stamped at or after them (so the nearest is known).
    A frame that waited command_wait_s is completed with what there is. All times in seconds on
    one clock (the receive timestamps' system clock)."""

    def __init__(self, record_period_s: float = 0.0, max_state_offset_s: float = 0.1, command_wait_s: float = 0.25,
                 finger_joints: Sequence[str] = (), history: int = 256) -> None:
        """record_period_s: keep at most one frame per period (0: every frame), on average exactly
        one when frames come faster. max_state_offset_s: a frame whose nearest joint state or pose
        is further away in time is dropped. command_wait_s: a frame still incomplete after this
        takes the last command (zero before any). finger_joints: joint_states names whose positions
        sum to the gripper opening. history: joint states, poses and commands kept for matching
        (cover the camera's latency at the joint-state rate)."""
        for name, value in (("record_period_s", record_period_s), ("max_state_offset_s", max_state_offset_s),
                            ("command_wait_s", command_wait_s)):
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"StepAssembler {name} must be a finite number >= 0, got {value!r}")
        if history < 1:
            raise ValueError(f"StepAssembler history must be >= 1, got {history!r}")
        self.record_period_ns = round(record_period_s * 1e9)
        self.max_offset_ns = round(max_state_offset_s * 1e9)
        self.command_wait_s = command_wait_s
        self.finger_joints = tuple(finger_joints)
        self._joints: deque[tuple[int, _Joints]] = deque(maxlen=history)
        self._poses: deque[tuple[int, tuple[np.ndarray, np.ndarray]]] = deque(maxlen=history)
        self._commands: deque[tuple[float, ArmCommand]] = deque(maxlen=history)  # (received, command)
        self._pending: deque[tuple[float, int, np.ndarray]] = deque()  # (received, stamp, image)
        self.counts = {"frames": 0, "decimated": 0, "out_of_order": 0, "no_state": 0, "late": 0, "flushed": 0}
        self.restart()

    def restart(self) -> None:
        """A new episode: frames still waiting are dropped, decimation and stamp order start over
        (the state and command history stays: it describes the arm, not the episode)."""
        self._pending.clear()
        self._due_ns: int | None = None
        self._last_frame_ns: int | None = None

    def add_joints(self, stamp_ns: int, names: Sequence[str], positions: Sequence[float],
                   velocities: Sequence[float] = ()) -> None:
        names = tuple(names)
        positions = np.asarray(positions, dtype=np.float64)
        velocities = np.asarray(velocities, dtype=np.float64)
        if velocities.shape != positions.shape:  # JointState may leave velocity empty
            velocities = np.full(positions.shape, np.nan)
        if GRIPPER_JOINT in names:  # already in the episode format's convention
            fingers = (GRIPPER_JOINT,)
        else:
            fingers = tuple(name for name in names if name in self.finger_joints)
        width = float(sum(positions[names.index(name)] for name in fingers)) if fingers else math.nan
        arm = [i for i, name in enumerate(names) if name not in fingers]
        self._joints.append((int(stamp_ns), _Joints(tuple(names[i] for i in arm), positions[arm], velocities[arm],
                                                    width)))

    def add_pose(self, stamp_ns: int, position: Sequence[float], orientation_xyzw: Sequence[float]) -> None:
        self._poses.append((int(stamp_ns), (np.asarray(position, dtype=np.float64),
                                            np.asarray(orientation_xyzw, dtype=np.float64))))

    def add_command(self, command: ArmCommand, received_s: float) -> None:
        """A command from the safety gate, with the time it was received."""
        self._commands.append((received_s, command))

    def add_frame(self, stamp_ns: int, image: np.ndarray, received_s: float) -> bool:
        """A camera frame, with the time it was received; False if decimated away or out of order."""
        stamp = int(stamp_ns)
        if self._last_frame_ns is not None and stamp <= self._last_frame_ns:
            self.counts["out_of_order"] += 1
            return False
        if self.record_period_ns:
            tolerance = self.record_period_ns // 4  # camera jitter
            if self._due_ns is not None and stamp < self._due_ns - tolerance:
                self.counts["decimated"] += 1
                return False
            # The schedule advances by whole periods, so the kept rate averages the period; a gap resyncs it.
            due = self.record_period_ns + (stamp if self._due_ns is None else self._due_ns)
            self._due_ns = due if due > stamp - tolerance else stamp + self.record_period_ns
        self._last_frame_ns = stamp
        self._pending.append((received_s, stamp, image))
        return True

    def steps(self, now_s: float) -> list[LiveStep]:
        """The frames that are complete, or have waited command_wait_s, in order."""
        return self._drain(lambda received: now_s - received >= self.command_wait_s, late="late")

    def flush(self) -> list[LiveStep]:
        """The episode ends: every frame still waiting, with what there is."""
        return self._drain(lambda received: True, late="flushed")

    def _drain(self, give_up: Callable[[float], bool], late: str) -> list[LiveStep]:
        steps = []
        while self._pending:
            received, stamp, image = self._pending[0]
            command = min((c for c in self._commands if c[0] > received), key=lambda c: c[0], default=None)
            stated = self._joints and self._poses and min(self._joints[-1][0], self._poses[-1][0]) >= stamp
            if not (command and stated):
                if not give_up(received):
                    break
                self.counts[late] += 1
                command = max(self._commands, key=lambda c: c[0], default=(0.0, ArmCommand.zero()))
            self._pending.popleft()
            joints, pose = (_nearest(self._joints, stamp, self.max_offset_ns),
                            _nearest(self._poses, stamp, self.max_offset_ns))
            if joints is None or pose is None:
                self.counts["no_state"] += 1
                continue
            state = RobotState(joints.names, joints.positions, joints.velocities, pose[0], pose[1],
                               joints.gripper_width, stamp_ns=stamp)
            steps.append(LiveStep(stamp, image, state, command[1].copy()))
            self.counts["frames"] += 1
        return steps


def _nearest(history: deque, stamp: int, max_offset_ns: int):
    best = min(history, key=lambda item: abs(item[0] - stamp), default=None)
    return None if best is None or abs(best[0] - stamp) > max_offset_ns else best[1]


# ---------------------------------------------------------------- steps -> files, off the caller's thread

_STOP = object()


class LiveRecorder:
    def __init__(self, out_dir: str | Path, camera: Callable[[tuple[int, int] | None], CameraIntrinsics],
                 max_queued: int = 30, report: Callable[[str, str], None] | None = None) -> None:
        """camera(image (height, width), or None before any frame): the intrinsics an episode file
        is opened with, at its first frame. max_queued: steps and messages waiting for the disk,
        beyond which they are dropped. report(level, text), level "info" | "warn" | "error":
        called from the writer thread."""
        if max_queued < 1:
            raise ValueError(f"LiveRecorder max_queued must be >= 1, got {max_queued!r}")
        self.out_dir = Path(out_dir)
        self.max_queued = max_queued
        self._camera = camera
        self._report = report or (lambda level, text: None)
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._queued = 0  # steps and messages in the queue
        self.stats = {"steps_written": 0, "steps_dropped": 0, "messages_written": 0, "messages_dropped": 0,
                      "episodes_finished": 0, "episodes_aborted": 0, "errors": 0, "last_error": "", "last_file": ""}
        self.episode_id = ""  # the episode between begin and end, caller side
        # Writer thread only:
        self._writer: EpisodeWriter | None = None
        self._opening: tuple[EpisodeMetadata, Path] | None = None  # begun, no frame yet
        self._early: list[tuple] = []  # messages before the file is open
        self._failed = False  # the current episode's file could not be written: drop until its end
        self._thread = threading.Thread(target=self._run, name="episode-writer", daemon=True)
        self._thread.start()

    @property
    def recording(self) -> bool:
        return bool(self.episode_id)

    @property
    def queued(self) -> int:
        return self._queued

    def begin(self, metadata: EpisodeMetadata, index: int) -> None:
        """Start an episode (a still open one is closed as incomplete first). The file is
        `episode_path(out_dir, metadata, index)`, opened at the first step."""
        self.episode_id = metadata.episode_id
        self._queue.put(("begin", metadata, index))

    def step(self, step: LiveStep) -> bool:
        """Queue a step of the current episode; False if dropped (queue full or no episode)."""
        return self._put_data("steps_dropped", ("step", step))

    def message(self, topic: str, typename: str, definition: bytes, data: bytes, stamp_ns: int) -> bool:
        """Queue one CDR message of another topic (EpisodeWriter.write_message); False if dropped."""
        return self._put_data("messages_dropped", ("message", topic, typename, definition, data, stamp_ns))

    def end(self, success: bool, extra: dict[str, str] | None = None) -> None:
        """Finish the current episode: episode_end metadata with success and extra."""
        if self.recording:
            self.episode_id = ""
            self._queue.put(("end", bool(success), dict(extra or {})))

    def abort(self, reason: str) -> None:
        """Close the current episode without episode_end: it reads as incomplete, with the reason."""
        if self.recording:
            self.episode_id = ""
            self._queue.put(("abort", reason))

    def close(self, reason: str = "recorder shut down", timeout_s: float = 10.0) -> None:
        """Abort an open episode, write what is queued, stop the thread."""
        self.abort(reason)
        self._queue.put((_STOP,))
        self._thread.join(timeout_s)

    def _put_data(self, counter: str, item: tuple) -> bool:
        if not self.recording:
            return False
        with self._lock:
            if self._queued >= self.max_queued:
                self.stats[counter] += 1
                return False
            self._queued += 1
        self._queue.put(item)
        return True

    def _count(self, counter: str) -> None:
        with self._lock:
            self.stats[counter] += 1

    # -------------------------------------------------------- writer thread

    def _run(self) -> None:
        while True:
            kind, *args = self._queue.get()
            if kind is _STOP:
                return
            if kind in ("step", "message"):
                with self._lock:
                    self._queued -= 1
            try:
                getattr(self, f"_do_{kind}")(*args)
            except Exception as exc:  # noqa: BLE001 - a bad step costs that step; the thread goes on
                self._error(f"{kind}: {type(exc).__name__}: {exc}")

    def _do_begin(self, metadata: EpisodeMetadata, index: int) -> None:
        self._do_abort("a new episode began before this one ended")
        self._opening, self._failed = (metadata, episode_path(self.out_dir, metadata, index)), False

    def _do_step(self, step: LiveStep) -> None:
        if self._open(step.image.shape[:2]):
            self._writer.write_step(step.image, step.state, step.command, stamp_ns=step.stamp_ns)
            self._count("steps_written")
        else:
            self._count("steps_dropped")

    def _do_message(self, *message) -> None:
        if self._writer is not None:
            self._writer.write_message(*message)
            self._count("messages_written")
        elif self._opening is not None and not self._failed and len(self._early) < self.max_queued:
            self._early.append(message)
        else:
            self._count("messages_dropped")

    def _do_end(self, success: bool, extra: dict[str, str]) -> None:
        if self._open(None):  # an episode without frames still gets its (empty) file
            writer, self._writer = self._writer, None
            path = writer.finish(success, extra)
            self._count("episodes_finished")
            self.stats["last_file"] = str(path)
            self._report("info", f"episode written: {path} ({writer.num_frames} frames, success {success})")
        self._opening, self._failed = None, False

    def _do_abort(self, reason: str) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.abort(reason)
            self._count("episodes_aborted")
            self.stats["last_file"] = str(writer.path)
            self._report("warn", f"episode left incomplete: {writer.path} ({writer.num_frames} frames): {reason}")
        elif self._opening is not None and not self._failed:
            self._report("warn", f"episode {self._opening[0].episode_id} ended without a frame ({reason}): no file")
        self._opening, self._early, self._failed = None, [], False

    def _open(self, image_size: tuple[int, int] | None) -> bool:
        """Whether a file is open for the current episode, opening it if needed."""
        if self._writer is None and self._opening is not None and not self._failed:
            metadata, path = self._opening
            try:
                self._writer = EpisodeWriter(path, metadata, self._camera(image_size))
            except Exception as exc:  # noqa: BLE001 - reported; the episode is dropped, the next may work
                self._failed = True
                self._error(f"cannot record episode {metadata.episode_id}: {type(exc).__name__}: {exc}")
                return False
            early, self._early = self._early, []
            for message in early:
                self._do_message(*message)
        return self._writer is not None

    def _error(self, text: str) -> None:
        self._count("errors")
        self.stats["last_error"] = text
        self._report("error", text)
