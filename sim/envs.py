"""Gymnasium environments of the mirror: the calibrated camera's image, the arm's
proprioception, and the real cell's action interface behind the real safety gate.

    env = make_mirror_env("push", seed=0)           # or gym.make("drr/MirrorPush-v0")
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())

Action: [vx, vy, vz, gripper] in [-1, 1] (with angular=True: [vx, vy, vz, wx, wy, wz,
gripper]); velocities are scaled by the max speeds and the gripper maps -1 open .. +1
closed to ArmCommand.gripper 0 .. 1. Every command passes robot.safety.SafetyGate.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

from sim import cell  # first: chooses the GL backend before mujoco loads

# isort: split
import gymnasium as gym
import mujoco
import numpy as np
from gymnasium.utils import seeding

from calibration import CameraExtrinsics, CameraIntrinsics, CellCalibration, load_calibration
from robot.cameras.crop import check_crop, crop_and_resize, parse_crop
from robot.safety import SafetyGate, SafetyLimits
from robot.types import ArmCommand
from sim.controller import ControllerConfig, DiffIKController, place_tcp
from sim.render import CameraRenderer
from sim.tasks import TASKS, Task

MIRROR_TASKS: tuple[str, ...] = tuple(TASKS)
ENV_IDS: dict[str, str] = {
    "reach": "drr/MirrorReach-v0",
    "push": "drr/MirrorPush-v0",
    "drawer-open": "drr/MirrorDrawerOpen-v0",
}
PROPRIO_SIZE = 7 + 7 + 3 + 1  # joint positions, joint velocities, TCP position, gripper width
START_JITTER_M = 0.03  # TCP start offset from home, per axis


class MirrorEnv(gym.Env):
    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, task: str = "reach", *, image_size: tuple[int, int] = (64, 64),
                 calibration: CellCalibration | str | Path | None = None,
                 render_mode: str | None = None, render_size: tuple[int, int] | None = None,
                 angular: bool = False, max_linear_speed: float = 0.25,
                 max_angular_speed: float = 1.0, controller: ControllerConfig | None = None,
                 safety: dict[str, float] | None = None, terminate_on_success: bool = True,
                 image_crop: str | None = None):
        """image_size and render_size are (height, width); render_size defaults to the
        calibration's full resolution. `safety` overrides SafetyLimits fields.

        image_crop None: the observed image is the whole field of view rendered at image_size.
        "center" (or "top,left,height,width"): the camera's full-resolution image, cropped and
        resized to image_size exactly as the nodes and robot.episodes.read_episode do, so a policy
        or reward model trained here sees the pixels it sees in the graph and on the robot."""
        task_cls = _task_class(task)
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.calibration = (calibration if isinstance(calibration, CellCalibration)
                            else load_calibration(calibration))
        self.image_size = _size(image_size, "image_size")
        full = (self.calibration.camera.height, self.calibration.camera.width)
        self.render_size = _size(render_size or full, "render_size")
        self.render_mode = render_mode
        self.image_crop = None if image_crop is None else parse_crop(image_crop)
        if self.image_crop is not None:
            check_crop(self.image_crop, *full)
        observed = full if self.image_crop is not None else self.image_size
        largest = tuple(max(a, b) for a, b in zip(observed, self.render_size))
        self.model = cell.load_model(task_cls.scene, self.calibration,
                                     largest if render_mode or self.image_crop is not None else self.image_size)
        self.data = mujoco.MjData(self.model)
        self.arm = cell.ArmIndex.of(self.model)
        self.task: Task = task_cls(self.model)
        controller = controller or ControllerConfig()
        self.controller = DiffIKController(self.model, self.data, self.arm, controller)
        self.gate = SafetyGate(SafetyLimits.from_dict(
            self.calibration.workspace,
            {"max_linear_speed": max_linear_speed, "max_angular_speed": max_angular_speed,
             "lookahead_s": self.controller.period_s, **(safety or {})}))
        self.max_linear_speed, self.max_angular_speed = max_linear_speed, max_angular_speed
        self.angular = angular
        self.terminate_on_success = terminate_on_success
        self.metadata = {**self.metadata, "render_fps": controller.control_hz}
        self.renderer = CameraRenderer(self.model, cell.CAMERA)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (7 if angular else 4,), np.float32)
        self.observation_space = gym.spaces.Dict({
            "image": gym.spaces.Box(0, 255, (*self.image_size, 3), np.uint8),
            "proprio": gym.spaces.Box(-np.inf, np.inf, (PROPRIO_SIZE,), np.float32),
        })
        self._home_pose = self._home_tcp_pose()
        self._gate_clock = 0.0  # the gate's clock runs on across episodes; sim time restarts
        self._success = False

    # --- gymnasium API -------------------------------------------------------------

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        self._gate_clock += self.data.time
        mujoco.mj_resetData(self.model, self.data)
        self._place_arm(self.np_random)
        self.task.reset(self.data, self.np_random)
        mujoco.mj_forward(self.model, self.data)
        self.controller.reset()
        self.gate.reset_motion()
        self._success = self.task.success(self.data)
        zero = ArmCommand.zero()
        return self._outputs(zero, zero)

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        requested = self.command_from_action(action)
        applied = self.execute(requested)
        self._success = self.task.success(self.data)
        obs, info = self._outputs(applied, requested)
        return obs, float(self._success), self._success and self.terminate_on_success, False, info

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        return self.render_camera(*self.render_size)

    def close(self) -> None:
        self.renderer.close()

    # --- mirror API ------------------------------------------------------------------

    @property
    def control_rate_hz(self) -> float:
        return 1.0 / self.controller.period_s

    def render_camera(self, height: int, width: int) -> np.ndarray:
        """The calibrated camera at any size, uint8 (height, width, 3)."""
        return self.renderer.render(self.data, height, width)

    def observed_image(self) -> np.ndarray:
        """obs["image"]: see image_crop in __init__."""
        if self.image_crop is None:
            return self.render_camera(*self.image_size)
        full = self.render_camera(self.calibration.camera.height, self.calibration.camera.width)
        return crop_and_resize(full, self.image_crop, self.image_size)

    def camera_intrinsics(self, height: int, width: int) -> CameraIntrinsics:
        """Pinhole model of `render_camera(height, width)` images (for CameraInfo)."""
        return cell.intrinsics_at(self.calibration, height, width)

    def camera_extrinsics(self) -> CameraExtrinsics:
        """Pose of the rendered camera's optical frame in the base frame (the calibration's)."""
        return cell.camera_extrinsics(self.model)

    def execute(self, command: ArmCommand, *, gated: bool = True) -> ArmCommand:
        """Run one control period of an end-effector command, without rendering; returns what
        the arm executed. gated=False skips the env's own safety gate: for a caller that is
        already behind the real gate (sim_arm_node behind the safety_gate node), where a second
        gate would hide the first one's faults."""
        if gated:
            tcp, _ = cell.tcp_pose(self.data, self.arm)
            command = self.gate.step(command, tcp, self._gate_clock + self.data.time)
        self.controller.run(command)
        mujoco.mj_forward(self.model, self.data)  # kinematics of the state the image shows
        return command

    def privileged_state(self) -> dict[str, np.ndarray]:
        """info["privileged"] of the current state: what the scripted experts act on."""
        return {"tcp_position": cell.tcp_pose(self.data, self.arm)[0],
                "gripper_width": np.array([cell.gripper_width(self.data, self.arm)]),
                **self.task.privileged(self.data)}

    def command_from_action(self, action: np.ndarray) -> ArmCommand:
        a = np.asarray(action, dtype=float).reshape(self.action_space.shape)
        a = np.where(np.isnan(a), a, np.clip(a, -1.0, 1.0))  # NaN reaches the gate, which rejects it
        linear = a[:3] * self.max_linear_speed
        angular = a[3:6] * self.max_angular_speed if self.angular else np.zeros(3)
        return ArmCommand(linear, angular, (a[-1] + 1.0) / 2.0)

    # --- internals -----------------------------------------------------------------

    def _home_tcp_pose(self) -> tuple[np.ndarray, np.ndarray]:
        self.data.qpos[self.arm.qpos] = self.arm.home
        mujoco.mj_kinematics(self.model, self.data)
        return cell.tcp_pose(self.data, self.arm)

    def _place_arm(self, rng: np.random.Generator) -> None:
        position, rotation = self._home_pose
        self.data.qpos[self.arm.qpos] = self.arm.home
        offset = rng.uniform(-START_JITTER_M, START_JITTER_M, 3)
        place_tcp(self.model, self.data, self.arm, position + offset, rotation)
        widest = self.model.actuator_ctrlrange[self.arm.gripper_ctrl, 1]
        self.data.qpos[self.arm.finger_qpos] = widest / 2  # fully open, like the command 0
        self.data.ctrl[self.arm.gripper_ctrl] = widest

    def _outputs(self, applied: ArmCommand, requested: ArmCommand) -> tuple[dict, dict]:
        """Observation and info of the current state."""
        state = cell.robot_state(self.data, self.arm)
        proprio = np.concatenate([state.joint_positions, state.joint_velocities,
                                  state.ee_position, [state.gripper_width]])
        obs = {"image": self.observed_image(),
               "proprio": proprio.astype(np.float32)}
        privileged = self.privileged_state()
        info = {"success": self._success, "robot_state": state, "command": applied,
                "requested_command": requested, "privileged": privileged,
                "calibration_id": self.calibration.calibration_id, "task": self.task.name}
        return obs, info


def _task_class(task: str) -> type[Task]:
    if task not in TASKS:
        raise ValueError(f"unknown mirror task {task!r}; valid tasks: {', '.join(MIRROR_TASKS)}")
    return TASKS[task]


def _size(size: tuple[int, int], name: str) -> tuple[int, int]:
    if len(size) != 2 or not all(isinstance(v, (int, np.integer)) and v > 0 for v in size):
        raise ValueError(f"{name} must be (height, width) positive integers, got {size!r}")
    return int(size[0]), int(size[1])


def make_mirror_env(task: str, *, image_size: tuple[int, int] = (64, 64),
                    calibration: CellCalibration | str | Path | None = None,
                    max_episode_steps: int | None = None, control_hz: float | None = None,
                    render_size: tuple[int, int] | None = None, seed: int | None = None,
                    controller: ControllerConfig | None = None, **kwargs: Any) -> gym.Env:
    """A mirror env with its time limit (the task's, in steps at the control rate, unless
    given) and render_mode "rgb_array"; `control_hz` overrides the controller's rate;
    `seed` seeds the env (its first reset) and the action space."""
    task_cls = _task_class(task)
    controller = controller or ControllerConfig()
    if control_hz is not None:
        controller = dataclasses.replace(controller, control_hz=control_hz)
    steps = max_episode_steps or task_cls.steps_at(controller.control_hz)
    env = gym.make(ENV_IDS[task], max_episode_steps=steps, image_size=image_size,
                   calibration=calibration, render_mode="rgb_array", render_size=render_size,
                   controller=controller, **kwargs)
    if seed is not None:
        # Seeded like reset(seed=seed), so the caller's first plain reset() is reproducible.
        env.unwrapped.np_random = seeding.np_random(seed)[0]
        env.action_space.seed(seed)
    return env


def _register() -> None:
    for task, env_id in ENV_IDS.items():
        if env_id not in gym.registry:
            gym.register(env_id, entry_point="sim.envs:MirrorEnv",
                         max_episode_steps=TASKS[task].steps_at(ControllerConfig().control_hz),
                         kwargs={"task": task})


_register()
