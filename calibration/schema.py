"""The calibration YAML format and its validation.

Conventions (ROS REP 103/105):
- the camera pose is the *optical* frame (x right, y down, z forward) expressed in
  the robot base frame, as translation (m) and unit quaternion (x, y, z, w);
- intrinsics are the pinhole model of the color stream in pixels, with distortion
  coefficients in OpenCV's plumb_bob order (k1, k2, p1, p2, k3);
- the workspace box bounds the end-effector position in the base frame (m).

Example (calibration/data/mirror.yaml is the MuJoCo mirror's cell):

    format_version: 1
    calibration_id: mirror-default
    base_frame: base_link
    camera:
      serial: sim
      frame_id: camera_color_optical_frame
      width: 640
      height: 480
      fx: 615.0
      fy: 615.0
      cx: 320.0
      cy: 240.0
      distortion_model: plumb_bob
      distortion: [0.0, 0.0, 0.0, 0.0, 0.0]
    camera_pose:
      translation: [1.15, 0.0, 0.75]
      rotation_xyzw: [0.645942, 0.645942, -0.287678, -0.287678]
    workspace:
      min: [0.25, -0.35, 0.02]
      max: [0.80, 0.35, 0.50]
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

FORMAT_VERSION = 1
DISTORTION_MODELS = ("plumb_bob", "rational_polynomial", "equidistant")


class CalibrationError(ValueError):
    """A calibration file is missing, malformed, or has an out-of-range field."""


@dataclass(frozen=True)
class CameraIntrinsics:
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion_model: str = "plumb_bob"
    distortion: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)
    frame_id: str = "camera_color_optical_frame"
    serial: str = ""

    @property
    def matrix(self) -> np.ndarray:
        """3x3 camera matrix K."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def fovy_deg(self) -> float:
        """Vertical field of view of an ideal pinhole with this fy and height."""
        return math.degrees(2.0 * math.atan(0.5 * self.height / self.fy))

    def scaled(self, width: int, height: int) -> CameraIntrinsics:
        """The same camera read out at another resolution (pixel-centre convention)."""
        sx, sy = width / self.width, height / self.height
        return CameraIntrinsics(
            width=width,
            height=height,
            fx=self.fx * sx,
            fy=self.fy * sy,
            cx=(self.cx + 0.5) * sx - 0.5,
            cy=(self.cy + 0.5) * sy - 0.5,
            distortion_model=self.distortion_model,
            distortion=self.distortion,
            frame_id=self.frame_id,
            serial=self.serial,
        )


@dataclass(frozen=True)
class CameraExtrinsics:
    """Pose of the camera optical frame in the robot base frame."""

    translation: tuple[float, float, float]
    rotation_xyzw: tuple[float, float, float, float]

    @property
    def rotation_matrix(self) -> np.ndarray:
        x, y, z, w = self.rotation_xyzw
        return np.array(
            [
                [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
            ]
        )


@dataclass(frozen=True)
class WorkspaceBox:
    """Axis-aligned box the end effector must stay in, base frame, metres."""

    min: tuple[float, float, float]
    max: tuple[float, float, float]

    def contains(self, point: np.ndarray, tolerance: float = 0.0) -> bool:
        p = np.asarray(point, dtype=float)
        return bool(np.all(p >= np.asarray(self.min) - tolerance)
                    and np.all(p <= np.asarray(self.max) + tolerance))


@dataclass(frozen=True)
class CellCalibration:
    calibration_id: str
    camera: CameraIntrinsics
    camera_pose: CameraExtrinsics
    workspace: WorkspaceBox
    base_frame: str = "base_link"
    format_version: int = FORMAT_VERSION
    source_path: str | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        camera = asdict(self.camera)
        camera["distortion"] = list(self.camera.distortion)
        return {
            "format_version": self.format_version,
            "calibration_id": self.calibration_id,
            "base_frame": self.base_frame,
            "camera": camera,
            "camera_pose": {
                "translation": list(self.camera_pose.translation),
                "rotation_xyzw": list(self.camera_pose.rotation_xyzw),
            },
            "workspace": {"min": list(self.workspace.min), "max": list(self.workspace.max)},
        }


def default_calibration_path() -> Path:
    """The MuJoCo mirror's cell, shipped with the package."""
    return Path(__file__).parent / "data" / "mirror.yaml"


def load_calibration(path: str | Path | None = None) -> CellCalibration:
    """Read and validate a calibration YAML; errors name the file and the field."""
    path = Path(path) if path is not None else default_calibration_path()
    if not path.is_file():
        raise CalibrationError(f"{path}: calibration file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise CalibrationError(f"{path}: not valid YAML ({exc})") from exc
    try:
        calibration = parse_calibration(raw)
    except CalibrationError as exc:
        raise CalibrationError(f"{path}: {exc}") from None
    return CellCalibration(**{**calibration.__dict__, "source_path": str(path)})


def save_calibration(calibration: CellCalibration, path: str | Path) -> Path:
    """Write a calibration YAML (validated first, so a bad one is never written)."""
    parse_calibration(calibration.to_dict())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(calibration.to_dict(), sort_keys=False))
    tmp.replace(path)
    return path


def parse_calibration(raw: Any) -> CellCalibration:
    if not isinstance(raw, dict):
        raise CalibrationError("top level must be a mapping with keys "
                               "calibration_id, camera, camera_pose, workspace")
    version = raw.get("format_version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise CalibrationError(f"format_version {version!r} is not supported (expected {FORMAT_VERSION})")
    calibration_id = _require(raw, "calibration_id", str, "")
    if not calibration_id.strip():
        raise CalibrationError("calibration_id must be a non-empty string")
    return CellCalibration(
        calibration_id=calibration_id,
        camera=_parse_camera(_require(raw, "camera", dict, "")),
        camera_pose=_parse_pose(_require(raw, "camera_pose", dict, "")),
        workspace=_parse_workspace(_require(raw, "workspace", dict, "")),
        base_frame=str(raw.get("base_frame", "base_link")),
        format_version=version,
    )


def _parse_camera(raw: dict) -> CameraIntrinsics:
    width = _require(raw, "width", int, "camera.")
    height = _require(raw, "height", int, "camera.")
    for name, value in (("width", width), ("height", height)):
        if value <= 0:
            raise CalibrationError(f"camera.{name} must be a positive integer, got {value}")
    values = {name: float(_require(raw, name, (int, float), "camera.")) for name in ("fx", "fy", "cx", "cy")}
    for name in ("fx", "fy"):
        if not math.isfinite(values[name]) or values[name] <= 0:
            raise CalibrationError(f"camera.{name} must be a positive number of pixels, got {values[name]}")
    for name, limit in (("cx", width), ("cy", height)):
        if not math.isfinite(values[name]) or not 0 <= values[name] <= limit:
            raise CalibrationError(f"camera.{name} must lie in [0, {limit}] pixels, got {values[name]}")
    model = raw.get("distortion_model", "plumb_bob")
    if model not in DISTORTION_MODELS:
        raise CalibrationError(f"camera.distortion_model {model!r} is not one of {DISTORTION_MODELS}")
    distortion = raw.get("distortion", [0.0] * 5)
    if not isinstance(distortion, list) or not all(isinstance(v, (int, float)) for v in distortion):
        raise CalibrationError("camera.distortion must be a list of numbers")
    return CameraIntrinsics(
        width=width,
        height=height,
        distortion_model=model,
        distortion=tuple(float(v) for v in distortion),
        frame_id=str(raw.get("frame_id", "camera_color_optical_frame")),
        serial=str(raw.get("serial", "")),
        **values,
    )


def _parse_pose(raw: dict) -> CameraExtrinsics:
    translation = _vector(raw, "translation", 3, "camera_pose.")
    rotation = _vector(raw, "rotation_xyzw", 4, "camera_pose.")
    norm = float(np.linalg.norm(rotation))
    if abs(norm - 1.0) > 1e-3:
        raise CalibrationError(f"camera_pose.rotation_xyzw must be a unit quaternion, its norm is {norm:.6f}")
    if abs(norm - 1.0) > 1e-9:  # renormalise rounding in the file, but keep exact ones exact
        rotation = tuple(v / norm for v in rotation)
    return CameraExtrinsics(translation=translation, rotation_xyzw=rotation)


def _parse_workspace(raw: dict) -> WorkspaceBox:
    low = _vector(raw, "min", 3, "workspace.")
    high = _vector(raw, "max", 3, "workspace.")
    for axis, lo, hi in zip("xyz", low, high):
        if not lo < hi:
            raise CalibrationError(f"workspace.min.{axis} ({lo}) must be below workspace.max.{axis} ({hi})")
    return WorkspaceBox(min=low, max=high)


def _vector(raw: dict, key: str, length: int, prefix: str) -> tuple[float, ...]:
    value = _require(raw, key, list, prefix)
    if len(value) != length or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in value):
        raise CalibrationError(f"{prefix}{key} must be a list of {length} finite numbers, got {value!r}")
    return tuple(float(v) for v in value)


def _require(raw: dict, key: str, kind, prefix: str):
    if key not in raw:
        raise CalibrationError(f"missing field {prefix}{key}")
    value = raw[key]
    # bool is an int in Python; a YAML `true` is never a valid number here.
    if isinstance(value, bool) or not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise CalibrationError(f"field {prefix}{key} must be {names}, got {value!r}")
    return value
