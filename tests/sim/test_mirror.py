"""The MuJoCo mirror with real rendering: calibrated camera, safety-gated control,
gymnasium API, scripted experts."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import mujoco
import numpy as np
import pytest

from calibration import CalibrationError, load_calibration
from robot.types import ArmCommand, RobotState
from sim import record, render
from sim.envs import ENV_IDS, MIRROR_TASKS, PROPRIO_SIZE, make_mirror_env
from sim.experts import make_mirror_policy


@pytest.fixture(scope="module")
def envs():
    made = {task: make_mirror_env(task) for task in MIRROR_TASKS}
    yield made
    for env in made.values():
        env.close()


def rollout(env: gym.Env, policy, seed: int) -> tuple[bool, int, list[dict]]:
    """(success, control steps, the info of every state visited) of one episode."""
    infos = [step.info for step in record.rollout(env, policy, seed)]
    return bool(infos[-1]["success"]), len(infos) - 1, infos


# --- camera --------------------------------------------------------------------------


def test_camera_projection_matches_calibrated_pinhole():
    base = load_calibration()
    # Off-centre principal point and fx != fy, so a sign or axis slip cannot hide.
    camera = dataclasses.replace(base.camera, fx=600.0, fy=630.0, cx=300.0, cy=262.0)
    env = make_mirror_env("reach", calibration=dataclasses.replace(base, camera=camera))
    mirror = env.unwrapped
    try:
        mirror.reset(seed=0)
        rotation = base.camera_pose.rotation_matrix
        origin = np.array(base.camera_pose.translation)
        for point in ([0.70, -0.25, 0.10], [0.45, 0.22, 0.30], [0.65, 0.20, 0.08]):
            mirror.data.mocap_pos[0] = point
            mujoco.mj_forward(mirror.model, mirror.data)
            for height, width, tolerance in ((480, 640, 1.0), (120, 160, 0.5)):
                in_camera = rotation.T @ (np.array(point) - origin)
                uv = (mirror.camera_intrinsics(height, width).matrix @ in_camera)[:2] / in_camera[2]
                r, g, b = np.moveaxis(mirror.render_camera(height, width).astype(int), -1, 0)
                green = (g > r + 40) & (g > b + 40)  # shaded parts of the sphere too
                rows, cols = np.nonzero(green)
                assert len(rows) > 4, f"goal at {point} not visible"
                np.testing.assert_allclose([cols.mean(), rows.mean()], uv, atol=tolerance)
    finally:
        env.close()


def test_camera_pose_is_the_calibrated_one(envs):
    pose = envs["reach"].unwrapped.camera_extrinsics()
    calibrated = load_calibration().camera_pose
    np.testing.assert_allclose(pose.translation, calibrated.translation, atol=1e-9)
    np.testing.assert_allclose(pose.rotation_matrix, calibrated.rotation_matrix, atol=1e-6)


def test_image_shapes_and_intrinsics(envs):
    env = envs["push"]
    obs, _ = env.reset(seed=0)
    assert obs["image"].shape == (64, 64, 3) and obs["image"].dtype == np.uint8
    assert obs["image"].std() > 10  # a scene, not a blank buffer
    assert env.render().shape == (480, 640, 3)
    assert env.unwrapped.render_camera(30, 40).shape == (30, 40, 3)
    small = env.unwrapped.camera_intrinsics(64, 64)
    full = load_calibration().camera
    assert (small.width, small.height) == (64, 64)
    assert small.fx == pytest.approx(full.fx * 64 / 640) and small.fy == pytest.approx(full.fy * 64 / 480)


def test_cropped_observation_is_the_nodes_model_input():
    """With image_crop, obs["image"] is the full camera image cropped and resized as policy_node and
    read_episode do: what `drr train policy` trains on is what the graph feeds the actor."""
    from robot.cameras.crop import crop_and_resize

    env = make_mirror_env("reach", image_crop="center", seed=0)
    try:
        obs, _ = env.reset(seed=3)
        full = env.unwrapped.render_camera(480, 640)
        np.testing.assert_array_equal(obs["image"], crop_and_resize(full, "center", (64, 64)))
    finally:
        env.close()
    with pytest.raises(ValueError, match="does not fit"):
        make_mirror_env("reach", image_crop="0,0,500,500")


# --- safety and control ---------------------------------------------------------------


@pytest.fixture(scope="module", params=[False, True], ids=["linear", "angular"])
def random_rollouts(request):
    env = make_mirror_env("push", max_episode_steps=60, angular=request.param)
    try:
        policy = make_mirror_policy("random", env, seed=0)
        yield env, [info for seed in (0, 1) for info in rollout(env, policy, seed)[2]]
    finally:
        env.close()


def test_safety_gate_keeps_tcp_in_workspace(random_rollouts):
    env, infos = random_rollouts
    box = load_calibration().workspace
    limits = env.unwrapped.gate.limits
    positions = np.array([info["robot_state"].ee_position for info in infos])
    # The gate stops at the box over one control period; tracking lag adds millimetres.
    assert all(box.contains(p, tolerance=0.01) for p in positions)
    assert any(env.unwrapped.gate.status.clipped_speed or not np.allclose(
        i["command"].linear, i["requested_command"].linear) for i in infos)
    for info in infos:
        assert np.linalg.norm(info["command"].linear) <= limits.max_linear_speed + 1e-9


def test_safety_gate_stops_at_every_face_of_the_box(envs):
    env, box = envs["reach"], load_calibration().workspace
    for axis in range(3):
        for sign, face in ((-1.0, box.min[axis]), (1.0, box.max[axis])):
            env.reset(seed=0)
            env.unwrapped.data.mocap_pos[0] = [0.0, 0.0, -1.0]  # no success on the way
            action = np.zeros(4, dtype=np.float32)
            action[axis] = sign
            clipped = False
            for _ in range(25):  # 2.5 s at full speed: far past the face if unchecked
                _, _, _, _, info = env.step(action)
                clipped |= env.unwrapped.gate.status.clipped_workspace
                position = info["robot_state"].ee_position
                assert box.contains(position, tolerance=0.01), (axis, sign, position)
            assert clipped and abs(position[axis] - face) < 0.03, (axis, sign, position)


def test_joint_limits_respected(random_rollouts):
    env, infos = random_rollouts
    arm = env.unwrapped.arm
    q = np.array([info["robot_state"].joint_positions for info in infos])
    assert np.all(q >= arm.lower) and np.all(q <= arm.upper)


def test_controller_tracks_velocity_and_holds_gripper_down(envs):
    env = envs["reach"]
    _, info = env.reset(seed=0)
    start = info["robot_state"].ee_position
    for _ in range(10):  # 1 s at 0.1 m/s along +y (under the speed and accel limits)
        _, _, _, _, info = env.step(np.array([0.0, 0.4, 0.0, -1.0], dtype=np.float32))
    moved = info["robot_state"].ee_position - start
    np.testing.assert_allclose(moved, [0.0, 0.1, 0.0], atol=0.01)
    x, y = info["robot_state"].ee_orientation_xyzw[:2]
    approach_z = 1 - 2 * (x * x + y * y)  # z component of the TCP's z axis
    assert approach_z < -0.999  # still pointing down


# --- gymnasium API ---------------------------------------------------------------------


def test_same_seed_same_first_frames(envs):
    env = envs["drawer-open"]
    first = [env.reset(seed=11)[0] for _ in range(2)]
    np.testing.assert_array_equal(first[0]["image"], first[1]["image"])
    np.testing.assert_array_equal(first[0]["proprio"], first[1]["proprio"])
    action = np.array([0.5, -0.5, 0.2, 1.0], dtype=np.float32)
    after = []
    for _ in range(2):
        env.reset(seed=11)
        after.append(env.step(action)[0])
    np.testing.assert_array_equal(after[0]["image"], after[1]["image"])
    other = env.reset(seed=12)[0]
    assert not np.array_equal(other["proprio"], first[0]["proprio"])
    seeded = make_mirror_env("drawer-open", seed=11)
    try:  # seeding at construction makes the first plain reset reproducible
        np.testing.assert_array_equal(seeded.reset()[0]["proprio"], first[0]["proprio"])
    finally:
        seeded.close()


def test_info_observation_and_spaces(envs):
    env = envs["push"]
    obs, info = env.reset(seed=3)
    assert env.observation_space.contains(obs)
    assert obs["proprio"].shape == (PROPRIO_SIZE,)
    obs, reward, terminated, _, info = env.step(env.action_space.sample())
    assert isinstance(info["robot_state"], RobotState)
    assert isinstance(info["command"], ArmCommand) and isinstance(info["requested_command"], ArmCommand)
    assert info["robot_state"].stamp_ns == pytest.approx(0.1e9, abs=1e6)
    assert info["calibration_id"] == "mirror-default" and info["task"] == "push"
    assert {"tcp_position", "object_position", "goal_position"} <= set(info["privileged"])
    assert reward == float(info["success"]) and terminated == info["success"]
    assert env.action_space.shape == (4,)


def test_registered_ids_and_time_limit():
    env = gym.make(ENV_IDS["reach"], angular=True)
    try:
        assert env.spec.max_episode_steps == env.unwrapped.task.steps_at(10.0)
        assert env.action_space.shape == (7,)
        env.reset(seed=0)
        env.unwrapped.data.mocap_pos[0] = [0.7, 0.3, 0.4]  # out of the way of a still arm
        for _ in range(env.spec.max_episode_steps):
            *_, terminated, truncated, _ = env.step(np.zeros(7, dtype=np.float32))
            assert not terminated
        assert truncated
        assert env.unwrapped.control_rate_hz == pytest.approx(10.0)
    finally:
        env.close()


# --- experts -------------------------------------------------------------------------


@pytest.mark.parametrize("task", MIRROR_TASKS)
def test_expert_succeeds(envs, task):
    env = envs[task]
    policy = make_mirror_policy("expert", env, seed=None)
    for seed in (0, 1):
        success, _, _ = rollout(env, policy, seed)
        assert success, f"{task} expert failed on seed {seed}"


@pytest.mark.parametrize("task", MIRROR_TASKS)
def test_suboptimal_and_random_are_worse(envs, task):
    env, seeds = envs[task], range(4)
    results = {}
    for kind in ("expert", "suboptimal", "random"):
        policy = make_mirror_policy(kind, env, seed=0)
        runs = [rollout(env, policy, seed)[:2] for seed in seeds]
        # Steps to success, failures counted as the whole time limit.
        results[kind] = np.mean([steps if ok else env.spec.max_episode_steps + 1
                                 for ok, steps in runs])
    assert results["expert"] < results["suboptimal"] < results["random"]


# --- errors --------------------------------------------------------------------------


def test_zero_policy_keeps_the_arm_where_it_starts(envs):
    env = envs["reach"]
    policy = make_mirror_policy("zero", env, seed=0)
    obs, info = env.reset(seed=5)
    start = info["privileged"]["tcp_position"].copy()
    for _ in range(10):
        obs, _, _, _, info = env.step(policy.act(obs, info))
    assert np.linalg.norm(info["privileged"]["tcp_position"] - start) < 2e-3


def test_unknown_task_and_policy_kind(envs):
    with pytest.raises(ValueError, match="reach.*push.*drawer-open"):
        make_mirror_env("fold-laundry")
    with pytest.raises(ValueError, match="expert"):
        make_mirror_policy("oracle", envs["reach"], seed=0)


def test_bad_calibration(tmp_path):
    with pytest.raises(CalibrationError, match="not found"):
        make_mirror_env("reach", calibration=tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("calibration_id: x\ncamera: {width: 640}\n")
    with pytest.raises(CalibrationError, match="broken.yaml"):
        make_mirror_env("reach", calibration=broken)


def test_gl_backend_choice(monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "egl")
    assert render.select_gl_backend() == "egl"
    monkeypatch.delenv("MUJOCO_GL")
    monkeypatch.setattr(render, "_available", lambda backend: backend == "osmesa")
    monkeypatch.setenv("PYOPENGL_PLATFORM", "osmesa")
    monkeypatch.setattr(mujoco.gl_context, "GLContext", mujoco.gl_context.GLContext)
    # PyOpenGL is bound to EGL in this process by now, so no switch, only a warning.
    with pytest.warns(UserWarning, match="fresh process"):
        assert render.select_gl_backend() == "osmesa"
    monkeypatch.delenv("MUJOCO_GL")
    monkeypatch.setattr(render, "_available", lambda backend: False)
    with pytest.raises(render.RenderBackendError, match="libegl1.*libosmesa6"):
        render.select_gl_backend()
