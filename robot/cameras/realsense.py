"""A live Intel RealSense camera (D400 family) through pyrealsense2's pipeline.

Color at WxH@fps, optionally depth aligned to color (rs.align), stamped with the camera's
own clock: global time (the device's hardware clock mapped onto the host's) when the sensor
offers it, as realsense2_camera does, else the hardware clock.

An unplugged or stalled camera (no frame for `stall_timeout_s`, or librealsense raising)
is re-opened by the same serial number with exponential backoff; `read` returns None
meanwhile and `status` counts the reconnects for /diagnostics.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from robot.cameras.frames import CameraError, Frame, FrameSource
from robot.cameras.librealsense import frame_from_frameset, require_pyrealsense2

# Color modes of the D400 family's RGB sensors (D415/D435/D455 datasheets), (width, height)
# -> frame rates. The camera has the last word: a mode it lacks fails at open with its list.
COLOR_MODES: dict[tuple[int, int], tuple[int, ...]] = {
    (320, 180): (6, 30, 60), (320, 240): (6, 30, 60), (424, 240): (6, 15, 30, 60),
    (640, 360): (6, 15, 30, 60), (640, 480): (6, 15, 30, 60), (848, 480): (6, 15, 30, 60),
    (960, 540): (6, 15, 30, 60), (1280, 720): (6, 15, 30), (1280, 800): (6, 15, 30),
    (1920, 1080): (6, 15, 30),
}
# Depth modes of the D400 stereo module; depth streams at the color frame rate.
DEPTH_MODES: dict[tuple[int, int], tuple[int, ...]] = {
    (424, 240): (6, 15, 30, 60, 90), (480, 270): (6, 15, 30, 60, 90), (640, 360): (6, 15, 30, 60, 90),
    (640, 480): (6, 15, 30, 60, 90), (848, 480): (6, 15, 30, 60, 90), (1280, 720): (6, 15, 30),
}
STREAM_FORMATS = ("rgb8", "bgr8")
# D400 serials are 12 digits; other models use up to 16 letters and digits.
_SERIAL = re.compile(r"[0-9A-Za-z]{8,16}")


@dataclass(frozen=True)
class RealSenseConfig:
    serial: str = ""  # empty: the first camera found (its serial is then kept for reconnects)
    width: int = 640
    height: int = 480
    fps: int = 30
    color_format: str = "rgb8"  # what the camera sends; frames are RGB either way
    depth: bool = False  # also stream depth, aligned to color
    depth_width: int = 640
    depth_height: int = 480
    global_time: bool = True
    stall_timeout_s: float = 1.0  # no frame for this long: the camera is taken as lost
    reconnect_backoff_s: float = 0.5  # wait before the first re-open; doubles per failure
    reconnect_backoff_max_s: float = 8.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "serial", _check_serial(self.serial))
        for name in ("width", "height", "fps", "depth_width", "depth_height"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"RealSenseConfig.{name} must be a positive int, got {value!r}")
        _check_mode("color", (self.width, self.height), self.fps, COLOR_MODES)
        if self.depth:
            _check_mode("depth", (self.depth_width, self.depth_height), self.fps, DEPTH_MODES)
        if self.color_format not in STREAM_FORMATS:
            raise ValueError(f"RealSenseConfig.color_format {self.color_format!r} is not supported; "
                             f"accepted: {', '.join(STREAM_FORMATS)}")
        for name in ("depth", "global_time"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"RealSenseConfig.{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("stall_timeout_s", "reconnect_backoff_s", "reconnect_backoff_max_s"):
            value = getattr(self, name)
            if (isinstance(value, bool) or not isinstance(value, numbers.Real)
                    or not math.isfinite(value) or value <= 0):
                raise ValueError(f"RealSenseConfig.{name} must be a finite number of seconds > 0, got {value!r}")
        if self.reconnect_backoff_max_s < self.reconnect_backoff_s:
            raise ValueError(f"RealSenseConfig.reconnect_backoff_max_s ({self.reconnect_backoff_max_s}) must be "
                             f">= reconnect_backoff_s ({self.reconnect_backoff_s})")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RealSenseConfig:
        """From parameters (YAML, ROS); a misspelt key must not silently become a default."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ValueError(f"unknown RealSense parameter(s) {unknown}; accepted: {names}")
        return cls(**values)

    def describe(self) -> str:
        depth = f" + depth {self.depth_width}x{self.depth_height}" if self.depth else ""
        return f"color {self.width}x{self.height}@{self.fps} {self.color_format}{depth}"


def _check_serial(serial: object) -> str:
    if not isinstance(serial, str):
        # YAML reads 012345678901 as a number and drops the leading zero.
        raise ValueError(f"RealSenseConfig.serial must be a string (quote it in YAML), got {serial!r}")
    serial = serial.removeprefix("_")  # realsense2_camera's way of keeping a serial a string
    if serial and not _SERIAL.fullmatch(serial):
        raise ValueError(f"RealSenseConfig.serial {serial!r} is not a RealSense serial number: expected 8 to "
                         "16 letters or digits (D400: 12 digits, e.g. '123456789012'), or empty for any camera")
    return serial


def _check_mode(stream: str, size: tuple[int, int], fps: int, modes: dict[tuple[int, int], tuple[int, ...]]) -> None:
    prefix = "depth_" if stream == "depth" else ""
    if size not in modes:
        accepted = ", ".join(f"{w}x{h}" for w, h in modes)
        raise ValueError(f"RealSenseConfig.{prefix}width/{prefix}height {size[0]}x{size[1]} is not a {stream} "
                         f"resolution of the D400 family; accepted: {accepted}")
    if fps not in modes[size]:
        raise ValueError(f"RealSenseConfig.fps {fps} is not available for {stream} at {size[0]}x{size[1]}; "
                         f"accepted: {', '.join(map(str, modes[size]))}")


@dataclass(frozen=True)
class CameraStatus:
    """For /diagnostics."""

    connected: bool
    serial: str
    reconnects: int  # successful re-opens since open()
    frames: int  # frames delivered since open()
    last_error: str  # why the camera was last taken as lost, or the last failed re-open


class RealSenseSource(FrameSource):
    """`pipeline_factory` makes an rs.pipeline (tests pass a fake); `clock`/`sleep` are seconds."""

    def __init__(self, config: RealSenseConfig | None = None, *,
                 pipeline_factory: Callable[[], Any] | None = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.config = config or RealSenseConfig()
        self._rs = require_pyrealsense2()
        self._pipeline_factory = pipeline_factory or self._rs.pipeline
        self._clock, self._sleep = clock, sleep
        self._serial = self.config.serial
        self._pipeline: Any = None
        self._align: Any = None
        self._opened = False
        self._lost = False
        self._last_frame_s = 0.0
        self._last_number: int | None = None
        self._next_attempt_s = 0.0
        self._backoff_s = self.config.reconnect_backoff_s
        self._reconnects = self._frames = 0
        self._last_error = ""

    def open(self) -> None:
        """Start streaming; a camera that is absent or lacks the mode fails here, loudly."""
        if self._opened:
            return
        try:
            self._start()
        except RuntimeError as exc:
            self._stop_pipeline()
            raise CameraError(f"RealSense {self._serial or '(any serial)'}: could not start "
                              f"{self.config.describe()}: {exc}; connected: {self._connected_cameras()}") from exc
        self._opened, self._lost = True, False
        self._reconnects = self._frames = 0

    def read(self, timeout_s: float = 1.0) -> Frame | None:
        if not self._opened:
            raise CameraError("RealSenseSource.read before open()")
        if self._lost:
            self._try_reconnect(timeout_s)
            return None
        try:
            ok, frames = self._pipeline.try_wait_for_frames(max(1, int(timeout_s * 1000)))
            frame = frame_from_frameset(frames, self._align)[0] if ok else None
        except RuntimeError as exc:  # librealsense raises once the device is gone
            self._mark_lost(f"librealsense: {exc}")
            return None
        now = self._clock()
        if frame is None or frame.frame_number == self._last_number:
            # The syncer can hand out one color frame twice (with a newer depth frame).
            if now - self._last_frame_s > self.config.stall_timeout_s:
                self._mark_lost(f"no frame for {self.config.stall_timeout_s:g} s")
            return None
        self._last_frame_s, self._last_number = now, frame.frame_number
        self._frames += 1
        return frame

    def close(self) -> None:
        self._stop_pipeline()
        self._opened = self._lost = False

    @property
    def status(self) -> CameraStatus:
        return CameraStatus(connected=self._opened and not self._lost, serial=self._serial,
                            reconnects=self._reconnects, frames=self._frames, last_error=self._last_error)

    def _start(self) -> None:
        rs, cfg = self._rs, self.config
        config = rs.config()
        if self._serial:
            config.enable_device(self._serial)
        config.enable_stream(rs.stream.color, cfg.width, cfg.height, getattr(rs.format, cfg.color_format), cfg.fps)
        if cfg.depth:
            config.enable_stream(rs.stream.depth, cfg.depth_width, cfg.depth_height, rs.format.z16, cfg.fps)
        pipeline = self._pipeline_factory()
        device = pipeline.start(config).get_device()
        self._pipeline = pipeline
        self._serial = device.get_info(rs.camera_info.serial_number)  # reconnects want this very camera
        if cfg.global_time:
            for sensor in device.query_sensors():
                if sensor.supports(rs.option.global_time_enabled):
                    sensor.set_option(rs.option.global_time_enabled, 1.0)
        self._align = rs.align(rs.stream.color) if cfg.depth else None
        self._last_frame_s, self._last_number = self._clock(), None

    def _mark_lost(self, reason: str) -> None:
        self._stop_pipeline()
        self._lost, self._last_error = True, reason
        self._backoff_s = self.config.reconnect_backoff_s
        self._next_attempt_s = self._clock() + self._backoff_s

    def _try_reconnect(self, timeout_s: float) -> None:
        wait = self._next_attempt_s - self._clock()
        if wait > timeout_s:
            self._sleep(max(timeout_s, 0.0))
            return
        if wait > 0:
            self._sleep(wait)
        try:
            self._start()
        except RuntimeError as exc:  # still unplugged, or enumerating
            self._stop_pipeline()
            self._last_error = f"re-open of {self._serial or 'the camera'} failed: {exc}"
            self._backoff_s = min(2 * self._backoff_s, self.config.reconnect_backoff_max_s)
            self._next_attempt_s = self._clock() + self._backoff_s
            return
        self._lost = False
        self._reconnects += 1

    def _stop_pipeline(self) -> None:
        pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None:
            try:
                pipeline.stop()
            except RuntimeError:  # a pipeline whose device vanished may refuse to stop
                pass

    def _connected_cameras(self) -> list[str]:
        try:
            devices = self._rs.context().query_devices()
            return [f"{d.get_info(self._rs.camera_info.name)} {d.get_info(self._rs.camera_info.serial_number)}"
                    for d in devices]
        except RuntimeError as exc:
            return [f"(could not list cameras: {exc})"]
