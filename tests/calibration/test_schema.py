import math

import numpy as np
import pytest
import yaml

from calibration import CalibrationError, load_calibration, save_calibration
from calibration.schema import default_calibration_path


def write_variant(tmp_path, change):
    raw = yaml.safe_load(default_calibration_path().read_text())
    change(raw)
    path = tmp_path / "cell.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_default_mirror_calibration_loads():
    calibration = load_calibration()
    assert calibration.calibration_id == "mirror-default"
    assert (calibration.camera.width, calibration.camera.height) == (640, 480)
    rotation = calibration.camera_pose.rotation_matrix
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-5)
    # The optical axis (z) looks down at the table, toward the robot.
    assert rotation[2, 2] < 0 and rotation[0, 2] < 0


def test_save_then_load_round_trip(tmp_path):
    calibration = load_calibration()
    path = save_calibration(calibration, tmp_path / "copy.yaml")
    assert load_calibration(path) == calibration


def test_scaled_intrinsics_keep_the_field_of_view():
    camera = load_calibration().camera
    small = camera.scaled(64, 48)
    assert math.isclose(small.fovy_deg, camera.fovy_deg, rel_tol=1e-9)
    assert small.cx == pytest.approx(31.5) and small.cy == pytest.approx(23.5)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda raw: raw["camera"].pop("fx"), "missing field camera.fx"),
        (lambda raw: raw["camera"].update(fy=-600.0), "camera.fy must be a positive number"),
        (lambda raw: raw["camera"].update(width=0), "camera.width must be a positive integer"),
        (lambda raw: raw["camera"].update(cx=900.0), "camera.cx must lie in [0, 640]"),
        (lambda raw: raw["camera"].update(width="640"), "field camera.width must be int"),
        (lambda raw: raw.pop("workspace"), "missing field workspace"),
        (lambda raw: raw["workspace"].update(min=[0.9, 0, 0]), "workspace.min.x (0.9) must be below"),
        (lambda raw: raw["camera_pose"].update(rotation_xyzw=[1, 1, 0, 0]), "unit quaternion"),
        (lambda raw: raw["camera_pose"].update(translation=[0, 0]), "list of 3 finite numbers"),
        (lambda raw: raw.update(format_version=7), "format_version 7 is not supported"),
        (lambda raw: raw["camera"].update(distortion_model="fisheye9"), "is not one of"),
    ],
)
def test_bad_fields_are_named(tmp_path, change, message):
    path = write_variant(tmp_path, change)
    with pytest.raises(CalibrationError) as error:
        load_calibration(path)
    assert message in str(error.value)
    assert str(path) in str(error.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(CalibrationError, match="not found"):
        load_calibration(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("camera: [unclosed")
    with pytest.raises(CalibrationError, match="not valid YAML"):
        load_calibration(bad)
    bad.write_text("- a list")
    with pytest.raises(CalibrationError, match="top level must be a mapping"):
        load_calibration(bad)
