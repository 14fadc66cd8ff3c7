"""The trained Diffusion Reward as the rest of the stack uses it.

    reward = DiffusionReward.load("runs/video/video.ckpt")
    labels = reward.label_episode(frames)          # episode API: all frames in one batch
    stream = reward.stream(); stream.push(frame)   # streaming API: newest frame's reward

Frames are uint8 (H, W, 3) at the model's input size (see models.data for cropping and
resizing camera images). The raw reward is, by `kind` (models.rewards.REWARD_KINDS), the
paper's entropy reward (an estimate of the negative conditional entropy of the next frame
given the history ending at the current frame), the likelihood of the current frame given
the history before it, or that likelihood plus the likelihood that the scene stays at the
current frame (likelihood_stay); the standardised one uses the training experts' mean and std
of that kind, stored in the checkpoint.

The first `warmup_frames` of an episode are not scored: their history reaches before the
episode's first frame and is padded with it (as the paper's code pads), so it shows an arm that
has not moved yet whatever the policy did, and the model scores how little a frame changed since
the start rather than how expert-like the motion is (on the mirror a random policy's first frames
scored above the expert's; docs/MEASUREMENTS.md, Reward model). Their standardised reward is 0,
the training experts' mean, so a policy gains or loses nothing there; their raw reward is still
computed and reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.backends import OnnxRuntimeCodec, make_backend
from models.checkpoint import Checkpoint, load_checkpoint, load_state_checked
from models.codec import VQGAN, CodecConfig, preprocess
from models.diffusion import DiffusionConfig, VideoDiffusion
from models.export import CODEC_FILE
from models.rewards import (
    RewardStats,
    TokenRingBuffer,
    check_reward_kind,
    episode_windows,
    history_warmup,
    stats_by_kind,
)


@dataclass
class RewardLabels:
    raw: np.ndarray  # (F,) nats
    standardized: np.ndarray  # (F,); 0 for the first `warmup` frames, which are not scored
    warmup: int  # DiffusionReward.warmup_frames


class DiffusionReward:
    """backend: "torch", or "onnxruntime" / "tensorrt" with onnx_dir from models.export.export_reward:
    the denoiser runs there and the codec encoder in ONNX Runtime; the sampling loop (posteriors,
    seeded noise) stays in torch, so every backend sees the same noise.
    stats: the standardisation statistics of this reward kind."""

    def __init__(self, codec: VQGAN, video: VideoDiffusion, stats: RewardStats, *, kind: str = "entropy",
                 num_samples: int = 1, skip: int = 9, seed: int = 0, backend: str = "torch",
                 onnx_dir: str | Path | None = None):
        if num_samples < 1 or skip < 0:
            raise ValueError(f"num_samples must be >= 1 and skip >= 0, got {num_samples}, {skip}")
        self.codec, self.video, self.stats = codec.eval(), video.eval(), stats
        self.kind = check_reward_kind(kind)
        self.num_samples, self.skip, self.seed = num_samples, skip, seed
        self.backend = make_backend(backend, model=self.video, onnx_dir=onnx_dir)
        self.encoder = self.codec if backend == "torch" else OnnxRuntimeCodec(Path(onnx_dir) / CODEC_FILE)

    @classmethod
    def load(cls, path: str | Path, preset: str | None = None, kind: str = "entropy", **kwargs) -> DiffusionReward:
        """A video checkpoint with its embedded codec and statistics; EMA weights score."""
        ckpt = load_checkpoint(path, expect_kind="video", expect_preset=preset)
        if ckpt.stats is None:
            raise ValueError(f"{path} has no reward statistics: its training did not finish "
                             "(train it to the end, or resume it, before scoring)")
        stats = stats_by_kind(ckpt.stats, where=f"the reward statistics in {path}")
        if check_reward_kind(kind) not in stats:
            raise ValueError(f"{path} has statistics for the {sorted(stats)} reward(s), not {kind!r}")
        codec_ckpt = Checkpoint.from_dict(ckpt.codec, where=f"the codec inside {path}")
        codec = VQGAN(CodecConfig.from_dict(codec_ckpt.config))
        load_state_checked(codec, codec_ckpt.state_dict, f"codec weights in {path}")
        video = VideoDiffusion(DiffusionConfig.from_dict(ckpt.config))
        load_state_checked(video, ckpt.ema_state_dict or ckpt.state_dict, f"video model EMA weights in {path}")
        return cls(codec, video, stats[kind], kind=kind, **kwargs)

    @property
    def image_size(self) -> int:
        return self.codec.config.image_size

    @property
    def history_lag(self) -> int:
        """How many frames before the scored frame its history ends: the entropy reward asks what
        follows the scored frame, the likelihood reward how well the scored frame was predicted;
        likelihood_stay's history ends at the scored frame and holds the likelihood's in front."""
        return self.video.config.frame_skip if self.kind == "likelihood" else 0

    @property
    def history_frames(self) -> int:
        """Frames in the history score() reads: the model's condition frames, one more for
        likelihood_stay, whose two conditions ([..., t - s] for the likelihood, [..., t] for the
        stay) are that history without its last and without its first frame."""
        return self.video.config.condition_frames + (self.kind == "likelihood_stay")

    @property
    def warmup_frames(self) -> int:
        """How many first frames of an episode are not scored (module docstring)."""
        return history_warmup(self.history_frames, self.video.config.frame_skip, self.history_lag)

    def standardize(self, raw: np.ndarray, frame_indices: np.ndarray) -> np.ndarray:
        """Standardised rewards of frames at these indices in their episode; 0 in the warm-up."""
        standardized = np.asarray(self.stats.standardize(raw))
        return np.where(np.asarray(frame_indices) < self.warmup_frames, 0.0, standardized).astype(standardized.dtype)

    @torch.no_grad()
    def encode(self, frames: np.ndarray) -> torch.Tensor:
        """(F, H, W, 3) uint8 at the model's input size -> (F, 64) tokens."""
        return self.encoder.encode(preprocess(frames, self.image_size)).flatten(1)

    def scoring_inputs(self, frames: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """An episode's frames -> what score() needs for each: (F, history_frames, 64) token
        histories (the first frames' repeat frame 0) and (F, 64) tokens."""
        tokens = self.encode(frames)
        return episode_windows(tokens, self.history_frames, self.video.config.frame_skip, lag=self.history_lag), tokens

    @torch.no_grad()
    def score(self, histories: torch.Tensor, tokens: torch.Tensor, *, seed: int | None = None,
              num_samples: int | None = None) -> np.ndarray:
        """Raw reward of frames given as (N, history_frames, 64) histories and their (N, 64) tokens
        (the entropy reward reads only the histories). Each frame's noise is seeded by the seed and its own
        tokens, so a frame scores the same alone or in a batch. seed and num_samples default to
        the ones this reward was made with."""
        num_samples = self.num_samples if num_samples is None else num_samples
        seed = self.seed if seed is None else seed
        common = {"num_samples": num_samples, "skip": self.skip, "seed": seed, "backend": self.backend}
        if self.kind == "entropy":
            return self.video.entropy_reward(histories, **common).numpy()
        if self.kind == "likelihood_stay":
            stay = self.video.likelihood_reward(histories[:, 1:], tokens, **common)
            return (self.video.likelihood_reward(histories[:, :-1], tokens, **common) + stay).numpy()
        return self.video.likelihood_reward(histories, tokens, **common).numpy()

    def label_episode(self, frames: np.ndarray) -> RewardLabels:
        """Every frame's reward in one batched call."""
        raw = self.score(*self.scoring_inputs(frames))
        return RewardLabels(raw, self.standardize(raw, np.arange(len(raw))), self.warmup_frames)

    def stream(self) -> StreamingReward:
        return StreamingReward(self)


class StreamingReward:
    """Reward of the newest frame of a running episode; each frame is encoded once."""

    def __init__(self, reward: DiffusionReward):
        config = reward.video.config
        self.reward = reward
        span = (reward.history_frames - 1) * config.frame_skip + 1 + reward.history_lag
        self.buffer = TokenRingBuffer(capacity=span)

    def reset(self) -> None:
        """At episode start: histories never reach into the previous episode."""
        self.buffer.reset()

    def push(self, frame: np.ndarray, stamp_ns: int) -> tuple[float, float]:
        """(raw, standardised) reward of this frame given the episode so far."""
        raw, standardized = self.push_batch(frame[None], [stamp_ns])
        return float(raw[0]), float(standardized[0])

    def push_batch(self, frames: np.ndarray, stamps_ns: Sequence[int],
                   restarts: Sequence[bool] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(raw, standardised) rewards of consecutive frames (F, H, W, 3), scored in one batched call:
        the same rewards as pushing them one by one (each frame's noise is seeded by its own tokens),
        at a fraction of the cost when frames queue up. restarts[i]: the history starts over at frame i."""
        tokens = self.reward.encode(frames)
        config = self.reward.video.config
        histories, indices = [], []
        for token, stamp_ns, restart in zip(tokens, stamps_ns, restarts or [False] * len(tokens), strict=True):
            if restart:
                self.buffer.reset()
            self.buffer.push(token, stamp_ns)
            histories.append(self.buffer.history(self.reward.history_frames, config.frame_skip,
                                                 lag=self.reward.history_lag))
            indices.append(self.buffer.frames_in_episode - 1)
        raw = self.reward.score(torch.stack(histories), tokens)
        return raw, self.reward.standardize(raw, np.array(indices))
