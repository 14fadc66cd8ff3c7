"""robot.policy_runtime: policies gated on the episode and their inputs, weights swapped by version
between steps (never mid-step), actor checkpoints, and the messages policy_node reads."""

import json

import numpy as np
import pytest

from robot.policy_runtime import (
    ActorLoadError,
    ActorPolicy,
    PolicyRunner,
    Weights,
    WeightSwap,
    command_from_action,
    load_actor,
    make_policy,
    parse_privileged,
    parse_weights_message,
    privileged_message,
    proprio_vector,
)

IMAGE = np.zeros((8, 8, 3), np.uint8)


class StubActor:
    """Acts with its own version number as vx; optionally offers newer weights in the middle of act()."""

    def __init__(self, version, during_act=None):
        self.version, self.during_act, self.resets = version, during_act, 0

    def reset(self):
        self.resets += 1

    def act(self, image, proprio):
        first = self.version
        if self.during_act is not None:
            self.during_act()
        assert self.version == first
        return np.array([0.1 * self.version, 0.0, 0.0, -1.0])


def test_weights_swap_at_the_start_of_the_next_step_never_mid_step():
    swap = WeightSwap()
    policy = ActorPolicy()
    runner = PolicyRunner(policy, max_linear_speed=1.0, weights=swap)
    runner.start()
    assert runner.step(IMAGE) is None and runner.idle_reason == "no actor weights yet"

    def offer_v2():  # the learner publishes while the actor is inside a step
        assert swap.offer(Weights(2, "v2.ckpt", StubActor(2)))

    assert swap.offer(Weights(1, "v1.ckpt", StubActor(1, during_act=offer_v2)))
    first = runner.step(IMAGE)
    assert first.linear[0] == pytest.approx(0.1) and runner.version == 1  # v2 arrived mid-step: not used
    second = runner.step(IMAGE)
    assert second.linear[0] == pytest.approx(0.2) and runner.version == 2


def test_exploration_noise_is_seeded_per_episode_and_stays_in_range():
    def actions(episode, std):
        runner = PolicyRunner(ActorPolicy(StubActor(5), exploration_std=std), max_linear_speed=1.0, seed=3)
        runner.start(episode)
        return np.array([runner.step(IMAGE).linear[0] for _ in range(20)])

    np.testing.assert_allclose(actions(1, 0.0), 0.5)  # the mean action
    np.testing.assert_array_equal(actions(1, 0.3), actions(1, 0.3))
    assert not np.array_equal(actions(1, 0.3), actions(2, 0.3)) and np.std(actions(1, 0.3)) > 0.05
    assert np.all(np.abs(actions(1, 5.0)) <= 1.0)
    with pytest.raises(ValueError, match="exploration_std must be a finite number >= 0"):
        ActorPolicy(exploration_std=-0.1)


def test_versions_only_go_up():
    swap = WeightSwap()
    assert swap.wants(0) and swap.offer(Weights(3, "a", StubActor(3)))
    assert not swap.wants(3) and not swap.offer(Weights(2, "b", StubActor(2)))
    assert swap.offer(Weights(5, "c", StubActor(5)))  # replaces the pending 3: the newest wins
    assert swap.take().version == 5 and swap.take() is None and swap.version == 5
    assert not swap.offer(Weights(4, "d", StubActor(4)))


def test_the_runner_acts_only_while_running_and_with_its_inputs_and_stops_with_a_zero_twist():
    runner = PolicyRunner(make_policy("scripted"), max_linear_speed=0.25, needs=("privileged",))
    privileged = {"tcp_position": np.array([0.5, 0.0, 0.25]), "goal_position": np.array([0.6, 0.0, 0.25])}
    assert runner.step(IMAGE, privileged=privileged, task="sim:reach") is None
    assert runner.idle_reason == "episode not running" and runner.stop() is None
    runner.start(episode=1)
    assert runner.step(None, privileged=privileged, task="sim:reach") is None and runner.idle_reason == "no image yet"
    assert runner.step(IMAGE) is None and runner.idle_reason == "no privileged state yet"
    command = runner.step(IMAGE, privileged=privileged, task="sim:reach")
    assert command.linear[0] > 0 and command.gripper == 0.0  # toward the goal, gripper open
    stop = runner.stop()
    assert not np.any(stop.linear) and not np.any(stop.angular) and runner.steps == 1
    with pytest.raises(ValueError, match="no scripted expert for task 'sim:fly'"):
        runner.start()
        runner.step(IMAGE, privileged=privileged, task="sim:fly")


def test_random_is_seeded_per_episode_and_zero_holds_still():
    def actions(episode):
        runner = PolicyRunner(make_policy("random"), max_linear_speed=0.25, seed=7)
        runner.start(episode)
        return [runner.step(IMAGE).linear for _ in range(3)]

    np.testing.assert_array_equal(actions(1), actions(1))
    assert not np.array_equal(actions(1), actions(2))
    zero = PolicyRunner(make_policy("zero"), max_linear_speed=0.25)
    zero.start()
    command = zero.step(IMAGE)
    assert not np.any(command.linear) and command.gripper == 0.0
    with pytest.raises(ValueError, match="unknown policy 'greedy'"):
        make_policy("greedy")


def test_command_from_action_scales_like_the_mirror_env():
    command = command_from_action([2.0, -0.5, 0.0, 0.0], max_linear_speed=0.2)
    np.testing.assert_allclose(command.linear, [0.2, -0.1, 0.0])
    assert command.gripper == 0.5
    assert np.isnan(command_from_action([np.nan, 0, 0, 1], 0.2).linear[0])  # the gate rejects it
    np.testing.assert_allclose(command_from_action([0, 0, 0, 0.5, 0, 0, 1], 0.2, 2.0).angular, [1.0, 0, 0])
    with pytest.raises(ValueError, match="4 .* or 7 values"):
        command_from_action([0, 0, 0], 0.2)


def test_a_missing_actor_checkpoint_or_loader_is_a_clear_error(tmp_path):
    with pytest.raises(ActorLoadError, match="actor checkpoint .*missing.ckpt not found"):
        load_actor(tmp_path / "missing.ckpt")
    garbage = tmp_path / "actor.ckpt"
    garbage.write_bytes(b"weights")
    with pytest.raises(ActorLoadError, match="cannot load actor checkpoint .*actor.ckpt"):
        load_actor(garbage)


def test_an_actor_starts_every_episode_afresh():
    actor = StubActor(1)
    runner = PolicyRunner(ActorPolicy(actor), max_linear_speed=1.0)
    for episode in (1, 2):
        runner.start(episode=episode)
        runner.step(IMAGE)
        runner.stop()
    assert actor.resets == 2  # a frame-stacking actor never sees the last episode's frames


def test_weights_messages():
    assert parse_weights_message(json.dumps({"path": "/w/actor.ckpt", "version": 3})) == ("/w/actor.ckpt", 3)
    for bad, match in [("{", "not JSON"), ('{"path": "a", "version": -1}', "version must be an int >= 0"),
                       ('{"path": "", "version": 1}', "path must be a non-empty string"),
                       ('{"path": "a", "version": 1, "x": 2}', "must be")]:
        with pytest.raises(ValueError, match=match):
            parse_weights_message(bad)


def test_privileged_state_round_trips_and_proprio_matches_the_env():
    text = privileged_message("sim:push", 42, {"tcp_position": np.array([0.5, 0.0, 0.2]),
                                                "object_radius": np.array([0.03])})
    task, stamp, values = parse_privileged(text)
    assert (task, stamp) == ("sim:push", 42) and values["object_radius"].tolist() == [0.03]
    with pytest.raises(ValueError, match="privileged state"):
        parse_privileged('{"task": "sim:push"}')
    with pytest.raises(ValueError, match="non-finite"):
        parse_privileged(privileged_message("sim:push", 1, {"a": [float("nan")]}))

    from sim.cell import FINGER_JOINTS
    from sim.envs import MirrorEnv

    env = MirrorEnv("reach", image_size=(8, 8))
    try:
        obs, info = env.reset(seed=0)
        state = info["robot_state"]
        names = [*state.joint_names, *FINGER_JOINTS]  # what sim_arm_node publishes on joint_states
        positions = [*state.joint_positions, state.gripper_width / 2, state.gripper_width / 2]
        velocities = [*state.joint_velocities, 0.0, 0.0]
        proprio = proprio_vector(names, positions, velocities, state.ee_position, FINGER_JOINTS)
        np.testing.assert_allclose(proprio, obs["proprio"], rtol=1e-6, atol=1e-7)
    finally:
        env.close()
