"""Cameras without ROS: frame sources behind one interface, CameraInfo fields from the
calibration, and the image check every image consumer runs.

    with RealSenseSource(RealSenseConfig(serial="123456789012", depth=True)) as camera:
        frame = camera.read(timeout_s=0.1)   # Frame | None

    for frame in PlaybackSource("session.db3"):   # until the end of the recording
        ...

pyrealsense2 (the `realsense` extra) is imported when a RealSense source is made, so
the rest of the package works without it. In the mirror the sim renders its own frames.
"""

from robot.cameras.camera_info import camera_info_fields
from robot.cameras.frames import CameraError, EndOfStream, Frame, FrameSource
from robot.cameras.images import ACCEPTED_ENCODINGS, ImageError, check_image
from robot.cameras.playback import PlaybackSource
from robot.cameras.realsense import COLOR_MODES, DEPTH_MODES, CameraStatus, RealSenseConfig, RealSenseSource
from robot.cameras.recording import write_recording

__all__ = [
    "ACCEPTED_ENCODINGS",
    "COLOR_MODES",
    "DEPTH_MODES",
    "CameraError",
    "CameraStatus",
    "EndOfStream",
    "Frame",
    "FrameSource",
    "ImageError",
    "PlaybackSource",
    "RealSenseConfig",
    "RealSenseSource",
    "camera_info_fields",
    "check_image",
    "write_recording",
]
