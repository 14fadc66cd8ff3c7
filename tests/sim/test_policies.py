import gymnasium as gym
import numpy as np
import pytest

from sim.policies import RandomPolicy, SuboptimalPolicy, scripted_policy

SPACE = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)


class ConstantExpert:
    name = "expert"

    def __init__(self):
        self.calls = 0

    def reset(self, seed=None):
        self.calls = 0

    def act(self, obs, info):
        self.calls += 1
        return np.full(4, 0.5, np.float32)


def test_random_policy_is_bounded_and_seeded():
    first = [RandomPolicy(SPACE, seed=3).act({}, {}) for _ in range(2)]
    np.testing.assert_array_equal(first[0], first[1])
    actions = np.stack([RandomPolicy(SPACE, seed=s).act({}, {}) for s in range(200)])
    assert actions.min() >= -1.0 and actions.max() <= 1.0 and actions.std() > 0.4


def test_suboptimal_replaces_a_quarter_of_the_actions_and_keeps_the_expert_phase():
    expert = ConstantExpert()
    policy = SuboptimalPolicy(expert, SPACE, seed=0)
    actions = np.stack([policy.act({}, {}) for _ in range(4000)])
    replaced = np.mean(np.any(actions != 0.5, axis=1))
    assert 0.22 < replaced < 0.28
    assert expert.calls == 4000  # queried every step, so a phase machine keeps its phase


def test_scripted_policy_kinds():
    assert isinstance(scripted_policy("random", ConstantExpert, SPACE, 0), RandomPolicy)
    assert isinstance(scripted_policy("expert", ConstantExpert, SPACE, 0), ConstantExpert)
    assert isinstance(scripted_policy("suboptimal", ConstantExpert, SPACE, 0), SuboptimalPolicy)
    with pytest.raises(ValueError,
                       match="unknown policy kind 'perfect'; valid kinds: expert, suboptimal, random, zero"):
        scripted_policy("perfect", ConstantExpert, SPACE, 0)
    with pytest.raises(ValueError, match="random_fraction must be in"):
        SuboptimalPolicy(ConstantExpert(), SPACE, random_fraction=1.5)


@pytest.mark.parametrize("size", [4, 7])
def test_zero_policy_holds_still_with_the_gripper_open(size):
    space = gym.spaces.Box(-1.0, 1.0, (size,), np.float32)
    policy = scripted_policy("zero", ConstantExpert, space, 0)
    action = policy.act({}, {})
    assert action.shape == (size,) and space.contains(action)
    np.testing.assert_array_equal(action[:-1], 0.0)
    assert action[-1] == -1.0  # open
