"""What the RealSense sources share: the guarded pyrealsense2 import and frameset -> Frame."""

from __future__ import annotations

import ctypes
import glob
import math
import os
import sys
from types import ModuleType
from typing import Any

import numpy as np

from robot.cameras.frames import CameraError, Frame

# Color formats a source accepts, and how each becomes RGB.
COLOR_FORMATS = ("rgb8", "bgr8", "rgba8", "bgra8")


def require_pyrealsense2() -> ModuleType:
    load_ros2_fastdds_first()
    try:
        import pyrealsense2 as rs
    except ImportError as exc:  # also a missing libusb: the module loads it at import
        raise CameraError("RealSense sources need pyrealsense2: pip install -e '.[realsense]' "
                          f"(on Debian it also needs apt-get install libusb-1.0-0); import failed: {exc}"
                          ) from exc
    return rs


def load_ros2_fastdds_first() -> None:
    """Load ROS 2's Fast DDS, where it is installed, before pyrealsense2 (the one runtime patch of a
    third-party package here, and why). pyrealsense2 >= 2.56 embeds a Fast DDS 2 for its DDS
    cameras and exports that copy's singletons (eprosima::SystemInfo::instance()::singleton, ...)
    as process-unique symbols, which the dynamic linker binds to the first library that defines
    them. Loaded first, pyrealsense2 owned them, ROS 2's Fast DDS 3 built its larger objects in
    pyrealsense2's storage, and the process crashed at exit (a test session that read a RealSense
    recording before starting rclpy: exit code 139). Loaded second, it leaves them to Fast DDS 3 and
    never touches them as long as librealsense's own DDS support stays off (its default)."""
    prefixes = [sys.prefix, *os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)]
    folders = [os.path.join(prefix, "lib") for prefix in prefixes if prefix]
    folders += os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep)
    for folder in filter(None, folders):
        found = sorted(glob.glob(os.path.join(folder, "libfastdds.so*")))
        if found:
            ctypes.CDLL(found[0])  # already loaded (rclpy started first): nothing happens
            return


def ms_to_ns(milliseconds: float) -> int:
    return int(round(milliseconds * 1_000_000))


def frame_from_frameset(frames: Any, align: Any = None) -> tuple[Frame, float]:
    """A pipeline frameset as a Frame (data copied: librealsense recycles its buffers), and
    how far apart in time its depth and color frames are (s; inf when it has no depth)."""
    if align is not None:
        frames = align.process(frames)
    color = frames.get_color_frame()
    if not color:
        raise CameraError("the camera delivered a frameset without a color frame")
    frame_format = color.get_profile().format().name
    rgb = to_rgb(np.asanyarray(color.get_data()), frame_format)
    depth, depth_scale, gap_s = None, 0.001, math.inf
    depth_frame = frames.get_depth_frame()
    if depth_frame:
        depth = np.array(np.asanyarray(depth_frame.get_data()), dtype=np.uint16)
        depth_scale = float(depth_frame.get_units())
        gap_s = abs(depth_frame.get_timestamp() - color.get_timestamp()) / 1000.0
    frame = Frame(color=rgb, depth=depth, depth_scale_m=depth_scale,
                  timestamp_ns=ms_to_ns(color.get_timestamp()), frame_number=int(color.get_frame_number()),
                  timestamp_domain=color.get_frame_timestamp_domain().name)
    return frame, gap_s


def to_rgb(pixels: np.ndarray, frame_format: str) -> np.ndarray:
    """A copy in RGB order; the camera's buffer is reused once the frame is released."""
    if frame_format not in COLOR_FORMATS:
        raise CameraError(f"color format {frame_format!r} is not supported; accepted: {', '.join(COLOR_FORMATS)}")
    if frame_format.startswith("bgr"):
        pixels = pixels[..., 2::-1]
    return np.ascontiguousarray(pixels[..., :3], dtype=np.uint8)
