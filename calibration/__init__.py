"""Cell calibration: camera intrinsics, camera pose in the robot base frame, workspace box.

One YAML file describes a cell. The calibration tools write it, the camera node
publishes CameraInfo from it, and the MuJoCo mirror places and configures its camera
from it, so the mirror sees the table the way the real camera does.
"""

from calibration.schema import (
    CalibrationError,
    CameraExtrinsics,
    CameraIntrinsics,
    CellCalibration,
    WorkspaceBox,
    default_calibration_path,
    load_calibration,
    save_calibration,
)

__all__ = [
    "CalibrationError",
    "CameraExtrinsics",
    "CameraIntrinsics",
    "CellCalibration",
    "WorkspaceBox",
    "default_calibration_path",
    "load_calibration",
    "save_calibration",
]
