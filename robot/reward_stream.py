"""The reward of live camera frames, episode by episode, as reward_node publishes it.

    follower = EpisodeFollower()                       # fed the /episode/events
    scorer = RewardScorer(DiffusionReward.load(path))   # + novelty=load_rnd_novelty(...), alpha
    frame = tag_frame(model_input, stamp_ns, frame_id, follower)   # in the subscription callback
    scored = scorer.score(frame)                        # in the scoring thread

Each frame is tagged on arrival with the episode it arrived in, so the scoring thread (which
may run behind) resets the model's history exactly at the first frame of a new episode:
histories never reach into the previous episode, however many frames are still queued. A camera
stamp that goes backwards (a restarted camera, a looping recording) restarts the history too,
within the episode (frame_index counts on).

total = (1 - alpha) * standardized + alpha * novelty + sparse (models.rewards.compose_reward)
when an RND novelty is given; without one, total = standardized + sparse (alpha has nothing
to weigh). sparse = success_reward for frames that arrive after the episode was marked
successful, else 0.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robot.episode_follower import EpisodeFollower

Novelty = Callable[[np.ndarray], np.ndarray]  # (N, S, S, 3) uint8 model inputs -> (N,) novelty


@dataclass(frozen=True)
class TaggedFrame:
    image: np.ndarray  # (S, S, 3) uint8 at the model's input size
    stamp_ns: int  # the camera's stamp
    frame_id: str  # the camera's optical frame
    episode: int  # EpisodeFollower.episode when it arrived
    success: bool  # whether that episode was marked successful when it arrived


def tag_frame(image: np.ndarray, stamp_ns: int, frame_id: str, follower: EpisodeFollower) -> TaggedFrame:
    return TaggedFrame(image, stamp_ns, frame_id, follower.episode, follower.success)


class StampThinning:
    """Passes camera frames at most at `rate_hz`, by their stamps: the model learned from frames
    recorded at the control rate (10 Hz), so a 30 Hz camera's frames would make its history span a
    third of the time it expects. rate_hz 0 passes every frame. A frame counts as due from 90% of
    the period on (camera stamps jitter); a stamp going backwards starts the count over."""

    def __init__(self, rate_hz: float) -> None:
        if isinstance(rate_hz, bool) or not isinstance(rate_hz, (int, float)) or not 0.0 <= rate_hz < float("inf"):
            raise ValueError(f"rate_hz must be a finite number >= 0 (0: every frame), got {rate_hz!r}")
        self.min_gap_ns = round(0.9e9 / rate_hz) if rate_hz else 0
        self._last_ns: int | None = None
        self.skipped = 0

    def passes(self, stamp_ns: int) -> bool:
        if self._last_ns is not None and 0 <= stamp_ns - self._last_ns < self.min_gap_ns:
            self.skipped += 1
            return False
        self._last_ns = stamp_ns
        return True


@dataclass(frozen=True)
class ScoredFrame:
    """drr_interfaces/Reward's fields."""

    stamp_ns: int
    frame_id: str
    total: float
    standardized: float
    raw: float
    novelty: float
    sparse: float
    kind: str
    frame_index: int  # frames scored in this episode before this one
    episode: int


@dataclass(frozen=True)
class EpisodeLabels:
    """LabelEpisode's response arrays, one entry per frame."""

    total: np.ndarray
    standardized: np.ndarray
    raw: np.ndarray


class RewardScorer:
    """reward: a models.reward_model.DiffusionReward (or anything with its .stream(), .label_episode,
    .kind). Thread-safe: the streaming scorer and batch labelling share the model under one lock."""

    def __init__(self, reward: Any, *, novelty: Novelty | None = None, alpha: float = 0.95,
                 success_reward: float = 1.0) -> None:
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
        self.reward, self.novelty, self.alpha = reward, novelty, float(alpha)
        self.success_reward = float(success_reward)
        self.kind = reward.kind
        self._stream = reward.stream()
        self._episode: int | None = None
        self._frame_index = 0
        self._last_stamp_ns: int | None = None
        self.stamp_resets = 0  # histories restarted because the camera's stamps went backwards
        self._lock = threading.Lock()

    def score(self, frame: TaggedFrame) -> ScoredFrame:
        return self.score_batch([frame])[0]

    def score_batch(self, frames: list[TaggedFrame]) -> list[ScoredFrame]:
        """Frames in arrival order, scored in one batched call (the rewards they would get one by
        one): when scoring falls behind, the frames that queued up meanwhile keep their place in
        every later frame's history instead of being dropped from it."""
        with self._lock:
            restarts, indices = [], []
            for frame in frames:
                restarts.append(self._restarts_history(frame))
                indices.append(self._frame_index)
                self._frame_index += 1
            images = np.stack([frame.image for frame in frames])
            raw, standardized = self._stream.push_batch(images, [frame.stamp_ns for frame in frames], restarts)
            novelty = (np.asarray(self.novelty(images), dtype=np.float64) if self.novelty is not None
                       else np.zeros(len(frames)))
        scored = []
        for frame, index, r, s, n in zip(frames, indices, raw, standardized, novelty, strict=True):
            sparse = self.success_reward if frame.success else 0.0
            scored.append(ScoredFrame(frame.stamp_ns, frame.frame_id, float(self._total(s, n, sparse)), float(s),
                                      float(r), float(n), sparse, self.kind, index, frame.episode))
        return scored

    def _restarts_history(self, frame: TaggedFrame) -> bool:
        """Whether the history starts over at this frame: the first of an episode, or a camera
        stamp that went backwards (a restarted camera, a looping recording)."""
        restart = frame.episode != self._episode
        if restart:
            self._episode, self._frame_index = frame.episode, 0
        elif frame.stamp_ns <= self._last_stamp_ns:
            restart = True
            self.stamp_resets += 1
        self._last_stamp_ns = frame.stamp_ns
        return restart

    def label(self, frames: np.ndarray) -> EpisodeLabels:
        """A recorded episode's frames (F, S, S, 3) in one batch. No sparse term: which frames came
        after the success is not recorded per frame; the learner adds the episode's success."""
        if len(frames) == 0:
            raise ValueError("the episode holds no frames to label")
        with self._lock:
            labels = self.reward.label_episode(frames)
            novelty = (np.asarray(self.novelty(frames), dtype=np.float64) if self.novelty is not None
                       else np.zeros(len(frames)))
        standardized = np.asarray(labels.standardized, dtype=np.float64)
        total = self._total(standardized, novelty, 0.0)
        return EpisodeLabels(np.asarray(total, np.float32), standardized.astype(np.float32),
                             np.asarray(labels.raw, np.float32))

    def _total(self, standardized: Any, novelty: Any, sparse: Any) -> Any:
        from models.rewards import compose_reward

        alpha = self.alpha if self.novelty is not None else 0.0
        return compose_reward(standardized, novelty, sparse, alpha=alpha)


def load_rnd_novelty(path: str | Path, image_size: int) -> Novelty:
    """The novelty of an RND checkpoint (models.checkpoint kind "rnd": config = RNDConfig.to_dict(),
    state_dict = RND.state_dict(), the learner's format) on model inputs of image_size. Read-only:
    scoring never trains the predictor."""
    import torch

    from models.checkpoint import load_checkpoint, load_state_checked
    from models.codec import preprocess
    from models.rewards import RND, RNDConfig

    ckpt = load_checkpoint(path, expect_kind="rnd")
    rnd = RND(RNDConfig.from_dict(ckpt.config))
    load_state_checked(rnd, ckpt.state_dict, f"RND weights in {path}")
    rnd.eval()
    expected = (3, image_size, image_size)
    if rnd.config.input_shape != expected:
        raise ValueError(f"{path}: the RND takes inputs of shape {rnd.config.input_shape}, the reward model's "
                         f"frames are {expected}")

    def novelty(frames: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return rnd.novelty(preprocess(frames, image_size)).numpy()

    return novelty
