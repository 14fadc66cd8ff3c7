"""Write a RealSense .db3 recording from frames, with no camera attached.

librealsense's own recorder wraps a software device that plays the given frames, so the
file is what the RealSense Viewer or `rs.recorder` would write for a real camera and
PlaybackSource (or any librealsense reader) plays it back. Used to make test recordings
and to turn mirror renders into camera-node input.

The recorder stamps messages with the time they reach it, not the frames' timestamps, so
real-time playback of a file written here replays it in a burst; play it non-real-time.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from calibration.schema import CameraIntrinsics
from robot.cameras.frames import Frame
from robot.cameras.librealsense import require_pyrealsense2

DEFAULT_SERIAL = "000000000000"
TIMESTAMP_DOMAINS = ("hardware_clock", "global_time", "system_time")  # librealsense's names
_COLOR_UID, _DEPTH_UID = 0, 1


def write_recording(path: str | Path, frames: Sequence[Frame], *, fps: int = 30,
                    intrinsics: CameraIntrinsics | None = None, serial: str = DEFAULT_SERIAL) -> Path:
    """Record `frames` (all the same size; depth in all or none) to `path` (.db3).

    intrinsics: the color (and depth) stream's pinhole model, sized like the frames; by
    default fx = fy = width, principal point at the centre. Depth is recorded on the color
    pixel grid with identity extrinsics, so aligning it to color changes nothing.
    """
    path = Path(path)
    if path.suffix != ".db3":
        raise ValueError(f"{path}: recordings must end in .db3 (librealsense writes ROS 2 SQLite bags)")
    height, width, has_depth = _check_frames(frames)
    intrinsics = intrinsics or CameraIntrinsics(width, height, float(width), float(width),
                                                (width - 1) / 2, (height - 1) / 2)
    if (intrinsics.width, intrinsics.height) != (width, height):
        raise ValueError(f"intrinsics are for {intrinsics.width}x{intrinsics.height}, frames are {width}x{height}")
    if intrinsics.distortion_model != "plumb_bob" and any(intrinsics.distortion):
        raise ValueError(f"intrinsics.distortion_model {intrinsics.distortion_model!r} cannot be recorded; "
                         "accepted: plumb_bob (librealsense's brown_conrady), or zero distortion")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.stem + ".partial.db3")  # never leave a half-written file under the name
    partial.unlink(missing_ok=True)
    _record(partial, frames, fps, intrinsics, serial, has_depth)
    partial.replace(path)
    return path


def _check_frames(frames: Sequence[Frame]) -> tuple[int, int, bool]:
    if not frames:
        raise ValueError("write_recording needs at least one frame")
    first = frames[0]
    for index, frame in enumerate(frames):
        if not isinstance(frame, Frame):
            raise ValueError(f"frames[{index}] must be a Frame, got {type(frame).__name__}")
        if frame.color.shape != first.color.shape or (frame.depth is None) != (first.depth is None):
            raise ValueError(f"frames[{index}] differs from frames[0]: every frame must have color of shape "
                             f"{first.color.shape} and {'depth' if first.depth is not None else 'no depth'}")
        if frame.timestamp_domain not in TIMESTAMP_DOMAINS:
            raise ValueError(f"frames[{index}].timestamp_domain {frame.timestamp_domain!r} is not one of "
                             f"{', '.join(TIMESTAMP_DOMAINS)}")
    return first.height, first.width, first.depth is not None


def _record(path: Path, frames: Sequence[Frame], fps: int, intrinsics: CameraIntrinsics,
            serial: str, has_depth: bool) -> None:
    rs = require_pyrealsense2()
    device = rs.software_device()
    device.register_info(rs.camera_info.name, "drr synthetic RealSense")
    device.register_info(rs.camera_info.serial_number, serial)
    color_sensor = device.add_sensor("RGB Camera")
    color_profile = _add_stream(rs, color_sensor, rs.stream.color, rs.format.rgb8, 3, _COLOR_UID, fps, intrinsics)
    sensors = [(color_sensor, color_profile)]
    if has_depth:
        depth_sensor = device.add_sensor("Stereo Module")
        depth_sensor.add_read_only_option(rs.option.depth_units, frames[0].depth_scale_m)
        depth_profile = _add_stream(rs, depth_sensor, rs.stream.depth, rs.format.z16, 2, _DEPTH_UID, fps, intrinsics)
        identity = rs.extrinsics()
        identity.rotation, identity.translation = [1, 0, 0, 0, 1, 0, 0, 0, 1], [0, 0, 0]
        depth_profile.register_extrinsics_to(color_profile, identity)
        sensors.append((depth_sensor, depth_profile))

    recorder = rs.recorder(str(path), device)
    recorded = recorder.query_sensors()  # in the order they were added
    for sensor, (_, profile) in zip(recorded, sensors):
        sensor.open(profile)
        sensor.start(lambda frame: None)  # the recorder writes frames on their way to this callback
    for frame in frames:
        _push(rs, color_sensor, color_profile, frame.color, 3, frame)
        if has_depth:
            _push(rs, depth_sensor, depth_profile, frame.depth, 2, frame)
    for sensor in recorded:
        sensor.stop()
        sensor.close()
    # The file is completed when the recorder is destroyed.
    del recorded, sensor, recorder
    gc.collect()


def _add_stream(rs: Any, sensor: Any, stream: Any, frame_format: Any, bpp: int, uid: int, fps: int,
                intrinsics: CameraIntrinsics) -> Any:
    video = rs.video_stream()
    video.type, video.index, video.uid = stream, 0, uid
    video.width, video.height, video.fps = intrinsics.width, intrinsics.height, fps
    video.bpp, video.fmt = bpp, frame_format
    video.intrinsics = _rs_intrinsics(rs, intrinsics)
    return rs.video_stream_profile(sensor.add_video_stream(video))


def _rs_intrinsics(rs: Any, camera: CameraIntrinsics) -> Any:
    result = rs.intrinsics()
    result.width, result.height = camera.width, camera.height
    result.fx, result.fy, result.ppx, result.ppy = camera.fx, camera.fy, camera.cx, camera.cy
    coeffs = [*camera.distortion, 0.0, 0.0, 0.0, 0.0, 0.0][:5]
    # librealsense's Brown-Conrady is OpenCV's plumb_bob (k1, k2, p1, p2, k3).
    result.model = rs.distortion.brown_conrady if any(coeffs) else rs.distortion.none
    result.coeffs = coeffs
    return result


def _push(rs: Any, sensor: Any, profile: Any, pixels: Any, bpp: int, frame: Frame) -> None:
    video_frame = rs.software_video_frame()
    video_frame.pixels = np.ascontiguousarray(pixels)
    video_frame.stride, video_frame.bpp = frame.width * bpp, bpp
    video_frame.timestamp = frame.timestamp_ns / 1e6  # librealsense counts milliseconds
    video_frame.domain = getattr(rs.timestamp_domain, frame.timestamp_domain)
    video_frame.frame_number = frame.frame_number
    video_frame.profile = profile
    if bpp == 2:
        video_frame.depth_units = frame.depth_scale_m
    sensor.on_video_frame(video_frame)
