"""The cell's MuJoCo model: compile a task scene with the calibrated camera, and read
the arm's state from it by name.

The scene XML holds everything physical; the calibration YAML holds what is measured
on the real cell (camera pose and intrinsics, workspace), so one scene serves any cell.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from sim import render  # noqa: F401  (chooses the GL backend before mujoco loads)

# isort: split
import mujoco
import numpy as np

from calibration import CameraExtrinsics, CameraIntrinsics, CellCalibration
from robot.types import RobotState

ASSETS = Path(__file__).parent / "assets"
CAMERA = "cell_camera"
TCP_SITE = "tcp"
ARM_JOINTS = tuple(f"joint{i}" for i in range(1, 8))
FINGER_JOINTS = ("finger_left", "finger_right")
GRIPPER_ACTUATOR = "gripper"
HOME_NUMERIC = "arm_home"
# Only ratios of focal length to sensor size matter; a 3 um pixel is a typical colour sensor.
_PIXEL_PITCH_M = 3e-6
# The optical frame (x right, y down, z forward) is MuJoCo's camera frame
# (x right, y up, looking along -z) turned half a turn about x.
_OPTICAL_TO_MUJOCO = np.diag([1.0, -1.0, -1.0])


def camera_quat_wxyz(rotation_optical_xyzw: tuple[float, ...]) -> np.ndarray:
    """MuJoCo camera orientation (w, x, y, z) from the optical frame's (x, y, z, w)."""
    x, y, z, w = rotation_optical_xyzw
    optical = np.zeros(9)
    mujoco.mju_quat2Mat(optical, np.array([w, x, y, z], dtype=float))
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, (optical.reshape(3, 3) @ _OPTICAL_TO_MUJOCO).ravel())
    return quat


def camera_extrinsics(model: mujoco.MjModel) -> CameraExtrinsics:
    """The camera's optical frame in the base frame, read back from the compiled model
    (the camera hangs from the world body, so its local pose is its world pose)."""
    camera = model.camera(CAMERA)
    mujoco_frame = np.zeros(9)
    mujoco.mju_quat2Mat(mujoco_frame, camera.quat)
    optical = mujoco_frame.reshape(3, 3) @ _OPTICAL_TO_MUJOCO  # the flip is its own inverse
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, optical.ravel())
    return CameraExtrinsics(tuple(camera.pos.tolist()), tuple(np.roll(quat, -1).tolist()))


def configure_camera(spec: mujoco.MjSpec, calibration: CellCalibration) -> None:
    """Place the scene's camera and give it the calibrated pinhole intrinsics (lens
    distortion is not rendered).

    MuJoCo measures the principal point from the sensor centre in continuous pixel
    coordinates, whereas OpenCV's (cx, cy) index pixel centres: centre = (size - 1) / 2.
    MuJoCo 3.3 shifts the image the other way along x than OpenCV's cx does (found by
    rendering points projected with K; tests/sim/test_mirror.py keeps checking it).
    """
    intrinsics, pose = calibration.camera, calibration.camera_pose
    camera = spec.camera(CAMERA)
    camera.pos = np.asarray(pose.translation, dtype=float)
    camera.quat = camera_quat_wxyz(pose.rotation_xyzw)
    size = np.array([intrinsics.width, intrinsics.height], dtype=float)
    camera.resolution = size
    camera.sensor_size = size * _PIXEL_PITCH_M
    camera.focal_pixel = [intrinsics.fx, intrinsics.fy]
    camera.principal_pixel = [(size[0] - 1) / 2 - intrinsics.cx,
                              intrinsics.cy - (size[1] - 1) / 2]


def load_model(scene: str, calibration: CellCalibration,
               offscreen: tuple[int, int] = (64, 64)) -> mujoco.MjModel:
    """Compile sim/assets/<scene> with the calibrated camera.

    offscreen: (height, width) of the largest render planned; the buffer grows on demand.
    """
    spec = mujoco.MjSpec.from_file(str(ASSETS / scene))
    configure_camera(spec, calibration)
    spec.visual.global_.offheight, spec.visual.global_.offwidth = offscreen
    return spec.compile()


@dataclass(frozen=True)
class ArmIndex:
    """Addresses of the arm in qpos/qvel/ctrl, looked up by name once."""

    qpos: np.ndarray
    dof: np.ndarray
    ctrl: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    finger_qpos: np.ndarray
    gripper_ctrl: int
    tcp: int
    home: np.ndarray

    @classmethod
    def of(cls, model: mujoco.MjModel) -> ArmIndex:
        joints = [model.joint(name) for name in ARM_JOINTS]
        ctrl = [_actuator_of(model, j.id) for j in joints]
        return cls(
            qpos=np.array([j.qposadr[0] for j in joints]),
            dof=np.array([j.dofadr[0] for j in joints]),
            ctrl=np.array(ctrl),
            lower=np.array([j.range[0] for j in joints]),
            upper=np.array([j.range[1] for j in joints]),
            finger_qpos=np.array([model.joint(n).qposadr[0] for n in FINGER_JOINTS]),
            gripper_ctrl=model.actuator(GRIPPER_ACTUATOR).id,
            tcp=model.site(TCP_SITE).id,
            home=np.array(model.numeric(HOME_NUMERIC).data),
        )


def _actuator_of(model: mujoco.MjModel, joint_id: int) -> int:
    for actuator in range(model.nu):
        if (model.actuator_trntype[actuator] == mujoco.mjtTrn.mjTRN_JOINT
                and model.actuator_trnid[actuator, 0] == joint_id):
            return actuator
    raise ValueError(f"joint {model.joint(joint_id).name} has no actuator")


def tcp_pose(data: mujoco.MjData, arm: ArmIndex) -> tuple[np.ndarray, np.ndarray]:
    """TCP position (3,) and rotation matrix (3, 3) in the base frame (= world)."""
    return data.site_xpos[arm.tcp].copy(), data.site_xmat[arm.tcp].reshape(3, 3).copy()


def gripper_width(data: mujoco.MjData, arm: ArmIndex) -> float:
    return float(np.sum(data.qpos[arm.finger_qpos]))


def robot_state(data: mujoco.MjData, arm: ArmIndex) -> RobotState:
    position, rotation = tcp_pose(data, arm)
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, rotation.ravel())
    return RobotState(
        joint_names=ARM_JOINTS,
        joint_positions=data.qpos[arm.qpos].copy(),
        joint_velocities=data.qvel[arm.dof].copy(),
        ee_position=position,
        ee_orientation_xyzw=np.roll(quat, -1),
        gripper_width=gripper_width(data, arm),
        stamp_ns=round(data.time * 1e9),
    )


def intrinsics_at(calibration: CellCalibration, height: int, width: int) -> CameraIntrinsics:
    """The rendered camera at another size (same field of view).

    The renderer is an ideal pinhole, so the images it makes have no distortion even
    when the real cell's lens has some.
    """
    scaled = calibration.camera.scaled(width, height)
    return dataclasses.replace(scaled, distortion=(0.0,) * len(scaled.distortion))
