"""Episode replay on disk, as DrQ-v2's official ReplayBuffer: one .npz per finished episode, an
in-memory cache of the newest episodes up to `max_size` transitions, n-step sampling.

    buffer = ReplayBuffer("runs/rl/replay", max_size=100_000, frame_stack=3, nstep=3, discount=0.99)
    buffer.add(episode)                                  # written atomically, then cached
    batch = buffer.sample(256, generator)                # numpy Batch, frames stacked on channels
    buffer.relabel(label_fn, fingerprint="video@sha...")  # new reward model: rewrite every file

Files are the record: a new buffer over the same folder resumes from them (a temp file left by a
crash is ignored and reported in `stray`), and evicting an episode from memory never deletes its
file (only `max_disk_episodes` does). Learning uses each episode's stored `reward`, the labeller's
composed total; its parts (diffusion, sparse, ...) are kept alongside for inspection and relabelling.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

_NAME = re.compile(r"episode_(\d{6,})\.npz")
_PART = "reward_"  # npz key prefix of the reward parts


@dataclass
class Episode:
    """T steps. Observations are T + 1: before each step, and the one after the last step."""

    image: np.ndarray  # (T+1, H, W, 3) uint8 RGB
    proprio: np.ndarray  # (T+1, P) float32
    action: np.ndarray  # (T, A) float32 in [-1, 1]
    reward: np.ndarray  # (T,) float32: the composed reward learning uses
    reward_parts: dict[str, np.ndarray] = field(default_factory=dict)  # (T,) each: diffusion, sparse, ...
    intervention: np.ndarray | None = None  # (T,) bool: teleop had control of the step; None: no step
    terminated: bool = False  # the last step ended the task (no bootstrap); False: time limit or stop
    meta: dict[str, Any] = field(default_factory=dict)  # JSON: task, reward_fingerprint, policy version, ...
    # (F, H, W, 3) uint8 every env frame when each step repeats its action over k frames (F - 1 frames
    # stepped: k per step, the last step maybe fewer): what a reward model trained on videos at the env's
    # frame rate labels. None: `image` is every frame. Kept on disk for relabelling, not in memory.
    env_frames: np.ndarray | None = None

    def __post_init__(self) -> None:
        steps = len(self.action)
        if self.intervention is None:
            self.intervention = np.zeros(steps, dtype=bool)
        self.image = _array("image", self.image, np.uint8, (steps + 1, None, None, 3))
        self.proprio = _array("proprio", self.proprio, np.float32, (steps + 1, None))
        self.action = _array("action", self.action, np.float32, (steps, None))
        self.reward = _array("reward", self.reward, np.float32, (steps,))
        self.reward_parts = {name: _array(f"reward part {name!r}", part, np.float32, (steps,))
                             for name, part in self.reward_parts.items()}
        self.intervention = _array("intervention", self.intervention, bool, (steps,))
        if steps < 1:
            raise ValueError("an episode needs at least one step")
        if self.env_frames is not None:
            self.env_frames = _array("env_frames", self.env_frames, np.uint8, (None, None, None, 3))
            if len(self.env_frames) < steps + 1:
                raise ValueError(f"episode env_frames holds {len(self.env_frames)} frames, fewer than its "
                                 f"{steps + 1} observations")
        if not np.isfinite(self.reward).all():
            raise ValueError("episode reward holds non-finite values")
        try:  # fail here, not when the episode is written
            json.dumps(self.meta)
        except TypeError as error:
            raise ValueError(f"episode meta must hold plain JSON values: {error}") from None

    def __len__(self) -> int:
        return len(self.action)


def _array(name: str, value: Any, dtype: type, shape: tuple[int | None, ...]) -> np.ndarray:
    a = np.asarray(value)
    if a.ndim != len(shape) or any(want is not None and got != want for got, want in zip(a.shape, shape)):
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
        raise ValueError(f"episode {name} has shape {a.shape}, expected {want}")
    if dtype is np.uint8 and a.dtype != np.uint8:
        raise ValueError(f"episode {name} must be uint8, got {a.dtype}")
    return a.astype(dtype, copy=False)


@dataclass
class Batch:
    obs: np.ndarray  # (B, 3 * frame_stack, H, W) uint8, oldest frame first
    proprio: np.ndarray  # (B, P) float32
    action: np.ndarray  # (B, A) float32
    reward: np.ndarray  # (B, 1) float32: n-step discounted sum of stored rewards
    discount: np.ndarray  # (B, 1) float32: discount ** n, 0 after a terminal step
    next_obs: np.ndarray  # (B, 3 * frame_stack, H, W) uint8, n steps later
    next_proprio: np.ndarray  # (B, P) float32
    intervention: np.ndarray  # (B,) bool: the sampled step was teleoperated


def nstep_return(reward: np.ndarray, terminated: bool, t: int, nstep: int, discount: float) -> tuple[float, float, int]:
    """(discounted reward sum, bootstrap discount, index of the bootstrap observation) from step t.

    Near the end of an episode the sum is shorter (bootstrapping from the last observation) rather
    than the step never being sampled, as in the official code; after a terminal step nothing is
    bootstrapped (discount 0)."""
    steps = min(nstep, len(reward) - t)
    total, weight = 0.0, 1.0
    for i in range(steps):
        total += weight * float(reward[t + i])
        weight *= discount
    if terminated and t + steps == len(reward):
        weight = 0.0
    return total, weight, t + steps


def stack_indices(t: int, frame_stack: int) -> list[int]:
    """Observation indices stacked at step t, oldest first; an episode's start repeats its first frame."""
    return [max(0, t - i) for i in range(frame_stack - 1, -1, -1)]


def save_episode(episode: Episode, path: str | os.PathLike) -> Path:
    """Write atomically: a temp file in the same folder, fsync, then os.replace onto `path`."""
    path = Path(path)
    arrays = {"image": episode.image, "proprio": episode.proprio, "action": episode.action,
              "reward": episode.reward, "intervention": episode.intervention,
              "terminated": np.array(episode.terminated), "meta": np.array(json.dumps(episode.meta)),
              **{_PART + name: part for name, part in episode.reward_parts.items()}}
    if episode.env_frames is not None:
        arrays["env_frames"] = episode.env_frames
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_episode(path: str | os.PathLike) -> Episode:
    """ValueError naming the file if it is not a readable episode."""
    try:
        with np.load(path, allow_pickle=False) as f:
            parts = {key[len(_PART):]: f[key] for key in f.files if key.startswith(_PART)}
            return Episode(image=f["image"], proprio=f["proprio"], action=f["action"], reward=f["reward"],
                           reward_parts=parts, intervention=f["intervention"], terminated=bool(f["terminated"]),
                           meta=json.loads(str(f["meta"])),
                           env_frames=f["env_frames"] if "env_frames" in f.files else None)
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path} is not a readable episode file: {error}") from None


class ReplayBuffer:
    """Episodes in `folder`, the newest up to `max_size` transitions in memory.

    learn_from_interventions: teleoperated steps are sampled like any other (the default; they are
    flagged in the batch) or never sampled. max_disk_episodes: delete the oldest files beyond it.
    """

    def __init__(self, folder: str | os.PathLike, max_size: int, *, frame_stack: int = 3, nstep: int = 3,
                 discount: float = 0.99, learn_from_interventions: bool = True,
                 max_disk_episodes: int | None = None) -> None:
        if max_size < 1 or frame_stack < 1 or nstep < 1 or not 0 <= discount <= 1:
            raise ValueError(f"ReplayBuffer: max_size, frame_stack and nstep must be >= 1 and discount in [0, 1], "
                             f"got {max_size}, {frame_stack}, {nstep}, {discount}")
        if max_disk_episodes is not None and max_disk_episodes < 1:
            raise ValueError(f"ReplayBuffer: max_disk_episodes must be >= 1 or None, got {max_disk_episodes}")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_size, self.frame_stack, self.nstep, self.discount = max_size, frame_stack, nstep, discount
        self.learn_from_interventions = learn_from_interventions
        self.max_disk_episodes = max_disk_episodes
        self.stray = sorted(self.folder.glob(".*.tmp"))  # left by a crash mid-write; never read
        self.unreadable: dict[Path, str] = {}  # file -> why it is not in memory
        self._cache: list[tuple[Path, Episode]] = []  # oldest first
        self._steps: list[tuple[Episode, np.ndarray]] | None = None  # see _sampleable
        self._ends = np.zeros(0, dtype=np.int64)
        self._held = 0  # transitions in memory
        files = self.episode_files()
        self._next_index = _index(files[-1]) + 1 if files else 0
        self._load_newest()
        if self.stray or self.unreadable:
            warnings.warn(f"replay {self.folder}: ignoring {len(self.stray)} temp file(s) left by an interrupted write "
                          f"and {len(self.unreadable)} unreadable episode file(s): "
                          f"{[p.name for p in [*self.stray, *self.unreadable]]}", stacklevel=2)

    # ---------------------------------------------------------------- contents

    def episode_files(self) -> list[Path]:
        """Every episode file on disk, oldest first."""
        return sorted((p for p in self.folder.glob("episode_*.npz") if _NAME.fullmatch(p.name)), key=_index)

    @property
    def episodes(self) -> list[Episode]:
        """The episodes in memory, oldest first."""
        return [episode for _, episode in self._cache]

    def __len__(self) -> int:
        """Transitions in memory."""
        return self._held

    def add(self, episode: Episode) -> Path:
        """Write the episode to its file, then hold it in memory (evicting the oldest to fit)."""
        self._check_fits(episode)
        path = self.folder / f"episode_{self._next_index:06d}.npz"
        save_episode(episode, path)
        self._next_index += 1
        self._cache.append((path, replace(episode, env_frames=None)))  # on disk only: memory stays bounded
        self._held += len(episode)
        self._evict()
        self._cap_disk()
        self._steps = None
        return path

    # ---------------------------------------------------------------- sampling

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Batch:
        """Uniform over the sampleable steps in memory; the generator makes it reproducible."""
        steps, ends = self._sampleable()
        if not len(ends) or ends[-1] == 0:
            raise ValueError(f"replay {self.folder} has no step to sample")
        picks = torch.randint(int(ends[-1]), (batch_size,), generator=generator).numpy()
        rows = []
        for pick in picks:
            i = int(np.searchsorted(ends, pick, side="right"))
            episode, allowed = steps[i]
            rows.append(self._transition(episode, int(allowed[pick - (ends[i] - len(allowed))])))
        return Batch(*(np.stack(column) for column in zip(*rows)))

    def _sampleable(self) -> tuple[list[tuple[Episode, np.ndarray]], np.ndarray]:
        """Each episode in memory with the steps that may be sampled, and the running total of their counts;
        rebuilt only when the cache changes."""
        if self._steps is None:
            self._steps = [(e, np.arange(len(e)) if self.learn_from_interventions else np.flatnonzero(~e.intervention))
                           for _, e in self._cache]
            self._ends = np.cumsum([len(allowed) for _, allowed in self._steps], dtype=np.int64)
        return self._steps, self._ends

    def _transition(self, e: Episode, t: int) -> tuple[np.ndarray, ...]:
        reward, discount, last = nstep_return(e.reward, e.terminated, t, self.nstep, self.discount)
        return (self._stacked(e, t), e.proprio[t], e.action[t], np.float32([reward]), np.float32([discount]),
                self._stacked(e, last), e.proprio[last], e.intervention[t])

    def _stacked(self, e: Episode, t: int) -> np.ndarray:
        frames = e.image[stack_indices(t, self.frame_stack)]  # (k, H, W, 3)
        return frames.transpose(0, 3, 1, 2).reshape(-1, *frames.shape[1:3])

    # ---------------------------------------------------------------- relabelling

    def relabel(self, fn: Callable[[Episode], dict[str, np.ndarray]], fingerprint: str) -> int:
        """New rewards for every episode on disk, after the reward model changed.

        fn(episode) returns {"reward": (T,) composed total, part name: (T,) ...}; returned parts replace
        those of the same name, others are kept. Each file is rewritten atomically with
        meta["reward_fingerprint"] = fingerprint; files already at that fingerprint are skipped, so an
        interrupted relabel resumes. Returns the number of episodes relabelled.
        """
        if not isinstance(fingerprint, str) or not fingerprint:
            raise ValueError(f"relabel: fingerprint must be a non-empty string, got {fingerprint!r}")
        cached = {path: i for i, (path, _) in enumerate(self._cache)}
        done = 0
        for path in self.episode_files():
            if path in self.unreadable:
                continue
            episode = load_episode(path)  # with its env_frames, which memory does not hold
            if episode.meta.get("reward_fingerprint") == fingerprint:
                continue
            new = _relabelled(episode, fn(episode), fingerprint, path)
            save_episode(new, path)
            if path in cached:
                self._cache[cached[path]] = (path, replace(new, env_frames=None))
                self._steps = None
            done += 1
        return done

    # ---------------------------------------------------------------- memory and disk bounds

    def _load_newest(self) -> None:
        """Resume: the newest episodes that fit in max_size, newest first until one does not fit."""
        held = 0
        for path in reversed(self.episode_files()):
            try:
                episode = load_episode(path)
                self._check_fits(episode)
            except ValueError as error:
                self.unreadable[path] = str(error)
                continue
            if held + len(episode) > self.max_size:
                break
            self._cache.insert(0, (path, replace(episode, env_frames=None)))
            held += len(episode)
        self._held = held

    def _check_fits(self, episode: Episode) -> None:
        if len(episode) > self.max_size:
            raise ValueError(f"an episode of {len(episode)} steps does not fit a replay of max_size {self.max_size}")
        if self._cache:
            first = self._cache[0][1]
            for name in ("image", "proprio", "action"):
                want, got = getattr(first, name).shape[1:], getattr(episode, name).shape[1:]
                if want != got:
                    raise ValueError(f"episode {name} of shape (*, {', '.join(map(str, got))}) does not match "
                                     f"the replay's (*, {', '.join(map(str, want))})")

    def _evict(self) -> None:
        while self._held > self.max_size:
            self._held -= len(self._cache.pop(0)[1])

    def _cap_disk(self) -> None:
        if self.max_disk_episodes is None:
            return
        files = self.episode_files()
        doomed = set(files[:max(0, len(files) - self.max_disk_episodes)])
        for path in doomed:
            path.unlink()
        self._cache = [(p, e) for p, e in self._cache if p not in doomed]
        self._held = sum(len(e) for _, e in self._cache)


def _relabelled(episode: Episode, labels: dict[str, np.ndarray], fingerprint: str, path: Path) -> Episode:
    labels = dict(labels)
    if "reward" not in labels:
        raise ValueError(f"relabel {path}: the labeller returned {sorted(labels)}, without 'reward'")
    reward = labels.pop("reward")
    try:
        return Episode(episode.image, episode.proprio, episode.action, reward, {**episode.reward_parts, **labels},
                       episode.intervention, episode.terminated, {**episode.meta, "reward_fingerprint": fingerprint},
                       episode.env_frames)
    except ValueError as error:
        raise ValueError(f"relabel {path}: {error}") from None


def _index(path: Path) -> int:
    return int(_NAME.fullmatch(path.name).group(1))
