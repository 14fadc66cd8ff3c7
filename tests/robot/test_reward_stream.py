"""robot.reward_stream: per-episode streaming scores and batch labels, on a stub reward model."""

import numpy as np
import pytest

from robot.episode_follower import EpisodeFollower
from robot.episodes import EVENT_CODES
from robot.reward_stream import RewardScorer, load_rnd_novelty, tag_frame


class StubStream:
    """raw = the number of frames in the episode's history so far (restarts show as 1 again)."""

    def __init__(self):
        self.frames, self.batches = [], []

    def push_batch(self, frames, stamps_ns, restarts):
        self.batches.append(len(frames))
        raw = []
        for stamp_ns, restart in zip(stamps_ns, restarts, strict=True):
            self.frames = [] if restart else self.frames
            self.frames.append(stamp_ns)
            raw.append(float(len(self.frames)))
        return np.array(raw), np.array(raw) / 10


class StubLabels:
    def __init__(self, n):
        self.raw, self.standardized = np.arange(n, dtype=float), np.arange(n, dtype=float) / 10


class StubReward:
    kind = "entropy"

    def stream(self):
        return StubStream()

    def label_episode(self, frames):
        return StubLabels(len(frames))


FRAME = np.zeros((8, 8, 3), np.uint8)


def test_histories_restart_at_the_first_frame_of_each_episode_even_when_frames_queue_up():
    follower, scorer = EpisodeFollower(), RewardScorer(StubReward())
    queued = [tag_frame(FRAME, 1, "cam", follower), tag_frame(FRAME, 2, "cam", follower)]
    follower.on_event(EVENT_CODES["STARTED"], "running")
    queued += [tag_frame(FRAME, 3, "cam", follower)]
    follower.on_event(EVENT_CODES["SUCCESS_MARKED"], "running", success=True)
    queued += [tag_frame(FRAME, 4, "cam", follower)]
    scored = [scorer.score(frame) for frame in queued]  # scored after all the events arrived
    assert [s.raw for s in scored] == [1.0, 2.0, 1.0, 2.0]
    assert [s.frame_index for s in scored] == [0, 1, 0, 1] and [s.episode for s in scored] == [0, 0, 1, 1]
    assert [s.sparse for s in scored] == [0.0, 0.0, 0.0, 1.0]
    # No novelty: total = standardized + sparse, whatever alpha is.
    assert [s.total for s in scored] == pytest.approx([0.1, 0.2, 0.1, 1.2])
    assert scored[0].stamp_ns == 1 and scored[0].frame_id == "cam" and scored[0].kind == "entropy"


def test_frames_that_queued_up_are_scored_in_one_batch_as_they_would_be_one_by_one():
    follower = EpisodeFollower()
    queued = [tag_frame(FRAME, 1, "cam", follower), tag_frame(FRAME, 2, "cam", follower)]
    follower.on_event(EVENT_CODES["STARTED"], "running")
    queued += [tag_frame(FRAME, 3, "cam", follower), tag_frame(FRAME, 4, "cam", follower)]
    one_by_one, batched = RewardScorer(StubReward()), RewardScorer(StubReward())
    expected = [one_by_one.score(frame) for frame in queued]
    assert batched.score_batch(queued) == expected
    assert batched._stream.batches == [4]  # one call to the model for all four


def test_a_camera_stamp_going_backwards_restarts_the_history_within_the_episode():
    follower, scorer = EpisodeFollower(), RewardScorer(StubReward())
    scored = [scorer.score(tag_frame(FRAME, stamp, "cam", follower)) for stamp in (10, 20, 5, 15)]
    assert [s.raw for s in scored] == [1.0, 2.0, 1.0, 2.0] and [s.frame_index for s in scored] == [0, 1, 2, 3]
    assert scorer.stamp_resets == 1


def test_novelty_is_weighed_by_alpha_and_labels_come_in_one_batch():
    scorer = RewardScorer(StubReward(), novelty=lambda frames: np.full(len(frames), 2.0), alpha=0.5,
                          success_reward=3.0)
    scored = scorer.score(tag_frame(FRAME, 7, "cam", EpisodeFollower()))
    assert scored.novelty == 2.0 and scored.total == pytest.approx(0.5 * 0.1 + 0.5 * 2.0)
    labels = scorer.label(np.zeros((4, 8, 8, 3), np.uint8))
    np.testing.assert_allclose(labels.total, 0.5 * np.arange(4) / 10 + 1.0, rtol=1e-6)
    assert labels.raw.dtype == np.float32 and labels.standardized.shape == (4,)
    with pytest.raises(ValueError, match="no frames"):
        scorer.label(np.zeros((0, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="alpha"):
        RewardScorer(StubReward(), alpha=1.5)


def test_rnd_novelty_loads_from_an_rnd_checkpoint(tmp_path):
    import torch

    from models.checkpoint import Checkpoint, save_checkpoint
    from models.rewards import RND, RNDConfig

    config = RNDConfig.preset("tiny", input_shape=(3, 16, 16))
    rnd = RND(config)
    path = save_checkpoint(Checkpoint("rnd", "tiny", config.to_dict(), rnd.state_dict()), tmp_path / "rnd.ckpt")
    novelty = load_rnd_novelty(path, 16)
    frames = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    expected = rnd.novelty(torch.as_tensor(frames).permute(0, 3, 1, 2).float() / 127.5 - 1.0).numpy()
    np.testing.assert_allclose(novelty(frames), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="frames are \\(3, 64, 64\\)"):
        load_rnd_novelty(path, 64)


def test_a_fast_camera_is_thinned_to_the_training_rate_by_stamp():
    from robot.reward_stream import StampThinning

    thinning = StampThinning(10.0)
    camera_30hz = [round(i * 1e9 / 30) for i in range(10)]
    assert [t for t in camera_30hz if thinning.passes(t)] == camera_30hz[::3]
    assert thinning.skipped == 6
    assert thinning.passes(5) and thinning.passes(5 + 95_000_000)  # backwards restarts; 95 ms jitter is due
    assert all(StampThinning(0).passes(t) for t in (1, 1, 2))
    with pytest.raises(ValueError, match="rate_hz must be a finite number >= 0"):
        StampThinning(-1.0)
