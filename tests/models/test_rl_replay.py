from dataclasses import replace

import numpy as np
import pytest
import torch

from models.rl.replay import Episode, ReplayBuffer, load_episode, nstep_return, save_episode, stack_indices

SIZE = 8


def counting_episode(steps: int, *, start: float = 1.0, terminated: bool = False,
                     intervention: list[bool] | None = None, meta: dict | None = None) -> Episode:
    """Frame i is filled with the value i and proprio is [i]; reward of step t is start + t."""
    frames = np.stack([np.full((SIZE, SIZE, 3), i, np.uint8) for i in range(steps + 1)])
    return Episode(image=frames, proprio=np.arange(steps + 1, dtype=np.float32)[:, None],
                   action=np.stack([[t / 10, -t / 10] for t in range(steps)]),
                   reward=start + np.arange(steps, dtype=np.float32),
                   reward_parts={"sparse": np.zeros(steps), "diffusion": start + np.arange(steps)},
                   intervention=intervention, terminated=terminated, meta=meta or {"reward_fingerprint": "v1"})


# ---------------------------------------------------------------- n-step returns


def test_nstep_return_by_hand():
    rewards = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    # t = 0, full 3 steps: 1 + 0.9 * 2 + 0.81 * 3 = 5.23, bootstrap 0.9 ** 3 from observation 3
    assert nstep_return(rewards, False, 0, 3, 0.9) == pytest.approx((5.23, 0.729, 3))
    # the episode's end shortens the sum and bootstraps from the last observation
    assert nstep_return(rewards, False, 3, 3, 0.9) == pytest.approx((8.5, 0.81, 5))
    assert nstep_return(rewards, False, 4, 3, 0.9) == pytest.approx((5.0, 0.9, 5))
    # a terminal step inside the window: nothing is bootstrapped
    assert nstep_return(rewards, True, 3, 3, 0.9) == pytest.approx((8.5, 0.0, 5))
    assert nstep_return(rewards, True, 2, 3, 0.9) == pytest.approx((3 + 3.6 + 4.05, 0.0, 5))
    # a terminal step beyond the window changes nothing
    assert nstep_return(rewards, True, 0, 3, 0.9) == pytest.approx((5.23, 0.729, 3))
    assert nstep_return(rewards, False, 1, 1, 0.9) == pytest.approx((2.0, 0.9, 2))


def test_frames_stack_oldest_first_and_repeat_the_first_at_the_start():
    assert stack_indices(0, 3) == [0, 0, 0]
    assert stack_indices(1, 3) == [0, 0, 1]
    assert stack_indices(5, 3) == [3, 4, 5]


def test_sampled_batches_hold_the_stored_steps_with_nstep_targets(tmp_path):
    buffer = ReplayBuffer(tmp_path, max_size=100, frame_stack=3, nstep=3, discount=0.9)
    episode = counting_episode(5, terminated=True)
    buffer.add(episode)
    batch = buffer.sample(200, torch.Generator().manual_seed(0))
    assert batch.obs.shape == (200, 9, SIZE, SIZE) and batch.obs.dtype == np.uint8
    assert batch.reward.shape == batch.discount.shape == (200, 1)
    steps = batch.obs[:, -1, 0, 0].astype(int)  # the newest frame's value is its step
    assert set(steps) == set(range(5))
    for row, t in enumerate(steps):
        reward, discount, last = nstep_return(episode.reward, True, t, 3, 0.9)
        assert batch.obs[row, ::3, 0, 0].tolist() == stack_indices(t, 3)
        assert batch.next_obs[row, ::3, 0, 0].tolist() == stack_indices(last, 3)
        assert batch.reward[row, 0] == pytest.approx(reward) and batch.discount[row, 0] == pytest.approx(discount)
        np.testing.assert_allclose(batch.action[row], episode.action[t])
        assert batch.proprio[row, 0] == t and batch.next_proprio[row, 0] == last
    again = buffer.sample(200, torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(again.obs, batch.obs)


# ---------------------------------------------------------------- on disk


def test_episodes_survive_a_killed_process_and_a_half_written_file_is_reported(tmp_path):
    buffer = ReplayBuffer(tmp_path, max_size=1000)
    written = [buffer.add(counting_episode(4, start=float(i))) for i in range(3)]
    del buffer  # the process dies; what it wrote is the record
    good = written[0].read_bytes()
    stray = tmp_path / ".episode_000003.npz.x1y2.tmp"  # killed while writing the 4th episode
    stray.write_bytes(good[: len(good) // 2])

    with pytest.warns(UserWarning, match=r"ignoring 1 temp file\(s\) left by an interrupted write"):
        reopened = ReplayBuffer(tmp_path, max_size=1000)
    assert len(reopened.episodes) == 3 and len(reopened) == 12
    assert reopened.stray == [stray] and reopened.unreadable == {}
    assert [e.reward[0] for e in reopened.episodes] == [0.0, 1.0, 2.0]  # oldest first
    assert reopened.add(counting_episode(4)).name == "episode_000003.npz"
    assert len(reopened.episode_files()) == 4


def test_an_unreadable_episode_file_is_skipped_with_its_reason(tmp_path):
    ReplayBuffer(tmp_path, max_size=100).add(counting_episode(3))
    (tmp_path / "episode_000001.npz").write_bytes(b"not an npz")
    with pytest.warns(UserWarning, match="1 unreadable episode file"):
        buffer = ReplayBuffer(tmp_path, max_size=100)
    assert len(buffer.episodes) == 1
    assert list(buffer.unreadable) == [tmp_path / "episode_000001.npz"]
    assert "not a readable episode file" in buffer.unreadable[tmp_path / "episode_000001.npz"]
    with pytest.raises(ValueError, match="episode_000001.npz is not a readable episode file"):
        load_episode(tmp_path / "episode_000001.npz")


def test_memory_holds_at_most_max_size_transitions_and_disk_keeps_the_rest(tmp_path):
    buffer = ReplayBuffer(tmp_path, max_size=10)
    for i in range(5):
        buffer.add(counting_episode(4, start=float(i)))
        assert len(buffer) <= 10
    assert len(buffer) == 8 and [e.reward[0] for e in buffer.episodes] == [3.0, 4.0]
    assert len(buffer.episode_files()) == 5  # evicted from memory, not from disk
    reopened = ReplayBuffer(tmp_path, max_size=10)  # resumes with the newest that fit
    assert [e.reward[0] for e in reopened.episodes] == [3.0, 4.0]
    with pytest.raises(ValueError, match="does not fit a replay of max_size 10"):
        reopened.add(counting_episode(11))

    capped = ReplayBuffer(tmp_path, max_size=10, max_disk_episodes=3)
    capped.add(counting_episode(4, start=5.0))
    assert [p.name for p in capped.episode_files()] == ["episode_000003.npz", "episode_000004.npz",
                                                        "episode_000005.npz"]


def test_relabel_rewrites_rewards_and_fingerprint_of_every_file(tmp_path):
    buffer = ReplayBuffer(tmp_path, max_size=8, nstep=1)
    for i in range(3):
        buffer.add(counting_episode(4, start=float(i)))
    assert len(buffer.episodes) == 2  # one episode lives only on disk

    def label(episode: Episode) -> dict[str, np.ndarray]:
        diffusion = np.full(len(episode), 7.0)
        return {"reward": diffusion + episode.reward_parts["sparse"], "diffusion": diffusion}

    assert buffer.relabel(label, fingerprint="v2") == 3
    for path in buffer.episode_files():
        episode = load_episode(path)
        assert episode.meta["reward_fingerprint"] == "v2"
        np.testing.assert_array_equal(episode.reward, 7.0)
        assert set(episode.reward_parts) == {"sparse", "diffusion"}  # parts not returned are kept
    assert (buffer.sample(50, torch.Generator().manual_seed(0)).reward == 7.0).all()  # memory follows the files
    assert buffer.relabel(label, fingerprint="v2") == 0  # already done: an interrupted relabel resumes
    assert not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(ValueError, match="without 'reward'"):
        buffer.relabel(lambda e: {"diffusion": np.zeros(len(e))}, fingerprint="v3")
    with pytest.raises(ValueError, match=r"reward has shape \(2,\), expected \(4,\)"):
        buffer.relabel(lambda e: {"reward": np.zeros(2)}, fingerprint="v3")


def test_env_frames_stay_on_disk_and_are_what_relabel_sees(tmp_path):
    buffer = ReplayBuffer(tmp_path, max_size=8, nstep=1)
    episode = counting_episode(4)
    every_frame = np.stack([np.full((SIZE, SIZE, 3), 50 + i, np.uint8) for i in range(9)])  # 2 frames a step
    path = buffer.add(replace(episode, env_frames=every_frame))
    np.testing.assert_array_equal(load_episode(path).env_frames, every_frame)
    assert buffer.episodes[0].env_frames is None  # memory holds what sampling needs
    seen = []
    assert buffer.relabel(lambda e: seen.append(e.env_frames) or {"reward": np.zeros(len(e))}, "v2") == 1
    np.testing.assert_array_equal(seen[0], every_frame)
    np.testing.assert_array_equal(load_episode(path).env_frames, every_frame)  # kept for the next relabel
    assert ReplayBuffer(tmp_path, max_size=8, nstep=1).episodes[0].env_frames is None  # nor after a restart
    with pytest.raises(ValueError, match="env_frames holds 3 frames, fewer than its 5 observations"):
        replace(episode, env_frames=every_frame[:3])


def test_intervention_flags_survive_and_are_learned_from_unless_excluded(tmp_path):
    flags = [False, True, True, False]
    ReplayBuffer(tmp_path, max_size=100).add(counting_episode(4, intervention=flags))
    buffer = ReplayBuffer(tmp_path, max_size=100, nstep=1)
    assert buffer.episodes[0].intervention.tolist() == flags
    batch = buffer.sample(100, torch.Generator().manual_seed(0))
    steps = batch.obs[:, -1, 0, 0].astype(int)
    assert batch.intervention.tolist() == [flags[t] for t in steps] and batch.intervention.any()
    strict = ReplayBuffer(tmp_path, max_size=100, nstep=1, learn_from_interventions=False)
    assert set(strict.sample(100, torch.Generator().manual_seed(0)).obs[:, -1, 0, 0]) == {0, 3}


def test_episodes_are_checked_field_by_field(tmp_path):
    good = counting_episode(3)
    with pytest.raises(ValueError, match=r"episode image has shape \(3, 8, 8, 3\), expected \(4, \*, \*, 3\)"):
        Episode(good.image[:3], good.proprio, good.action, good.reward)
    with pytest.raises(ValueError, match="episode image must be uint8"):
        Episode(good.image.astype(np.float32), good.proprio, good.action, good.reward)
    with pytest.raises(ValueError, match="non-finite"):
        Episode(good.image, good.proprio, good.action, [0.0, np.nan, 0.0])
    with pytest.raises(ValueError, match="episode meta must hold plain JSON"):
        Episode(good.image, good.proprio, good.action, good.reward, meta={"when": object()})
    buffer = ReplayBuffer(tmp_path, max_size=100)
    buffer.add(good)
    other = Episode(np.zeros((4, 16, 16, 3), np.uint8), good.proprio, good.action, good.reward)
    with pytest.raises(ValueError, match="episode image of shape .* does not match the replay's"):
        buffer.add(other)
    round_trip = load_episode(save_episode(good, tmp_path / "copy.npz"))
    np.testing.assert_array_equal(round_trip.image, good.image)
    assert round_trip.meta == good.meta and round_trip.terminated == good.terminated
