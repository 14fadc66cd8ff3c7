"""camera_node in its own process over Fast DDS on loopback: a .db3 recording (written without a camera by
robot.cameras.write_recording) and the mirror's rendered images, published on realsense2_camera's names."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("rclpy")

from drr_ros.messages import image_msg, image_of, stamp, stamp_ns  # noqa: E402
from drr_ros.wiring import SENSOR_QOS  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from calibration import load_calibration  # noqa: E402
from robot.cameras import camera_info_fields  # noqa: E402

COLOR, INFO = "camera/camera/color/image_raw", "camera/camera/color/camera_info"
DEPTH = "camera/camera/aligned_depth_to_color/image_raw"
CAMERA = load_calibration().camera  # the mirror's: 640x480, fx = fy = 615
OPTICAL = CAMERA.frame_id


def by_stamp(records) -> dict:
    return {stamp_ns(m.header.stamp): m for _, m in records}


def test_playback_publishes_every_frame_with_its_stamp_camera_info_and_depth_then_ends(nodes, probe, tmp_path):
    from robot.cameras import Frame, write_recording

    rng = np.random.default_rng(0)
    stamps = [(1_000_000 + 50 * i) * 1_000_000 for i in range(16)]  # ms in a double: exact at this size
    frames = [Frame(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), s, i + 1,
                    depth=np.full((48, 64), 500 + i, np.uint16)) for i, s in enumerate(stamps)]
    recording = write_recording(tmp_path / "camera.db3", frames, fps=10)
    images, infos = probe.record(Image, COLOR, SENSOR_QOS), probe.record(CameraInfo, INFO, SENSOR_QOS)
    depths = probe.record(Image, DEPTH, SENSOR_QOS)
    # Paced at 2 fps (8 s), so discovery has matched the probe before most frames go out, even on a
    # loaded 2-core CI machine where it once took over 3 s (only 2 of 8 frames at 2 fps arrived).
    nodes.start("camera_node", source="playback", path=str(recording), fps=2, depth=True)
    # 30 s: the node's start-up on a loaded machine, the 8 s of frames, the end (PlaybackSource).
    probe.wait_for(lambda: "end of recording" in nodes.log("camera_node"), 30, "the end of the recording")

    color, info, depth = by_stamp(images), by_stamp(infos), by_stamp(depths)
    assert len(color) >= 4 and set(color) <= set(stamps)  # the first frames may beat discovery
    for index, stamp_value in enumerate(stamps):
        if stamp_value not in color:
            continue
        np.testing.assert_array_equal(image_of(color[stamp_value]), frames[index].color)
        assert color[stamp_value].header.frame_id == OPTICAL and color[stamp_value].encoding == "rgb8"
        assert info[stamp_value].header.frame_id == OPTICAL and (info[stamp_value].width, info[stamp_value].height) == \
            (64, 48)
        # The calibration's intrinsics scaled to the 64x48 stream (camera_info_fields).
        np.testing.assert_allclose(info[stamp_value].k, camera_info_fields(load_calibration(), 64, 48)["k"])
        assert info[stamp_value].k[0] == pytest.approx(CAMERA.fx / 10)
        d = depth[stamp_value]
        assert d.encoding == "16UC1" and d.step == 128
        assert np.frombuffer(bytes(d.data), np.uint16).tolist() == [500 + index] * (48 * 64)
    assert nodes.processes["camera_node"].poll() is None  # it stays up after the end
    for name, (code, log) in nodes.stop_all().items():
        assert code == 0 and "Traceback" not in log, f"{name} exited {code}\n{log}"


def test_sim_source_republishes_the_mirror_camera_under_realsense_names(nodes, probe):
    images, infos = probe.record(Image, COLOR, SENSOR_QOS), probe.record(CameraInfo, INFO, SENSOR_QOS)
    nodes.start("camera_node", source="sim")
    publisher = probe.publisher(Image, "sim_arm_node/camera/image_raw", SENSOR_QOS)
    probe.wait_for(publisher.get_subscription_count, 20, "camera_node's subscription to the mirror's camera")
    rgb = np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    sent = image_msg(rgb, stamp(123_456_789_000), OPTICAL)

    def republished():
        publisher.publish(sent)
        return 123_456_789_000 in by_stamp(images) and 123_456_789_000 in by_stamp(infos)

    probe.wait_for(republished, 10, "the republished image and its camera_info", poll_s=0.2)
    np.testing.assert_array_equal(image_of(by_stamp(images)[123_456_789_000]), rgb)
    info = by_stamp(infos)[123_456_789_000]
    assert (info.width, info.height) == (160, 120) and info.header.frame_id == OPTICAL
    np.testing.assert_allclose(info.k, camera_info_fields(load_calibration(), 160, 120)["k"])


@pytest.mark.parametrize("params, message", [
    ({"source": "usb"}, "parameter source = 'usb' is invalid: expected one of realsense, playback, sim"),
    ({"source": "playback"}, "parameter path = '' is invalid: source playback needs the .db3 recording"),
    ({"source": "playback", "path": "/nonexistent/camera.db3"}, "/nonexistent/camera.db3: recording not found"),
    ({"source": "realsense", "fps": 7}, "RealSenseConfig.fps 7 is not available for color at 640x480"),
    ({"source": "sim", "calibration": "/nonexistent/cell.yaml"}, "parameter calibration = '/nonexistent/cell.yaml'"),
])
def test_bad_parameters_exit_non_zero_with_a_clear_message_and_no_traceback(refused_start, params, message):
    refused_start("camera_node", params, message)


@pytest.mark.skipif(importlib.util.find_spec("pyrealsense2") is None,
                    reason="pyrealsense2 is not installed (the realsense extra)")
def test_a_process_that_opens_librealsense_before_rclpy_exits_cleanly():
    # pyrealsense2 embeds a Fast DDS of its own; imported bare before rclpy starts, the two collide
    # and the process crashes at exit (139). robot/cameras/librealsense.py orders the loading, so
    # only the child imports it (a broken install fails there, loudly, instead of skipping).
    code = ("from robot.cameras.librealsense import require_pyrealsense2\nrequire_pyrealsense2()\n"
            "import rclpy\nrclpy.init()\nnode = rclpy.create_node('fastdds_order_probe')\n"
            "node.destroy_node()\nrclpy.shutdown()\nprint('clean')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout.strip()) == (0, "clean"), result.stderr[-2000:]
