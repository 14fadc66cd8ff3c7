import pytest

from models.data import load_frames, select_episodes
from sim.record import record_episodes


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
