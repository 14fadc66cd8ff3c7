"""sensor_msgs/CameraInfo field values from the cell's calibration, as plain Python data.

The camera node copies these into its CameraInfo message (the header stamp comes from
each frame); the mirror and the episode recorder use the same calibration file.
"""

from __future__ import annotations

from typing import Any

from calibration.schema import CameraIntrinsics, CellCalibration

_ASPECT_TOLERANCE = 0.01  # relative


def camera_info_fields(calibration: CellCalibration | CameraIntrinsics, width: int | None = None,
                       height: int | None = None) -> dict[str, Any]:
    """CameraInfo fields for the color stream read out at width x height (default: the
    calibrated size): height, width, distortion_model, d, k, r, p, binning_x/y, and frame_id (for the header).

    Another resolution of the same aspect ratio scales the intrinsics (a RealSense mode of
    the same field of view); another aspect ratio is another crop of the sensor and needs
    its own calibration.
    """
    camera = calibration.camera if isinstance(calibration, CellCalibration) else calibration
    if not isinstance(camera, CameraIntrinsics):
        raise TypeError(f"calibration must be a CellCalibration or CameraIntrinsics, got {type(calibration).__name__}")
    width = camera.width if width is None else width
    height = camera.height if height is None else height
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"camera_info {name} must be a positive int, got {value!r}")
    calibrated, requested = camera.width / camera.height, width / height
    if abs(requested / calibrated - 1.0) > _ASPECT_TOLERANCE:
        raise ValueError(f"the calibration is for {camera.width}x{camera.height}; {width}x{height} has another "
                         f"aspect ratio (another crop of the sensor): calibrate the camera at {width}x{height}")
    camera = camera.scaled(width, height)
    fx, fy, cx, cy = camera.fx, camera.fy, camera.cx, camera.cy
    return {
        "frame_id": camera.frame_id,  # for header.frame_id
        "height": height,
        "width": width,
        "distortion_model": camera.distortion_model,
        "d": [float(v) for v in camera.distortion],
        "k": [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0],
        "r": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],  # monocular: no rectifying rotation
        "p": [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0],  # P = [K | 0]
        "binning_x": 0,
        "binning_y": 0,
    }
