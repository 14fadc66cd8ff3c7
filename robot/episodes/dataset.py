"""An index over a folder of episode files: what is there, train/test splits, a contact sheet.

Scanning reads the summary section (metadata index and message counts) of finished
files without touching image data; a file without an intact summary or without
"episode_end" gets a stream pass that still decodes no image. Unreadable files stay
in the index as incomplete entries with the reason.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from mcap.reader import make_reader

from robot.episodes import messages as msgs
from robot.episodes.metadata import parse_seed
from robot.episodes.reader import (
    Episode,
    EpisodeReadError,
    StreamPass,
    episode_status,
    read_episode,
    stream_pass,
)

UNKNOWN = "(unknown)"


@dataclass
class EpisodeEntry:
    path: Path
    task: str
    source: str
    seed: int | None
    success: bool | None
    complete: bool
    num_frames: int
    episode_id: str
    problems: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)  # "episode" + "episode_end" records


def scan_episode(path: Path) -> EpisodeEntry:
    found = _from_summary(path)
    try:
        found = found or stream_pass(path)  # counts image messages without decoding them
    except EpisodeReadError as exc:
        return EpisodeEntry(path, UNKNOWN, UNKNOWN, None, None, False, 0, "", [str(exc)])
    success, complete, problems = episode_status(found, found.images)
    start = found.records.get("episode", {})
    return EpisodeEntry(path=path, task=start.get("task", UNKNOWN), source=start.get("source", UNKNOWN),
                        seed=parse_seed(start.get("seed", "")), success=success, complete=complete,
                        num_frames=found.images, episode_id=start.get("episode_id", ""),
                        problems=problems, metadata={**start, **found.records.get("episode_end", {})})


def _from_summary(path: Path) -> StreamPass | None:
    """The fast path: only for finished files (footer, summary and episode_end present)."""
    try:
        with open(path, "rb") as stream:
            reader = make_reader(stream)
            summary = reader.get_summary()
            if summary is None or summary.statistics is None:
                return None
            found = StreamPass(records={m.name: dict(m.metadata) for m in reader.iter_metadata()})
            counts = summary.statistics.channel_message_counts
            found.images = sum(counts.get(cid, 0) for cid, channel in summary.channels.items()
                               if channel.topic == msgs.IMAGE_TOPIC)
    except Exception:  # noqa: BLE001 - truncated or corrupt: the stream pass says what is wrong
        return None
    return found if "episode_end" in found.records else None


class DatasetIndex:
    def __init__(self, root: Path, entries: list[EpisodeEntry]) -> None:
        self.root = root
        self.entries = entries

    @classmethod
    def scan(cls, root: str | Path) -> DatasetIndex:
        """Every *.mcap under root, recursively, in path order."""
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: episode directory not found (or not a directory)")
        paths = sorted(p for p in root.rglob("*.mcap") if p.is_file())
        if not paths:
            raise FileNotFoundError(f"{root}: no *.mcap episode files in it or its subfolders")
        return cls(root, [scan_episode(p) for p in paths])

    def select(self, task: str | None = None, source: str | None = None,
               complete_only: bool = True) -> list[EpisodeEntry]:
        return [e for e in self.entries if (task is None or e.task == task)
                and (source is None or e.source == source) and (e.complete or not complete_only)]

    def split(self, test_fraction: float = 0.2, salt: str = "drr",
              complete_only: bool = True) -> tuple[list[EpisodeEntry], list[EpisodeEntry]]:
        """(train, test). Each episode's side comes from a hash of its id and the salt
        (split_draw < test_fraction: test), so adding episodes never moves existing ones across
        the split, with one exception: a (task, source) group of two or more episodes always
        has one on each side, so every task can be both trained on and held out. A group with
        none drawn into test lends it its lowest-drawn episode (all drawn into test: the
        highest goes to train) until an added episode is drawn there."""
        if not 0.0 <= test_fraction <= 1.0:
            raise ValueError(f"test_fraction must be in [0, 1], got {test_fraction}")
        groups: dict[tuple[str, str], list[EpisodeEntry]] = {}
        for entry in self.select(complete_only=complete_only):
            groups.setdefault((entry.task, entry.source), []).append(entry)
        train, test = [], []
        for group in groups.values():
            ranked = sorted(group, key=lambda e: split_draw(e, salt))
            held_out = sum(split_draw(e, salt) < test_fraction for e in ranked)
            if len(ranked) >= 2 and 0.0 < test_fraction < 1.0:
                held_out = min(max(held_out, 1), len(ranked) - 1)
            test += ranked[:held_out]
            train += ranked[held_out:]
        order = {id(e): i for i, e in enumerate(self.entries)}  # keep the index's (file name) order
        return sorted(train, key=lambda e: order[id(e)]), sorted(test, key=lambda e: order[id(e)])

    def summary(self) -> dict[str, Any]:
        """JSON-ready counts; success rates count complete episodes only (None if there are none)."""
        return {
            "root": str(self.root),
            "episodes": len(self.entries),
            "complete": sum(e.complete for e in self.entries),
            "frames": sum(e.num_frames for e in self.entries),
            "per_task": _groups(self.entries, lambda e: e.task),
            "per_source": _groups(self.entries, lambda e: e.source),
            "per_task_source": [{"task": task, "source": source, **stats} for (task, source), stats
                                in _groups(self.entries, lambda e: (e.task, e.source)).items()],
            "incomplete": [f"{e.path}: {'; '.join(e.problems) or 'incomplete'}"
                           for e in self.entries if not e.complete],
        }


def iter_episodes(entries: Iterable[EpisodeEntry], image_size: tuple[int, int] | None = (64, 64),
                  crop: tuple[int, int, int, int] | str | None = None) -> Iterator[Episode]:
    """The entries' episodes as numpy arrays, one file in memory at a time; frames are
    cropped (top, left, height, width) then resized to image_size, as read_episode does."""
    for entry in entries:
        yield read_episode(entry.path, image_size=image_size, crop=crop)


def _groups(entries: list[EpisodeEntry], key) -> dict[Any, dict[str, Any]]:
    groups: dict[Any, list[EpisodeEntry]] = defaultdict(list)
    for entry in entries:
        groups[key(entry)].append(entry)
    out = {}
    for name in sorted(groups):
        members = groups[name]
        judged = [e for e in members if e.complete and e.success is not None]
        successes = sum(bool(e.success) for e in judged)
        out[name] = {"episodes": len(members), "complete": sum(e.complete for e in members),
                     "frames": sum(e.num_frames for e in members), "successes": successes,
                     "success_rate": successes / len(judged) if judged else None}
    return out


LABEL_HEIGHT = 18


def split_draw(entry: EpisodeEntry, salt: str = "drr") -> float:
    """The episode's place in [0, 1) for the train/test split: a hash of its id and the salt."""
    key = f"{entry.episode_id or entry.path.name}|{salt}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2.0**64


def contact_sheet(entries: list[EpisodeEntry], out_png: str | Path, frames_per_episode: int = 6,
                  tile: int = 96, max_episodes: int = 24, aspect: float = 4 / 3) -> Path:
    """One row per episode: a label band (task / source / outcome), then evenly spaced frames,
    each fitted into a tile-high, aspect*tile-wide cell without distorting it.
    The PNG is frames_per_episode*round(aspect*tile) wide and rows*(tile+18) high."""
    rows = list(entries)[:max_episodes]
    if not rows:
        raise ValueError("contact_sheet needs at least one episode entry")
    if frames_per_episode < 1 or tile < 8 or not aspect > 0:
        raise ValueError(f"frames_per_episode must be >= 1, tile >= 8 and aspect > 0, "
                         f"got {frames_per_episode}, {tile}, {aspect}")
    cell_width, row_height = round(aspect * tile), tile + LABEL_HEIGHT
    sheet = np.full((len(rows) * row_height, frames_per_episode * cell_width, 3), 32, dtype=np.uint8)
    for row, entry in enumerate(rows):
        top = row * row_height
        outcome = {True: "success", False: "failure", None: "incomplete"}[entry.success if entry.complete else None]
        try:
            frames = read_episode(entry.path, image_size=None).frames
        except (EpisodeReadError, ValueError) as exc:
            frames, outcome = np.zeros((0, tile, tile, 3), np.uint8), f"unreadable ({type(exc).__name__})"
        label = f"{entry.task} / {entry.source} / {outcome} / {entry.num_frames} frames"
        cv2.putText(sheet, label, (4, top + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (235, 235, 235), 1,
                    cv2.LINE_AA)
        if len(frames):
            picks = np.linspace(0, len(frames) - 1, frames_per_episode).round().astype(int)
            for column, index in enumerate(picks):
                cell = sheet[top + LABEL_HEIGHT:top + row_height, column * cell_width:(column + 1) * cell_width]
                _fit_into(frames[index], cell)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out_png), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
        raise OSError(f"{out_png}: could not write the contact sheet PNG")
    return out_png


def _fit_into(frame: np.ndarray, cell: np.ndarray) -> None:
    """Resize `frame` to fit `cell` keeping its aspect ratio, centred (letterboxed)."""
    cell_h, cell_w = cell.shape[:2]
    scale = min(cell_h / frame.shape[0], cell_w / frame.shape[1])
    h, w = max(1, round(frame.shape[0] * scale)), max(1, round(frame.shape[1] * scale))
    top, left = (cell_h - h) // 2, (cell_w - w) // 2
    cell[top:top + h, left:left + w] = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
