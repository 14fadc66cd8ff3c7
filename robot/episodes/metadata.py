"""What an episode is (task, source, seed, calibration, ...) and how it is named on disk.

The metadata travels inside the MCAP file as a Metadata record named "episode", so a
file copied out of its folder still says what it holds. MCAP metadata values are
strings; `to_record` / `from_record` convert.
"""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

FORMAT_VERSION = "1"
SOURCES = ("expert", "suboptimal", "random", "zero", "teleop", "policy")
# Keys the "episode" record always carries; `extra` may not shadow them.
RESERVED_KEYS = ("task", "source", "seed", "calibration_id", "policy", "control_rate_hz", "robot",
                 "base_frame", "episode_id", "created_utc", "format_version")
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")


@dataclass
class EpisodeMetadata:
    task: str
    source: str
    seed: int | None
    calibration_id: str
    policy: str = ""
    control_rate_hz: float = 10.0
    robot: str = "panda-mirror"
    base_frame: str = "base_link"
    episode_id: str = ""  # uuid4 hex when left empty
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("task", "calibration_id", "robot", "base_frame"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"EpisodeMetadata.{name} must be a non-empty string, got {value!r}")
        if self.source not in SOURCES:
            raise ValueError(f"EpisodeMetadata.source {self.source!r} is not one of {', '.join(SOURCES)}")
        # bool is an int in Python; a seed of True is a bug upstream.
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ValueError(f"EpisodeMetadata.seed must be an int or None, got {self.seed!r}")
        if not isinstance(self.policy, str):
            raise ValueError(f"EpisodeMetadata.policy must be a string, got {self.policy!r}")
        rate = self.control_rate_hz
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate <= 0:
            raise ValueError(f"EpisodeMetadata.control_rate_hz must be a positive number, got {rate!r}")
        self.control_rate_hz = float(rate)
        if not self.episode_id:
            self.episode_id = uuid.uuid4().hex
        if not isinstance(self.episode_id, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", self.episode_id):
            raise ValueError("EpisodeMetadata.episode_id must be letters, digits, '-' or '_' "
                             f"(empty for a random uuid4), got {self.episode_id!r}")
        self.extra = check_string_dict(self.extra, "EpisodeMetadata.extra")
        shadowed = sorted(set(self.extra) & set(RESERVED_KEYS))
        if shadowed:
            raise ValueError(f"EpisodeMetadata.extra keys {shadowed} clash with the fixed fields "
                             f"{', '.join(RESERVED_KEYS)}")

    def to_record(self, created_utc: str) -> dict[str, str]:
        return {
            "task": self.task,
            "source": self.source,
            "seed": "" if self.seed is None else str(self.seed),
            "calibration_id": self.calibration_id,
            "policy": self.policy,
            "control_rate_hz": repr(self.control_rate_hz),
            "robot": self.robot,
            "base_frame": self.base_frame,
            "episode_id": self.episode_id,
            "created_utc": created_utc,
            "format_version": FORMAT_VERSION,
            **self.extra,
        }

    @classmethod
    def from_record(cls, record: dict[str, str]) -> EpisodeMetadata:
        """Inverse of `to_record` (created_utc and format_version are dropped)."""
        extra = {k: v for k, v in record.items() if k not in RESERVED_KEYS}
        return cls(task=record.get("task", ""), source=record.get("source", ""),
                   seed=parse_seed(record.get("seed", "")),
                   calibration_id=record.get("calibration_id", ""), policy=record.get("policy", ""),
                   control_rate_hz=float(record.get("control_rate_hz", "10.0")),
                   robot=record.get("robot", ""), base_frame=record.get("base_frame", ""),
                   episode_id=record.get("episode_id", ""), extra=extra)


def parse_seed(text: str) -> int | None:
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def check_string_dict(values: dict | None, what: str) -> dict[str, str]:
    """MCAP metadata maps strings to strings; say which entry breaks that."""
    values = {} if values is None else values
    if not isinstance(values, dict):
        raise ValueError(f"{what} must be a dict of str to str, got {type(values).__name__}")
    for key, value in values.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(f"{what} must map str to str (MCAP metadata is strings); "
                             f"entry {key!r}: {value!r} is not")
    return dict(values)


def episode_path(out_dir: str | Path, metadata: EpisodeMetadata, index: int) -> Path:
    """`<task>_<source>_<index:04d>_s<seed>_<id8>.mcap`: sorts by task, source, then recording
    order; '_' separates fields only (it is replaced inside them, like any unsafe character)."""
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ValueError(f"episode index must be a non-negative int, got {index!r}")

    def clean(text: str) -> str:
        return _NAME_UNSAFE.sub("-", text).strip(".-") or "x"

    seed = "noseed" if metadata.seed is None else f"s{metadata.seed}"
    name = "_".join((clean(metadata.task), clean(metadata.source), f"{index:04d}", seed,
                     clean(metadata.episode_id[:8])))
    return Path(out_dir) / f"{name}.mcap"
