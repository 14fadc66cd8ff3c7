"""What camera consumers rely on: Frame validation, the image check, and CameraInfo fields
from the calibration."""

from __future__ import annotations

import array

import numpy as np
import pytest

from calibration import load_calibration
from calibration.schema import CameraIntrinsics
from robot.cameras import Frame, ImageError, camera_info_fields, check_image

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (4, 5, 3), dtype=np.uint8)


class ImageMsg:
    """The fields of a sensor_msgs/Image, as rclpy hands them over."""

    def __init__(self, encoding, height, width, step, data):
        self.encoding, self.height, self.width, self.step, self.data = encoding, height, width, step, data


# ---------------------------------------------------------------- Frame


def test_frame_checks_color_and_depth():
    frame = Frame(color=RGB, depth=np.zeros((4, 5), np.uint16), timestamp_ns=1, frame_number=2)
    assert (frame.height, frame.width) == (4, 5)
    with pytest.raises(ValueError, match=r"Frame.color must be a uint8 \(H, W, 3\) RGB array, got float64"):
        Frame(color=RGB.astype(float), timestamp_ns=0, frame_number=0)
    with pytest.raises(ValueError, match=r"Frame.depth must be None or a uint16 \(4, 5\) array aligned to color"):
        Frame(color=RGB, depth=np.zeros((5, 4), np.uint16), timestamp_ns=0, frame_number=0)


# ---------------------------------------------------------------- check_image


def test_arrays_are_taken_as_rgb8():
    assert check_image(RGB, width=5, height=4) is RGB


@pytest.mark.parametrize("data", [RGB.tobytes(), bytearray(RGB.tobytes()), array.array("B", RGB.tobytes()),
                                  list(RGB.tobytes()), RGB.reshape(-1)])
def test_messages_decode_from_any_byte_container(data):
    np.testing.assert_array_equal(check_image(ImageMsg("rgb8", 4, 5, 15, data)), RGB)
    np.testing.assert_array_equal(check_image(("rgb8", 4, 5, 15, data)), RGB)


def test_bgr8_is_converted_and_padded_rows_are_cropped():
    bgr = RGB[..., ::-1]
    padded = np.concatenate([bgr.reshape(4, 15), np.full((4, 1), 7, np.uint8)], axis=1)  # step 16
    np.testing.assert_array_equal(check_image(("bgr8", 4, 5, 16, padded.tobytes())), RGB)


@pytest.mark.parametrize(("image", "kwargs", "message"), [
    (("mono8", 4, 5, 5, bytes(20)), {}, r"image encoding 'mono8' is not accepted; accepted: rgb8, bgr8"),
    (("bgr8", 4, 5, 15, RGB.tobytes()), {"encoding": "rgb8"}, r"encoding 'bgr8' is not accepted; accepted: rgb8"),
    (("rgb8", 4, 5, 15, RGB.tobytes()), {"width": 640, "height": 480},
     r"image is 5x4 \(width x height\); expected 640x480"),
    (("rgb8", 4, 5, 14, RGB.tobytes()), {}, r"step 14 is too small for width 5 in rgb8 .*at least 15"),
    (("rgb8", 4, 5, 15, RGB.tobytes()[:-1]), {}, r"data has 59 bytes; step 15 x height 4 needs 60"),
    (("rgb8", 0, 5, 15, b""), {}, r"image height must be a positive int, got 0"),
    (("rgb8", 4, 5, 15), {}, r"must be \(encoding, height, width, step, data\), got 4 items"),
    (RGB[..., :2], {}, r"image array must be uint8 \(H, W, 3\) RGB, got uint8 of shape \(4, 5, 2\)"),
    (RGB, {"encoding": "bgr8"}, r"a bare array is taken as rgb8, but bgr8 is required"),
    ("rgb8", {}, r"image must be a uint8 \(H, W, 3\) array, a sensor_msgs/Image-like message"),
])
def test_bad_images_say_what_was_wrong_and_what_is_accepted(image, kwargs, message):
    with pytest.raises(ImageError, match=message):
        check_image(image, **kwargs)


# ---------------------------------------------------------------- CameraInfo


def test_camera_info_at_the_calibrated_size_copies_the_calibration():
    calibration = load_calibration()
    camera = calibration.camera
    fields = camera_info_fields(calibration)
    assert (fields["width"], fields["height"], fields["frame_id"]) == (camera.width, camera.height, camera.frame_id)
    assert fields["distortion_model"] == "plumb_bob" and fields["d"] == list(camera.distortion)
    np.testing.assert_allclose(np.reshape(fields["k"], (3, 3)), camera.matrix)
    np.testing.assert_allclose(np.reshape(fields["r"], (3, 3)), np.eye(3))
    np.testing.assert_allclose(np.reshape(fields["p"], (3, 4)), np.hstack([camera.matrix, np.zeros((3, 1))]))
    assert all(isinstance(v, float) for v in fields["k"] + fields["p"] + fields["d"])


def test_camera_info_scales_to_another_resolution_of_the_same_aspect():
    camera = CameraIntrinsics(640, 480, 600.0, 610.0, 319.5, 239.5, distortion=(0.1, -0.2, 0.0, 0.0, 0.01))
    fields = camera_info_fields(camera, 320, 240)
    assert fields["k"] == pytest.approx([300.0, 0.0, 159.5, 0.0, 305.0, 119.5, 0.0, 0.0, 1.0])
    assert fields["d"] == [0.1, -0.2, 0.0, 0.0, 0.01]  # distortion acts on normalised coordinates


def test_camera_info_refuses_another_aspect_ratio_and_bad_sizes():
    camera = load_calibration().camera
    with pytest.raises(ValueError, match=r"calibration is for 640x480; 1280x720 has another aspect ratio"):
        camera_info_fields(camera, 1280, 720)
    with pytest.raises(ValueError, match="camera_info width must be a positive int, got 0"):
        camera_info_fields(camera, 0, 480)
    with pytest.raises(TypeError, match="must be a CellCalibration or CameraIntrinsics"):
        camera_info_fields({"fx": 1.0})
