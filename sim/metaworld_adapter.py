"""MetaWorld (v3) tasks behind the mirror envs' observation/info contract.

The paper evaluates on seven MetaWorld tasks (`PAPER_TASKS`); any other MT50 v3 task
name works too. One env = one metaworld Sawyer env, goal observable (the scripted
experts read the goal from the flat state), re-randomised on every reset from the
env's seeded generator, so `reset(seed=s)` is one fixed task instance.

Observation: {"image": uint8 (H, W, 3) from one fixed camera, right way up,
"proprio": float32 (4,) = metaworld's hand part of its state: hand xyz (m, world
frame = Sawyer base frame) and finger opening normalised to 0 (closed) .. 1 (open)}.

Frames: metaworld's world frame is the Sawyer base frame (the `base` body sits at the
origin, unrotated), so ee_position and the camera pose are base-frame quantities.
"""

from __future__ import annotations

# First: sim.render chooses the GL backend, which must happen before mujoco loads.
from sim.render import CameraRenderer

# isort: split
import math
import warnings
from typing import Any, ClassVar

import gymnasium as gym
import mujoco
import numpy as np
from metaworld.env_dict import ALL_V3_ENVIRONMENTS
from metaworld.policies import ENV_POLICY_MAP
from metaworld.sawyer_xyz_env import SawyerXYZEnv

from calibration import CameraExtrinsics, CameraIntrinsics
from robot.types import ArmCommand, RobotState
from sim.policies import Policy, scripted_policy

PAPER_TASKS: tuple[str, ...] = (
    "assembly-v3",
    "coffee-push-v3",
    "dial-turn-v3",
    "door-close-v3",
    "lever-pull-v3",
    "peg-unplug-side-v3",
    "reach-v3",
)
# The close corner view TD-MPC/TD-MPC2 use for 64x64 MetaWorld: every paper task's
# objects stay in view and are largest at 64x64 of the corner cameras.
DEFAULT_CAMERA = "corner4"
# Episode lengths in control steps (80 Hz): ~1.5x the expert's slowest success over
# seeds 0-19 (assembly 98, coffee-push 59, dial-turn 80, door-close 76, lever-pull 89,
# peg-unplug-side 165, reach 64 steps). metaworld's own horizon is 500 steps; the
# paper's episodes are 100 agent steps with action repeat 3 (300 env steps).
EPISODE_STEPS: dict[str, int] = {
    "assembly-v3": 150,
    "coffee-push-v3": 100,
    "dial-turn-v3": 120,
    "door-close-v3": 120,
    "lever-pull-v3": 150,
    "peg-unplug-side-v3": 250,
    "reach-v3": 100,
}
DEFAULT_EPISODE_STEPS = 300
ARM_JOINTS: tuple[str, ...] = tuple(f"right_j{i}" for i in range(7))
PROPRIO_DIM = 4


def _check_task(task: str) -> None:
    if task not in ALL_V3_ENVIRONMENTS:
        raise ValueError(
            f"unknown MetaWorld task {task!r}: the paper's tasks are {', '.join(PAPER_TASKS)}; "
            "any other MT50 v3 name (e.g. 'push-v3') also works")


def _make_goal_observable(task: str) -> SawyerXYZEnv:
    """A metaworld env that samples a fresh task (object/goal positions) on each
    reset from its own `np_random`, i.e. the benchmark's task distribution, seeded."""
    env = ALL_V3_ENVIRONMENTS[task]()
    env._partially_observable = False  # the experts read the goal from obs[-3:]
    del env.sawyer_observation_space  # cached with zero goal bounds: step() clips to it
    env._set_task_called = True
    env._freeze_rand_vec = False
    env.seeded_rand_vec = True
    return env


def _roll_upright(model: mujoco.MjModel, data: mujoco.MjData, cam_id: int) -> None:
    """Roll a camera whose image "up" points down in the world by 180 deg about its
    optical axis. metaworld's corner cameras are built that way; rolling the camera
    (not flipping pixels) keeps the image a true, unmirrored pinhole view whose pose
    is the model's camera pose."""
    mujoco.mj_forward(model, data)
    if data.cam_xmat[cam_id].reshape(3, 3)[2, 1] >= 0.0:
        return
    rolled = np.zeros(4)
    mujoco.mju_mulQuat(rolled, model.cam_quat[cam_id].copy(), np.array([0.0, 0.0, 0.0, 1.0]))
    model.cam_quat[cam_id] = rolled
    mujoco.mj_forward(model, data)


def _fast_render_settings(model: mujoco.MjModel) -> None:
    """The mirror's software-GL settings: no multisampling (resolving it costs ~2.7x
    per frame), no shadows, no reflections."""
    model.vis.quality.offsamples = 0
    model.vis.quality.shadowsize = 0
    model.light_castshadow[:] = 0
    model.mat_reflectance[:] = 0.0


def _quat_xyzw(wxyz: np.ndarray) -> np.ndarray:
    return np.asarray([wxyz[1], wxyz[2], wxyz[3], wxyz[0]], dtype=float)


class MetaWorldEnv(gym.Env):
    """One MetaWorld task with image + proprio observations and the project's info."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 80}

    def __init__(self, task: str, *, image_size: tuple[int, int] = (64, 64),
                 camera: str = DEFAULT_CAMERA, max_episode_steps: int | None = None,
                 terminate_on_success: bool = True, seed: int | None = None):
        _check_task(task)
        self.task = task
        self.camera = camera
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.max_episode_steps = max_episode_steps or EPISODE_STEPS.get(task, DEFAULT_EPISODE_STEPS)
        self.terminate_on_success = terminate_on_success
        self.render_mode = "rgb_array"
        self.calibration_id = f"metaworld-{camera}"
        self._mw = _make_goal_observable(task)
        # metaworld raises once its own horizon is reached; ours decides truncation.
        self._mw.max_path_length = max(self._mw.max_path_length, self.max_episode_steps + 1)
        self._cam_id = self._camera_id(camera)
        _roll_upright(self._mw.model, self._mw.data, self._cam_id)
        self._control_dt = float(self._mw.model.opt.timestep * self._mw.frame_skip)
        _fast_render_settings(self._mw.model)
        self._renderer = CameraRenderer(self._mw.model, self._cam_id)
        self._arm_qpos = np.array([self._mw.model.jnt_qposadr[self._joint(j)] for j in ARM_JOINTS])
        self._arm_dof = np.array([self._mw.model.jnt_dofadr[self._joint(j)] for j in ARM_JOINTS])
        self._pending_seed = seed
        self._steps = 0
        h, w = self.image_size
        self.action_space = self._mw.action_space
        self.observation_space = gym.spaces.Dict({
            "image": gym.spaces.Box(0, 255, (h, w, 3), np.uint8),
            "proprio": gym.spaces.Box(-np.inf, np.inf, (PROPRIO_DIM,), np.float32),
        })
        if seed is not None:
            self.action_space.seed(seed)

    @property
    def control_rate_hz(self) -> float:
        return 1.0 / self._control_dt

    # --- gymnasium API -------------------------------------------------------------

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[dict[str, np.ndarray], dict]:
        if seed is None:
            seed, self._pending_seed = self._pending_seed, None
        super().reset(seed=seed)
        if seed is not None:
            self._mw.seed(seed)  # the generator metaworld draws object/goal positions from
        state, _ = self._mw.reset()
        self._steps = 0
        command = ArmCommand.zero()
        return self._observation(state), self._info(state, False, command, 0.0)

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict]:
        action = np.clip(np.asarray(action, dtype=np.float32).reshape(4), -1.0, 1.0)
        state, dense_reward, _, _, mw_info = self._mw.step(action)
        self._steps += 1
        success = bool(mw_info["success"])
        terminated = success and self.terminate_on_success
        truncated = self._steps >= self.max_episode_steps
        info = self._info(state, success, self._command(action), float(dense_reward))
        return self._observation(state), float(success), terminated, truncated, info

    def render(self) -> np.ndarray:
        return self.render_camera(*self.image_size)

    def close(self) -> None:
        self._renderer.close()
        self._mw.close()

    # --- camera --------------------------------------------------------------------

    def render_camera(self, height: int, width: int) -> np.ndarray:
        """The env's camera at any resolution, uint8 (height, width, 3)."""
        return self._renderer.render(self._mw.data, height, width)

    def camera_intrinsics(self, height: int, width: int) -> CameraIntrinsics:
        """Ideal pinhole of the env's camera (MuJoCo's fovy is vertical, pixels are
        square); principal point at the image centre in OpenCV's pixel-centre convention."""
        fovy = math.radians(float(self._mw.model.cam_fovy[self._cam_id]))
        f = 0.5 * height / math.tan(0.5 * fovy)
        return CameraIntrinsics(width=width, height=height, fx=f, fy=f, cx=(width - 1) / 2,
                                cy=(height - 1) / 2, serial=self.calibration_id)

    def camera_extrinsics(self) -> CameraExtrinsics:
        """Pose of the camera's optical frame (x right, y down, z forward) in the base frame."""
        data = self._mw.data
        # MuJoCo cameras look along -z with y up: the optical frame flips y and z.
        optical = data.cam_xmat[self._cam_id].reshape(3, 3) @ np.diag([1.0, -1.0, -1.0])
        wxyz = np.zeros(4)
        mujoco.mju_mat2Quat(wxyz, optical.flatten())
        return CameraExtrinsics(tuple(data.cam_xpos[self._cam_id].tolist()),
                                tuple(_quat_xyzw(wxyz).tolist()))

    # --- helpers -------------------------------------------------------------------

    def _camera_id(self, camera: str) -> int:
        cam_id = mujoco.mj_name2id(self._mw.model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
        if cam_id < 0:
            names = [self._mw.model.camera(i).name for i in range(self._mw.model.ncam)]
            raise ValueError(f"unknown camera {camera!r}; metaworld's cameras are {names}")
        return cam_id

    def _joint(self, name: str) -> int:
        return mujoco.mj_name2id(self._mw.model, mujoco.mjtObj.mjOBJ_JOINT, name)

    def _observation(self, state: np.ndarray) -> dict[str, np.ndarray]:
        return {"image": self.render(), "proprio": state[:PROPRIO_DIM].astype(np.float32)}

    def _command(self, action: np.ndarray) -> ArmCommand:
        """The action as the twist it commands: metaworld moves the mocap target by
        action * action_scale every control period; gripper -1 (open) .. 1 (closed)."""
        linear = action[:3].astype(float) * self._mw.action_scale / self._control_dt
        return ArmCommand(linear, np.zeros(3), (float(action[3]) + 1.0) / 2.0)

    def _robot_state(self) -> RobotState:
        data = self._mw.data
        return RobotState(
            joint_names=ARM_JOINTS,
            joint_positions=data.qpos[self._arm_qpos].copy(),
            joint_velocities=data.qvel[self._arm_dof].copy(),
            ee_position=data.body("hand").xpos.copy(),
            ee_orientation_xyzw=_quat_xyzw(data.body("hand").xquat),
            gripper_width=self._gripper_width(),
            stamp_ns=round(data.time * 1e9),
        )

    def _gripper_width(self) -> float:
        """Gap between the finger pads, which the r_close/l_close slide joints open and close."""
        data, model = self._mw.data, self._mw.model
        right, left = data.geom("rightpad_geom"), data.geom("leftpad_geom")
        thickness = model.geom("rightpad_geom").size[1] + model.geom("leftpad_geom").size[1]
        return float(np.linalg.norm(right.xpos - left.xpos) - thickness)

    def _info(self, state: np.ndarray, success: bool, command: ArmCommand,
              dense_reward: float) -> dict[str, Any]:
        return {
            "success": success,
            "robot_state": self._robot_state(),
            "command": command,
            "requested_command": command.copy(),
            # dense_reward: metaworld's shaped reward, for comparing learned rewards only.
            "privileged": {"state": np.asarray(state, dtype=np.float64).copy(),
                           "dense_reward": dense_reward},
            "calibration_id": self.calibration_id,
            "task": self.task,
        }


def make_metaworld_env(task: str, *, image_size: tuple[int, int] = (64, 64),
                       camera: str = DEFAULT_CAMERA, max_episode_steps: int | None = None,
                       seed: int | None = None, terminate_on_success: bool = True) -> MetaWorldEnv:
    """A MetaWorld task (paper task or any MT50 v3 name) with the mirror envs' contract."""
    return MetaWorldEnv(task, image_size=image_size, camera=camera,
                        max_episode_steps=max_episode_steps, seed=seed,
                        terminate_on_success=terminate_on_success)


class MetaWorldExpert:
    """metaworld's scripted policy for the task, fed the privileged flat state."""

    name = "expert"

    def __init__(self, task: str):
        _check_task(task)
        self._policy = ENV_POLICY_MAP[task]()

    def reset(self, seed: int | None = None) -> None:
        """metaworld's scripted policies are stateless."""

    def act(self, obs: dict[str, Any], info: dict[str, Any]) -> np.ndarray:
        with warnings.catch_warnings():
            # Their high gains trip metaworld's "constants may be too high" warning; the
            # env clips to [-1, 1] anyway, and so do we.
            warnings.simplefilter("ignore", UserWarning)
            action = self._policy.get_action(info["privileged"]["state"])
        return np.clip(action, -1.0, 1.0).astype(np.float32)


def make_metaworld_policy(kind: str, env: gym.Env, seed: int | None = None) -> Policy:
    """kind: "expert" (scripted), "suboptimal" (expert with 25% random actions), "random", "zero"."""
    return scripted_policy(kind, lambda: MetaWorldExpert(env.unwrapped.task), env.action_space, seed)
