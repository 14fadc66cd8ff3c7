"""camera_node: the cell's color camera on realsense2_camera's topic names, from one of three sources.

  source realsense  a live RealSense (robot.cameras.RealSenseSource: serial, width x height @ fps,
                    optional depth aligned to color; an unplugged camera is re-opened and counted)
  source playback   a .db3 recording (robot.cameras.PlaybackSource, e.g. from write_recording), every
                    frame in order, paced at `fps` (0: as fast as it reads), optionally looping
  source sim        the mirror: republishes sim_arm_node's rendered camera

Either way the official realsense2_camera driver is a drop-in replacement for this node.

Publishes (sensor QoS):
  camera/camera/color/image_raw                    sensor_msgs/Image rgb8, stamp = the sensor's stamp,
                                                   frame_id = the calibration's optical frame
  camera/camera/color/camera_info                  sensor_msgs/CameraInfo from the calibration YAML
                                                   (robot.cameras.camera_info_fields), same stamp
  camera/camera/aligned_depth_to_color/image_raw   sensor_msgs/Image 16UC1 in mm, when depth is on
  camera/camera/aligned_depth_to_color/camera_info (the color stream's, as depth is aligned to it)
  /diagnostics                                     frame rate, publish latency, reconnects, frames
Subscribes (source sim): sim_arm_node/camera/image_raw (sensor_msgs/Image, sensor QoS)
Parameters: source, calibration, serial, width, height, fps, depth (realsense: the D400 mode; playback
  takes fps as its pace and depth if the file has it), path, loop (playback).
"""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image

from calibration import default_calibration_path
from drr_ros import messages
from drr_ros.wiring import (
    ERROR,
    OK,
    SENSOR_QOS,
    WARN,
    ConfigError,
    Diagnostics,
    Param,
    calibration_of,
    declare,
    invalid,
    main_of,
)
from robot.cameras import (
    CameraError,
    EndOfStream,
    Frame,
    PlaybackSource,
    RealSenseConfig,
    RealSenseSource,
    camera_info_fields,
)

SOURCES = ("realsense", "playback", "sim")
COLOR, COLOR_INFO = "camera/camera/color/image_raw", "camera/camera/color/camera_info"
DEPTH, DEPTH_INFO = ("camera/camera/aligned_depth_to_color/image_raw",
                     "camera/camera/aligned_depth_to_color/camera_info")
SIM_IMAGE = "sim_arm_node/camera/image_raw"
READ_TIMEOUT_S = 0.2  # a read returns this often, so the node stops promptly

PARAMS = (
    Param("source", "realsense", "where frames come from", choices=SOURCES),
    Param("calibration", str(default_calibration_path()), "cell calibration YAML: intrinsics and optical frame"),
    Param("serial", "", "realsense: serial number ('' = the first camera found)"),
    Param("width", 640, "realsense: color width in pixels", gt=0, le=4096),
    Param("height", 480, "realsense: color height in pixels", gt=0, le=4096),
    Param("fps", 30, "realsense: the mode's frame rate; playback: frames per second (0: as fast as read)",
          ge=0, le=300),
    Param("depth", False, "realsense, playback: also publish depth aligned to color"),
    Param("path", "", "playback: the .db3 recording"),
    Param("loop", False, "playback: start over at the end"),
)


class CameraNode(Node):
    NAME = "camera_node"

    def __init__(self) -> None:
        super().__init__(self.NAME)
        p = declare(self, PARAMS)
        self.calibration = calibration_of(p.calibration)
        self.p, self.frame_id = p, self.calibration.camera.frame_id
        self._infos: dict[tuple[int, int], CameraInfo] = {}
        self._frames = self._errors = 0
        self._last_error, self._ended = "", False
        self._image_out = self.create_publisher(Image, COLOR, SENSOR_QOS)
        self._info_out = self.create_publisher(CameraInfo, COLOR_INFO, SENSOR_QOS)
        self._depth_out = self._depth_info_out = None
        if p.depth and p.source != "sim":
            self._depth_out = self.create_publisher(Image, DEPTH, SENSOR_QOS)
            self._depth_info_out = self.create_publisher(CameraInfo, DEPTH_INFO, SENSOR_QOS)
        self.source = None
        self._stop = threading.Event()
        if p.source == "sim":
            self.create_subscription(Image, SIM_IMAGE, self._on_sim_image, SENSOR_QOS)
            expected = None
        else:
            self.source = self._open_source(p)
            expected = p.fps or None
        self.diagnostics = Diagnostics(self, expected, self._health)
        self._reader = None
        if self.source is not None:
            self._reader = threading.Thread(target=self._read_loop, name="camera_reader", daemon=True)
            self._reader.start()
        self.get_logger().info(f"publishing {COLOR} from {self._describe()}")

    def _open_source(self, p) -> RealSenseSource | PlaybackSource:
        if p.source == "realsense":
            try:
                config = RealSenseConfig(serial=p.serial, width=p.width, height=p.height, fps=p.fps, depth=p.depth)
            except ValueError as error:
                raise ConfigError(f"parameters of source realsense are invalid: {error}") from None
        elif not p.path:
            raise invalid("path", p.path, "source playback needs the .db3 recording to play")
        try:  # the constructors import pyrealsense2 (CameraError if it is missing)
            source = RealSenseSource(config) if p.source == "realsense" else \
                PlaybackSource(p.path, depth=p.depth, loop=p.loop)
            source.open()
        except CameraError as error:
            raise ConfigError(f"cannot start source {p.source}: {error}") from None
        return source

    def _describe(self) -> str:
        if self.p.source == "sim":
            return f"the mirror ({SIM_IMAGE})"
        if self.p.source == "playback":
            pace = f"{self.p.fps} fps" if self.p.fps else "as fast as read"
            return f"recording {self.p.path} ({pace}{', looping' if self.p.loop else ''})"
        return f"RealSense {self.source.config.serial or '(first found)'} {self.source.config.describe()}"

    def destroy_node(self) -> None:
        # Also called by rclpy on a node whose __init__ failed half-way (a bad parameter).
        if getattr(self, "_reader", None) is not None:
            self._stop.set()
            self._reader.join(timeout=2.0)
        if getattr(self, "source", None) is not None:
            self.source.close()
        super().destroy_node()

    # ------------------------------------------------------------ sources

    def _read_loop(self) -> None:
        period = 1.0 / self.p.fps if self.p.source == "playback" and self.p.fps else 0.0
        next_s = time.monotonic()
        while not self._stop.is_set() and self.context.ok():
            try:
                frame = self.source.read(timeout_s=READ_TIMEOUT_S)
            except EndOfStream:
                self._ended = True
                self.get_logger().info(f"end of recording {self.p.path} after {self._frames} frames")
                return
            except CameraError as error:
                self._errors, self._last_error = self._errors + 1, str(error)
                self.get_logger().error(f"camera read failed: {error}", throttle_duration_sec=5.0)
                self._stop.wait(0.5)
                continue
            if frame is None:
                continue
            if period:
                self._stop.wait(max(0.0, next_s - time.monotonic()))
                next_s = max(next_s + period, time.monotonic() - period)
            try:
                self._publish(frame)
            except Exception:  # noqa: BLE001 - rclpy's SIGTERM handler shuts the context down before destroy_node
                return

    def _publish(self, frame: Frame) -> None:
        start = time.perf_counter()
        stamp = messages.stamp(frame.timestamp_ns)
        self._image_out.publish(messages.image_msg(frame.color, stamp, self.frame_id))
        info = self._info(frame.width, frame.height, stamp)
        self._info_out.publish(info)
        if self._depth_out is not None and frame.depth is not None:
            self._depth_out.publish(_depth_msg(frame, stamp, self.frame_id))
            self._depth_info_out.publish(info)
        self._frames += 1
        self.diagnostics.tick(time.perf_counter() - start)

    def _on_sim_image(self, msg: Image) -> None:
        start = time.perf_counter()
        msg.header.frame_id = self.frame_id  # the mirror renders the same calibration's camera
        self._image_out.publish(msg)
        self._info_out.publish(self._info(msg.width, msg.height, msg.header.stamp))
        self._frames += 1
        self.diagnostics.tick(time.perf_counter() - start)

    def _info(self, width: int, height: int, stamp) -> CameraInfo:
        if (width, height) not in self._infos:
            try:
                fields = camera_info_fields(self.calibration, width, height)
            except ValueError as error:
                self.get_logger().error(f"no CameraInfo for {width}x{height} images: {error}",
                                        throttle_duration_sec=5.0)
                fields = {"frame_id": self.frame_id, "width": width, "height": height}
            fields.pop("frame_id")
            self._infos[(width, height)] = CameraInfo(**fields)
            self._infos[(width, height)].header.frame_id = self.frame_id
        info = self._infos[(width, height)]
        info.header.stamp = stamp
        return info

    def _health(self) -> tuple[bytes, str, dict]:
        values = {"source": self.p.source, "frames": self._frames, "read_errors": self._errors}
        status = getattr(self.source, "status", None)
        if status is not None:
            values.update(reconnects=status.reconnects, connected=status.connected, serial=status.serial,
                          last_error=status.last_error or self._last_error)
            if not status.connected:
                return ERROR, f"camera lost ({status.last_error}): reconnecting", values
        if self._ended:
            return OK, "end of recording", values
        if self._frames == 0:
            return WARN, "no frame yet", values
        return OK, "streaming", values


def _depth_msg(frame: Frame, stamp, frame_id: str) -> Image:
    """16UC1 in millimetres (REP 118), as realsense2_camera publishes aligned depth."""
    depth = frame.depth
    if frame.depth_scale_m != 0.001:
        depth = np.clip(np.round(depth * (frame.depth_scale_m / 0.001)), 0, 65535).astype(np.uint16)
    msg = Image(height=frame.height, width=frame.width, encoding="16UC1",
                is_bigendian=int(sys.byteorder == "big"), step=2 * frame.width)
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    msg.data = np.ascontiguousarray(depth).tobytes()
    return msg


main = main_of(CameraNode)

if __name__ == "__main__":
    main()
