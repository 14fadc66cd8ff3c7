"""Frames from a .db3 recording made by librealsense's recorder (the RealSense Viewer,
rs.recorder, or `write_recording`), played through the same pipeline as a live camera.

Non-real-time by default: every recorded frame is delivered, as fast as it is read, which
is what offline processing and tests want; real_time=True drops frames to keep the
recorded pace, as a live camera would.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from robot.cameras.frames import CameraError, EndOfStream, Frame, FrameSource
from robot.cameras.librealsense import frame_from_frameset, require_pyrealsense2

_POLL_S = 0.05  # how often a read checks whether playback has reached the end
# The end of a recording is a "stopped" status after playback started (librealsense reports both
# through a callback), then this long without a frame: the pipeline's syncer still hands out frames
# the playback thread read before it stopped. Before the first start, "stopped" means not started
# yet, which on a loaded machine outlasted the 2 s grace that was here (a CI run got no frame).
_END_QUIET_S = 0.25
_START_TIMEOUT_S = 30.0  # a playback that has not started by then is taken as ended (read() cannot hang)


class PlaybackSource(FrameSource):
    def __init__(self, path: str | Path, *, depth: bool = False, loop: bool = False,
                 real_time: bool = False) -> None:
        """depth: also play the depth stream, aligned to color (the file must have one).
        loop: start over at the end (frame numbers and timestamps start over too)."""
        self.path = Path(path)
        self.depth, self.loop, self.real_time = depth, loop, real_time
        self._rs = require_pyrealsense2()
        self._pipeline = None
        self._playback = None
        self._align = None
        self._pairing = _OnePerColorFrame()

    def open(self) -> None:
        if self._pipeline is not None:
            return
        if not self.path.is_file():
            raise CameraError(f"{self.path}: recording not found")
        rs = self._rs
        pipeline, config = rs.pipeline(), rs.config()
        try:
            config.enable_device_from_file(str(self.path), repeat_playback=self.loop)
            config.enable_stream(rs.stream.color)
            if self.depth:
                config.enable_stream(rs.stream.depth)
            # Resolving first hands us the playback device before it plays: real-time mode
            # set after start races the first frames, and loses them.
            playback = config.resolve(pipeline).get_device().as_playback()
            playback.set_real_time(self.real_time)
            self._started_at = self._stopped_at = None
            playback.set_status_changed_callback(self._on_status)  # before start: the first "playing" is seen
            pipeline.start(config)
        except RuntimeError as exc:
            raise CameraError(f"{self.path}: cannot play {'color + depth' if self.depth else 'color'} "
                              f"({exc}); recorded streams: {self._recorded_streams()}") from exc
        self._pipeline, self._playback = pipeline, playback
        self._opened_at = self._last_frame_at = time.monotonic()
        self._align = rs.align(rs.stream.color) if self.depth else None
        self._pairing = _OnePerColorFrame()

    def read(self, timeout_s: float = 1.0) -> Frame | None:
        if self._pipeline is None:
            raise CameraError(f"{self.path}: PlaybackSource.read before open()")
        deadline = time.monotonic() + timeout_s
        while True:
            wait_ms = max(1, int(1000 * min(_POLL_S, max(deadline - time.monotonic(), 0.0))))
            ok, frames = self._pipeline.try_wait_for_frames(wait_ms)
            if ok:
                self._last_frame_at = time.monotonic()
                frame = self._pairing.offer(*frame_from_frameset(frames, self._align))
                if frame is not None:
                    return frame
            elif self._at_end():
                frame = self._pairing.flush()
                if frame is None:
                    raise EndOfStream(f"{self.path}: end of recording")
                return frame
            if time.monotonic() >= deadline:
                return None

    def _on_status(self, status) -> None:
        """librealsense's playback thread: when playback (re)started and last stopped."""
        if status == self._rs.playback_status.playing:
            self._started_at = time.monotonic()
        elif status == self._rs.playback_status.stopped:
            self._stopped_at = time.monotonic()

    def _at_end(self) -> bool:
        """Playback stopped after it started and no frame has come since (module comment)."""
        now, started, stopped = time.monotonic(), self._started_at, self._stopped_at
        if started is None:
            return now - self._opened_at > _START_TIMEOUT_S
        return (stopped is not None and stopped >= started
                and self._playback.current_status() == self._rs.playback_status.stopped
                and now - max(stopped, self._last_frame_at) > _END_QUIET_S)

    def close(self) -> None:
        pipeline, self._pipeline, self._playback = self._pipeline, None, None
        if pipeline is not None:
            pipeline.stop()

    def _recorded_streams(self) -> list[str]:
        rs = self._rs
        try:
            config = rs.config()
            config.enable_device_from_file(str(self.path), repeat_playback=False)
            profiles = config.resolve(rs.pipeline()).get_streams()
        except RuntimeError as exc:
            return [f"(unreadable: {exc})"]
        return [f"{p.stream_type().name} {p.format().name}" for p in profiles]


class _OnePerColorFrame:
    """Each color frame once, with the closest depth frame the syncer offered for it.

    In playback the pipeline's syncer hands out a color frame twice when the file has the
    depth frame after it: first with the previous depth frame, then with its own. So an
    offer is held until the next one shows whether a better match follows.
    """

    def __init__(self) -> None:
        self._held: tuple[Frame, float] | None = None

    def offer(self, frame: Frame, depth_gap_s: float = math.inf) -> Frame | None:
        held = self._held
        if held is not None and _same_capture(held[0], frame):
            if depth_gap_s < held[1]:
                self._held = (frame, depth_gap_s)
            return None
        self._held = (frame, depth_gap_s)
        return held[0] if held is not None else None

    def flush(self) -> Frame | None:
        held, self._held = self._held, None
        return held[0] if held is not None else None


def _same_capture(a: Frame, b: Frame) -> bool:
    return a.frame_number == b.frame_number and a.timestamp_ns == b.timestamp_ns
