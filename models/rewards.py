"""Reward pieces around the video model: standardisation, RND novelty, composition, and the
token history the streaming reward conditions on.

No import of the codec or the video model: this file only sees rewards, images and token
grids, so the reward server and the training pipeline share it unchanged.

    total = (1 - alpha) * (raw - mean) / std + alpha * novelty + sparse     (paper: alpha = 0.95)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from models.checkpoint import check_config_keys

STD_FLOOR = 1e-6  # a constant reward on the expert frames must not turn into inf/NaN rewards

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor, float)


def _as_float64(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=np.float64).reshape(-1)


# ---------------------------------------------------------------- standardisation

# What the video model's raw reward of frame t measures (both in nats, higher = more expert-like):
#   entropy     the paper's: -H(next frame | history ending at t), estimated from the model's own
#               samples; it never looks at the frame that follows.
#   likelihood  log p(frame t | history ending frame_skip frames before t): how well the observed
#               frame fits the expert model (VIPER's kind of reward, on this model).
#   likelihood_stay  likelihood + log p(frame t again, frame_skip frames later | history ending at t):
#               frame t was predicted from its past, and the expert model expects the scene to stay
#               there (experts stop at their goals). A still arm where an expert would move and a
#               random arm's unfamiliar pose lose the second term, which the likelihood alone pays a
#               still arm for. Two likelihood passes per frame (docs/ARCHITECTURE.md, Reward model).
REWARD_KINDS = ("entropy", "likelihood", "likelihood_stay")


def check_reward_kind(kind: str) -> str:
    if kind not in REWARD_KINDS:
        raise ValueError(f"reward kind must be one of {REWARD_KINDS}, got {kind!r}")
    return kind


def check_reward_kinds(kinds: Sequence[str]) -> tuple[str, ...]:
    if not kinds:
        raise ValueError(f"reward_kinds is empty: give one or more of {REWARD_KINDS}")
    return tuple(check_reward_kind(kind) for kind in kinds)


@dataclass(frozen=True)
class RewardStats:
    """Mean and std (population, ddof=0) of the raw reward over the training expert frames."""

    mean: float
    std: float
    count: int

    def __post_init__(self) -> None:
        for name in ("mean", "std"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"RewardStats.{name} must be a finite number, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.std < 0:
            raise ValueError(f"RewardStats.std must be >= 0, got {self.std}")
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ValueError(f"RewardStats.count must be an int >= 1, got {self.count!r}")

    @classmethod
    def from_rewards(cls, values: Any) -> RewardStats:
        x = _as_float64(values)
        if x.size == 0:
            raise ValueError("RewardStats.from_rewards: no reward values")
        bad = int(np.count_nonzero(~np.isfinite(x)))
        if bad:
            raise ValueError(f"RewardStats.from_rewards: {bad} of {x.size} reward values are not finite (NaN/inf)")
        return cls(mean=float(x.mean()), std=float(x.std()), count=int(x.size))

    def standardize(self, x: ArrayT) -> ArrayT:
        """(x - mean) / max(std, STD_FLOOR); numpy, torch or float in, the same out."""
        return (x - self.mean) / max(self.std, STD_FLOOR)

    def to_dict(self) -> dict[str, float | int]:
        return {"mean": self.mean, "std": self.std, "count": self.count}

    @classmethod
    def from_dict(cls, d: dict) -> RewardStats:
        return cls(**check_config_keys(cls, d, "reward statistics"))


def stats_by_kind(d: dict, where: str = "reward statistics") -> dict[str, RewardStats]:
    """{kind: RewardStats} from a checkpoint's {kind: RewardStats.to_dict()}."""
    if not isinstance(d, dict) or not d or set(d) - set(REWARD_KINDS):
        raise ValueError(f"{where} must map reward kinds {REWARD_KINDS} to statistics, got keys "
                         f"{sorted(d) if isinstance(d, dict) else type(d).__name__}")
    return {kind: RewardStats.from_dict(value) for kind, value in d.items()}


class RunningStd:
    """Running mean/variance over batches (Chan et al. parallel merge: exact, stable in float64)."""

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self._m2 = 0.0  # sum of squared deviations from the mean

    def update(self, values: Any) -> None:
        x = _as_float64(values)
        if x.size == 0:
            return
        n, mean, m2 = x.size, float(x.mean()), float(((x - x.mean()) ** 2).sum())
        total = self.count + n
        delta = mean - self.mean
        self._m2 += m2 + delta * delta * self.count * n / total
        self.mean += delta * n / total
        self.count = total

    @property
    def var(self) -> float:
        return self._m2 / self.count if self.count else 0.0

    @property
    def std(self) -> float:
        return math.sqrt(self.var)

    def state_dict(self) -> dict[str, float | int]:
        return {"count": self.count, "mean": self.mean, "m2": self._m2}

    def load_state_dict(self, state: dict) -> None:
        self.count, self.mean, self._m2 = int(state["count"]), float(state["mean"]), float(state["m2"])


# ---------------------------------------------------------------- RND novelty

_RND_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(channels=8, hidden=64, out_dim=32),  # tests
    "cpu": dict(channels=16, hidden=256, out_dim=128),
    "paper": dict(channels=32, hidden=1024, out_dim=512),  # URLB RND sizes the paper's code uses
}


@dataclass(frozen=True)
class RNDConfig:
    """input_shape (C, H, W): images through a conv encoder; (D,): fixed-size features, MLP only."""

    input_shape: tuple[int, ...] = (3, 64, 64)
    channels: int = 16
    hidden: int = 256
    out_dim: int = 128
    normalize: bool = True  # divide novelty by the running std of the training errors
    lr: float = 1e-4
    seed: int = 0  # the target is random: same seed, same target (it is saved anyway)

    def __post_init__(self) -> None:
        shape = tuple(self.input_shape)
        if len(shape) not in (1, 3) or not all(isinstance(s, int) and s > 0 for s in shape):
            raise ValueError(f"RNDConfig.input_shape must be (C, H, W) or (D,) of positive ints, got {shape!r}")
        if len(shape) == 3 and (shape[1] < 8 or shape[2] < 8):
            raise ValueError(f"RNDConfig.input_shape {shape}: images must be at least 8x8 (3 stride-2 convs)")
        object.__setattr__(self, "input_shape", shape)
        for name in ("channels", "hidden", "out_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"RNDConfig.{name} must be an int >= 1, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"RNDConfig.lr must be a finite number > 0, got {self.lr!r}")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> RNDConfig:
        if name not in _RND_PRESETS:
            raise ValueError(f"unknown RND preset {name!r}; choose from {sorted(_RND_PRESETS)}")
        return cls(**{**_RND_PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RNDConfig:
        return cls(**check_config_keys(cls, d, "RND"))


def _rnd_net(cfg: RNDConfig, depth: int) -> nn.Sequential:
    """Conv encoder (3 stride-2 convs, no BatchNorm: novelty must not depend on the batch) + MLP."""
    if len(cfg.input_shape) == 3:
        c, ch = cfg.input_shape[0], cfg.channels
        enc: list[nn.Module] = [nn.Conv2d(c, ch, 4, 2, 1), nn.ReLU(), nn.Conv2d(ch, 2 * ch, 4, 2, 1), nn.ReLU(),
                                nn.Conv2d(2 * ch, 2 * ch, 4, 2, 1), nn.ReLU(), nn.Flatten()]
        with torch.no_grad():
            flat = nn.Sequential(*enc)(torch.zeros(1, *cfg.input_shape)).shape[1]
    else:
        enc, flat = [], cfg.input_shape[0]
    layers: list[nn.Module] = [*enc, nn.Linear(flat, cfg.hidden), nn.ReLU()]
    for _ in range(depth - 1):
        layers += [nn.Linear(cfg.hidden, cfg.hidden), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(cfg.hidden, cfg.out_dim))


class RND(nn.Module):
    """Random network distillation: novelty = how badly a trained predictor matches a frozen random net.

    Input: (N, *input_shape) float; images are expected in [-1, 1]. The target is part of the
    state_dict on purpose: a reloaded model needs the same random target. `novelty` has no side
    effects (episode labelling stays deterministic); only `update` moves the running std.
    """

    def __init__(self, config: RNDConfig) -> None:
        super().__init__()
        self.config = config
        with torch.random.fork_rng():  # reproducible init without disturbing the caller's RNG
            torch.manual_seed(config.seed)
            self.target = _rnd_net(config, depth=1)
            self.predictor = _rnd_net(config, depth=2)  # one layer deeper, as in Burda et al.
        self.target.requires_grad_(False)
        self.running = RunningStd()

    def make_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.predictor.parameters(), lr=self.config.lr)

    def _errors(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.config.input_shape:
            raise ValueError(f"RND expects (N, {', '.join(map(str, self.config.input_shape))}), got {tuple(x.shape)}")
        with torch.no_grad():
            target = self.target(x)
        return (self.predictor(x) - target).pow(2).mean(dim=1)

    @torch.no_grad()
    def novelty(self, x: torch.Tensor, normalize: bool | None = None) -> torch.Tensor:
        """(N,) squared prediction error, divided by the running std if normalizing and it is known."""
        err = self._errors(x)
        if (self.config.normalize if normalize is None else normalize) and self.running.count > 0:
            err = err / max(self.running.std, STD_FLOOR)
        return err

    def update(self, x: torch.Tensor, optimizer: torch.optim.Optimizer) -> float:
        frozen = {id(p) for p in self.target.parameters()}
        if any(id(p) in frozen for g in optimizer.param_groups for p in g["params"]):
            raise ValueError("RND.update: the optimizer holds target parameters; the target must stay frozen")
        err = self._errors(x)
        self.running.update(err.detach())  # statistics of the errors the predictor is trained on
        loss = err.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    def get_extra_state(self) -> dict[str, float | int]:
        return self.running.state_dict()

    def set_extra_state(self, state: dict) -> None:
        self.running.load_state_dict(state)


# ---------------------------------------------------------------- composition


def compose_reward(standardized: Any, novelty: Any, sparse: Any = 0.0, alpha: float = 0.95) -> Any:
    """(1 - alpha) * standardized + alpha * novelty + sparse.

    Torch in (any argument) -> torch out; otherwise numpy out (float if all are scalars).
    standardized and novelty must have one shape: broadcasting (N,) with (N, 1) is a silent bug.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"compose_reward: alpha must be a number in [0, 1], got {alpha!r}")
    args = (standardized, novelty, sparse)
    if any(isinstance(a, torch.Tensor) for a in args):
        ref = next(a for a in args if isinstance(a, torch.Tensor))
        s, n, r = (torch.as_tensor(a, dtype=ref.dtype if ref.is_floating_point() else torch.float32,
                                   device=ref.device) for a in args)
    elif all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
        return (1.0 - alpha) * float(standardized) + alpha * float(novelty) + float(sparse)
    else:
        s, n, r = (np.asarray(a, dtype=np.float64) for a in args)
    if tuple(s.shape) != tuple(n.shape):
        raise ValueError(f"compose_reward: standardized {tuple(s.shape)} and novelty {tuple(n.shape)} differ in shape")
    if r.ndim and tuple(r.shape) != tuple(s.shape):
        raise ValueError(f"compose_reward: sparse {tuple(r.shape)} must be a scalar or {tuple(s.shape)}")
    return (1.0 - alpha) * s + alpha * n + r


# ---------------------------------------------------------------- token history


def window_indices(t: int, condition_frames: int, frame_skip: int) -> list[int]:
    """Episode frame indices conditioning the reward of frame t, oldest first, ending at t.

    [t - (k-1)s, ..., t - s, t], clamped at 0: a young episode repeats its first frame, as the
    released code pads. (For s = 1 this is the released code's window exactly; for s > 1 its
    window ends at t - 2s + 2 and pads with frame t, which we take as one of its bugs.)
    """
    if condition_frames < 1 or frame_skip < 1:
        raise ValueError(f"condition_frames and frame_skip must be >= 1, got {condition_frames}, {frame_skip}")
    return [max(0, t - (condition_frames - 1 - i) * frame_skip) for i in range(condition_frames)]


def history_warmup(condition_frames: int, frame_skip: int, lag: int = 0) -> int:
    """How many first frames of an episode have a history that reaches before the episode's first
    frame (so window_indices pads it with frame 0): lag + (k-1) * skip. Such a history shows an arm
    that has not moved yet, whatever the policy did; the reward does not score these frames."""
    return lag + (condition_frames - 1) * frame_skip


def episode_windows(tokens: torch.Tensor, condition_frames: int, frame_skip: int, lag: int = 0) -> torch.LongTensor:
    """(T, h, w) or (T, h*w) tokens of a whole episode -> (T, k, h*w) histories, one per frame t,
    each ending at frame t - lag (clamped at 0); the batched twin of TokenRingBuffer.history."""
    flat = tokens.reshape(tokens.shape[0], -1).long()
    idx = torch.tensor([window_indices(max(0, t - lag), condition_frames, frame_skip) for t in range(flat.shape[0])],
                       dtype=torch.long).reshape(flat.shape[0], condition_frames)
    return flat[idx]


class TokenRingBuffer:
    """The last `capacity` frames' token grids of the running episode, so each frame is encoded once."""

    def __init__(self, capacity: int, grid: Sequence[int] = (8, 8)) -> None:
        if capacity < 1:
            raise ValueError(f"TokenRingBuffer capacity must be >= 1, got {capacity}")
        self.capacity, self.grid = capacity, tuple(grid)
        self._tokens = torch.zeros(capacity, math.prod(self.grid), dtype=torch.long)
        self._stamps = [0] * capacity
        self._frames = 0  # frames pushed this episode; frame e lives in slot e % capacity

    def reset(self) -> None:
        self._frames = 0

    def __len__(self) -> int:
        return min(self._frames, self.capacity)

    @property
    def frames_in_episode(self) -> int:
        return self._frames

    @property
    def latest_stamp_ns(self) -> int | None:
        return self._stamps[(self._frames - 1) % self.capacity] if self._frames else None

    def push(self, tokens: torch.Tensor | np.ndarray, stamp_ns: int) -> None:
        t = torch.as_tensor(tokens)
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise ValueError(f"TokenRingBuffer.push: tokens must be integer codebook indices, got {t.dtype}")
        if t.numel() != self._tokens.shape[1]:
            raise ValueError(f"TokenRingBuffer.push: expected a {self.grid} token grid, got shape {tuple(t.shape)}")
        last = self.latest_stamp_ns
        if last is not None and stamp_ns <= last:
            # a repeated or older frame would shift every window after it: the caller has a bug
            raise ValueError(f"TokenRingBuffer.push: stamp {stamp_ns} ns is not after the last one, {last} ns")
        slot = self._frames % self.capacity
        self._tokens[slot] = t.reshape(-1).long()
        self._stamps[slot] = int(stamp_ns)
        self._frames += 1

    def history(self, condition_frames: int, frame_skip: int = 1, lag: int = 0) -> torch.LongTensor:
        """(k, h*w) tokens of the window ending `lag` frames before the newest (see window_indices)."""
        span = (condition_frames - 1) * frame_skip + 1 + lag
        if span > self.capacity:
            raise ValueError(f"TokenRingBuffer: a window of {condition_frames} frames with skip {frame_skip}, "
                             f"{lag} frames back, spans {span} frames, more than the capacity {self.capacity}")
        if not self._frames:
            raise ValueError("TokenRingBuffer.history: no frame pushed since the episode started")
        idx = window_indices(max(0, self._frames - 1 - lag), condition_frames, frame_skip)
        return self._tokens[[e % self.capacity for e in idx]].clone()
