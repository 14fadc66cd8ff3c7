"""Recording rollouts: what the stack writes is what the env showed, readable by others."""

import numpy as np
import pytest
from mcap_ros2.reader import read_ros2_messages

from robot.episodes import read_episode
from sim.record import evaluate_policy, record_episodes, rollout
from sim.registry import make_env, make_policy


@pytest.mark.parametrize("task, size", [("sim:push", (120, 160)), ("metaworld:reach-v3", (64, 64))])
def test_recorded_episode_is_the_rollout(tmp_path, task, size):
    env = make_env(task, image_size=size)
    try:
        steps = list(rollout(env, make_policy("expert", task, env, seed=5), seed=5))
    finally:
        env.close()
    summary = record_episodes(task, "expert", [5], tmp_path, image_size=size, progress=False)
    episode = read_episode(summary.files[0], image_size=None)

    assert episode.complete and episode.success is True and summary.successes == 1
    assert len(episode) == len(steps) == summary.frames
    # Same seed, same policy: the recording is exactly the rollout.
    np.testing.assert_array_equal(episode.frames, np.stack([s.obs["image"] for s in steps]))
    np.testing.assert_allclose(episode.actions[:-1, :3], [s.command.linear for s in steps[:-1]], atol=1e-9)
    np.testing.assert_array_equal(episode.actions[-1, :6], np.zeros(6))  # the arm stops at the end
    assert np.all(np.diff(episode.stamps_ns) > 0)
    assert episode.metadata["task"] == task and episode.metadata["source"] == "expert"
    assert episode.metadata["seed"] == "5"
    assert (episode.camera_info["height"], episode.camera_info["width"]) == size


def test_independent_reader_sees_identical_images(tmp_path):
    summary = record_episodes("sim:reach", "random", [2], tmp_path, image_size=(96, 128), progress=False)
    ours = read_episode(summary.files[0], image_size=None).frames
    theirs = [np.frombuffer(m.ros_msg.data, np.uint8).reshape(m.ros_msg.height, m.ros_msg.width, 3)
              for m in read_ros2_messages(summary.files[0], topics=["/camera/camera/color/image_raw"])]
    assert len(theirs) == len(ours) > 1
    np.testing.assert_array_equal(np.stack(theirs), ours)


def test_evaluate_policy_separates_expert_from_random():
    expert = evaluate_policy("sim:reach", "expert", 3)
    random = evaluate_policy("sim:reach", "random", 3)
    assert expert["success_rate"] == 1.0 and random["success_rate"] == 0.0
    assert expert["mean_steps"] < random["mean_steps"]


def test_control_rate_is_configurable_and_time_limits_follow_it(tmp_path):
    summary = record_episodes("sim:push", "expert", [0, 1], tmp_path, image_size=(48, 64),
                              control_hz=20.0, progress=False)
    assert summary.successes == 2
    episode = read_episode(summary.files[0], image_size=None)
    assert float(episode.metadata["control_rate_hz"]) == 20.0
    np.testing.assert_array_equal(np.diff(episode.stamps_ns), 50_000_000)
    fast, default = make_env("sim:push", control_hz=20.0), make_env("sim:push")
    assert fast.spec.max_episode_steps == 2 * default.spec.max_episode_steps
    fast.close(), default.close()
    with pytest.raises(ValueError, match="not a whole number of servo periods"):
        make_env("sim:push", control_hz=30.0)
    with pytest.raises(ValueError, match="fixed control rate"):
        make_env("metaworld:reach-v3", control_hz=20.0)
    with pytest.raises(ValueError, match="fixed camera"):
        make_env("metaworld:reach-v3", calibration="calibration/data/mirror.yaml")


def test_full_length_recording_runs_to_the_time_limit(tmp_path):
    summary = record_episodes("sim:reach", "expert", [0], tmp_path, image_size=(48, 64),
                              stop_on_success=False, progress=False)
    episode = read_episode(summary.files[0], image_size=None)
    env = make_env("sim:reach")
    limit = env.spec.max_episode_steps
    env.close()
    assert len(episode) == limit + 1 and summary.successes == 1  # every step, plus the outcome frame
    assert 0 < int(episode.metadata["success_frame"]) < limit
