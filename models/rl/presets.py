"""DrQ-v2 hyperparameters by preset, and its exploration-noise schedule.

`paper` is DrQ-v2's (Yarats et al. 2021, the official code's medium-task config). Steps in this
module are agent steps (env steps after action repeat), as the official code counts them:
`seed_frames` alone is in frames, as in its config.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any

from models.checkpoint import check_config_keys

_LINEAR = re.compile(r"linear\(\s*([^,]+),\s*([^,]+),\s*([^,)]+)\)")

_PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(),  # the dataclass defaults
    # Minutes-to-hours on a CPU: narrower heads, smaller batches, a shorter exploration schedule. The std
    # reaches its floor at 20k frames, about a third of the ~57k frames 2 CPU hours train with the diffusion
    # reward (the paper's decays over a third of its 3M frames); decaying over 100k, such a run would end at std 0.5.
    "cpu": dict(hidden_dim=256, batch_size=128, std_schedule="linear(1.0,0.1,10000)", seed_frames=2000,
                replay_size=100_000, use_proprio=True),
    # Tests: seconds. A larger lr so a trivial task is learned in a few hundred updates.
    "tiny": dict(channels=8, feature_dim=16, hidden_dim=32, batch_size=16, lr=1e-3,
                 std_schedule="linear(1.0,0.1,1000)", seed_frames=100, action_repeat=1, replay_size=2000,
                 use_proprio=True),
}


@dataclass(frozen=True)
class DrQConfig:
    """Agent and training-loop constants (defaults: the paper's). The env's sizes (image, proprio,
    action) are not here: the agent takes them from the env."""

    name: str = "paper"
    channels: int = 32  # every conv layer of the encoder
    feature_dim: int = 50  # trunk output (Linear -> LayerNorm -> Tanh)
    hidden_dim: int = 1024
    lr: float = 1e-4
    batch_size: int = 256
    critic_tau: float = 0.01
    std_schedule: str = "linear(1.0,0.1,500000)"  # a number, or linear(start,end,agent_steps)
    std_clip: float = 0.3
    nstep: int = 3
    discount: float = 0.99
    update_every_steps: int = 2
    seed_frames: int = 4000  # uniform random actions before this many frames
    action_repeat: int = 2
    frame_stack: int = 3
    shift_pad: int = 4
    replay_size: int = 1_000_000  # transitions held in memory
    use_proprio: bool = False  # DrQ-v2 is pixels-only; True feeds proprio to the actor and critic heads

    def __post_init__(self) -> None:
        for name in ("channels", "feature_dim", "hidden_dim", "batch_size", "nstep", "update_every_steps",
                     "action_repeat", "frame_stack", "replay_size"):
            _check_int(self, name, low=1)
        for name in ("seed_frames", "shift_pad"):
            _check_int(self, name, low=0)
        for name, low, high in (("lr", 0.0, math.inf), ("critic_tau", 0.0, 1.0), ("std_clip", 0.0, math.inf),
                                ("discount", 0.0, 1.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                raise ValueError(f"DrQConfig.{name} must be a number in [{low}, {high}], got {value!r}")
        if not isinstance(self.use_proprio, bool):
            raise ValueError(f"DrQConfig.use_proprio must be a bool, got {self.use_proprio!r}")
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"DrQConfig.name must be a non-empty string, got {self.name!r}")
        try:
            std_at(self.std_schedule, 0)
        except ValueError as error:
            raise ValueError(f"DrQConfig.std_schedule: {error}") from None

    @property
    def seed_steps(self) -> int:
        """Agent steps of uniform random actions (seed_frames over the action repeat)."""
        return self.seed_frames // self.action_repeat

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> DrQConfig:
        if name not in _PRESETS:
            raise ValueError(f"unknown DrQ-v2 preset {name!r}; known: {sorted(_PRESETS)}")
        return cls(name=name, **{**_PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DrQConfig:
        check_config_keys(cls, d, "DrQ-v2")
        return cls(**d)


def _check_int(config: DrQConfig, name: str, low: int) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"DrQConfig.{name} must be an int >= {low}, got {value!r}")


def std_at(schedule: str, step: int) -> float:
    """The exploration std at agent step `step`: a constant ('0.2') or 'linear(start,end,steps)'."""
    try:
        value = float(schedule)
    except (TypeError, ValueError):
        match = _LINEAR.fullmatch(str(schedule).strip())
        if not match:
            raise ValueError(f"schedule {schedule!r} is neither a number nor 'linear(start,end,steps)'") from None
        start, end, duration = (float(g) for g in match.groups())
        if not duration > 0:
            raise ValueError(f"schedule {schedule!r}: the duration must be > 0") from None
        mix = min(max(step / duration, 0.0), 1.0)
        value = (1.0 - mix) * start + mix * end
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"schedule {schedule!r} gives std {value}, expected a finite number >= 0")
    return value
