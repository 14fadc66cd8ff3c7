"""Training and evaluation frames from recorded episodes, as the reward models see them:
square crops of the camera image resized to the model's input size."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from robot.episodes import CENTER_SQUARE, DatasetIndex, EpisodeEntry, read_episode

SPLITS = ("train", "test", "all")


@dataclass
class EpisodeFrames:
    entry: EpisodeEntry
    frames: np.ndarray  # (F, size, size, 3) uint8


def select_episodes(root: str | Path, *, tasks: Sequence[str] | None = None,
                    sources: Sequence[str] = ("expert",), split: str = "train",
                    test_fraction: float = 0.2) -> list[EpisodeEntry]:
    """Complete episodes of these tasks and sources on one side of the dataset's split."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    index = DatasetIndex.scan(root)
    train, test = index.split(test_fraction=test_fraction)
    pool = {"train": train, "test": test, "all": train + test}[split]
    chosen = [e for e in pool if (tasks is None or e.task in tasks) and e.source in sources]
    if not chosen:
        have = sorted({(e.task, e.source) for e in index.entries if e.complete})
        raise ValueError(f"no complete {split} episodes in {root} for tasks {list(tasks or ['any'])} "
                         f"and sources {list(sources)}; it holds (task, source): {have}")
    return chosen


def first_commanded_frame(actions: np.ndarray) -> int:
    """Index of the first frame whose recorded (gated) twist is not zero; 0 if none is (a still
    episode stays whole)."""
    moving = np.flatnonzero(np.any(np.asarray(actions)[:, :6] != 0, axis=1))
    return int(moving[0]) if len(moving) else 0


def load_frames(entries: Sequence[EpisodeEntry], image_size: int = 64,
                crop: tuple[int, int, int, int] | str | None = CENTER_SQUARE,
                progress: bool = True) -> list[EpisodeFrames]:
    """Each episode's frames at the model's input size (a few MB per 100 episodes at 64x64), from
    the first commanded frame on: an episode recorded through the graph (or by an operator) starts
    with frames where nothing was commanded yet (the policy's first command reaches the arm a
    control period or two after the recording starts), which episodes rolled out directly lack.
    Kept, they teach the model that a still arm is expert-like and give graph-recorded experts
    free points against directly recorded random episodes."""
    episodes = []
    for entry in tqdm(entries, desc="reading episodes", unit="ep", disable=not progress):
        episode = read_episode(entry.path, image_size=(image_size, image_size), crop=crop)
        frames = episode.frames[first_commanded_frame(episode.actions):]
        if len(frames):
            episodes.append(EpisodeFrames(entry, frames))
    if not episodes:
        raise ValueError(f"the {len(entries)} selected episodes hold no frames")
    return episodes
