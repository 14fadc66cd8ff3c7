import numpy as np
import pytest

from models.data import first_commanded_frame, load_frames, select_episodes
from sim.record import record_episodes, record_one
from sim.registry import make_env, make_policy


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("episodes")
    record_episodes("sim:reach", "expert", range(6), root, image_size=(48, 64), progress=False)
    record_episodes("sim:reach", "random", range(2), root, image_size=(48, 64), progress=False)
    return root


def test_frames_are_square_crops_at_model_size(dataset):
    entries = select_episodes(dataset, split="all")
    assert len(entries) == 6 and {e.source for e in entries} == {"expert"}
    episodes = load_frames(entries, image_size=32, progress=False)
    assert all(e.frames.shape[1:] == (32, 32, 3) for e in episodes)
    assert sum(len(e.frames) for e in episodes) == sum(e.entry.num_frames for e in episodes)


def test_train_and_test_are_disjoint(dataset):
    train = select_episodes(dataset, split="train", test_fraction=0.5)
    test = select_episodes(dataset, split="test", test_fraction=0.5)
    assert not {e.episode_id for e in train} & {e.episode_id for e in test}
    assert len(train) + len(test) == 6


def test_empty_selection_names_what_exists(dataset):
    with pytest.raises(ValueError, match=r"no complete train episodes .*\('sim:reach', 'expert'\)"):
        select_episodes(dataset, tasks=["sim:push"])
    with pytest.raises(ValueError, match="split must be one of"):
        select_episodes(dataset, split="validation")


class LateStart:
    """The scripted expert, after `idle` steps of zero action: how an episode recorded through the
    graph begins (the first command reaches the arm a control period or two late)."""

    def __init__(self, expert, idle: int):
        self.expert, self.idle, self.steps = expert, idle, 0

    def reset(self, seed=None):
        self.steps = 0
        self.expert.reset(seed)

    def act(self, obs, info):
        self.steps += 1
        action = self.expert.act(obs, info)
        return np.zeros_like(action) if self.steps <= self.idle else action


def test_frames_start_at_the_first_commanded_frame(tmp_path):
    env = make_env("sim:reach", image_size=(48, 64))
    _, _, recorded = record_one(env, LateStart(make_policy("expert", "sim:reach", env, 0), idle=3), "sim:reach",
                                   "expert", 7, tmp_path, 0)
    env.close()
    (episode,) = load_frames(select_episodes(tmp_path, split="all"), image_size=32, progress=False)
    assert len(episode.frames) == recorded - 3
    assert np.abs(episode.frames[1].astype(int) - episode.frames[0]).max() > 0  # the arm moves at once


def test_first_commanded_frame():
    actions = np.zeros((5, 7), np.float32)
    actions[:, 6] = 1.0  # the gripper alone is not a command to move
    assert first_commanded_frame(actions) == 0  # never commanded: kept whole
    actions[2, 3] = 0.1
    assert first_commanded_frame(actions) == 2
